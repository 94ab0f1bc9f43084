"""Latents to displayable frames and back."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange


@torch.no_grad()
def latents_to_frames(codec, latents: torch.Tensor) -> np.ndarray:
    """Normalised latents (B, C, T, H, W) -> uint8 frames (B, T', H', W', 3)."""
    pixels = codec.decode(latents).float().clamp(-1, 1)  # (B, c, T', H', W') in [-1, 1]
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1, -1)
    frames = ((pixels + 1) * 127.5).round().to(torch.uint8)
    return rearrange(frames, "b c t h w -> b t h w c").cpu().numpy()


def frames_to_pixels(frames, channels: int = 3) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> pixels (B, channels, T, H, W) in [-1, 1] (channels 1: the mean of RGB)."""
    x = torch.as_tensor(np.asarray(frames)).float() / 127.5 - 1.0
    x = rearrange(x, "b t h w c -> b c t h w")
    return x.mean(dim=1, keepdim=True) if channels == 1 else x
