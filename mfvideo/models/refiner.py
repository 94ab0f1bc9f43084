"""A residual 3-D convolution stack on the network's output at the latent grid (``model.refiner_channels``).

The transformer sees a clip as patch tokens (4 x 4 pixels each on the digits): moving a glyph by one pixel from one
frame to the next changes every token it touches, and a token's temporal attention meets the same patch of the other
frames, not the moved content. The refiner works where that move is one tap of a kernel: 3 x 3 x 3 convolutions
over (frame, row, column) at full latent resolution, reading the transformer's output, the input ``z`` (where the
context frames are clean) and the frame's times ``t``, ``r`` as two constant planes, and adding a correction:

    out' = out + conv_L(silu(... silu(conv_1([out, z, t, r]))))

Each layer reaches one frame and one latent pixel further, so L layers copy a clean neighbour frame's content
shifted by up to L pixels. The last convolution starts at zero: a model gaining a refiner (``model.init_from``)
computes exactly what it did. Images (T = 1) see zero padding in time and get a spatial refiner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvRefiner(nn.Module):
    def __init__(self, channels: int, hidden: int, layers: int = 3):
        super().__init__()
        if layers < 2:
            raise ValueError(f"the refiner needs at least 2 layers, got {layers}")
        widths = [2 * channels + 2] + [hidden] * (layers - 1) + [channels]
        self.convs = nn.ModuleList(nn.Conv3d(a, b, kernel_size=3, padding=1) for a, b in zip(widths, widths[1:]))
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, out: torch.Tensor, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """out, z: (B, C, T, H, W); t, r: (B, 1 | T) times per clip or per frame -> out + correction."""
        B, _, T, H, W = z.shape
        times = torch.stack([t, r], dim=1).to(z.dtype)  # (B, 2, 1 | T)
        times = times[..., None, None].expand(B, 2, T, H, W)  # (B, 2, T, H, W): constant planes
        # (B, 2C + 2, T, H, W) in the convolutions' dtype: a bf16 model is handed float32 latents z
        h = torch.cat([out, z, times], dim=1).to(self.convs[0].weight.dtype)
        for conv in self.convs[:-1]:
            h = F.silu(conv(h))  # (B, hidden, T, H, W)
        return out + self.convs[-1](h)
