"""Motion-compensated copy: a generated frame replaced by the frame before it, moved, where the move explains it.

A one-step network puts a continued object where it belongs (the bundled digits model: its ink centroid ~1.5 px from
the true one over 8 new frames) but redraws it there: the class survives, the handwriting does not (glyph match 0.86
against a true continuation's 1.0; README, "Keeping the handwriting"). Ten sessions of training-side remedies did not
close that gap without blur (``eval.digits.sharpness``). A video codec's answer is motion compensation: predict a
frame as an earlier one moved and keep the prediction where it explains the frame. Here the network's frame is what
is explained, frame by frame along the new frames (ref: the last context frame, then each new frame as it comes out):

    d* = argmin_{|dy|, |dx| <= R} mean over covered pixels (shift(ref, d) - frame)^2
    frame' = shift(ref, d*)   if that mean <= tol^2,   else frame;      ref <- frame'

so an accepted frame is the given content exactly, moved by whole latent pixels to where the network drew it; a frame
no move explains (new content, a deformation, a turn, motion finer than a latent pixel) stays the network's, and the
chain continues from it. The test is per frame, not per pixel: frames half copied and half redrawn tear where the
two meet (measured: per-pixel windows of 3-7 px scored below the per-frame test at every tolerance). What a move brings
in from outside ref stays the network's (a revealed border, as a disocclusion; a continued border, replicate
padding, smeared edge strokes inwards copy after copy), and the difference is taken over the pixels ref covers.
Chaining from frame to frame keeps every move within one frame's motion (copied from the context frame, the fourth new
frame of a window needs four frames' motion within R). With the identity codec of the digits model a latent pixel is
a pixel; with a VAE it is 8, so only coarse moves are copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def motion_copy(ref: torch.Tensor, frames: torch.Tensor, radius: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ref (B, C, H, W): the context frame the new frames continue; frames (B, C, T, H, W): generated frames -> (the
    frames with each accepted frame replaced by the frame before it (ref for the first) moved by its best whole-pixel
    shift within ``radius``, accepted (B, T) bool). A frame is accepted where that moved frame's mean squared
    difference to it, over the pixels the move covers, is at most ``tol`` ** 2; pixels not covered keep its values."""
    if radius < 1 or tol < 0:
        raise ValueError(f"motion_copy needs a radius >= 1 and a tolerance >= 0, got {radius} and {tol}")
    out, accepted = [], []
    for j in range(frames.shape[2]):
        frame, ok = move_onto(ref, frames[:, :, j], radius, tol)  # (B, C, H, W), (B,)
        out.append(frame)
        accepted.append(ok)
        ref = frame
    return torch.stack(out, dim=2), torch.stack(accepted, dim=1)


def move_onto(ref: torch.Tensor, frame: torch.Tensor, radius: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``motion_copy``: ref, frame (B, C, H, W) -> (ref moved onto frame where accepted, else frame;
    accepted (B,) bool)."""
    B, C, H, W = frame.shape
    R = radius
    x = frame.float()
    pad = F.pad(ref.float(), (R, R, R, R))  # (B, C, H + 2R, W + 2R)
    inside = F.pad(torch.ones(1, 1, H, W, device=frame.device), (R, R, R, R))  # 1 where ref has a pixel
    best = torch.full((B,), float("inf"), device=frame.device)
    moved = x
    shifts = sorted(((dy, dx) for dy in range(-R, R + 1) for dx in range(-R, R + 1)),
                    key=lambda d: d[0] ** 2 + d[1] ** 2)  # ties go to the smaller move (strict < below)
    for dy, dx in shifts:
        window = (slice(None), slice(None), slice(R - dy, R - dy + H), slice(R - dx, R - dx + W))
        covered = inside[window]  # (1, 1, H, W): the pixels the moved ref covers
        shifted = torch.where(covered > 0, pad[window], x)  # (B, C, H, W): ref moved by (dy, dx), the rest frame's
        cost = (shifted - x).square().sum(dim=(1, 2, 3)) / (covered.sum() * C)  # (B,): mean over covered pixels
        better = cost < best
        best = torch.where(better, cost, best)
        moved = torch.where(better[:, None, None, None], shifted, moved)
    ok = best <= tol**2
    return torch.where(ok[:, None, None, None], moved, x).to(frame.dtype), ok
