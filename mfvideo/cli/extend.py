"""mfvideo-extend INPUT --num-new-frames N --out OUT.mp4: the input followed by N generated frames, encoded as they
are made (memory flat in the video's length); ``--backward``: N frames before it, then the input."""

from __future__ import annotations

from pathlib import Path

from . import (CHECKPOINT_HELP, ArgumentParser, add_class_args, add_device_args, add_motion_copy_args,
               add_sampler_args, check_class_args, class_labels_of, frame_bar, load_pipeline, motion_copy_note,
               numbered_outputs, outputs_named, positive_float, positive_int, progress, user_errors)


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-extend", description="Continue a video with a MeanFlow STDiT.")
    p.add_argument("input", help="video file (mp4, webm, avi, gif), a folder of frames (one image each, in "
                                  "natural name order), or a still image (png, jpg, webp): image to video")
    p.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    p.add_argument("--num-new-frames", type=positive_int, required=True)
    p.add_argument("--context-frames", type=positive_int, default=None,
                   help="frames of context per window (default: half the window, or all of a shorter input)")
    p.add_argument("--frames-per-window", type=positive_int, default=None,
                   help="keep only the first N new frames of every window and slide by N: frames nearer their context, "
                        "(window - context) / N times the network calls; 1 = one call per new frame (default: all)")
    add_class_args(p, "the input")
    add_sampler_args(p)
    p.add_argument("--context-noise", type=float, default=None,
                   help="noise level in [0, 1) of the model's own frames when they become context (default: the "
                        "model's sample.context_noise)")
    p.add_argument("--reread-context", action="store_true",
                   help="a model with a context reader reads every window's own context instead of holding what it "
                        "read off the input (for videos whose content changes)")
    add_motion_copy_args(p)
    p.add_argument("--guidance-scale", type=positive_float, default=None,
                   help="classifier-free guidance scale >= 1, for a model trained with method.cfg_scale_range (one "
                        "call per window still; default: the model's); a model with guidance folded in refuses it")
    p.add_argument("--new-only", action="store_true",
                   help="write only the new frames (the input is then decoded from near its end only; default: the "
                        "input followed by the new frames)")
    p.add_argument("--backward", action="store_true",
                   help="make the frames before the input instead, its first frames the context, and write them "
                        "followed by the input (a model in pixel space or on an image VAE)")
    p.add_argument("--num-clips", type=positive_int, default=1,
                   help="continuations of the input, each with its own noise: OUT's name numbered (out_0.mp4, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frame rate of the output (default: the input's, read at the model's frame step: its "
                        "data.target_fps or data.frame_stride; an image or a folder of frames: the model's sample.fps)")
    add_device_args(p)
    p.add_argument("--out", required=True,
                   help="output video: .mp4 (H.264; .mov, .mkv alike), .webm (VP9) or .gif")
    args = p.parse_args(argv)
    check_class_args(args)
    from ..data.video_io import check_exists

    check_exists(Path(args.input))  # before any work: missing, a URL, empty
    out_paths = numbered_outputs(args.out, args.num_clips, inputs=(args.input,))

    from ..io import save_videos

    pipe = load_pipeline(args)
    pipe.resolve_guidance_scale(args.guidance_scale)  # a model that takes no scale says so before anything is written
    stream = pipe.extend_stream(args.input, args.num_new_frames, context_frames=args.context_frames, steps=args.steps,
                                class_labels=class_labels_of(pipe, args), seed=args.seed,
                                sampler=args.sampler, temperature=args.temperature, infer_label=args.infer_class,
                                context_noise=args.context_noise,
                                reread_context=args.reread_context, frames_per_window=args.frames_per_window,
                                motion_copy=args.motion_copy, motion_copy_tol=args.motion_copy_tol,
                                guidance_scale=args.guidance_scale, include_input=not args.new_only,
                                backward=args.backward, num_clips=args.num_clips)
    if args.backward:  # the new frames are all made before the first is written: a bar counts them as made
        stream.on_made = frame_bar(args.num_new_frames, "extend (backward)")
    chunks = iter(stream)
    if args.new_only and args.backward:
        chunks = _first(chunks, args.num_new_frames)  # the new frames come first, the context frames last
    elif args.new_only:
        next(chunks)  # the context frames the stream gives first
    written = []
    # encoded as the windows are made: memory holds one window, whatever --num-new-frames
    total = args.num_new_frames if args.new_only else stream.num_frames
    chunks = progress(chunks, total, "extend")
    save_videos((written.append(len(c[0])) or c for c in chunks), out_paths, fps=args.fps or stream.fps)
    if stream.class_labels is not None and int(stream.class_labels[0]) >= 0:
        c = str(int(stream.class_labels[0]))
        name = pipe.labels.get(c, c)
        print(f"class read from the context: {c}" + (f" ({name})" if name != c else ""))
    print(f"wrote {sum(written)} frames ({args.num_new_frames} new) {outputs_named(out_paths)}"
          f"{motion_copy_note(pipe, args)}")
    return 0


def _first(chunks, n: int):
    """The first ``n`` frames of a stream of chunks (B, t, H, W, 3), the rest not asked for."""
    for chunk in chunks:
        if n <= 0:
            return
        yield chunk[:, :n]
        n -= chunk.shape[1]


if __name__ == "__main__":
    main()
