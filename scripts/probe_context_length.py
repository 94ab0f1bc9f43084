"""Probe: extension from 1 to 6 given frames (1: image to video). n held-out clips, null label, 8 new frames, whole
windows and one new frame per window; per-distance class accuracy, speckle, sharpness (over the true continuation's)
and glyph match (against the last given frame).

    python scripts/probe_context_length.py [--checkpoint DIR] [--n 200] [--out results/s30_context_length.json]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from mfvideo.eval.digits import DigitSuite, edge_energy, glyph_match, real_clips, speckle
from mfvideo.pipeline import MFVideoPipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--given", type=int, nargs="+", default=[1, 2, 4, 6])
    p.add_argument("--new", type=int, default=8)
    p.add_argument("--out", default="results/s30_context_length.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    d = pipe.cfg.data
    clips, labels = real_clips(a.n, "test", max(a.given) + a.new, d.resolution, d.digit_size, d.speed, seed=d.seed + 2)
    rows = {}
    for k in a.given:
        for keep in (None, 1):
            given, true = clips[:, :k], clips[:, k : k + a.new]
            new = pipe.extend(given, num_new_frames=a.new, context_frames=k, seed=0, frames_per_window=keep,
                              output_type="uint8").frames[:, k:]
            preds, _ = suite.predict(new)
            acc = (preds == labels[:, None]).mean(0)
            name = f"{k} given, " + ("whole windows" if keep is None else "one new frame per window")
            rows[name] = {"accuracy_by_distance": np.round(acc, 3).tolist(), "accuracy": round(float(acc.mean()), 4),
                          "speckle": round(float(speckle(new)), 4),
                          "sharpness": round(float(edge_energy(new).mean() / edge_energy(true).mean()), 4),
                          "glyph_match": round(float(glyph_match(given[:, -1], new).mean()), 4)}
            print(name, rows[name], flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
