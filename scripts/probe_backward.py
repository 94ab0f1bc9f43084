"""How the bundled model extends a clip backwards (``extend(backward=True)``, ``mfvideo-extend --backward``): 200
held-out clips, their first 4 frames given, 8 / 16 / 32 frames made before them (null label); per row the new frames'
class accuracy, the accuracy at the new frame farthest from the given ones, glyph match with the nearest given frame
and sharpness; beside it the same clips filled by ``condition`` with the 4 given at the end (the same held reading)
and extended forwards from their first 4 frames.

    python scripts/probe_backward.py [--n 200] [--out results/s39_backward.json]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mfvideo.eval.digits import DigitSuite, glyph_match, real_clips, sharpness  # noqa: E402
from mfvideo.pipeline import MFVideoPipeline  # noqa: E402


def score(suite, new, labels, nearest, far: int) -> dict:
    """new (n, m, H, W, 3) frames of clips of ``labels``; ``nearest`` (n, H, W, 3): the given frame next to them;
    ``far``: the index of the new frame farthest from the given ones."""
    preds, _ = suite.predict(new)
    right = preds == labels[:, None]
    return {"accuracy": float(right.mean()), "accuracy_farthest": float(right[:, far].mean()),
            "glyph_match": float(glyph_match(nearest, new).mean()), "sharpness": float(sharpness(nearest, new).mean())}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/s39_backward.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    cfg, k = pipe.cfg.data, 4
    rows = {}
    for m in (8, 16, 32):
        T = m + k
        clips, labels = real_clips(a.n, "test", T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
        head, tail = clips[:, :k], clips[:, m:]  # given: the first k (forwards) / the last k (backwards) of a clip
        runs = {"backward": dict(backward=True), "backward, frames_per_window=1": dict(backward=True, frames_per_window=1),
                "backward, motion_copy=4": dict(backward=True, motion_copy=4)}
        for name, kw in runs.items():
            new = pipe.extend(tail, m, seed=0, output_type="uint8", **kw).frames[:, :m]
            rows[f"{m} new, {name}"] = score(suite, new, labels, clips[:, m], 0)
        idx = list(range(m, T))
        new = pipe.condition(tail, idx, num_frames=T, seed=0, output_type="uint8").frames[:, :m]
        rows[f"{m} new, condition fill"] = score(suite, new, labels, clips[:, m], 0)
        new = pipe.extend(head, m, seed=0, output_type="uint8").frames[:, k:]
        rows[f"{m} new, forward (the clip's first {k} given)"] = score(suite, new, labels, clips[:, k - 1], m - 1)
        for key in [r for r in rows if r.startswith(f"{m} new")]:
            print(key, {n: round(v, 3) for n, v in rows[key].items()}, flush=True)
    Path(a.out).write_text(json.dumps({"n": a.n, "given": k, "rows": rows}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
