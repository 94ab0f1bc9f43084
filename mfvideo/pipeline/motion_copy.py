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
padding, smeared edge strokes inwards copy after copy), and the difference is taken over the pixels ref covers;
along a chain of windows ref is the chain's canvas, which remembers what earlier moves took out of the frame
(``MotionCanvas``, below), so only what the chain never showed is the network's.
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
two frames' contrast, summed over the others, of the frames not faded below 0.7 of the window's highest contrast
(``anchor_frames``) -- so that a broken frame, which no move of the others explains, is never the anchor, nor a
faded one, and a frame no move of its neighbour explains still stays the network's. The clip is then one network
frame moved along the network's track (the bundled digits model, 1,000 clips: a frame read as another digit in
15.2 % of clips -> 1.9 %, one hand through the clip, glyph consistency 0.873 -> 0.999; from the window's first frame
instead 9.1 %, the first being its weakest; the plain squared distance, which a faint frame is near to everything
in, 3.0 % and a dim anchor now and then; docs/experiments.md, session 45; a blend of the window's frames is a
medoid relative to contrast too: faint clips 4.1 % -> 1.7 % with the floor, session 47).
Across windows (an extension, a generated clip past its first window) the chain is one ``MotionCanvas``: the copy's
memory of everything the chain has shown, in the content's coordinates, so that what a move takes out of the frame
comes back as it was and only what the chain never showed is the network's. Frame to frame alone, the chain forgot
what left and took the network's redraw where it came back, stray pixels included, and copied them on for ever (the
bundled model's 64 generated frames: isolated specks 0.005 per frame in the first 8, 0.10 in the last 8; with the
canvas 0.014, and the hand held to the end, glyph match to frame 0 0.976 -> 0.996; docs/experiments.md, session 46).
Chaining from frame to frame keeps every move within one frame's motion (copied from the context frame, the fourth new
frame of a window needs four frames' motion within R); an interpolation is copied from both keyframes inwards. With
the identity codec of the digits model a latent pixel is a pixel; with a VAE it is 8, so only coarse moves are
copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

# A generated window's anchor has at least this share of its most contrasted frame's contrast. Its copy is the clip:
# a faded frame as the anchor is a faint ghost of the digit in every frame. The bundled digits model, 3 x 1,000 clips:
# clips whose peak ink is below 0.7 4.1 % -> 1.7 % (below 0.6 1.7 % -> 0.4 %), FD 58.2 -> 58.6, misread frames 2.1 ->
# 1.8 %; at 0.8 1.1 %, FD 61.0 (less variety); docs/experiments.md, session 47.
ANCHOR_CONTRAST_FLOOR = 0.7


