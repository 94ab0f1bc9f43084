"""Probe: long extension that keeps only the first ``stride`` new frames of every 1-NFE window (more windows, each new
frame nearer real or recent context), on 200 held-out digit clips, null label: the pipeline's ``frames_per_window``
(full windows) against windows cut to 4 + ``stride`` frames.

    python scripts/probe_extension_stride.py --checkpoint mfvideo/assets/moving_digits --out probe_stride.json

Rows: the pipeline's windows (4 context + 4 new) keeping ``stride`` new frames each, and windows cut to 4 +
``stride`` frames. On the bundled model both probe loops gave the same figures (results/s18_stride.json).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, glyph_match, real_clips
from mfvideo.eval.report import _frame_accuracy
from mfvideo.frames import grey
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.pipeline.inputs import load_clip


def short_windows(pipe, ctx: torch.Tensor, num_new: int, stride: int, seed: int = 0) -> np.ndarray:
    """ctx (B, C, k, h, w) latents -> (B, num_new, H, W, 3) uint8 frames from windows cut to k + ``stride`` frames
    (the pipeline's ``frames_per_window`` keeps the full window instead), the reading held as the pipeline does."""
    g = torch.Generator().manual_seed(seed)
    k, out, made, reading = ctx.shape[2], [], 0, None
    while made < num_new:
        noise = pipe._noise(ctx.shape[0], k + stride, g)  # (B, C, k + stride, h, w)
        context = torch.cat([ctx, torch.zeros_like(noise[:, :, k:])], dim=2)
        mask = torch.zeros(ctx.shape[0], k + stride, dtype=torch.bool)
        mask[:, :k] = True
        if made == 0:  # the pipeline's held reading: read off the given frames once, held for every window
            reading, _ = pipe._read_given(noise, None, context, mask)
        window = pipe._sample(noise, None, ("meanflow", 1), context, mask, 0.0, reading)
        out.append(pipe.codec.decode_frames(window[:, :, k:]))
        made += stride
        ctx = window[:, :, -k:]
    return np.concatenate(out, axis=1)[:, :num_new]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="mfvideo/assets/moving_digits")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--long-frames", type=int, default=64)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    suite = DigitSuite.load()
    cfg, T = pipe.cfg.data, pipe.window
    k = T // 2
    clips, labels = real_clips(a.n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
    ctx = pipe.codec.encode_frames(load_clip(clips[:, :k], pipe.resolution), cfg.channels)
    rows = {}
    for name, stride, keep_window in [("stride 4 (the pipeline's)", 4, True), ("stride 2, full window", 2, True),
                                      ("stride 1, full window", 1, True), ("stride 2, 6-frame window", 2, False)]:
        if keep_window:  # the pipeline's frames_per_window
            kw = dict(context_frames=k, seed=0, output_type="uint8", frames_per_window=stride, include_input=False)
            short = pipe.extend(clips[:, :k], T, **kw).frames[:, k:]
            long = pipe.extend(clips[:, :k], a.long_frames, **kw).frames[:, k:]
        else:
            short = short_windows(pipe, ctx, T, stride)
            long = short_windows(pipe, ctx, a.long_frames, stride)
        last = long[:, -(T - k):]
        rows[name] = {
            "calls_per_64_frames": -(-a.long_frames // stride),
            "extension_accuracy_by_distance": np.round(_frame_accuracy(suite, short, labels), 4).tolist(),
            "extension_identity_kept": float((suite.clip_class(short) == labels).mean()),
            "long_identity_kept_last_frames": float((suite.clip_class(last) == labels).mean()),
            "long_brightness_last_frames": float(grey(last).mean() / grey(clips[:, :k]).mean()),
            "extension_glyph_match": float(glyph_match(clips[:, k - 1], short).mean()),
            "long_glyph_match_last_frames": float(glyph_match(clips[:, k - 1], last).mean()),
        }
        print(name, rows[name], flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"checkpoint": a.checkpoint, "n": a.n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
