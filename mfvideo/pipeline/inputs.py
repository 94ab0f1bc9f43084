"""Turning what a user hands us (a path, an array, a tensor) into uint8 clips at the model's resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..data.transforms import resize_center_crop


def load_clip(video, resolution: int) -> np.ndarray:
    """A path (mp4, webm, avi, gif), a uint8 array (T, H, W, 3) / (B, T, H, W, 3), or a float tensor in [0, 1]
    of the same layouts -> uint8 (B, T, resolution, resolution, 3), short side resized and centre-cropped."""
    if isinstance(video, (str, Path)):
        from ..data.video_io import read_video

        arr, _ = read_video(video)
    elif isinstance(video, torch.Tensor):
        arr = video.detach().cpu().numpy()
    else:
        arr = np.asarray(video)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3:  # (T, H, W) grayscale
        arr = arr[..., None]
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected frames (T, H, W, 3) or (B, T, H, W, 3), got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[2:4] == (resolution, resolution):
        return arr
    out = []
    for clip in arr:
        x = resize_center_crop(clip, resolution)  # (3, T, r, r) in [-1, 1]
        out.append(((rearrange(x, "c t h w -> t h w c") + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.stack(out)
