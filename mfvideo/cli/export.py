"""mfvideo-export CHECKPOINT --out DIR: a training checkpoint as a diffusers pipeline folder.

The folder opens with ``MFVideoPipeline.from_pretrained(DIR)`` and with diffusers' own
``DiffusionPipeline.from_pretrained(DIR, custom_pipeline=DIR, trust_remote_code=True)``.
"""

from __future__ import annotations

from pathlib import Path

from . import WEIGHTS_HELP, ArgumentParser, check_output_dir, user_errors, weights_choice


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a training checkpoint folder (runs/<name>/checkpoints/step_XXXXXXXX)")
    p.add_argument("--weights", type=weights_choice, default="ema", metavar="ema|ema_<decay>|model", help=WEIGHTS_HELP)
    p.add_argument("--out", required=True, help="output folder (diffusers layout)")
    args = p.parse_args(argv)
    out = check_output_dir(args.out)
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise ValueError(f"output folder {out} is not empty and not a pipeline folder: refusing to write into it")
    if Path(args.checkpoint).resolve() == out.resolve():
        raise ValueError("--out is the checkpoint folder itself")

    from ..pipeline import MFVideoPipeline

    from ..io import atomic_folder

    pipe = MFVideoPipeline.from_checkpoint(args.checkpoint, weights=args.weights)
    with atomic_folder(out) as tmp:  # a folder there before is replaced whole, or kept if this fails
        pipe.save_pretrained(tmp)
    parts = ["model_index.json", "transformer/"] + (["vae/"] if pipe.vae is not None else []) + ["config.yaml"]
    print(f"wrote {out} ({', '.join(parts)})")
    return 0


if __name__ == "__main__":
    main()
