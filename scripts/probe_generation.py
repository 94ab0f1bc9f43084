"""Generation only, fast: frame identity, class accuracy and per-frame accuracy of 200 clips (1 and 2 calls) per model.

    python scripts/probe_generation.py DIR [DIR ...] [--threads 1]      (DIR "bundled": the bundled model)
"""

import argparse

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite
from mfvideo.pipeline import MFVideoPipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help='checkpoint or pipeline folders ("bundled": the bundled model)')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = DigitSuite.load()
    labels = np.arange(args.n) % 10
    for path in args.models:
        pipe = MFVideoPipeline.from_pretrained(None if path == "bundled" else path)
        for steps in (1, 2):
            frames = pipe.generate(class_labels=labels.tolist(), seed=0, steps=steps, output_type="uint8").frames
            preds, _ = suite.predict(frames)
            majority = suite.majority(preds)
            print(f"{path[-40:]:40s} {steps}-NFE identity {(preds == majority[:, None]).mean():.3f} "
                  f"class acc. {(majority == labels).mean():.3f} "
                  f"per frame {np.round((preds == labels[:, None]).mean(0), 2)}", flush=True)


if __name__ == "__main__":
    main()
