"""Frame geometry: resize the short side and centre-crop (ADM style for images), on uint8 or float frames."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def resize_center_crop(frames, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float pixels (3, T, size, size) in [-1, 1]: short side to ``size``, centre crop."""
    x = torch.as_tensor(np.asarray(frames)).float()  # (T, H, W, 3)
    x = rearrange(x, "t h w c -> t c h w")
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    if scale != 1.0:
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=scale < 1, align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    x = x[..., top : top + size, left : left + size]
    x = (x / 127.5 - 1.0).clamp(-1, 1)
    return rearrange(x, "t c h w -> c t h w")


def grey_if(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Pixels (3, ...) as ``channels`` channels: 1 is their mean, grey as the pipeline reads a user's RGB input for a
    grey model (``frames.uint8_to_pixels``); 3 as they are."""
    return x.mean(dim=0, keepdim=True) if channels == 1 else x
