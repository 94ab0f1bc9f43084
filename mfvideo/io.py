"""Files in and out: mp4 via imageio (H.264, yuv420p), PNG grids, atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def to_uint8_frames(frames) -> np.ndarray:
    """(T, H, W, 3|1) or (T, H, W) uint8 or float in [0, 1] -> (T, H, W, 3) uint8."""
    a = np.asarray(frames)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 3:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def save_video(frames, path: str | Path, fps: float = 8.0, quality: int = 8) -> Path:
    """Write (T, H, W, 3) frames as H.264 mp4 (yuv420p), atomically. H and W must be even (yuv420p)."""
    import imageio.v2 as imageio

    a = to_uint8_frames(frames)
    if a.shape[1] % 2 or a.shape[2] % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {a.shape[1]}x{a.shape[2]}")
    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        # macro_block_size=1: never let imageio silently rescale the frames.
        writer = imageio.get_writer(
            tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
            macro_block_size=1, quality=quality, ffmpeg_log_level="error",
        )
        try:
            for frame in a:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def save_image(image, path: str | Path) -> Path:
    """Write an (H, W, 3) image as PNG, atomically."""
    import imageio.v2 as imageio

    with atomic_path(path, suffix=".png") as tmp:
        imageio.imwrite(tmp, to_uint8_frames(np.asarray(image)[None])[0], format="PNG")
    return Path(path)


def grid(videos, pad: int = 2) -> np.ndarray:
    """A contact sheet: (B, T, H, W, 3) frames -> one image with a row per clip and a column per frame."""
    v = np.asarray(videos)
    b, t = v.shape[:2]
    v = to_uint8_frames(v.reshape(b * t, *v.shape[2:])).reshape(b, t, *v.shape[2:4], 3)
    h, w = v.shape[2:4]
    sheet = np.full((b * (h + pad) + pad, t * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(b):
        for j in range(t):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            sheet[top : top + h, left : left + w] = v[i, j]
    return sheet