def motion_copy(frames: torch.Tensor, given: torch.Tensor, radius: int, tol: float, chains: dict | None = None,
                start: int = 0, keep=None) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (B, C, T, H, W): a window, given (T,) bool: its given frames (context, keyframes) -> (the window with
    each accepted new frame replaced by its neighbour towards the nearest given frame (ties: the earlier) moved by its
    best whole-pixel shift within ``radius``, accepted (B, T) bool, False on given frames). New frames are taken
    nearest first, so a frame's neighbour is a given frame or an already processed new one: from a given frame the
    copy runs outwards, frame by frame (extension: forwards from the last context frame; interpolation: from both
    keyframes towards the middle). A frame is accepted where the moved neighbour's mean squared difference to it, over
    the pixels the move covers, is at most ``tol`` ** 2; pixels not covered keep its values. No given frame: no
    change.

    ``chains``: the chains of a clip filled window by window (``MFVideoPipeline.condition``), a dict of
    ``MotionCanvas`` keyed by (a frame, the direction +1 / -1 the chain ran in to it), the frames counted in the clip
    (the window starts at its frame ``start``), updated in place: a chain that a window goes on with keeps its canvas,
    what left the frame included, as ``extend``'s windows do; one that starts here starts from its given frame. Only
    the frames the caller keeps (``keep``, clip indices; None: all) are recorded, each as the canvas at that frame (a
    window also makes frames that a later one makes again), and a frame's record is dropped once the frame after it
    on its chain is kept. Without ``chains`` each step is ``move_onto`` from the neighbour (a canvas with
    ``margin=0``, bit for bit)."""
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
    rows, live = torch.arange(frames.shape[0], device=frames.device), {}  # live: (frame, direction) -> its chain here
    keep = None if keep is None else {int(i) for i in keep}
    nearest = {f: min(anchors, key=lambda a: (abs(f - a), a)) for f in range(T) if not given[f]}
    for f in sorted(nearest, key=lambda f: (abs(f - nearest[f]), f)):  # nearest first
        d = 1 if nearest[f] < f else -1  # the direction the chain runs in; its last frame is the neighbour f - d
        if chains is None:
            out[f], accepted[:, f] = move_onto(out[f - d], out[f], radius, tol)
            continue
        canvas = live.pop((f - d, d), None)  # the chain as this window ran it, else as a kept frame left it
        if canvas is None:
            kept = chains.get((start + f - d, d))
            canvas = MotionCanvas(out[f - d]) if kept is None else kept.select(rows)
        out[f], accepted[:, f] = canvas.step(out[f], radius, tol)
        live[f, d] = canvas
        if keep is None or start + f in keep:
            chains[start + f, d] = canvas.select(rows)
            chains.pop((start + f - d, d), None)  # no later window goes on from the frame before: it is this one
    return torch.stack(out, dim=2), accepted


def anchor_frames(frames: torch.Tensor, radius: int, contrast_floor: float = ANCHOR_CONTRAST_FLOOR) -> torch.Tensor:
    """frames (B, C, T, H, W), a window with no given frame -> (B,) long: per clip, of the frames whose contrast (their
    pixels' variance) is at least ``contrast_floor`` times the window's highest, the one whose best whole-pixel moves
    (within ``radius``) explain the window's other frames best: the least sum over them of ``move_onto``'s cost (the
    mean squared difference over the pixels the move covers) over the two frames' variances summed; ties: the earlier
    frame. A faint or blurred frame, near every frame in plain squared distance and still a medoid relative to
    contrast (a blend of the others is nearer each of them than they are to one another), is never the anchor."""
    B, C, T, H, W = frames.shape
    R = radius
    x = frames.float()
    pad = F.pad(x, (R, R, R, R))  # (B, C, T, H + 2R, W + 2R)
    inside = F.pad(torch.ones(1, 1, 1, H, W, device=frames.device), (R, R, R, R))
    best = torch.full((B, T, T), float("inf"), device=frames.device)  # [b, i, j]: frame i moved onto frame j
    for dy in range(-R, R + 1):  # every dx at once: the rows for dy, unfolded over the 2R + 1 column offsets
        rows = slice(R - dy, R - dy + H)
        covered = inside[..., rows, :].unfold(-1, W, 1)  # (1, 1, 1, H, 2R + 1, W): [..., k, :] moved by dx = R - k
        moved = pad[..., rows, :].unfold(-1, W, 1) * covered  # (B, C, T, H, 2R + 1, W)
        seen = x[..., None, :] * covered  # (B, C, T, H, 2R + 1, W): frame j where the move covers it
        # sum over covered pixels of (moved_i - x_j)^2, for every pair and every dx at once
        sq_moved, sq_seen = moved.square().sum(dim=(1, 3, 5)), seen.square().sum(dim=(1, 3, 5))  # (B, T, 2R + 1)
        cross = torch.einsum("bcihkw,bcjhkw->bkij", moved, seen)  # (B, 2R + 1, T, T)
        count = covered.sum(dim=(0, 1, 2, 3, 5)) * C  # (2R + 1,)
        cost = (sq_moved.transpose(1, 2)[..., None] + sq_seen.transpose(1, 2)[:, :, None] - 2 * cross)
        best = torch.minimum(best, (cost / count[None, :, None, None]).amin(dim=1))
    var = (x - x.mean(dim=(1, 3, 4), keepdim=True)).square().mean(dim=(1, 3, 4))  # (B, T): each frame's contrast
    relative = best / (var[:, :, None] + var[:, None, :] + 1e-8)
    relative.diagonal(dim1=1, dim2=2).zero_()
    faded = var < contrast_floor * var.amax(dim=1, keepdim=True)  # (B, T): never an anchor
    return relative.sum(dim=2).masked_fill(faded, float("inf")).argmin(dim=1)  # (B,): the first of equal sums


def motion_copy_from_anchor(frames: torch.Tensor, radius: int,
                            tol: float) -> tuple[torch.Tensor, torch.Tensor, "MotionCanvas"]:
    """``motion_copy`` of a window with no given frame (generation): per clip outwards from its ``anchor_frames``
    frame, kept as the network made it, each side a ``MotionCanvas`` chain. frames (B, C, T, H, W)
    -> (the window, accepted (B, T) bool, False on the anchors; the forward chains' canvas, at each window's last
    frame, for the windows that continue it)."""
    if radius < 1 or tol < 0:
        raise ValueError(f"motion_copy needs a radius >= 1 and a tolerance >= 0, got {radius} and {tol}")
    B, T = frames.shape[0], frames.shape[2]
    anchors = anchor_frames(frames, radius)  # (B,)
    out, accepted = frames.clone(), torch.zeros(B, T, dtype=torch.bool, device=frames.device)
    clip = torch.arange(B, device=frames.device).repeat(2)  # (2B,): every clip, after its anchor and before it
    side = torch.tensor([1, -1], device=frames.device).repeat_interleave(B)  # (2B,)
    canvas = MotionCanvas(out[clip, :, anchors.repeat(2)])  # 2B chains, each from its clip's anchor
    for d in range(1, T):  # outwards, one frame further on each side per step: every clip's frames at distance d
        f = anchors.repeat(2) + side * d
        chains = ((f >= 0) & (f < T)).nonzero().squeeze(1)  # (n,): the chains that reach a frame at distance d
        if chains.numel() == 0:  # (every anchor nearer the middle than d)
            continue
        r, f = clip[chains], f[chains]
        out[r, :, f], accepted[r, f] = canvas.step(out[r, :, f], radius, tol, rows=chains)  # (n, C, H, W)
    return out, accepted, canvas.select(torch.arange(B, device=frames.device))


def move_onto(ref: torch.Tensor, frame: torch.Tensor, radius: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``motion_copy``: ref, frame (B, C, H, W) -> (ref moved onto frame where accepted, else frame;
    accepted (B,) bool)."""
    R = radius
    B, _, H, W = frame.shape
    region = F.pad(ref.float(), (R, R, R, R))  # (B, C, H + 2R, W + 2R)
    seen = F.pad(torch.ones(1, 1, H, W, device=frame.device), (R, R, R, R)).expand(B, 1, -1, -1)  # 1: ref has a pixel
    out, ok, _ = _best_move(region, seen, frame, R, tol)
    return out, ok


def _best_move(region: torch.Tensor, seen: torch.Tensor, frame: torch.Tensor, radius: int,
               tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """region (B, C, H + 2R, W + 2R): what the copy knows around the frame's place, centred; seen (B, 1, H + 2R,
    W + 2R): 1 where it knows a pixel; frame (B, C, H, W) -> (the region's best whole-pixel move onto frame, frame's
    values where the region knows none, where its mean squared difference over the known pixels is at most tol ** 2,
    else frame; accepted (B,) bool; the move (B, 2) long, (dy, dx): the content moved down / right)."""
    B, C, H, W = frame.shape
    R = radius
    x = frame.float()
    shifts = sorted(((dy, dx) for dy in range(-R, R + 1) for dx in range(-R, R + 1)),
                    key=lambda d: d[0] ** 2 + d[1] ** 2)  # ties go to the smaller move (argmin takes the first)
    column = {d: i for i, d in enumerate(shifts)}
    cost = torch.empty(B, len(shifts), device=frame.device)  # (B, moves): mean squared difference over covered pixels
    for dy in range(-R, R + 1):  # every dx at once: the region's rows for dy, unfolded over the 2R + 1 column offsets
        rows = slice(R - dy, R - dy + H)
        moved = region[:, :, rows].unfold(3, W, 1)  # (B, C, H, 2R + 1, W): [..., k, :] the region moved by dx = R - k
        covered = seen[:, :, rows].unfold(3, W, 1)  # (B, 1, H, 2R + 1, W): the pixels it covers
        err = (covered * (moved - x[:, :, :, None]).square()).sum(dim=(1, 2, 4))  # (B, 2R + 1)
        per_dx = err / (covered.sum(dim=(1, 2, 4)) * C)  # (B, 2R + 1)
        cost[:, [column[dy, R - k] for k in range(2 * R + 1)]] = per_dx
    best, which = cost.min(dim=1)  # (B,), (B,)
    move = torch.tensor(shifts, device=frame.device)[which]  # (B, 2): (dy, dx)
    corner = R - move  # (B, 2): the best move's window in the region
    moved, covered = _crop(region, corner, H, W), _crop(seen, corner, H, W)  # (B, C, H, W), (B, 1, H, W)
    ok = best <= tol**2
    out = torch.where(ok[:, None, None, None] & (covered > 0), moved, x)
    return out.to(frame.dtype), ok, move


def _crop(t: torch.Tensor, corner: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """t (n, c, Ht, Wt), top-left corners (n, 2) long -> the h x w block at each corner (n, c, h, w); 0 outside t."""
    ys, xs = _grid(corner, h, w)  # (n, h), (n, w)
    Ht, Wt = t.shape[-2:]
    inside = ((ys >= 0) & (ys < Ht))[:, :, None] & ((xs >= 0) & (xs < Wt))[:, None, :]  # (n, h, w)
    flat = ys.clamp(0, Ht - 1)[:, :, None] * Wt + xs.clamp(0, Wt - 1)[:, None, :]  # (n, h, w): index in Ht * Wt
    src = t.flatten(2)  # (n, c, Ht * Wt)
    vals = src.gather(2, flat.flatten(1)[:, None].expand(-1, src.shape[1], -1))  # (n, c, h * w)
    return vals.view(-1, src.shape[1], h, w) * inside[:, None]


def _grid(corner: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (n, h), (n, w) of an h x w block at each top-left corner (n, 2)."""
    ys = corner[:, :1] + torch.arange(h, device=corner.device)[None]
    xs = corner[:, 1:] + torch.arange(w, device=corner.device)[None]
    return ys, xs


class MotionCanvas:
    """The copy's memory along a chain of frames: everything the chain has shown, in the coordinates of the content
    it moves (a codec's long-term reference, a sprite). ``move_onto`` forgets what a move takes out of the frame, and
    fills what it brings in with the network's pixels; a chain over many windows therefore loses a glyph's part that
    crossed the border and, where it comes back, takes the network's redraw of it, whose stray pixels (drawn where the
    copied content has none) are copied on for ever (the bundled digits model, 64 generated frames: isolated specks
    0.005 per frame in the first 8, 0.10 in the last 8). The canvas keeps what left the frame and what was seen
    before, so a move brings back the content as it was shown; only pixels the chain never showed are the network's.

    ``step`` is ``move_onto`` with the canvas around the frame's place as the reference (the move's cost taken over
    every pixel the canvas knows there); with nothing remembered beyond the last frame it is ``move_onto`` exactly
    (``margin=0``). A frame no move explains starts the clip's canvas afresh from it. The canvas spans the frame plus
    ``margin`` pixels on every side (default: the frame's height and width), and is recentred, keeping what still fits,
    when the frame's place comes within the move radius of its edge.

    frame (B, C, H, W): the chain's first frame (a given frame, or a generated window's anchor)."""

    def __init__(self, frame: torch.Tensor, margin: int | None = None):
        B, C, H, W = frame.shape
        self.H, self.W = H, W
        self.mh, self.mw = (H, W) if margin is None else (margin, margin)
        self.pixels = torch.zeros(B, C, H + 2 * self.mh, W + 2 * self.mw, device=frame.device)  # (B, C, Hc, Wc)
        self.known = torch.zeros(B, 1, H + 2 * self.mh, W + 2 * self.mw, device=frame.device)  # (B, 1, Hc, Wc): 0 / 1
        self.pos = torch.tensor([self.mh, self.mw], device=frame.device).repeat(B, 1)  # (B, 2): the frame's top left
        self._write(torch.arange(B, device=frame.device), frame.float())

    def select(self, rows: torch.Tensor) -> "MotionCanvas":
        """The canvases of clips ``rows`` (long), as a new canvas."""
        new = object.__new__(MotionCanvas)
        new.H, new.W, new.mh, new.mw = self.H, self.W, self.mh, self.mw
        new.pixels, new.known, new.pos = self.pixels[rows].clone(), self.known[rows].clone(), self.pos[rows].clone()
        return new

    def view(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """What the canvases of clips ``rows`` (default: all) show at their places: the chains' last frames (n, C, H,
        W)."""
        rows = torch.arange(self.pos.shape[0], device=self.pos.device) if rows is None else rows
        return _crop(self.pixels[rows], self.pos[rows], self.H, self.W)

    def step(self, frame: torch.Tensor, radius: int, tol: float,
             rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The chain's next frame (n, C, H, W) of clips ``rows`` (default: all) -> (the canvas around the last frame's
        place moved onto it where accepted, its pixels where the canvas knows them, else frame; accepted (n,) bool).
        The canvas follows: an accepted frame's place moves with the content, and what it showed for the first time
        is remembered; a rejected frame starts its clip's canvas afresh."""
        if radius < 1 or tol < 0:
            raise ValueError(f"motion_copy needs a radius >= 1 and a tolerance >= 0, got {radius} and {tol}")
        R = radius
        rows = torch.arange(self.pos.shape[0], device=frame.device) if rows is None else rows
        corner = self.pos[rows] - R  # (n, 2)
        region = _crop(self.pixels[rows], corner, self.H + 2 * R, self.W + 2 * R)  # (n, C, H + 2R, W + 2R)
        seen = _crop(self.known[rows], corner, self.H + 2 * R, self.W + 2 * R)  # (n, 1, H + 2R, W + 2R)
        out, ok, move = _best_move(region, seen, frame, R, tol)
        # accepted: the frame shows the canvas at its place moved against the content; rejected: a fresh canvas
        fresh = rows[~ok]
        self.known[fresh] = 0
        self.pos[fresh] = torch.tensor([self.mh, self.mw], device=frame.device)
        self.pos[rows[ok]] -= move[ok]
        self._recentre(rows, R)
        self._write(rows, out.float())
        return out, ok

    def _write(self, rows: torch.Tensor, frame: torch.Tensor) -> None:
        """Put frame (n, C, H, W) at the places of clips ``rows``: known from now on."""
        ys, xs = _grid(self.pos[rows], self.H, self.W)
        pixels = rearrange(self.pixels, "b c h w -> b h w c")  # (a view: the assignment below writes the canvas)
        pixels[rows[:, None, None], ys[:, :, None], xs[:, None, :]] = rearrange(frame, "n c h w -> n h w c")
        self.known[rows[:, None, None], 0, ys[:, :, None], xs[:, None, :]] = 1.0

    def _recentre(self, rows: torch.Tensor, radius: int) -> None:
        """Clips whose frame place lies within ``radius`` of the canvas edge, or beyond it: the canvas moved to centre
        it (what falls off is forgotten)."""
        Hc, Wc = self.pixels.shape[-2:]
        y, x = self.pos[rows, 0], self.pos[rows, 1]
        near = (y < radius) | (x < radius) | (y + self.H + radius > Hc) | (x + self.W + radius > Wc)
        if not bool(near.any()):
            return
        r = rows[near]
        corner = self.pos[r] - torch.tensor([self.mh, self.mw], device=self.pos.device)  # (m, 2)
        self.pixels[r] = _crop(self.pixels[r], corner, Hc, Wc)
        self.known[r] = _crop(self.known[r], corner, Hc, Wc)
        self.pos[r] = torch.tensor([self.mh, self.mw], device=self.pos.device)
