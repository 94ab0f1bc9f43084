"""Probe: does a model's field keep one glyph through a generated clip, and does it with more training? Glyph
consistency (every frame against the clip's first; real clips 1.0), frame identity, class accuracy and speckle of
200 generated clips (20 per digit) per checkpoint and sampler: MeanFlow k-NFE and Euler steps of u(z, t, t), whose
many small steps show the field itself rather than the one-step map.

    python scripts/probe_field_coherence.py --checkpoint x5000=DIR x8000=DIR bundled= --out results/s18_field_coherence.json
"""

import argparse
import json

import numpy as np

from mfvideo.eval.digits import DigitSuite, glyph_consistency, speckle
from mfvideo.pipeline import MFVideoPipeline

SAMPLERS = [("meanflow", 1), ("meanflow", 2), ("meanflow", 4), ("euler", 10), ("euler", 50)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", required=True, help="LABEL=DIR (an empty DIR: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    suite, rows = DigitSuite.load(), {}
    labels = np.arange(a.n) % 10
    for arg in a.checkpoint:
        name, _, path = arg.partition("=")
        pipe = MFVideoPipeline.from_pretrained(path or None)
        pipe.cfg.sample.motion_copy = 0  # the network's own frames (the bundled model copies by default)
        for sampler, steps in SAMPLERS:
            clips = pipe.generate(class_labels=labels.tolist(), seed=0, steps=steps, sampler=sampler,
                                  output_type="uint8").frames
            m = suite.clip_metrics(clips, labels)
            row = {"glyph_consistency": glyph_consistency(clips), "identity": float(m["identity"]),
                   "class_accuracy": float(m["class_accuracy"]), "speckle": speckle(clips)}
            rows[f"{name}, {sampler} {steps}"] = row
            print(f"| {name} | {sampler} {steps} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"n": a.n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
