"""Motion-compensated copy: a generated frame replaced by the given frame it continues, moved.

A one-step network puts a continued object where it belongs (the bundled digits model: its centroid within ~1 px of
the true one) but redraws it there: the class survives, the handwriting does not (glyph match 0.86 against a true
continuation's 1.0; README, "Keeping the handwriting"). Ten sessions of training-side remedies did not close that gap
without blur (``eval.digits.sharpness``). A video codec's answer is motion compensation: predict a frame as an
earlier one moved, keep the prediction where it explains the frame. Here the network's frame is what is explained:

    d* = argmin_{|dy|, |dx| <= R} mean (shift(ref, d) - frame)^2      ref: the context frame the window continues
    frame' = shift(ref, d*)   if that mean <= tol^2,   else frame      (per frame, in latent space)

so an accepted frame is the given content exactly, moved by whole latent pixels to where the network drew it; a frame
the move does not explain (new content, a deformation, a turn, sub-pixel motion of a coarse latent) stays the
network's. The test is per frame, not per pixel: a frame half copied and half redrawn tears where the two meet
(measured: per-pixel windows of 3-7 px scored below the per-frame test at every tolerance). Outside the frame the
border continues (replicate padding). Per-frame codecs only see whole-pixel moves of their latents; with the
identity codec of the digits model a latent pixel is a pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def motion_copy(ref: torch.Tensor, frames: torch.Tensor, radius: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ref (B, C, H, W): the context frame; frames (B, C, T, H, W): generated frames -> (frames with every accepted
    frame replaced by ref moved by its best whole-pixel shift within ``radius``, accepted (B, T) bool). A frame is
    accepted where the moved ref's mean squared difference to it, over the pixels the moved ref covers, is at most
    ``tol`` ** 2; the pixels it does not cover keep the frame's values."""
    if radius < 1 or tol < 0:
        raise ValueError(f"motion_copy needs a radius >= 1 and a tolerance >= 0, got {radius} and {tol}")
    B, C, T, H, W = frames.shape
    x = rearrange(frames, "b c t h w -> (b t) c h w").float()
    R = radius
    pad = F.pad(rearrange(ref[:, None].expand(B, T, C, H, W), "b t c h w -> (b t) c h w").float(), (R, R, R, R))
    inside = F.pad(torch.ones(1, 1, H, W, device=frames.device), (R, R, R, R))  # 1 where ref has a pixel
    best = torch.full((B * T,), float("inf"), device=frames.device)
    moved = x.clone()
    shifts = sorted(((dy, dx) for dy in range(-R, R + 1) for dx in range(-R, R + 1)),
                    key=lambda d: d[0] ** 2 + d[1] ** 2)  # ties go to the smaller move (strict < below)
    for dy, dx in shifts:
        window = (slice(None), slice(None), slice(R - dy, R - dy + H), slice(R - dx, R - dx + W))
        known = inside[window]  # (1, 1, H, W): the pixels the moved ref covers
        # Where the move brings in what lies outside ref, the network's frame stays (a revealed border, as a
        # disocclusion): a continued border (replicate padding) smeared edge strokes inwards, copy after copy.
        shifted = torch.where(known > 0, pad[window], x)  # (B*T, C, H, W): ref moved by (dy, dx)
        cost = (shifted - x).square().sum(dim=(1, 2, 3)) / (known.sum() * C)  # (B*T,): over the covered pixels
        better = cost < best
        best = torch.where(better, cost, best)
        moved = torch.where(better[:, None, None, None], shifted, moved)
    accepted = best <= tol**2  # (B*T,)
    out = torch.where(accepted[:, None, None, None], moved, x).to(frames.dtype)
    return rearrange(out, "(b t) c h w -> b c t h w", b=B), accepted.view(B, T)
