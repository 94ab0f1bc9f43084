"""How the bundled model bridges two clips (``mfvideo-interpolate --context-frames K``): 200 held-out clips, K given
frames on each side of a gap of 8 - 2K frames; per row the new frames' class accuracy (null label), glyph match with
the nearest given frame, sharpness and the distance of the digit's centre from the true frames', with and without
``motion_copy``. ``--long``: clips of two and three windows, the gap filled window by window (``fill_plan``).

    python scripts/probe_bridge.py [--n 200] [--out results/s38_bridge.json]
    python scripts/probe_bridge.py --long            # results/s39_long_bridge.json
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


def measure(pipe, suite, clips, labels, k: int, copy: int) -> dict:
    """K given frames at each end of the real clips, the rest made by ``condition``; the new frames scored."""
    T = clips.shape[1]
    idx = [*range(k), *range(T - k, T)]
    out = pipe.condition(clips[:, idx], idx, num_frames=T, seed=0, output_type="uint8", motion_copy=copy).frames
    new, true = out[:, k : T - k], clips[:, k : T - k]  # (n, T - 2k, H, W, 3)
    preds, _ = suite.predict(new)
    near = np.concatenate([np.repeat(clips[:, k - 1 : k], (T - 2 * k + 1) // 2, 1),
                           np.repeat(clips[:, T - k : T - k + 1], (T - 2 * k) // 2, 1)], axis=1)
    glyph = np.stack([glyph_match(near[:, j], new[:, j : j + 1])[:, 0] for j in range(T - 2 * k)], 1)
    sharp = np.stack([sharpness(near[:, j], new[:, j : j + 1])[:, 0] for j in range(T - 2 * k)], 1)
    step = np.linalg.norm(np.diff(centroids(out), axis=1), axis=-1)  # (n, T - 1): the centre's move per frame
    true_step = np.linalg.norm(np.diff(centroids(clips), axis=1), axis=-1)
    return {"accuracy": float((preds == labels[:, None]).mean()),
            "accuracy_by_frame": np.round((preds == labels[:, None]).mean(0), 3).tolist(),
            "glyph_match": float(glyph.mean()), "sharpness": float(sharp.mean()),
            "centre_error_px": float(np.linalg.norm(centroids(new) - centroids(true), axis=-1).mean()),
            "step_error_px": float(np.abs(step - true_step).mean())}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--long", action="store_true",
                   help="gaps longer than the window instead: clips of 2 and 3 windows, 1 or 2 given frames each end")
    p.add_argument("--out", default=None, help="default: results/s38_bridge.json, with --long s39_long_bridge.json")
    a = p.parse_args()
    out_path = a.out or ("results/s39_long_bridge.json" if a.long else "results/s38_bridge.json")
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    cfg, W = pipe.cfg.data, pipe.window
    rows = {}
    for T in (2 * W, 3 * W) if a.long else (W,):
        clips, labels = real_clips(a.n, "test", T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
        for k in (1, 2) if a.long else (1, 2, 3):
            for copy in (0, 4):
                row = rows[f"{k} given each side, {T - 2 * k} new, motion_copy={copy}"] = measure(
                    pipe, suite, clips, labels, k, copy)
                print(f"K={k} gap {T - 2 * k} motion_copy={copy}:",
                      {key: v for key, v in row.items() if key != "accuracy_by_frame"}, flush=True)
    Path(out_path).write_text(json.dumps({"n": a.n, "window": W, "rows": rows}, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
