"""Score moving-digits models with the quality suite: real held-out clips, the given checkpoints, an untrained model.

    python scripts/evaluate_digits.py [--checkpoint DIR ...] [--n 200] [--out results/digits_eval.json]

Without --checkpoint the bundled model is scored. Prints a table and writes JSON.
"""

import argparse
import json
from pathlib import Path

import torch

from mfvideo.eval.digits import DigitSuite, heldout_accuracy
from mfvideo.eval.report import evaluate_pipeline, evaluate_real
from mfvideo.pipeline import MFVideoPipeline

COLS = ["fd", "class_accuracy", "identity", "jerk", "identity_kept", "trajectory_error",
        "trajectory_error_static_baseline", "seconds_per_clip"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="*", default=[None])
    p.add_argument("--steps", type=int, nargs="*", default=[1, 2])
    p.add_argument("--euler-steps", type=int, nargs="*", default=[],
                   help="also score Euler sampling of the same network's instantaneous velocity u(z, t, t)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default="results/digits_eval.json")
    a = p.parse_args()
    torch.manual_seed(0)
    suite = DigitSuite.load()
    rows = {"classifier held-out accuracy": {"accuracy": heldout_accuracy(suite.classifier)}}
    first = MFVideoPipeline.from_pretrained(a.checkpoint[0])
    rows["real held-out clips"] = evaluate_real(suite, first.config.data, a.n)
    for ck in a.checkpoint:
        pipe = MFVideoPipeline.from_pretrained(ck)
        name = Path(ck).name if ck else "bundled model"
        for s in a.steps:
            rows[f"{name}, MeanFlow {s}-NFE"] = evaluate_pipeline(pipe, suite, a.n, steps=s)
        for s in a.euler_steps:
            r = evaluate_pipeline(pipe, suite, a.n, steps=s, euler=True)
            rows[f"{name}, Euler {s} steps of u(z, t, t)"] = {k: v for k, v in r.items() if k in ("fd", "class_accuracy", "identity", "jerk", "seconds_per_clip")}
    untrained = MFVideoPipeline.from_pretrained(a.checkpoint[0])
    torch.manual_seed(0)
    untrained.model.initialize_weights()
    for prm in untrained.model.parameters():  # adaLN-Zero starts at exactly 0: perturb so it is a real network
        prm.data.add_(torch.randn_like(prm) * 0.02)
    rows["untrained model, 1-NFE"] = evaluate_pipeline(untrained, suite, a.n, steps=1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    print("| clips | " + " | ".join(COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    for name, r in rows.items():
        if "accuracy" in r and len(r) == 1:
            continue
        print(f"| {name} | " + " | ".join(f"{r[c]:.3g}" if c in r else "" for c in COLS) + " |")
    print(f"digit classifier held-out accuracy: {rows['classifier held-out accuracy']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
