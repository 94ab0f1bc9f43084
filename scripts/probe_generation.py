"""Generation only, fast: 200 labelled clips (20 per digit) per model at 1 and 2 calls, against 200 held-out real
clips of the model's own frame count (single frames for an image-stage model): FD, class accuracy, frame identity,
speckle, sharpness, the accuracy per frame position and the share of clips with a frame read as another digit.

    python scripts/probe_generation.py [LABEL=]DIR [...] [--steps 1 2] [--temperature 1 0.6] [--motion-copy 0 4]
                                       [--sampler meanflow consistency] [--out F.json]
    (DIR "bundled": the bundled model; --motion-copy: the radii, 0 (the network's own frames) by default)
"""

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, glyph_consistency, real_clips
from mfvideo.pipeline import MFVideoPipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help='[LABEL=]DIR: checkpoint or pipeline folders ("bundled")')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=[None],
                        help="guidance scales of models trained with method.cfg_scale_range (default: the model's)")
    parser.add_argument("--temperature", type=float, nargs="+", default=[None],
                        help="sampling temperatures, the noise's scale (default: the model's sample.one_step_temperature)")
    parser.add_argument("--motion-copy", type=int, nargs="+", default=[0],
                        help="motion_copy radii (0: the network's own frames, the default whatever the model's)")
    parser.add_argument("--sampler", nargs="+", default=["meanflow"], help="samplers (meanflow, consistency)")
    parser.add_argument("--out", default=None, help="JSON of every row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = DigitSuite.load()
    labels = np.arange(args.n) % 10
    rows = {}
    for spec in args.models:
        name, _, path = spec.rpartition("=")
        name = name or path
        pipe = MFVideoPipeline.from_pretrained(None if path == "bundled" else path)
        d = pipe.cfg.data
        real, _ = real_clips(args.n, "test", d.num_frames, d.resolution, d.digit_size, d.speed, seed=d.seed + 5)
        scales = args.guidance_scale if pipe.method.cfg_scale_range is not None else [None]
        for sampler, steps, scale, temp, copy in itertools.product(args.sampler, args.steps, scales, args.temperature,
                                                                   args.motion_copy):
            frames = pipe.generate(class_labels=labels.tolist(), seed=0, steps=steps, output_type="uint8",
                                   guidance_scale=scale, temperature=temp, motion_copy=copy, sampler=sampler).frames
            row = {k: round(float(v), 4) for k, v in suite.clip_metrics(frames, labels, real).items()}
            preds, _ = suite.predict(frames)
            row["accuracy_per_frame"] = np.round((preds == labels[:, None]).mean(0), 3).tolist()
            row["clips_with_a_misread_frame"] = round(float((preds != labels[:, None]).any(1).mean()), 4)
            row["clips_misread_throughout"] = round(float((preds != labels[:, None]).all(1).mean()), 4)
            row["glyph_consistency"] = round(float(glyph_consistency(frames)), 4)
            key = (f"{name}, {steps}-NFE" + ("" if sampler == "meanflow" else f" {sampler}")
                   + ("" if scale is None else f", scale {scale:g}")
                   + ("" if temp is None else f", temperature {temp:g}") + (f", motion copy {copy}" if copy else ""))
            rows[key] = row
            print(f"{key[-50:]:50s} FD {row['fd']:.1f} class acc. {row['class_accuracy']:.3f} "
                  f"identity {row['identity']:.3f} misread clips {row['clips_with_a_misread_frame']:.3f} "
                  f"speckle {row['speckle']:.3f} sharpness {row['sharpness']:.2f} "
                  f"glyph consistency {row['glyph_consistency']:.3f} "
                  f"per frame {row['accuracy_per_frame']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
