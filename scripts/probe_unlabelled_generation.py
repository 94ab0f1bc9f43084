"""Probe: clips asked for without a label. ``generate()`` on a class-conditional model draws a class per clip (the
default since session 27) or, with ``class_labels=-1``, samples the model's null-label branch; both against 200
held-out real clips (the generation suite: FD, frame identity, speckle, sharpness, glyph consistency; class accuracy
against the drawn classes), with the classes drawn counted.

    python scripts/probe_unlabelled_generation.py [--checkpoint DIR] [--n 200] [--out results/s27_unlabelled_generation.json]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from mfvideo.eval.digits import DigitSuite, real_clips
from mfvideo.pipeline import MFVideoPipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/s27_unlabelled_generation.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    pipe.cfg.sample.motion_copy = 0  # the network's own frames (the bundled model copies by default)
    d = pipe.cfg.data
    real, _ = real_clips(a.n, "test", d.num_frames, d.resolution, d.digit_size, d.speed, seed=d.seed + 5)
    rows = {}
    for name, labels in (("a class drawn per clip (default)", None), ("null label (class_labels=-1)", -1)):
        out = pipe.generate(num_clips=a.n, class_labels=labels, seed=0, output_type="uint8")
        row = {k: round(float(v), 4) for k, v in suite.clip_metrics(out.frames, out.class_labels, real).items()}
        read = suite.clip_class(out.frames)
        row["classes read"] = np.bincount(read, minlength=pipe.cfg.model.num_classes).tolist()
        rows[name] = row
        print(name, row, flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
