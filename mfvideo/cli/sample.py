"""mfvideo-sample: one mp4 per generated clip (1 network call per window) and, with --grid, a PNG contact sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import user_errors


@user_errors
def main(argv=None):
    p = argparse.ArgumentParser(prog="mfvideo-sample", description="Generate clips with a MeanFlow STDiT in one step.")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled moving-digits model)")
    p.add_argument("--classes", type=int, nargs="*", default=None, help="class ids, one clip each (default: unconditional)")
    p.add_argument("--num-clips", type=int, default=None, help="clips to generate when no classes are given (default 4)")
    p.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the model's window)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="network evaluations per window (default: 1 for MeanFlow, 50 for --sampler euler)")
    p.add_argument("--sampler", choices=["meanflow", "euler"], default=None,
                   help="default: euler for a model trained as flow matching (ratio_r_neq_t=0), else meanflow")
    p.add_argument("--fps", type=float, default=None)
    p.add_argument("--grid", action="store_true", help="also write grid.png, a row per clip")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    if args.classes is not None and args.num_clips is not None and args.num_clips != len(args.classes):
        raise ValueError("--num-clips disagrees with the number of --classes")

    from ..io import grid, save_image, save_video
    from ..pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained(args.checkpoint, device=args.device)
    out = pipe.generate(num_frames=args.num_frames, class_labels=args.classes,
                        num_clips=None if args.classes else (args.num_clips or 4), seed=args.seed, steps=args.steps,
                        sampler=args.sampler)
    folder = Path(args.out)
    fps = args.fps or out.fps
    for i, clip in enumerate(out.frames):
        label = f"_class{args.classes[i]}" if args.classes else ""
        save_video(clip, folder / f"clip_{i:03d}{label}.mp4", fps=fps)
    if args.grid:
        save_image(grid(out.frames), folder / "grid.png")
    print(f"wrote {len(out.frames)} clips of {out.frames.shape[1]} frames to {folder}")
    return 0


if __name__ == "__main__":
    main()
