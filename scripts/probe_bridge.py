"""How the bundled model bridges two clips (``mfvideo-interpolate --context-frames K``): 200 held-out clips, K given
frames on each side of a gap of 8 - 2K frames; per row the new frames' class accuracy (null label), glyph match with
the nearest given frame, sharpness and the distance of the digit's centre from the true frames', with and without
``motion_copy``.

    python scripts/probe_bridge.py [--n 200] [--out results/s38_bridge.json]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mfvideo.eval.digits import DigitSuite, centroids, glyph_match, real_clips, sharpness  # noqa: E402
from mfvideo.pipeline import MFVideoPipeline  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/s38_bridge.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    cfg, T = pipe.cfg.data, pipe.window
    clips, labels = real_clips(a.n, "test", T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
    rows = {}
    for k in (1, 2, 3):
        idx = [*range(k), *range(T - k, T)]
        for copy in (0, 4):
            out = pipe.condition(clips[:, idx], idx, seed=0, output_type="uint8", motion_copy=copy).frames
            new, true = out[:, k : T - k], clips[:, k : T - k]  # (n, T - 2k, H, W, 3)
            preds, _ = suite.predict(new)
            near = np.concatenate([np.repeat(clips[:, k - 1 : k], (T - 2 * k + 1) // 2, 1),
                                   np.repeat(clips[:, T - k : T - k + 1], (T - 2 * k) // 2, 1)], axis=1)
            glyph = np.stack([glyph_match(near[:, j], new[:, j : j + 1])[:, 0] for j in range(T - 2 * k)], 1)
            sharp = np.stack([sharpness(near[:, j], new[:, j : j + 1])[:, 0] for j in range(T - 2 * k)], 1)
            row = {"accuracy": float((preds == labels[:, None]).mean()),
                   "accuracy_by_frame": np.round((preds == labels[:, None]).mean(0), 3).tolist(),
                   "glyph_match": float(glyph.mean()), "sharpness": float(sharp.mean()),
                   "centre_error_px": float(np.linalg.norm(centroids(new) - centroids(true), axis=-1).mean())}
            rows[f"{k} given each side, {T - 2 * k} new, motion_copy={copy}"] = row
            print(f"K={k} gap {T - 2 * k} motion_copy={copy}:",
                  {key: v for key, v in row.items() if key != "accuracy_by_frame"}, flush=True)
    Path(a.out).write_text(json.dumps({"n": a.n, "window": T, "rows": rows}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
