"""Is an extension a coherent glyph of its own, or a jittery redraw? Glyph match of the new frames against the
given frame (does it keep the handwriting?) next to glyph match among the model's own frames (does it keep *a*
handwriting?): each new frame against the first new frame, and in generated clips each frame against frame 0.
Real clips score 1 on every column (a glyph translated, never redrawn).

    python scripts/probe_glyph_consistency.py [--checkpoint DIR] [--n 200] [--out results/s15_glyph_consistency.json]
"""

import argparse
import json

import numpy as np

from mfvideo.eval.digits import glyph_match, real_clips
from mfvideo.pipeline import MFVideoPipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/s15_glyph_consistency.json")
    a = p.parse_args()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    d = pipe.cfg.data
    clips, labels = real_clips(a.n, "test", 12, d.resolution, d.digit_size, d.speed, seed=d.seed + 4)
    out = {}
    for steps in (1, 2):
        new = pipe.extend(clips[:, :4], num_new_frames=8, context_frames=4, steps=steps, seed=0,
                          output_type="uint8").frames[:, 4:]  # (n, 8, H, W, 3)
        gen = pipe.generate(num_clips=a.n, class_labels=labels.tolist(), steps=steps, seed=0,
                            output_type="uint8").frames
        row = {"extension_vs_given": glyph_match(clips[:, 3], new).mean(0),  # (8,)
               "extension_vs_its_first_new_frame": glyph_match(new[:, 0], new[:, 1:]).mean(0),  # (7,)
               "generation_vs_its_frame_0": glyph_match(gen[:, 0], gen[:, 1:]).mean(0)}  # (T - 1,)
        out[f"{steps}-NFE"] = {k: {"mean": float(v.mean()), "by_distance": np.round(v, 3).tolist()} for k, v in row.items()}
        print(f"{steps}-NFE: " + ", ".join(f"{k} {v.mean():.3f}" for k, v in row.items()), flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
