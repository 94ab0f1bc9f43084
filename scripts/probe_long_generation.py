"""Probe: clips generated past the model's window. Every window after the first continues the model's own frames;
does it re-read them (``reread_context=True``, the pipeline before session 19) or hold what it read off its first
window (the default now)? Per 8-frame block of 200 clips of 24 frames (20 per digit; labelled, and with the null
label): frame accuracy against the requested class (null label: against the first block's majority), glyph match
against frame 0 (the first block: frames 1-7), mean and 99th-percentile intensity, speckle; for whole windows and 2 or 1 new frames kept per window.
``--first-window-steps N``: the first window in N calls (``generate(first_window_steps=N)``); ``--held-labelled``:
the labelled rows that hold their reading only; ``--motion-copy R``: the copy's radius (default 0, the network's
own frames; session 45 measured the bundled model's default, 4).

    python scripts/probe_long_generation.py [--checkpoint DIR] [--n 200] [--frames 24] [--first-window-steps N]
        [--held-labelled] [--motion-copy R] [--out results/s19_long_generation.json]
"""

import argparse
import json

import numpy as np

from mfvideo.eval.digits import DigitSuite, glyph_match, speckle
from mfvideo.frames import grey
from mfvideo.pipeline import MFVideoPipeline


def blocks(values: np.ndarray, size: int = 8) -> list[float]:
    """(T,) per-frame values -> the mean of each block of ``size`` frames (NaN: left out)."""
    return [round(float(np.nanmean(values[i : i + size])), 4) for i in range(0, values.shape[0], size)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--first-window-steps", type=int, default=None)
    p.add_argument("--held-labelled", action="store_true", help="only the labelled rows that hold their reading")
    p.add_argument("--motion-copy", type=int, default=0, help="motion_copy radius (0: the network's own frames)")
    p.add_argument("--out", default="results/s19_long_generation.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    pipe.cfg.sample.motion_copy = a.motion_copy  # 0: the network's own frames (the bundled model copies by default)
    labels = np.arange(a.n) % 10
    out = {}
    for labelled in (True,) if a.held_labelled else (True, False):
        for reread in (False,) if a.held_labelled else (True, False):
            for fpw in (None, 2, 1):
                name = (f"{'labelled' if labelled else 'null label'}, {'re-read every window' if reread else 'held'}, "
                        f"{fpw or 'all'} kept per window")
                if a.first_window_steps:
                    name += f", first window in {a.first_window_steps} calls"
                if a.motion_copy:
                    name += f", motion copy {a.motion_copy}"
                clips = pipe.generate(num_frames=a.frames, class_labels=labels.tolist() if labelled else -1,
                                      num_clips=a.n, seed=0, output_type="uint8", frames_per_window=fpw,
                                      reread_context=reread, first_window_steps=a.first_window_steps
                                      ).frames  # (n, T, H, W, 3)
                pred, _ = suite.predict(clips)  # (n, T)
                target = labels if labelled else suite.majority(pred[:, :8])
                lum = grey(clips)  # (n, T, H, W)
                row = {"accuracy": blocks((pred == target[:, None]).mean(0)),
                       "glyph_match_vs_frame_0": blocks(np.concatenate([[np.nan], glyph_match(clips[:, 0], clips[:, 1:]).mean(0)])),
                       "mean_intensity": blocks(lum.mean(axis=(0, 2, 3))),
                       "p99_intensity": [round(float(np.percentile(lum[:, i : i + 8], 99)), 4) for i in range(0, a.frames, 8)],
                       "speckle": [round(speckle(clips[:, i : i + 8]), 4) for i in range(0, a.frames, 8)]}
                out[name] = row
                print(f"{name}: accuracy {row['accuracy']}, glyph {row['glyph_match_vs_frame_0']}, "
                      f"p99 {row['p99_intensity']}, speckle {row['speckle']}", flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
