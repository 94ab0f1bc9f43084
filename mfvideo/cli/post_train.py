"""mfvideo-post-train [SOURCE] --out DIR: sharpen a trained model's one-step frames by adversarial post-training.

The one-step jump is fine-tuned towards the frozen model's own two-step jump on the same noise, plus a GAN term from a
small clip critic trained against real clips of the model's training data (``mfvideo.train.adversarial``). Every row
kind the model was trained on is kept (generation, extension, interpolation, ...); the output is the same pipeline,
sampled as before, plus ``post_train.json`` (the run's settings and last losses). SOURCE: a pipeline folder or
training checkpoint (default: the bundled model). SIGTERM, SIGUSR1 or Ctrl-C stop it after the step under way with
the weights so far and the state to go on from (``post_train_state.pt``); the same command with ``--resume`` goes on
to the weights an unstopped run would have written.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

from . import (ArgumentParser, add_pipeline_stage_args, check_pipeline_output, device, non_negative_float,
               positive_float, positive_int, user_errors)


STATE = "post_train_state.pt"  # beside a stopped run's weights: what --resume goes on from


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-post-train", description=__doc__.splitlines()[0])
    add_pipeline_stage_args(p)
    p.add_argument("--steps", type=positive_int, default=1000, help="optimiser steps (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=5e-5, help="the model's learning rate (default 5e-5)")
    p.add_argument("--critic-lr", type=positive_float, default=2e-4)
    p.add_argument("--ratio", type=non_negative_float, default=0.5,
                   help="the GAN term's gradient over the anchor's on the generated clip (default 0.5; 0: the anchor "
                        "alone)")
    p.add_argument("--r1", type=non_negative_float, default=0.1, help="R1 penalty on real clips (default 0.1)")
    p.add_argument("--anchor-steps", type=positive_int, default=2,
                   help="network calls of the frozen model's jump the one-step jump is drawn to (default 2)")
    p.add_argument("--field-weight", type=non_negative_float, default=1.0,
                   help="hold the model's field at every other (t, r) where it was, so that multi-step sampling keeps "
                        "its quality (default 1; 0: train the one-step jump alone)")
    p.add_argument("--ema-decay", type=non_negative_float, default=0.0,
                   help="write an exponential moving average of the weights over the run, at this decay per step "
                        "(default 0: the last step's weights)")
    p.add_argument("--dmd-ratio", type=non_negative_float, default=0.0,
                   help="distribution matching against the frozen model's field: its gradient over the anchor's on "
                        "the generated clip (default 0: off)")
    p.add_argument("--dmd-lr", type=positive_float, default=2e-4, help="the DMD fake field's learning rate")
    p.add_argument("--clips", type=positive_int, default=20000,
                   help="training clips held in memory, at most (default 20000; a smaller split whole)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--log-every", type=positive_int, default=50, metavar="N",
                   help="log the losses, averaged, every N steps (default 50)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the run a signal stopped in --out (same SOURCE and settings); without one there, "
                        "start")
    args = p.parse_args(argv)
    out = check_pipeline_output(args.out, args.source)
    resume = stopped_run(out, args.source) if args.resume else None
    if resume == "complete":
        print(f"{out} holds a complete post-training: nothing to resume")
        return 0

    from ..io import atomic_folder
    from ..pipeline import MFVideoPipeline
    from ..train.adversarial import PostTrainConfig, check_resumable, post_train

    cfg = PostTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, critic_lr=args.critic_lr,
                          ratio=args.ratio, r1=args.r1, anchor_steps=args.anchor_steps,
                          field_weight=args.field_weight, clips=args.clips, seed=args.seed,
                          ema_decay=args.ema_decay, dmd_ratio=args.dmd_ratio, dmd_lr=args.dmd_lr)
    if resume is not None:
        check_resumable(resume, cfg)  # before the model and the data load
    pipe = MFVideoPipeline.from_pretrained(args.source, device=args.device)
    logging.getLogger("mfvideo.train.adversarial").setLevel(logging.INFO)
    stats = post_train(pipe, cfg, log_every=min(args.log_every, args.steps), resume=resume)
    state = stats.pop("state", None)
    stats["source"] = args.source or "bundled"
    with atomic_folder(out) as tmp:  # a folder there before is replaced whole, or kept if this fails
        pipe.save_pretrained(tmp)
        (tmp / "post_train.json").write_text(json.dumps(stats, indent=1) + "\n")
        if state is not None:
            import torch

            torch.save(state, tmp / STATE)
    said = ", ".join(f"{k} {v:.4g}" for k, v in stats["final"].items())
    if stats["stopped_by"]:  # the weights so far were written: say so, and end as a shell reports the signal
        print(f"stopped by {stats['stopped_by']} at step {stats['steps']} of {args.steps}; wrote {out} "
              f"({stats['steps']} post-training steps in {stats['seconds']:.0f} s), {said}; the same command with "
              "--resume goes on")
        sys.exit(128 + signal.Signals[stats["stopped_by"]])
    print(f"wrote {out}: {args.steps} post-training steps in {stats['seconds']:.0f} s, {said}")
    return 0


def stopped_run(out: Path, source: str | None) -> dict | str | None:
    """What ``--resume`` goes on from in ``out``: a stopped run's state (checked to be of ``source``), "complete" for
    a finished run, None for no run there (a new one starts)."""
    record = out / "post_train.json"
    if not record.is_file():
        return None
    stats = json.loads(record.read_text())
    if not stats.get("stopped_by"):
        return "complete"
    if stats.get("source") != (source or "bundled"):
        raise ValueError(f"{out} holds a post-training of {stats.get('source')}, not of {source or 'bundled'}: "
                         "resume it from its own source")
    if not (out / STATE).is_file():
        raise ValueError(f"{out}: a stopped post-training without its {STATE} (an older release's): it cannot go on; "
                         "start a new run in another folder")
    import torch

    return torch.load(out / STATE, map_location="cpu", weights_only=True)


if __name__ == "__main__":
    main()
