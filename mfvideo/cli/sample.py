"""mfvideo-sample: one mp4 per generated clip (1 network call per window), one lossless PNG per image (one-frame
clips: an image model, or --num-frames 1), and with --grid a PNG contact sheet. Clips longer than the model's window
are encoded as their windows are made (memory flat in their length; --grid holds them, as the sheet does)."""

from __future__ import annotations

from . import (CHECKPOINT_HELP, ArgumentParser, add_device_args, add_motion_copy_args, add_sampler_args,
               check_output_dir, class_name, load_pipeline, motion_copy_note, positive_float, positive_int, progress,
               user_errors)

BATCH = 64  # clips per network call: memory stays flat for any --num-clips
STREAM_BATCH = 16  # clips per batch past one window: one ffmpeg each, open together (~60 MB each at 256 px)
MAX_CLIPS = 100_000  # one mp4 each: more is a typo, not a request (1e9 files would fill any disk)


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-sample", description="Generate clips with a MeanFlow STDiT in one step.")
    p.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    p.add_argument("--classes", nargs="+", default=None,
                   help="class ids or names (the model's id2label, e.g. a training folder's class folders; any "
                        "synonym of a name such as 'tench, Tinca tinca'): one "
                        "clip each, or with --num-clips N and one class, N clips of it (default: a class drawn per "
                        "clip, named in the file name; -1: the null label)")
    p.add_argument("--num-clips", type=positive_int, default=None, help="clips to generate (default: 4, or one per class)")
    p.add_argument("--num-frames", type=positive_int, default=None, help="frames per clip (default: the model's window)")
    p.add_argument("--frames-per-window", type=positive_int, default=None,
                   help="clips longer than the window: keep the first N new frames of every later window and slide by "
                        "N (default: all; as mfvideo-extend)")
    add_motion_copy_args(p)
    p.add_argument("--guidance-scale", type=positive_float, default=None,
                   help="classifier-free guidance scale >= 1, for a model trained with method.cfg_scale_range (one "
                        "call per window still; default: the model's); a model with guidance folded in refuses it")
    p.add_argument("--seed", type=int, default=0)
    add_sampler_args(p)
    p.add_argument("--first-window-steps", type=positive_int, default=None,
                   help="network evaluations for the first window alone, the one made from noise with nothing to lean "
                        "on (default: --steps; with --sampler consistency --steps 1, 2 halve the bundled model's "
                        "broken clips for one more call per clip)")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frame rate of the clips (default: the model's sample.fps, else its data.target_fps, else 8)")
    p.add_argument("--format", default="mp4", choices=["mp4", "mov", "mkv", "webm", "gif"],  # io.VIDEO_FORMATS's
                   help="the clips' files: mp4 (H.264; mov, mkv alike), webm (VP9) or gif (default mp4)")
    p.add_argument("--grid", action="store_true",
                   help="also write grid.png, a row per clip (images: ceil(sqrt N) to a row; frames under 48 px "
                        "magnified, pixel for pixel)")
    add_device_args(p)
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    classes = args.classes
    if classes is not None and args.num_clips is not None and args.num_clips != len(classes):
        if len(classes) != 1:
            raise ValueError(f"--num-clips {args.num_clips} disagrees with the {len(classes)} --classes given")
        classes = classes * args.num_clips  # N clips of the one class
    n = len(classes) if classes is not None else (args.num_clips or 4)
    if n > MAX_CLIPS:
        raise ValueError(f"--num-clips {n}: at most {MAX_CLIPS:,} clips (one mp4 each) per call")
    if args.grid and n > 1000:
        raise ValueError(f"--grid draws one row per clip: at most 1000 clips, got {n}")
    folder = check_output_dir(args.out)

    import numpy as np
    import torch

    from ..io import grid, save_image, save_video, save_videos

    pipe = load_pipeline(args)
    if classes is not None:
        classes = pipe.check_labels(classes).tolist()  # names -> ids; an unknown name or id is one line
    pipe.resolve_guidance_scale(args.guidance_scale)  # a model that takes no scale says so before anything is written
    generator = torch.Generator().manual_seed(args.seed)
    frames = args.num_frames or pipe.window
    # one window: a batch's clips come in one chunk and are written one after another; longer: every clip of the
    # batch is encoded as its windows come (one ffmpeg each, open together: fewer clips per batch)
    streamed = frames > pipe.window
    batch = STREAM_BATCH if streamed else BATCH
    sheet, fps = [], args.fps
    for start in range(0, n, batch):
        count = min(batch, n - start)
        stream = pipe.generate_stream(
            num_frames=args.num_frames, num_clips=count, generator=generator, steps=args.steps,
            class_labels=None if classes is None else classes[start : start + count], sampler=args.sampler,
            frames_per_window=args.frames_per_window, motion_copy=args.motion_copy,
            motion_copy_tol=args.motion_copy_tol, first_window_steps=args.first_window_steps,
            guidance_scale=args.guidance_scale, temperature=args.temperature)
        fps = fps or stream.fps
        ids = classes[start : start + count] if classes is not None else stream.class_labels  # given, drawn, or none
        names = [f"{i:03d}" + ("" if ids is None else f"_{class_name(pipe, ids[i - start])}")
                 for i in range(start, start + count)]
        chunks = progress(stream, stream.num_frames, f"clips {start + 1}-{start + count} of {n}")
        if args.grid:  # the sheet holds every frame anyway
            chunks = list(chunks)
            sheet.append(np.concatenate(chunks, axis=1))
        if streamed:
            save_videos(chunks, [folder / f"clip_{name}.{args.format}" for name in names], fps=fps)
            continue
        clips = next(iter(chunks))  # the one chunk (B, frames, H, W, 3)
        for name, clip in zip(names, clips):
            if frames == 1:  # an image: PNG is lossless, an H.264 frame would be chroma-subsampled
                save_image(clip[0], folder / f"image_{name}.png")
            else:
                save_video(clip, folder / f"clip_{name}.{args.format}", fps=fps)
    if args.grid:
        save_image(grid(np.concatenate(sheet)), folder / "grid.png")
    print(f"wrote {n} image{'s' * (n > 1)} to {folder}" if frames == 1 else
          f"wrote {n} clip{'s' * (n > 1)} of {frames} frames to {folder}{motion_copy_note(pipe, args)}")
    return 0


if __name__ == "__main__":
    main()
