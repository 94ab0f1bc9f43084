"""A copy path from the context: every output pixel may take its value from a small neighbourhood of the nearest
context frame, through a per-pixel kernel the network predicts (``model.copy_radius``).

The transformer sees a clip as patch tokens and draws each token's pixels from a vector: it can say *where* a given
object goes (its trajectory is right to a fraction of a pixel) but not redraw *the given* object there -- moving a glyph
by one pixel changes every token it touches, and the network answers with a generic glyph of the class, or a blur of the
given one when trained to regress it (docs/bundled_model.md, "Keeping the handwriting"). Kernel-prediction networks for
frame interpolation (SepConv, Niklaus et al., 2017) and dynamic filter networks (Jia et al., 2016) move content the
other way round: a predicted kernel per output pixel gathers it from a reference frame, so a shift is a kernel, not a
redraw. Here, with the nearest context frame as the reference (``nearest_context``) and a separable kernel of 2R + 1
taps per axis:

    copy(y, x) = sum_ij kv_i(y, x) kh_j(y, x) ref(y + i - R, x + j - R)      kv, kh: the 2R + 1 taps per axis
                                                                              (ref's border continues outside it)
    out' = out + m (copy - out)                                               m: a per-pixel gate

The taps are a softmax of predicted logits (``copy_kernel=softmax``) or the two taps around a predicted offset
(``bilinear``: bilinear sampling at a displacement). Kernels and gate come from their own output head on the last block's tokens; the head starts with zero weights, the
gate closed (m = 0) and the kernels copying in place, so a trained model gains the path without changing
its function. Rows without context frames, and per-clip times, get no copy. Every operation has forward-mode AD (the
MeanFlow JVP runs through it). The kernels' gradient is proportional to the gate: trained by the loss alone, a
network may shut the gate before the kernels learn where to look (measured, docs/experiments.md, sessions 23-24;
``method.copy_loss`` trains them whatever the gate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from .jvp_rules import LayerNorm
from .linear import Linear

CENTRE_LOGIT = 3.0  # the centre tap's initial weight per axis: e^3 / (e^3 + 2R) (0.71 for R = 4)
COPY_KERNELS = ("softmax", "bilinear")


class KernelCopy(nn.Module):
    """out + m (copy - out) on rows with context: per-pixel separable kernels over the nearest context frame.

    ``kernel``: ``softmax`` -- 2R + 1 free taps per axis (a softmax of predicted logits: any mixture of shifts);
    ``bilinear`` -- one predicted offset d per axis in (-R, R) and the two taps around it, weights (1 - frac(d),
    frac(d)): bilinear sampling at a predicted displacement, as a flow warp (sharp by construction; an integer d
    is an exact move)."""

    def __init__(self, dim: int, radius: int, patch_size: int, temporal_patch_size: int, kernel: str = "softmax"):
        super().__init__()
        if radius < 1:
            raise ValueError(f"copy_radius must be >= 1 (0: no copy path), got {radius}")
        if kernel not in COPY_KERNELS:
            raise ValueError(f"unknown copy_kernel {kernel!r}; choose one of {COPY_KERNELS}")
        self.radius, self.taps, self.kernel = radius, 2 * radius + 1, kernel
        self.maps = 2 * self.taps + 1 if kernel == "softmax" else 3  # per pixel: taps (or offsets) per axis, gate
        self.p, self.pt = patch_size, temporal_patch_size
        self.norm = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.head = Linear(dim, temporal_patch_size * patch_size * patch_size * self.maps)
        self.caught: list | None = None  # set by method.meanflow.catching_copies: (copy, clean) of forwards with grad
        self.snap = False  # sampling only: each pixel's taps snapped to one whole move, the gate to 0 or 1 (no blend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gate closed (the model unchanged); softmax kernels leaning on their centre tap, a copy in place (nearer a
        moved frame than the blur of uniform taps); bilinear offsets at zero, an exact copy in place."""
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            if self.kernel == "softmax":
                bias = self.head.bias.view(-1, self.maps)  # (pixel slots, vertical taps | horizontal | gate)
                bias[:, self.radius] = bias[:, self.taps + self.radius] = CENTRE_LOGIT

    def forward(self, x: torch.Tensor, out: torch.Tensor, z: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """x: last-block tokens (B, T', N, D); out: the network's output (B, C, T, H, W); z: its input, clean on the
        context frames; clean: (B, T) bool, the context frames -> out with the copy blended in."""
        copy, gate = self.copy_and_gate(x, z, clean)
        if self.caught is not None and torch.is_grad_enabled():  # for method.copy_loss
            self.caught.append((copy, clean))
        has = clean.any(dim=1).to(out.dtype)[:, None, None, None, None]  # (B, 1, 1, 1, 1)
        return out + has * gate * (copy - out)

    def copy_and_gate(self, x: torch.Tensor, z: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The copy (B, C, T, H, W) of every frame's nearest context frame through its predicted kernels, and the
        gate (B, 1, T, H, W)."""
        B, C, T, H, W = z.shape
        K, R = self.taps, self.radius
        maps = rearrange(self.head(self.norm(x)), "b t (h w) (pt ph pw k) -> b k (t pt) (h ph) (w pw)",
                         h=H // self.p, pt=self.pt, ph=self.p, pw=self.p)  # (B, maps, T, H, W)
        wide = torch.promote_types(maps.dtype, torch.float32)  # the kernels at least in float32
        if self.kernel == "softmax":
            kv = torch.softmax(maps[:, :K].to(wide), dim=1).to(z.dtype)  # (B, K, T, H, W): vertical taps
            kh = torch.softmax(maps[:, K:2 * K].to(wide), dim=1).to(z.dtype)  # (B, K, T, H, W): horizontal taps
        else:
            kv, kh = (bilinear_taps(maps[:, i].to(wide), R).to(z.dtype) for i in (0, 1))  # (B, K, T, H, W) each
        gate = maps[:, -1:]  # (B, 1, T, H, W)
        if self.snap:  # the strongest tap per axis (bilinear: the nearer whole move), the gate open or shut
            kv, kh = (F.one_hot(k.argmax(dim=1), K).movedim(-1, 1).to(z.dtype) for k in (kv, kh))
            gate = (gate > 0.5).to(gate.dtype)
        ref = nearest_frames(z, nearest_context(clean))  # (B, C, T, H, W)
        # Outside the frame is its border, not zero: a shifted frame's background stays background (zeros are grey
        # in [-1, 1] pixels; with zero padding the true shift of a moving digit scores below the redraw, session 24).
        ref = F.pad(rearrange(ref, "b c t h w -> (b t) c h w"), (R, R, R, R), mode="replicate")  # (B*T, C, H+2R, W+2R)
        windows = F.unfold(ref, K)  # (B*T, C*K*K, H*W)
        windows = rearrange(windows, "(b t) (c i j) (h w) -> b c i j t h w", b=B, c=C, i=K, h=H)
        copy = einsum(windows, kv, kh, "b c i j t h w, b i t h w, b j t h w -> b c t h w")  # (B, C, T, H, W)
        return copy, gate


def bilinear_taps(raw: torch.Tensor, radius: int) -> torch.Tensor:
    """The 2R + 1 taps of a move by d = R tanh(raw / R) in (-R, R) along one axis: 1 - frac(d) on tap floor(d),
    frac(d) on the next (tap index i: a move by i - R). raw (B, T, H, W) -> (B, 2R + 1, T, H, W). Differentiable in
    d between integers (floor has no gradient): at an integer d the gradient is that of the tap above."""
    d = radius * torch.tanh(raw / radius)
    low = torch.floor(d).clamp(-radius, radius - 1)  # (B, T, H, W)
    frac = d - low
    lower = F.one_hot((low + radius).long(), 2 * radius + 1).to(raw.dtype)  # (B, T, H, W, K)
    upper = F.one_hot((low + radius + 1).long(), 2 * radius + 1).to(raw.dtype)
    taps = lower * (1 - frac)[..., None] + upper * frac[..., None]
    return rearrange(taps, "b t h w k -> b k t h w")


def nearest_context(clean: torch.Tensor) -> torch.Tensor:
    """For each frame, the index of the nearest context frame (ties: the earlier one): clean (B, T) bool -> (B, T)
    long; rows without context get 0 (their reference is switched off by the caller)."""
    T = clean.shape[1]
    f = torch.arange(T, device=clean.device)
    dist = (f[:, None] - f[None, :]).abs().float() + 0.25 * (f[None, :] > f[:, None])  # (T, S): later sources lose ties
    dist = dist[None].expand(clean.shape[0], T, T).masked_fill(~clean[:, None, :], float("inf"))  # (B, T, S)
    return dist.argmin(dim=-1)


def nearest_frames(z: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Every frame's nearest context frame: z (B, C, T, H, W), src (B, T) its index (``nearest_context``) ->
    (B, C, T, H, W)."""
    return einsum(F.one_hot(src, z.shape[2]).to(z.dtype), z, "b t s, b c s h w -> b c t h w")
