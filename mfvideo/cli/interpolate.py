"""mfvideo-interpolate START END --out OUT.mp4: the frames between two keyframes, or a bridge between two clips.

START's last K frames and END's first K frames (images or videos, read at the model's frame rate) are the given
frames of a clip (``MFVideoPipeline.condition``: one network call for a clip of the model's window; a longer one is
filled window by window from both sides towards its middle); the frames between them are made. The output is that
clip (START's K frames, the new ones, END's K), or with ``--join`` all of START, the new frames and all of END: two
clips bridged into one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import (CHECKPOINT_HELP, ArgumentParser, add_class_args, add_device_args, add_motion_copy_args,
               add_sampler_args, check_class_args, class_labels_of, load_pipeline, motion_copy_note,
               numbered_outputs, outputs_named, positive_float, positive_int, user_errors)


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-interpolate",
                       description="Make the frames between two keyframes (or bridge two clips) with a MeanFlow STDiT, "
                                   "one network call per window.")
    p.add_argument("start", help="image, video or folder of frames: its last --context-frames frames come first")
    p.add_argument("end", help="image, video or folder of frames: its first --context-frames frames come last")
    p.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    p.add_argument("--num-frames", type=positive_int, default=None,
                   help="frames of the interpolated clip, the given ones included (default: the model's window, one "
                        "network call; a longer clip is filled window by window from both sides)")
    p.add_argument("--context-frames", type=positive_int, default=1,
                   help="frames given from each side (default 1: two keyframes)")
    p.add_argument("--join", action="store_true",
                   help="write all of START, the new frames and all of END (default: the interpolated clip only)")
    add_class_args(p, "the given frames")
    add_sampler_args(p)
    add_motion_copy_args(p)
    p.add_argument("--guidance-scale", type=positive_float, default=None,
                   help="classifier-free guidance scale >= 1, for a model trained with method.cfg_scale_range")
    p.add_argument("--num-clips", type=positive_int, default=1,
                   help="in-betweens of the same frames, each with its own noise: OUT's name numbered (out_0.mp4, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frame rate of the output (default: START's, read at the model's frame step, else END's; "
                        "two images: the model's sample.fps)")
    add_device_args(p)
    p.add_argument("--out", required=True,
                   help="output video: .mp4 (H.264; .mov, .mkv alike), .webm (VP9) or .gif")
    args = p.parse_args(argv)
    check_class_args(args)
    from ..data.video_io import check_exists

    for src in (args.start, args.end):
        check_exists(Path(src))  # before any work: missing, a URL, empty
    out_paths = numbered_outputs(args.out, args.num_clips, inputs=(args.start, args.end))

    from ..io import save_videos
    from ..pipeline.inputs import file_rate, first_frames, iter_clip, load_clip

    pipe = load_pipeline(args)
    pipe.resolve_guidance_scale(args.guidance_scale)  # a model that takes no scale says so before anything is written
    labels = class_labels_of(pipe, args)
    n, k = args.num_frames or pipe.window, args.context_frames
    if n < 2 * k + 1:
        raise ValueError(f"--num-frames {n} leaves no frame between {k} given frame(s) from each side: give at "
                         f"least {2 * k + 1}")
    (s_step, s_rate), (e_step, e_rate) = file_rate(args.start, pipe.cfg.data), file_rate(args.end, pipe.cfg.data)
    given = np.concatenate([load_clip(args.start, pipe.resolution, last=k, stride=s_step),
                            first_frames(args.end, pipe.resolution, k, e_step)], axis=1)  # (1, 2k, r, r, 3)
    out = pipe.condition(given, [*range(k), *range(n - k, n)], num_frames=n, class_labels=labels, seed=args.seed,
                         steps=args.steps, sampler=args.sampler, temperature=args.temperature, output_type="uint8",
                         infer_label=args.infer_class,
                         motion_copy=args.motion_copy, motion_copy_tol=args.motion_copy_tol,
                         guidance_scale=args.guidance_scale, num_clips=args.num_clips)
    if args.join:  # decoded as it is written: memory holds a chunk of each clip, whatever their lengths
        def each(chunks):  # (1, t, r, r, 3) -> (clips, t, r, r, 3): START and END are in every clip
            return (np.repeat(c, args.num_clips, axis=0) for c in chunks)

        chunks = (c for part in (each(iter_clip(args.start, pipe.resolution, s_step)), [out.frames[:, k : n - k]],
                                 each(iter_clip(args.end, pipe.resolution, e_step))) for c in part)
    else:
        chunks = [out.frames]  # (clips, n, r, r, 3)
    save_videos(chunks, out_paths, fps=args.fps or s_rate or e_rate or pipe.fps)
    if out.class_labels is not None:
        c = str(int(out.class_labels[0]))
        name = pipe.labels.get(c, c)
        print(f"class read from the given frames: {c}" + (f" ({name})" if name != c else ""))
    whole = "START, " if args.join else ""
    print(f"wrote {whole}{n - 2 * k} new frames between {k} given frame(s) from each side"
          f"{', END' if args.join else ''} {outputs_named(out_paths)}{motion_copy_note(pipe, args)}")
    return 0


if __name__ == "__main__":
    main()
