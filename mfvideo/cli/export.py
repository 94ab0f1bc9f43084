"""mfvideo-export CHECKPOINT --out DIR [sample.KEY=VALUE ...]: a training checkpoint as a diffusers pipeline folder.

The folder opens with ``MFVideoPipeline.from_pretrained(DIR)`` and with diffusers' own
``DiffusionPipeline.from_pretrained(DIR, custom_pipeline=DIR, trust_remote_code=True)``. CHECKPOINT may also be a
pipeline folder (``mfvideo-post-train``'s, for instance). ``sample.*`` overrides set the defaults the folder samples
with (``sample.one_step_temperature=0.65``, ``sample.fps=8``); the rest of the config is what the weights were trained
with, and stays. ``--class-names FILE`` names the classes anew (ImageNet's ``LOC_synset_mapping.txt`` for a model
trained on its wnid folders: ``--classes tench`` then).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import WEIGHTS_HELP, ArgumentParser, check_output_dir, one_process, user_errors, weights_choice


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a training checkpoint folder (runs/<name>/checkpoints/step_XXXXXXXX) or a "
                                      "pipeline folder")
    p.add_argument("overrides", nargs="*", metavar="sample.KEY=VALUE",
                   help="the folder's sampling defaults, e.g. sample.one_step_temperature=0.65")
    p.add_argument("--weights", type=weights_choice, default="ema", metavar="ema|ema_<decay>|model", help=WEIGHTS_HELP)
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="name the classes anew: a file mapping their names (class folders such as n01440764) to "
                        "others (ImageNet's LOC_synset_mapping.txt, or JSON), as data.class_names")
    p.add_argument("--out", required=True, help="output folder (diffusers layout)")
    args = p.parse_intermixed_args(argv)  # key=value overrides before or after the options
    one_process(args.out)
    out = check_output_dir(args.out)
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise ValueError(f"output folder {out} is not empty and not a pipeline folder: refusing to write into it")
    if Path(args.checkpoint).resolve() == out.resolve():
        raise ValueError("--out is the checkpoint folder itself")
    for item in args.overrides:
        if not item.startswith("sample."):
            raise ValueError(f"{item}: only sample.* settings change on export (the rest is what the weights were "
                             "trained with)")

    from ..config import with_overrides
    from ..io import atomic_folder
    from ..pipeline import MFVideoPipeline
    from ..weights import resolve_checkpoint

    pipe = MFVideoPipeline.from_pretrained(args.checkpoint, weights=args.weights)
    pipe.cfg.sample = with_overrides(pipe.cfg, args.overrides).sample
    if args.class_names:
        from ..data.class_names import named_classes

        n = pipe.cfg.model.num_classes
        if not n:
            raise ValueError(f"--class-names: {args.checkpoint} is an unconditional model, it has no classes to name")
        names = named_classes([pipe.labels.get(str(i), str(i)) for i in range(n)], args.class_names, "--class-names")
        pipe.labels = {str(i): name for i, name in enumerate(names)}
        pipe.register_to_config(id2label=pipe.labels)
    source = resolve_checkpoint(args.checkpoint)
    with atomic_folder(out) as tmp:  # a folder there before is replaced whole, or kept if this fails
        pipe.save_pretrained(tmp)
        if (source / "model_index.json").is_file():  # a pipeline folder's records (post_train.json, ...) go along
            for f in source.iterdir():
                if f.is_file() and not (tmp / f.name).exists():
                    shutil.copy2(f, tmp / f.name)
    parts = ["model_index.json", "transformer/"] + (["vae/"] if pipe.vae is not None else []) + ["config.yaml"]
    print(f"wrote {out} ({', '.join(parts)})")
    return 0


if __name__ == "__main__":
    main()
