"""Frame values, one place: uint8 frames (…, H, W, 3) <-> float frames in [0, 1] <-> model pixels in [-1, 1].

Frames handed to users are (B, T, H, W, 3); model pixels are (B, C, T, H, W) with C = 1 (grey) or 3. Grey is
stored as one channel and shown as three equal ones.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

OUTPUT_TYPES = ("np", "uint8", "pt", "pil")


CHANNELS = (1, 3, 4)  # grey, RGB, RGBA (the alpha dropped, as when a file is decoded)


def _channels_first(shape: tuple) -> bool:
    """A tensor of this shape is read channels first: its last axis is no channel count, its third last is."""
    return len(shape) >= 3 and shape[-1] not in CHANNELS and shape[-3] in CHANNELS


def _is_image(x) -> bool:
    """A PIL image (PIL is imported only where one could be: a module already loaded)."""
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert") and hasattr(x, "mode")


def _is_list(frames) -> bool:
    """A list (or tuple) of frames or clips, each converted on its own: PIL images, arrays, tensors, lists of them
    (nested lists of numbers are one array)."""
    return isinstance(frames, (list, tuple)) and any(
        _is_image(f) or isinstance(f, (np.ndarray, torch.Tensor)) or _is_list(f) for f in frames)


ORIENTATION = 0x0112  # the EXIF tag a camera or phone sets instead of turning the pixels


def pil_shown_size(image) -> tuple[int, int]:
    """(height, width) of a PIL image as a viewer shows it: EXIF orientations 5-8 turn it a quarter."""
    turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
    return (image.width, image.height) if turned else (image.height, image.width)


def pil_rgb(image) -> np.ndarray:
    """A PIL image -> uint8 (H, W, 3), as a viewer shows it: its EXIF orientation applied (a phone's portrait photo
    is stored landscape; diffusers' ``load_image`` applies it too), its colours by ``convert("RGB")`` (a palette
    image's colours, not its indices), but for deep grey images, which that conversion clips at 255 (a 16-bit grey
    PNG came out white): "I;16" and "I" (PIL's 16-bit grey PNG, TIFF) are scaled from 0..65535, "F" from [0, 1]
    (from 0..255 where it goes past 1)."""
    if image.getexif().get(ORIENTATION, 1) != 1:
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(image, dtype=np.float64)
        top = (1.0 if a.size and a.max() <= 1.0 else 255.0) if mode == "F" else 65535.0
        g = (np.clip(a / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def frames_shape(frames) -> tuple:
    """The shape (…, H, W, 3) that ``to_uint8`` gives ``frames``, from their shape alone (nothing converted)."""
    if _is_image(frames):
        return (*pil_shown_size(frames), 3)
    if _is_list(frames):
        return (len(frames), *frames_shape(frames[0]))
    shape = tuple(frames.shape) if hasattr(frames, "shape") else np.shape(frames)
    if isinstance(frames, torch.Tensor) and _channels_first(shape):
        shape = (*shape[:-3], *shape[-2:], shape[-3])
    if not shape or shape[-1] not in CHANNELS:
        shape = (*shape, 1)
    return (*shape[:-1], 3)


def to_uint8(frames, name: str = "frames") -> np.ndarray:
    """uint8 or integer in [0, 255], or float in [0, 1] (array or tensor) -> uint8 (…, H, W, 3).

    Layouts: channels last (…, H, W, C) with C = 1, 3 or 4; grey without a channel axis (…, H, W); and for a torch
    tensor whose last axis is no channel count, torch's channels first (…, C, H, W), a pipeline's ``"pt"`` output
    (B, T, 3, H, W) among them. Values outside those ranges are an error, never a silent clip: a float array of
    0..255 values would otherwise come out white. PIL images are read as a file of them is decoded (``pil_rgb``: a
    palette image's colours, not its indices; a 16-bit grey one from its depth); a list of frames (PIL images, as
    diffusers' ``load_video`` gives them, the first of a GIF in palette mode; arrays; tensors) is a clip, a list of
    clips a batch, each item converted on its own and all of one shape.
    """
    if _is_image(frames):
        return pil_rgb(frames)
    if isinstance(frames, (list, tuple)) and any(isinstance(f, str) or hasattr(f, "__fspath__") for f in frames):
        raise ValueError(f"{name}: a list holding a path that is not a still image; pass one video file per call "
                         "(a clip's frames: a list of image files; a batch of clips: arrays or lists of frames of one "
                         "length)")
    if _is_list(frames):
        items = [to_uint8(f, name) for f in frames]
        if len(shapes := list(dict.fromkeys(item.shape for item in items))) > 1:
            raise ValueError(f"{name}: a list of {len(items)} frames or clips of different shapes "
                             f"({', '.join(str(s) for s in shapes[:3])}): a clip's frames need one size, a batch's "
                             "clips one length")
        return np.stack(items)
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if _channels_first(tuple(frames.shape)):
            frames = frames.movedim(-3, -1)  # (…, C, H, W) -> (…, H, W, C)
        frames = frames.float().numpy() if frames.dtype in (torch.bfloat16, torch.float16) else frames.numpy()
    a = np.asarray(frames)
    if a.dtype != np.uint8:
        if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{name} must be uint8 in [0, 255] or float in [0, 1], got dtype {a.dtype}")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if np.issubdtype(a.dtype, np.integer):
            if lo < 0 or hi > 255:
                raise ValueError(f"integer {name} must lie in [0, 255], got values in [{lo:g}, {hi:g}]")
            a = a.astype(np.uint8)
        else:
            if not np.isfinite(a).all() or lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"float {name} must lie in [0, 1], got values in [{lo:g}, {hi:g}] "
                                 "(for 0..255 pass a uint8 array)")
            a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim >= 1 and a.shape[-1] not in CHANNELS:
        a = a[..., None]  # (…, H, W) grey
    if a.shape[-1] == 4:
        a = a[..., :3]  # RGBA: the colour, as decoded files give it
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def with_time(x: torch.Tensor) -> torch.Tensor:
    """A dataset batch (B, C, [T,] H, W) as clips (B, C, T, H, W): a batch of images is one frame each."""
    return x if x.ndim == 5 else x[:, :, None]


def pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Model pixels (B, C, T, H, W) in [-1, 1], C = 1 or 3 -> uint8 frames (B, T, H, W, 3)."""
    x = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:  # grey: three real channels, not an expanded view, whose one byte a write to any channel sets
        x = x.repeat(1, 3, 1, 1, 1)
    return rearrange(x, "b c t h w -> b t h w c").cpu().numpy()


def uint8_to_pixels(frames, channels: int = 3) -> torch.Tensor:
    """uint8 frames (B, T, H, W, 3) -> model pixels (B, channels, T, H, W) in [-1, 1] (1 channel: the RGB mean)."""
    x = torch.as_tensor(np.asarray(frames)).float() / 127.5 - 1.0
    x = rearrange(x, "b t h w c -> b c t h w")
    return x.mean(dim=1, keepdim=True) if channels == 1 else x


def unit_to_uint8(x) -> np.ndarray:
    """Float values in [0, 1] (clipped) -> uint8, same shape (for data already in range, e.g. rendered digits)."""
    return (np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grey(frames) -> np.ndarray:
    """uint8 frames (…, H, W, 3) -> float32 intensity (…, H, W) in [0, 1]."""
    return np.asarray(frames).astype(np.float32).mean(-1) / 255.0


def to_output(frames: np.ndarray, output_type: str):
    """uint8 (B, T, H, W, 3) -> what a pipeline returns for ``output_type``:

    "np" float32 (B, T, H, W, 3) in [0, 1] (diffusers' convention: ``export_to_video(out.frames[0])`` works);
    "uint8" the same as uint8; "pt" float32 tensor (B, T, 3, H, W) in [0, 1]; "pil" a list (per clip) of lists of
    PIL images.
    """
    if output_type == "uint8":
        return frames
    if output_type == "np":
        return frames.astype(np.float32) / 255.0
    if output_type == "pt":
        return rearrange(torch.from_numpy(frames).float() / 255.0, "b t h w c -> b t c h w")
    if output_type == "pil":
        from PIL import Image

        return [[Image.fromarray(f) for f in clip] for clip in frames]
    raise ValueError(f"unknown output_type {output_type!r}; use one of {', '.join(OUTPUT_TYPES)}")
