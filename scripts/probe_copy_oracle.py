"""What a perfect copy path would score: every new frame the last given frame moved by the true displacement of the
digit (known here from the renderer), with the frame's outside filled by zeros or by its border. The ceiling of
``model.copy_radius`` on moving digits, and the measure of what zero padding costs it (pixels in [-1, 1]: zeros are
grey, and a shifted frame brings a grey stripe in from its edge).

    python scripts/probe_copy_oracle.py [--n 200] [--out results/s24_copy_oracle.json]
"""

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from mfvideo.data.moving_digits import render_clip
from mfvideo.eval.digits import glyph_match, to_uint8, unit_to_uint8

GIVEN, NEW, RES, DIGIT, SPEED, SEED = 4, 4, 16, 8, 1.0, 4  # the probes' held-out clips (probe_regression.py)


def moved(frame: torch.Tensor, dy: int, dx: int, mode: str) -> torch.Tensor:
    """frame (H, W) moved by (dy, dx), its outside zeros or its border -> (H, W)."""
    h, w = frame.shape
    p = max(abs(dy), abs(dx), 1)
    kw = {"value": 0.0} if mode == "zeros" else {"mode": "replicate"}
    padded = F.pad(frame[None, None], (p, p, p, p), **kw)[0, 0]
    return padded[p - dy : p - dy + h, p - dx : p - dx + w]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/s24_copy_oracle.json")
    a = p.parse_args()
    result = {}
    for mode in ("zeros", "replicate"):
        refs, outs = [], []
        for i in range(a.n):
            c = render_clip(i, "test", GIVEN + NEW, RES, 1, DIGIT, SPEED, SEED, None)
            last = torch.from_numpy(c.frames[GIVEN - 1]) * 2 - 1  # (H, W) in [-1, 1]
            at = np.rint(c.positions[:, 0]).astype(int)  # (T, 2): the drawn top-left corners
            new = torch.stack([moved(last, *(at[f] - at[GIVEN - 1]), mode) for f in range(GIVEN, GIVEN + NEW)])
            refs.append(to_uint8(unit_to_uint8(c.frames[GIVEN - 1])))
            outs.append(to_uint8(unit_to_uint8(((new + 1) / 2).clamp(0, 1).numpy())))
        g = glyph_match(np.stack(refs), np.stack(outs))  # (n, NEW)
        result[mode] = {"glyph_match": float(g.mean()), "glyph_by_distance": np.round(g.mean(0), 3).tolist()}
        print(f"{mode:9s} glyph match {g.mean():.3f}  by distance {np.round(g.mean(0), 3).tolist()}")
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
