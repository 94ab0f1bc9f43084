"""Turning what a user hands us (a path, an array, a tensor) into uint8 clips at the model's resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..data.transforms import resize_center_crop


def _resize(frames: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, resolution, resolution, 3): short side resized, centre-cropped."""
    if frames.shape[1:3] == (resolution, resolution):
        return frames
    x = resize_center_crop(frames, resolution)  # (3, T, r, r) in [-1, 1]
    return ((rearrange(x, "c t h w -> t h w c") + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _read_path(path: Path, resolution: int, last: int | None) -> np.ndarray:
    """Decode a video file chunk by chunk, resizing as it goes (memory: one chunk at the file's resolution)."""
    from ..data.video_io import VideoError, iter_frames, probe, read_frames

    if last is not None:
        n = probe(path).num_frames
        if n < last:
            raise VideoError(path, f"has {n} frames, fewer than the {last} context frames requested")
        return _resize(read_frames(path, range(n - last, n)), resolution)
    chunks = [_resize(c, resolution) for c in iter_frames(path)]
    if not chunks:
        raise VideoError(path, "no frames")
    return np.concatenate(chunks)


def load_clip(video, resolution: int, last: int | None = None) -> np.ndarray:
    """A path (mp4, webm, avi, gif), a uint8 array (T, H, W, 3) / (B, T, H, W, 3), or a float array / tensor in
    [0, 1] of the same layouts -> uint8 (B, T, resolution, resolution, 3), short side resized and centre-cropped.

    ``last``: keep only the last ``last`` frames (a file is then decoded from near its end only).
    """
    if isinstance(video, (str, Path)):
        arr = _read_path(Path(video), resolution, last)
    elif isinstance(video, torch.Tensor):
        arr = video.detach().cpu().numpy()
    else:
        arr = np.asarray(video)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"integer frames must lie in [0, 255], got values in [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"frames must be uint8 in [0, 255] or float in [0, 1], got dtype {arr.dtype}")
        arr = arr.astype(np.float32)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not np.isfinite(arr).all() or lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float frames must lie in [0, 1], got values in [{lo:g}, {hi:g}] "
                             "(for 0..255 pass a uint8 array)")
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3:  # (T, H, W) grayscale
        arr = arr[..., None]
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] not in (1, 3) or 0 in arr.shape:
        raise ValueError(f"expected frames (T, H, W, 3) or (B, T, H, W, 3), got shape {arr.shape}")
    if last is not None:
        arr = arr[:, -last:]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.stack([_resize(clip, resolution) for clip in arr])
