"""Motion-compensated copy: a generated frame replaced by its neighbour, moved, where the move explains it.

A one-step network puts a continued object where it belongs (the bundled digits model: its ink centroid ~1.5 px from the
true one over 8 new frames) but redraws it there: the class survives, the handwriting does not (glyph match 0.86 against
a true continuation's 1.0; docs/bundled_model.md, "Keeping the handwriting"). Ten sessions of training-side remedies did
not close that gap without blur (``eval.digits.sharpness``). A video codec's answer is motion compensation: predict a
frame as an earlier one moved and keep the prediction where it explains the frame. Here the network's frame is what is
explained, frame by frame outwards from the given frames (ref: the frame's neighbour towards its nearest given frame --
that given frame, or a new frame already copied or kept):

    d* = argmin_{|dy|, |dx| <= R} mean over covered pixels (shift(ref, d) - frame)^2
    frame' = shift(ref, d*)   if that mean <= tol^2,   else frame;      ref <- frame'

so an accepted frame is the given content exactly, moved by whole latent pixels to where the network drew it; a frame
no move explains (new content, a deformation, a turn, motion finer than a latent pixel) stays the network's, and the
chain continues from it. The test is per frame, not per pixel: frames half copied and half redrawn tear where the
two meet (measured: per-pixel windows of 3-7 px scored below the per-frame test at every tolerance). What a move brings
in from outside ref stays the network's (a revealed border, as a disocclusion; a continued border, replicate
padding, smeared edge strokes inwards copy after copy), and the difference is taken over the pixels ref covers.
The test is a mean over the frame, so it asks whether the frame as a whole moved: where only a small part moves over
a still background (a static camera), no move at all explains the frame on average and the copy would hold that part
in place (a 3 x 3 blob moved by 3 px over a still random background: RMS 0.29, accepted at the default 0.4). A
worst-window test does not separate that case from the one it is for: the digits model's redraws differ from the
moved glyph by up to 0.6-0.8 RMS in their worst 4 x 4 window, the blob by 0.94 (a worst-window test at 1.0 kept
glyph match at 0.994 with one call per new frame but 0.959 with whole windows, and accepted the blob). So it is for
content that moves as a whole -- a camera pan, one object on a plain background -- and off unless a model's config
sets it (``sample.motion_copy``: the bundled digits model's 4).
A window made from noise alone (generation) has no given frame. There the copy runs outwards from the frame the
window's other frames are best explained by -- its medoid under the same distance at the best move, relative to the
two frames' contrast, summed over the others (``anchor_frames``) -- so that a broken frame, which no move of the
others explains, is never the anchor, and a frame no move of its neighbour explains still stays the network's. The
clip is then one network frame moved along the network's track (the bundled digits model, 1,000 clips: a frame read
as another digit in 15.2 % of clips -> 1.9 %, one hand through the clip, glyph consistency 0.873 -> 0.999; from the
window's first frame instead 9.1 %, the first being its weakest; the plain squared distance, which a faint frame
is near to everything in, 3.0 % and a dim anchor now and then; docs/experiments.md, session 45).
Chaining from frame to frame keeps every move within one frame's motion (copied from the context frame, the fourth new
frame of a window needs four frames' motion within R); an interpolation is copied from both keyframes inwards. With
the identity codec of the digits model a latent pixel is a pixel; with a VAE it is 8, so only coarse moves are
copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def motion_copy(frames: torch.Tensor, given: torch.Tensor, radius: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (B, C, T, H, W): a window, given (T,) bool: its given frames (context, keyframes) -> (the window with
    each accepted new frame replaced by its neighbour towards the nearest given frame (ties: the earlier) moved by its
    best whole-pixel shift within ``radius``, accepted (B, T) bool, False on given frames). New frames are taken
    nearest first, so a frame's neighbour is a given frame or an already processed new one: from a given frame the
    copy runs outwards, frame by frame (extension: forwards from the last context frame; interpolation: from both
    keyframes towards the middle). A frame is accepted where the moved neighbour's mean squared difference to it, over
    the pixels the move covers, is at most ``tol`` ** 2; pixels not covered keep its values. No given frame: no
    change."""
    if radius < 1 or tol < 0:
        raise ValueError(f"motion_copy needs a radius >= 1 and a tolerance >= 0, got {radius} and {tol}")
    T = frames.shape[2]
    given = [bool(v) for v in given]
    if len(given) != T:
        raise ValueError(f"motion_copy: {len(given)} given-frame flags for a window of {T} frames")
    accepted = torch.zeros(frames.shape[0], T, dtype=torch.bool, device=frames.device)
    anchors = [i for i in range(T) if given[i]]
    if not anchors:
        return frames, accepted
    out = list(frames.unbind(dim=2))  # T x (B, C, H, W)
    nearest = {f: min(anchors, key=lambda a: (abs(f - a), a)) for f in range(T) if not given[f]}
    for f in sorted(nearest, key=lambda f: (abs(f - nearest[f]), f)):  # nearest first
        neighbour = f - 1 if nearest[f] < f else f + 1
        out[f], accepted[:, f] = move_onto(out[neighbour], out[f], radius, tol)
    return torch.stack(out, dim=2), accepted


