"""The codec interface between pixels and latents, and the identity codec (pixel space).

A codec owns encode, decode and normalisation: training sees normalised latents (B, C, T, H, W) with roughly
unit variance; pixels are (B, 3 | 1, T, H, W) in [-1, 1]. Frame rules (causal video VAEs) live here too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..frames import pixels_to_uint8, uint8_to_pixels


class Codec(nn.Module):
    """Pixels (B, C, T, H, W) in [-1, 1] <-> normalised latents (B, c, t, h, w)."""

    latent_channels: int
    spatial_factor: int = 1
    temporal_factor: int = 1  # causal video VAEs: T = temporal_factor * k + 1

    def __init__(self, device: torch.device | str | None = None):
        super().__init__()
        # an empty buffer that follows .to(device): where encode_frames puts its latents, also for a codec with no
        # weights of its own (pixel space), whose latents went to the CPU while the model sat on the GPU; a codec
        # around a VAE starts on the VAE's device
        self.register_buffer("_where", torch.empty(0, device=device), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._where.device

    def latent_frames(self, frames: int) -> int:
        self.check_frames(frames)
        return frames if self.temporal_factor == 1 else (frames - 1) // self.temporal_factor + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return latent_frames if self.temporal_factor == 1 else (latent_frames - 1) * self.temporal_factor + 1

    def check_frames(self, frames: int) -> None:
        """Raise on a frame count the codec would silently truncate."""
        f = self.temporal_factor
        if f > 1 and (frames - 1) % f:
            raise ValueError(
                f"{type(self).__name__} needs {f}k+1 frames, got {frames} "
                f"(nearest valid: {(frames - 1) // f * f + 1} or {((frames - 1) // f + 1) * f + 1})"
            )

    def encode(self, pixels: torch.Tensor, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents (B, C, T, H, W) -> uint8 frames (B, T', H', W', 3)."""
        return pixels_to_uint8(self.decode(latents))

    @torch.no_grad()
    def encode_frames(self, frames, channels: int = 3) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3) -> normalised latents, on the codec's device (``channels``: pixel channels)."""
        return self.encode(uint8_to_pixels(frames, channels).to(self.device))

    def latent_shape(self, channels_frames_hw: tuple[int, int, int]) -> tuple[int, int, int, int]:
        frames, h, w = channels_frames_hw
        s = self.spatial_factor
        if h % s or w % s:
            raise ValueError(f"frame size {h}x{w} is not divisible by the codec's factor {s}")
        return (self.latent_channels, self.latent_frames(frames), h // s, w // s)


class IdentityCodec(Codec):
    """Pixel space: latents are the pixels in [-1, 1]."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.latent_channels = channels

    def encode(self, pixels, generator=None):
        return pixels

    def decode(self, latents):
        return latents.clamp(-1, 1)
