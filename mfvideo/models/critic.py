"""A clip critic for adversarial post-training (``mfvideo.train.adversarial``): real clip or the model's?

3-D convolutions over (frame, row, column) of a latent clip, ending in one logit per coarse patch (a PatchGAN: blur,
grain and a glyph that changes between frames are local), plus a class projection on class-conditional models
(the logit gains <h, e_y> / sqrt(width), so the critic judges "a real 3", not only "real"; y = -1 judges a row
without its class). Images (T = 1) keep their one frame: the time kernel sees zero padding and the time stride is 1
below 4 frames.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class ClipCritic(nn.Module):
    def __init__(self, channels: int, num_classes: int = 0, width: int = 32, frames: int = 8):
        super().__init__()
        if width < 1 or channels < 1:
            raise ValueError(f"the critic needs channels >= 1 and width >= 1, got {channels} and {width}")
        w, time_stride = width, 2 if frames >= 4 else 1
        self.body = nn.Sequential(
            nn.Conv3d(channels, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(w, 2 * w, (3, 4, 4), stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2),  # rows, columns / 2
            nn.Conv3d(2 * w, 4 * w, (3, 4, 4), stride=(time_stride, 2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(4 * w, 4 * w, 3, padding=1), nn.LeakyReLU(0.2))
        self.logit = nn.Conv3d(4 * w, 1, 1)
        self.embed = nn.Embedding(num_classes, 4 * w) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T, H, W) latents, y (B,) class ids, -1 for a row judged without its class (ignored by an
        unconditional critic) -> logits (B, patches)."""
        h = self.body(x)  # (B, D, T', H', W')
        logits = self.logit(h)[:, 0]  # (B, T', H', W')
        if self.embed is not None and y is not None:
            e = self.embed(y.clamp_min(0)) * (y >= 0)[:, None].to(h.dtype)  # (B, D): no projection where y = -1
            logits = logits + torch.einsum("bdthw,bd->bthw", h, e) / h.shape[1] ** 0.5
        return rearrange(logits, "b t h w -> b (t h w)")
