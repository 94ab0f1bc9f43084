"""Does an adversarial term cure the one-step blur? Runs ``mfvideo.train.adversarial.post_train`` (the one-step jump
fine-tuned towards the frozen model's own two-step jump, plus a PatchGAN clip critic's GAN term at ``--ratio`` times
the anchor's gradient; ``--ratio 0`` is the control, the anchor alone) and scores the model every ``--eval-every``
steps: generation (class accuracy, frame identity, speckle, sharpness vs real clips, glyph consistency, FD over
``--n`` clips) and the 1-NFE extension jump (glyph match, sharpness, class kept, trajectory error).

The tables of docs/experiments.md (session 26) were made by this script's first version (commit 84abec2: its own
copy of the critic, a 4-frame time kernel in the critic's third convolution, and the anchor summed per frame rather
than averaged per element; the VQGAN-rule weight makes the second difference moot).

    python scripts/probe_adversarial.py [--checkpoint DIR] [--steps 1000] [--ratio 0.5] [--out F] [--save DIR]
"""

import argparse
import json
import logging

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, real_clips
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.train.adversarial import PostTrainConfig, post_train

from probe_regression import score


@torch.no_grad()
def evaluate(pipe, suite, real, test, test_labels, n: int) -> dict:
    labels = np.arange(n) % 10
    clips = np.asarray(pipe.generate(class_labels=labels.tolist(), seed=0, output_type="np").frames)
    out = {k: round(float(v), 4) for k, v in suite.clip_metrics(clips, labels, real).items()}
    out["extension"] = score(pipe, test, test_labels, suite)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--ratio", type=float, default=0.5, help="GAN gradient / anchor gradient on the clip (0: off)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--n", type=int, default=200, help="clips scored")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default="results/s26_adversarial_probe.json")
    p.add_argument("--save", default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames (the bundled model copies by default)
    d = pipe.cfg.data
    kw = dict(num_frames=d.num_frames, resolution=d.resolution, digit_size=d.digit_size, speed=d.speed)
    real, _ = real_clips(a.n, "test", **kw, seed=d.seed + 5)
    test, test_labels = real_clips(a.n, "test", **kw, seed=d.seed + 4)
    suite = DigitSuite.load()
    log = {"config": vars(a), "evals": {0: evaluate(pipe, suite, real, test, test_labels, a.n)}}
    print(0, log["evals"][0], flush=True)

    def scored(step):
        if step % a.eval_every == 0 or step == a.steps:
            log["evals"][step] = evaluate(pipe, suite, real, test, test_labels, a.n)
            print(step, log["evals"][step], flush=True)
            with open(a.out, "w") as f:
                json.dump(log, f, indent=1)

    cfg = PostTrainConfig(steps=a.steps, ratio=a.ratio, lr=a.lr)
    log["run"] = post_train(pipe, cfg, log_every=min(50, a.eval_every), callback=scored)
    with open(a.out, "w") as f:
        json.dump(log, f, indent=1)
    if a.save:
        pipe.save_pretrained(a.save)


if __name__ == "__main__":
    main()
