"""Where does an extension's glyph come from? Glyph match and class kept of 8 new frames after 4 given (1 and 2
calls) with the model's class paths -- the context reader, the pooled context summary, the label -- switched off or
given at inference.

    python scripts/probe_glyph_paths.py [--checkpoint DIR] [--n 200] [--out results/s14_glyph_paths.json]
"""

import argparse
import json

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, glyph_match, real_clips
from mfvideo.pipeline import MFVideoPipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/s14_glyph_paths.json")
    a = p.parse_args()
    suite = DigitSuite.load()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    net, d = pipe.transformer, pipe.cfg.data
    clips, labels = real_clips(a.n, "test", 12, d.resolution, d.digit_size, d.speed, seed=d.seed + 4)
    reader, summary = net.class_reader, net.context_embedder
    arms = [("as trained (null label)", reader, summary, None), ("reader off", None, summary, None),
            ("reader and summary off", None, None, None), ("true label", reader, summary, labels.tolist()),
            ("true label, summary off", reader, None, labels.tolist())]
    out = {}
    for name, r, s, lab in arms:
        net.class_reader, net.context_embedder = r, s
        for steps in (1, 2):
            new = pipe.extend(clips[:, :4], num_new_frames=8, context_frames=4, steps=steps, seed=0, class_labels=lab,
                              output_type="uint8").frames[:, 4:]  # (n, 8, H, W, 3)
            g = glyph_match(clips[:, 3], new)  # (n, 8)
            kept = float((suite.clip_class(new) == labels).mean())
            out[f"{name}, {steps}-NFE"] = {"glyph_match": float(g.mean()), "identity_kept": kept,
                                           "glyph_by_distance": np.round(g.mean(0), 3).tolist()}
            print(f"{name}, {steps}-NFE: glyph match {g.mean():.3f} (distance 1: {g.mean(0)[0]:.3f}, 8: "
                  f"{g.mean(0)[-1]:.3f}), class kept {kept:.3f}", flush=True)
    net.class_reader, net.context_embedder = reader, summary
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
