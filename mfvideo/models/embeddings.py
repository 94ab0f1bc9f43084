"""Embeddings of the STDiT: timesteps, class labels, fixed sin-cos positions and 3-D rotary positions."""

from __future__ import annotations

import math

import torch
from torch import nn

from .jvp_rules import sin_cos
from .linear import Linear


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sin-cos features of a float tensor of any shape: (...) -> (..., dim)."""
    half = dim // 2
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # never in half precision
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=x.device) / half)
    emb = sin_cos(x, freqs)  # (..., 2 half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


def sincos_1d(length: int, dim: int, device=None) -> torch.Tensor:
    """Fixed positions 0..length-1: (length, dim)."""
    return sinusoidal(torch.arange(length, device=device, dtype=torch.float64), dim)


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D positions (DiT/MAE): half the channels encode the row, half the column: (h*w, dim)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    rows = torch.arange(h, device=device, dtype=torch.float64).repeat_interleave(w)  # (h*w,)
    cols = torch.arange(w, device=device, dtype=torch.float64).repeat(h)  # (h*w,)
    return torch.cat([sinusoidal(rows, dim // 2), sinusoidal(cols, dim // 2)], dim=-1)


def rope_3d(t: int, h: int, w: int, head_dim: int, device=None, base: float = 100.0) -> torch.Tensor:
    """Rotary table of a (t, h, w) token grid, frame-major as the STDiT flattens it: the cos and sin of each token's
    angles, (2, t*h*w, head_dim // 2).

    Each head's channel pairs are split between the axes: ``head_dim // 6`` pairs each for row and column, the rest
    for the frame. Per axis, pair i of n turns by base^(-i / n) per token (base 100, not the usual 10,000: these
    grids are a few tokens wide, and each pair should turn noticeably within them)."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"3-D rotary positions need an even head width of at least 6, got {head_dim}")
    spatial = head_dim // 6  # pairs per spatial axis
    pairs = (head_dim // 2 - 2 * spatial, spatial, spatial)  # frame, row, column
    grid = torch.meshgrid(*(torch.arange(n, device=device, dtype=torch.float64) for n in (t, h, w)), indexing="ij")
    angles = []
    for pos, n in zip(grid, pairs):
        freqs = base ** (-torch.arange(n, device=device, dtype=torch.float64) / n)  # (n,)
        angles.append(pos.reshape(-1, 1) * freqs)  # (t*h*w, n)
    angles = torch.cat(angles, dim=1)  # (L, head_dim // 2)
    return torch.stack([angles.cos(), angles.sin()])  # (2, L, head_dim // 2)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (2i, 2i + 1) of x (..., L, d) by the angles of ``rope`` ((2, L, d // 2) cos and sin,
    ``rope_3d``): q . k of two rotated tokens then depends on their positions only through the offset between them."""
    cos, sin = rope.to(x.dtype)  # (L, d // 2) each
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (..., L, d // 2) each
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)  # (..., L, d)


class TimestepEmbedder(nn.Module):
    """Scalar time -> vector: sin-cos features then a 2-layer MLP (DiT). Works on (B,) or (B, T) times."""

    def __init__(self, hidden_size: int, frequency_size: int = 256, time_scale: float = 1.0):
        super().__init__()
        self.frequency_size = frequency_size
        # t lives in [0, 1]. DiT's scale of 1000 makes the features oscillate fast in t, so d_t u (part of the
        # MeanFlow target) is large and noisy: overfitting one sample, the loss rose 385 -> 5124 at scale 1000
        # and fell 385 -> 16 at scale 1 (same 400 steps). We embed t as is.
        self.time_scale = time_scale
        self.mlp = nn.Sequential(
            Linear(frequency_size, hidden_size), nn.SiLU(), Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = sinusoidal(t if self.time_scale == 1 else t * self.time_scale, self.frequency_size)  # (..., F)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))  # (..., D)


class LabelEmbedder(nn.Module):
    """Class label -> vector, with one extra row for the null class (label -1) used by guidance dropout."""

    NULL = -1

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.where(y < 0, torch.full_like(y, self.num_classes), y)  # -1 -> the null row
        return self.embedding_table(y)  # (B, D)
