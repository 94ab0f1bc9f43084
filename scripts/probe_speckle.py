"""Speckle (isolated ink pixels per frame), background and ink level of 200 generated clips per model (1 and 2 calls).

    python scripts/probe_speckle.py [NAME=DIR ...] [--out results/s10_speckle.json]   (no DIR: the bundled model)
"""

import argparse
import json

import numpy as np
import torch

from mfvideo.eval.digits import real_clips, speckle
from mfvideo.pipeline import MFVideoPipeline

INK = 60  # of 255: the speckle's ink level


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["bundled="], help="NAME=DIR")
    p.add_argument("--out", default="results/s10_speckle.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    n = 200
    labels = np.arange(n) % 10
    real, _ = real_clips(n, "test", 8, 16, 8, 1.0, seed=1)
    out = {"real held-out clips": {"speckle": speckle(real)}}
    for arg in a.models:
        name, _, path = arg.partition("=")
        pipe = MFVideoPipeline.from_pretrained(path or None)
        pipe.cfg.sample.motion_copy = 0  # the network's own frames (the bundled model copies by default)
        for steps in (1, 2):
            frames = pipe.generate(class_labels=labels.tolist(), seed=0, steps=steps, output_type="uint8").frames
            g = frames[..., 0].astype(float)
            out[f"{name}, {steps}-NFE"] = {"speckle": speckle(frames), "background_mean": float(g[g < INK].mean()),
                                           "ink_mean": float(g[g >= INK].mean())}
            print(name, steps, out[f"{name}, {steps}-NFE"], flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
