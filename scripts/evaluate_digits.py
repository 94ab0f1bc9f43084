"""Score moving-digits models with the quality suite: real held-out clips, the given checkpoints, an untrained model.

    python scripts/evaluate_digits.py [--checkpoint [LABEL=]DIR ...] [--steps 1 2] [--euler-steps 1 2 10 50]
                                      [--n 200] [--read-label] [--context-noise 0 0.1 0.2] [--temperature 1 0.6]
                                      [--out results/digits_eval.json]

Without --checkpoint the bundled model is scored. A MeanFlow model is scored with k-NFE MeanFlow sampling (--steps)
and with Euler steps of its instantaneous velocity u(z, t, t) (--euler-steps); a model trained as flow matching
(method.ratio_r_neq_t = 0) with Euler steps only. Every row scores generation, extension, interpolation and long
extension (``--long-frames`` new frames) with the same sampler; extension and interpolation use the null label.
``--read-label`` adds extensions conditioned on the class the model reads off the context (``infer_label``) and on
the true class. ``--context-noise`` scores the context rows once per level of noise given to the model's own frames
when they become context (default: each model's ``sample.context_noise``). Prints markdown tables (generation; following the context; read labels) and writes JSON.
"""

import argparse
import itertools
import json
from pathlib import Path

import torch

from mfvideo.cli import check_output_path, non_negative_int, positive_int, user_errors
from mfvideo.eval.digits import DigitSuite, heldout_accuracy
from mfvideo.eval.report import evaluate_context, evaluate_pipeline, evaluate_read_label, evaluate_real
from mfvideo.io import atomic_path
from mfvideo.pipeline import MFVideoPipeline

COLS = ["fd", "class_accuracy", "identity", "glyph_consistency", "sharpness", "speckle", "jerk", "identity_kept", "glyph_match", "trajectory_error",
        "trajectory_error_static_baseline", "seconds_per_clip"]
CONTEXT_COLS = ["context_noise", "frames_per_window", "motion_copy", "extension_identity_kept", "extension_accuracy_by_distance", "extension_glyph_match", "extension_sharpness", "extension_trajectory_error",
                "interpolation_midpoint_accuracy", "interpolation_midpoint_glyph_match", "long_identity_kept_last_window",
                "long_window_glyph_match", "long_seam_flicker", "long_window_brightness"]
READ_COLS = ["read_label_accuracy", "read_label_extension_identity_kept", "read_label_extension_accuracy_by_distance",
             "read_label_interpolation_midpoint_accuracy", "read_label_long_identity_kept_last_window",
             "true_label_extension_identity_kept"]


def parse_checkpoint(arg: str | None) -> tuple[str, str | None]:
    """'LABEL=DIR' or 'DIR' -> (label, dir); None -> the bundled model."""
    if arg is None:
        return "bundled model", None
    label, sep, path = arg.partition("=")
    return (label, path) if sep else (Path(arg).name, arg)


