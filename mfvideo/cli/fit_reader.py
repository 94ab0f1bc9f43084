"""mfvideo-fit-reader [SOURCE] --out DIR: give a trained class-conditional video model a context reader.

The reader (``model.context_reader``) lets an unlabelled extension read the class off the given frames inside the one
network call per window. It is fitted on the model's own training data with the network frozen (minutes on a CPU for
the digits model); the output folder is the same pipeline with the reader added, plus ``context_reader.json`` (its
train and held-out accuracy). SOURCE: a pipeline folder or training checkpoint (default: the bundled model).
"""

from __future__ import annotations

import json

from . import ArgumentParser, add_pipeline_stage_args, check_pipeline_output, device, positive_int, user_errors


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-fit-reader", description=__doc__.splitlines()[0])
    add_pipeline_stage_args(p)
    p.add_argument("--clips", type=positive_int, default=60000,
                   help="training clips to fit on, at most (default 60000; a smaller split whole)")
    p.add_argument("--val-clips", type=positive_int, default=3000,
                   help="held-out clips of the test split to score, at most (default 3000; none without a test split)")
    p.add_argument("--steps", type=positive_int, default=1500, help="optimiser steps of the reader (default 1500)")
    p.add_argument("--pool", choices=("mean", "attention"), default=None,
                   help="the reader's pooling of the context tokens (default: the model's reader's, or attention for "
                        "a new one); another pooling than the model's replaces its reader")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device, default="cpu")
    args = p.parse_args(argv)
    out = check_pipeline_output(args.out, args.source)

    from ..io import atomic_folder
    from ..pipeline import MFVideoPipeline
    from ..train.reader import add_context_reader

    pipe = MFVideoPipeline.from_pretrained(args.source, device=args.device)
    stats = add_context_reader(pipe, args.clips, args.val_clips, seed=args.seed, pool=args.pool, steps=args.steps)
    with atomic_folder(out) as tmp:  # a folder there before is replaced whole, or kept if this fails
        pipe.save_pretrained(tmp)
        (tmp / "context_reader.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {out}: context reader, train accuracy {stats['train_accuracy']:.3f}"
          + (f", held-out {stats['val_accuracy']:.3f}" if "val_accuracy" in stats else
             ", no held-out score (the data has no test split)" if args.val_clips else ""))
    return 0


if __name__ == "__main__":
    main()
