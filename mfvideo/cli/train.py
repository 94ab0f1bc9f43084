"""mfvideo-train CONFIG [key=value ...] [--dry-run]"""

from __future__ import annotations

import shlex
import signal
import sys

from . import ArgumentParser, user_errors


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-train", description="Train a MeanFlow STDiT from a YAML config.")
    p.add_argument("config", help="YAML file (only what differs from the schema defaults)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter count, then exit")
    args = p.parse_intermixed_args(argv)  # key=value overrides before or after the options

    from ..config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        import torch

        from ..builders import build_model

        if cfg.model.in_channels is None or cfg.model.num_classes is None:
            from ..train.loop import build_setup  # the data decides channels / classes

            model = build_setup(cfg).model
        else:
            with torch.device("meta"):  # no data, no weights needed: only the shapes
                model = build_model(cfg.model)
            if cfg.latents.kind == "identity":  # a VAE's factor needs its files: checked when the run starts
                from ..latents import build_codec
                from ..train.loop import check_patches

                check_patches(cfg, build_codec(cfg.latents, cfg.data.channels), model)
        print(to_yaml(cfg), end="")
        print(f"params: {sum(q.numel() for q in model.parameters())}")
        return 0
    import logging

    from ..train.loop import train

    logging.getLogger("mfvideo.train").setLevel(logging.INFO)  # the run's one-line plan first
    summary = train(cfg)
    from ..train.dist import exit_now, leave_process_group

    multi = leave_process_group()  # every rank done, the process group gone, before this process prints and exits
    if summary["main_process"]:  # one process speaks for a multi-process run
        _report(cfg, summary)
    code = 128 + signal.Signals[summary["stopped_by"]] if summary["stopped_by"] else 0  # as a shell reports a signal
    if multi:
        exit_now(code)
    if code:
        sys.exit(code)
    return 0


def _report(cfg, summary: dict) -> None:
    from ..train.checkpoint import latest_checkpoint

    last = latest_checkpoint(cfg.train.output_dir)
    if summary["stopped_by"]:
        kept = f"checkpoint: {last}; train.resume=auto continues" if last is not None else \
            "no checkpoint (train.checkpoint_every=0)"
        print(f"stopped by {summary['stopped_by']} at step {summary['steps']} of {cfg.train.max_steps}; {kept}")
        return
    if summary["first_loss"] is None:  # resumed at or past train.max_steps
        print(f"nothing to train: the run is at step {summary['steps']} and train.max_steps={cfg.train.max_steps}")
        return
    print(f"trained to step {summary['steps']}; unweighted loss (logged) {summary['first_loss']:.4g} -> "
          f"{summary['last_loss']:.4g}")
    if last is not None:  # what to do with it next
        arg = shlex.quote(str(last))  # the commands copy and paste into a shell, a path with a space too
        print(f"checkpoint: {last} (mfvideo-sample --checkpoint {arg} --out DIR; mfvideo-export {arg} --out DIR)")


if __name__ == "__main__":
    main()