@user_errors  # bad input: one line and exit status 2
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="*", default=[None], help="[LABEL=]DIR, one or more")
    p.add_argument("--steps", type=positive_int, nargs="*", default=[1, 2], help="MeanFlow k-NFE rows (MeanFlow models)")
    p.add_argument("--euler-steps", type=positive_int, nargs="*", default=[], help="Euler rows of u(z, t, t) (every model)")
    p.add_argument("--consistency-steps", type=positive_int, nargs="*", default=[],
                   help="rows of the consistency sampler (the one-step jump, noised back and jumped again)")
    p.add_argument("--n", type=positive_int, default=200)
    p.add_argument("--long-frames", type=positive_int, default=64, help="new frames of the long extension")
    p.add_argument("--read-label", action="store_true",
                   help="also extend with the class the model reads off the context, and with the true class")
    p.add_argument("--context-noise", type=float, nargs="+", default=[None],
                   help="levels of noise on the model's own frames as context (default: the model's own)")
    p.add_argument("--frames-per-window", type=positive_int, nargs="+", default=[None],
                   help="new frames kept per extension window (the pipeline's frames_per_window; default: all)")
    p.add_argument("--motion-copy", type=non_negative_int, nargs="+", default=[0],
                   help="the pipeline's motion_copy radii for generation and the extensions (0: off, the network's "
                        "own frames)")
    p.add_argument("--guidance-scale", type=float, nargs="+", default=[None],
                   help="guidance scales of a model trained with method.cfg_scale_range (default: the model's)")
    p.add_argument("--temperature", type=float, nargs="+", default=[None],
                   help="one-step temperatures, the noise's scale in windows of one call (sample.one_step_temperature; "
                        "default: the model's)")
    p.add_argument("--out", default="results/digits_eval.json")
    a = p.parse_args(argv)
    out = check_output_path(a.out, "--out")  # before the run: a bad --out or checkpoint is said now, not at its end
    torch.manual_seed(0)
    suite = DigitSuite.load()
    checkpoints = [parse_checkpoint(c) for c in a.checkpoint]
    pipes = [MFVideoPipeline.from_pretrained(ck) for _, ck in checkpoints]  # every one loads, or one line now
    rows = {"classifier held-out accuracy": {"accuracy": heldout_accuracy(suite.classifier)}}
    rows["real held-out clips"] = evaluate_real(suite, pipes[0].cfg.data, a.n)
    for (label, _), pipe in zip(checkpoints, pipes):
        runs = [("meanflow", s, f"MeanFlow {s}-NFE") for s in a.steps] if pipe.default_sampler == "meanflow" else []
        runs += [("euler", s, f"Euler {s}") for s in a.euler_steps]
        runs += [("consistency", s, f"consistency {s}-NFE") for s in a.consistency_steps]
        own_temperature = pipe.cfg.sample.one_step_temperature
        for (sampler, s, name), scale, temp in itertools.product(runs, a.guidance_scale, a.temperature):
            pipe.cfg.sample.guidance_scale = scale  # the default of every call below (None: the model's own)
            pipe.cfg.sample.one_step_temperature = own_temperature if temp is None else temp  # likewise
            generation = {}
            for level, keep, copy in itertools.product(a.context_noise, a.frames_per_window, a.motion_copy):
                if level is not None:
                    pipe.cfg.sample.context_noise = level  # the default of every extension below
                if copy not in generation:
                    generation[copy] = evaluate_pipeline(pipe, suite, a.n, steps=s, sampler=sampler, motion_copy=copy)
                row = dict(generation[copy])
                row.update(evaluate_context(pipe, suite, a.n, steps=s, sampler=sampler, long_frames=a.long_frames,
                                            frames_per_window=keep, motion_copy=copy))
                row["motion_copy"] = copy
                if a.read_label:
                    row.update(evaluate_read_label(pipe, suite, a.n, steps=s, sampler=sampler,
                                                   long_frames=a.long_frames))
                key = (f"{label}, {name}" + ("" if scale is None else f", guidance scale {scale:g}")
                       + ("" if temp is None else f", temperature {temp:g}")
                       + ("" if level is None else f", context noise {level:g}")
                       + ("" if keep is None else f", {keep} kept per window")
                       + (f", motion copy {copy}" if copy else ""))
                rows[key] = row
                print(f"{key}: done", flush=True)
    untrained = MFVideoPipeline.from_pretrained(checkpoints[0][1])
    torch.manual_seed(0)
    untrained.model.initialize_weights()
    for prm in untrained.model.parameters():  # adaLN-Zero starts at exactly 0: perturb so it is a real network
        prm.data.add_(torch.randn_like(prm) * 0.02)
    rows["untrained model, 1-NFE"] = evaluate_pipeline(untrained, suite, a.n, steps=1, sampler="meanflow")
    rows["untrained model, 1-NFE"].update(evaluate_context(untrained, suite, a.n, steps=1, sampler="meanflow",
                                                           long_frames=a.long_frames))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # a kill while writing leaves the file before, never half a table
        tmp.write_text(json.dumps(rows, indent=1))
    print("| clips | " + " | ".join(COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    for name, r in rows.items():
        if "accuracy" in r and len(r) == 1:
            continue
        print(f"| {name} | " + " | ".join(f"{r[c]:.3g}" if c in r else "" for c in COLS) + " |")
    print("\n| clips | " + " | ".join(CONTEXT_COLS) + " |")
    print("|---" * (len(CONTEXT_COLS) + 1) + "|")
    for name, r in rows.items():
        if "extension_identity_kept" in r:
            print(f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in CONTEXT_COLS) + " |")
    if a.read_label:
        print("\n| clips | " + " | ".join(READ_COLS) + " |")
        print("|---" * (len(READ_COLS) + 1) + "|")
        for name, r in rows.items():
            if "read_label_accuracy" in r:
                print(f"| {name} | " + " | ".join(_fmt(r[c]) for c in READ_COLS) + " |")
    print(f"digit classifier held-out accuracy: {rows['classifier held-out accuracy']['accuracy']:.3f}")


def _fmt(v) -> str:
    if v is None:
        return ""
    return " ".join(f"{x:.2f}" for x in v) if isinstance(v, list) else f"{v:.3g}"


if __name__ == "__main__":
    main()
