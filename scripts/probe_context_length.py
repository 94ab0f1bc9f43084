"""Probe: extension from fewer given frames than the default context (1: image to video). n held-out clips, null
label, 24 new frames, whole windows and one new frame per window; the context held at the given frames
(``context_frames=k``) against the default, which grows from the given frames to half the window with the frames
made (session 30). Per 8-frame block class accuracy; speckle; centroid jerk and speed over the whole clip (real
clips: 0.51 and ~1 px per frame); glyph match against the last given frame.

    python scripts/probe_context_length.py [--checkpoint DIR] [--n 200] [--out results/s30_context_length.json]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from mfvideo.eval.digits import DigitSuite, centroids, glyph_match, real_clips, speckle
from mfvideo.pipeline import MFVideoPipeline


def motion(clips) -> dict:
    c = centroids(clips)  # (N, T, 2)
    return {"jerk": round(float(np.abs(np.diff(c, n=2, axis=1)).mean()), 4),
            "speed": round(float(np.linalg.norm(np.diff(c, axis=1), axis=-1).mean()), 4)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--given", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--new", type=int, default=24)
    p.add_argument("--out", default="results/s30_context_length.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    d = pipe.cfg.data
    clips, labels = real_clips(a.n, "test", max(a.given) + a.new, d.resolution, d.digit_size, d.speed, seed=d.seed + 2)
    rows = {"real clips": motion(clips)}
    default = pipe._pixel_frames(pipe._context_latents(None))
    for k in a.given:
        arms = {"context held at the given frames": {"context_frames": k}}
        if k < default:
            arms[f"default context, growing to {default}"] = {}
        for arm, kw in arms.items():
            for keep in (None, 1):
                out = pipe.extend(clips[:, :k], num_new_frames=a.new, seed=0, frames_per_window=keep,
                                  output_type="uint8", **kw).frames
                new = out[:, k:]
                preds, _ = suite.predict(new)
                acc = (preds == labels[:, None]).mean(0)
                name = f"{k} given, {arm}, " + ("whole windows" if keep is None else "one new frame per window")
                rows[name] = {"accuracy_by_block": [round(float(acc[i : i + 8].mean()), 3) for i in range(0, a.new, 8)],
                              "speckle": round(float(speckle(new)), 4), **motion(out),
                              "glyph_match": round(float(glyph_match(clips[:, k - 1], new).mean()), 4)}
                print(name, rows[name], flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