def anchor_frames(frames: torch.Tensor, radius: int) -> torch.Tensor:
    """frames (B, C, T, H, W), a window with no given frame -> (B,) long: per clip the frame whose best whole-pixel
    moves (within ``radius``) explain the window's other frames best: the least sum over them of ``move_onto``'s cost
    (the mean squared difference over the pixels the move covers) over the two frames' variances summed (a faint or
    blurred frame, near every frame in plain squared distance, is not preferred for it); ties: the earlier frame."""
    B, C, T, H, W = frames.shape
    R = radius
    x = frames.float()
    pad = F.pad(x, (R, R, R, R))  # (B, C, T, H + 2R, W + 2R)
    inside = F.pad(torch.ones(1, 1, 1, H, W, device=frames.device), (R, R, R, R))
    best = torch.full((B, T, T), float("inf"), device=frames.device)  # [b, i, j]: frame i moved onto frame j
    for dy in range(-R, R + 1):
        for dx in range(-R, R + 1):
            window = (..., slice(R - dy, R - dy + H), slice(R - dx, R - dx + W))
            covered = inside[window]  # (1, 1, 1, H, W)
            moved = rearrange(pad[window] * covered, "b c t h w -> b t (c h w)")
            seen = rearrange(x * covered, "b c t h w -> b t (c h w)")  # frame j where the move covers it
            # sum over covered pixels of (moved_i - x_j)^2, for every pair at once
            cost = (moved.square().sum(-1)[:, :, None] + seen.square().sum(-1)[:, None, :]
                    - 2 * torch.einsum("bip,bjp->bij", moved, seen)) / (covered.sum() * C)
            best = torch.minimum(best, cost)
    var = (x - x.mean(dim=(1, 3, 4), keepdim=True)).square().mean(dim=(1, 3, 4))  # (B, T): each frame's contrast
    relative = best / (var[:, :, None] + var[:, None, :] + 1e-8)
    relative.diagonal(dim1=1, dim2=2).zero_()
    return relative.sum(dim=2).argmin(dim=1)  # (B,): argmin takes the first of equal sums


def motion_copy_from_anchor(frames: torch.Tensor, radius: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``motion_copy`` of a window with no given frame (generation): per clip outwards from its ``anchor_frames``
    frame, kept as the network made it. frames (B, C, T, H, W) -> (the window, accepted (B, T) bool, False on the
    anchors)."""
    if radius < 1 or tol < 0:
        raise ValueError(f"motion_copy needs a radius >= 1 and a tolerance >= 0, got {radius} and {tol}")
    B, T = frames.shape[0], frames.shape[2]
    anchors = anchor_frames(frames, radius)  # (B,)
    out, accepted = frames.clone(), torch.zeros(B, T, dtype=torch.bool, device=frames.device)
    rows = torch.arange(B, device=frames.device).repeat(2)  # (2B,): every clip, after its anchor and before it
    side = torch.tensor([1, -1], device=frames.device).repeat_interleave(B)  # (2B,)
    for d in range(1, T):  # outwards, one frame further on each side per step: every clip's frames at distance d
        f = anchors.repeat(2) + side * d
        inside = (f >= 0) & (f < T)
        if not bool(inside.any()):  # (every anchor nearer the middle than d)
            continue
        r, f, s = rows[inside], f[inside], side[inside]
        out[r, :, f], accepted[r, f] = move_onto(out[r, :, f - s], out[r, :, f], radius, tol)  # (n, C, H, W)
    return out, accepted


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
