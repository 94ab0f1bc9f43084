"""A sheet of the 1-NFE extension jump (4 given frames, 4 new ones in one call, null label) of several models on the
same held-out clips and noise, for looking at: per clip the true clip, then each model's jump.

    python scripts/probe_sheet.py [CHECKPOINT ...] [--n 8] [--axis] [--scale 4] --out results/s24_sheet.png

No checkpoint: the bundled model alone; ``bundled`` names it among others; ``DIR@snap``: that model with its copy
path snapped (each pixel's taps to one whole move, the gate to 0 or 1).
"""

import argparse

import numpy as np
import torch
from PIL import Image

from mfvideo.eval.digits import real_clips
from mfvideo.io import grid
from mfvideo.pipeline import MFVideoPipeline

from probe_regression import GIVEN, NEW, one_call


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", default=["bundled"])
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--axis", action="store_true", help="clips moving one pixel per frame along an axis")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    pipes = []
    for c in a.checkpoints:  # DIR@snap: a copy path's taps and gate snapped (scripts/probe_regression.py --snap)
        path = c.removesuffix("@snap")
        pipes.append(MFVideoPipeline.from_pretrained(None if path == "bundled" else path))
        if c.endswith("@snap"):
            pipes[-1].transformer.copier.snap = True
    d = pipes[0].cfg.data
    angle = (lambda i: (i % 4) * np.pi / 2) if a.axis else None
    clips, _ = real_clips(a.n, "test", GIVEN + NEW, d.resolution, d.digit_size, d.speed, seed=d.seed + 4, angle=angle)
    rows = []
    for i in range(a.n):
        rows.append(clips[i])
        for pipe in pipes:
            x = pipe.codec.encode_frames(clips[i : i + 1], d.channels)  # (1, C, 8, h, w)
            noise = pipe._noise(1, GIVEN + NEW, torch.Generator().manual_seed(i))
            with torch.no_grad():
                rows.append(np.asarray(pipe.codec.decode_frames(one_call(pipe.transformer.eval(), x, noise)))[0])
    img = Image.fromarray(grid(np.stack(rows), scale=1))
    img.resize((img.width * a.scale, img.height * a.scale), Image.NEAREST).save(a.out)
    print(f"wrote {a.out}: per clip the true clip, then {', '.join(a.checkpoints)}")


if __name__ == "__main__":
    main()
