"""Probe: classifier-free guidance on the context at inference, u + w (u(context) - u(nothing)), on a model's 1-NFE
extension of 200 held-out digit clips (2 network calls per window; not a library feature). Prints and writes JSON.

    python scripts/probe_context_guidance.py --checkpoint mfvideo/assets/moving_digits --w 0 0.25 1 --out probe.json
"""

from __future__ import annotations

import argparse
import json

import torch

from mfvideo.eval.digits import DigitSuite, real_clips
from mfvideo.eval.report import _extension_scores
from mfvideo.pipeline import MFVideoPipeline


def context_guided(forward, w: float):
    """Wrap a transformer's forward: the context frames (t = r below the row's highest time) are noised to the new
    frames' (t, r) for the unconditional call, which also drops the label."""

    def guided(z, t, r, y=None):
        u = forward(z, t, r, y=y)
        if w == 0 or t.ndim != 2:
            return u
        ctx = (t == r) & (t < t.amax(dim=1, keepdim=True))  # (B, T)
        t_new = t.amax(dim=1, keepdim=True)  # (B, 1)
        r_new = torch.where(ctx, torch.ones_like(r), r).amin(dim=1, keepdim=True)  # (B, 1)
        e = torch.randn(z.shape, generator=torch.Generator().manual_seed(1)).to(z)
        tb = t_new[:, None, :, None, None]
        z_free = torch.where(ctx[:, None, :, None, None], (1 - tb) * z + tb * e, z)
        u_free = forward(z_free, t_new.expand_as(t), torch.where(ctx, r_new.expand_as(r), r), y=None)
        return u + w * (u - u_free)

    return guided


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="mfvideo/assets/moving_digits")
    p.add_argument("--w", type=float, nargs="+", default=[0.0, 0.25, 1.0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    suite = DigitSuite.load()
    net = pipe.transformer
    plain = type(net).forward.__get__(net)
    cfg, T = pipe.cfg.data, pipe.window
    k = T // 2
    clips, labels = real_clips(a.n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
    rows = {}
    for w in a.w:
        net.forward = context_guided(plain, w)
        ext = pipe.extend(clips[:, :k], num_new_frames=T, context_frames=k, steps=1, seed=0, output_type="uint8").frames
        rows[w] = _extension_scores(suite, ext[:, k:], labels)
        print(f"w = {w}: identity kept {rows[w]['extension_identity_kept']}, by distance "
              + " ".join(f"{v:.2f}" for v in rows[w]["extension_accuracy_by_distance"]), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"checkpoint": a.checkpoint, "n": a.n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
