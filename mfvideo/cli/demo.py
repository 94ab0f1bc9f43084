"""mfvideo-demo --out DIR: the bundled moving-digits model generates and extends clips on this machine.

Writes one generated clip per digit (mp4) with the model's ``motion_copy`` (the bundled model's 4: the window
copied outwards from the frame its other frames are best explained by, moved, one hand per clip) and one with the
other setting, a contact sheet of both in pairs of rows, three held-out real clips (their first frames
only) extended by the model three times -- with no label (its context reader reads the class inside the one call
per window), with the class a diffusion classifier reads off the frames first (``infer_label``), both with the
model's ``motion_copy`` (the bundled model's 4: a new frame that the frame before it, moved by whole pixels,
explains becomes that moved frame, the given handwriting kept), and with no label and the other setting (the network's
own frames, ``motion_copy=0``, for a model that copies; else ``motion_copy=4``) -- and a sheet comparing the
extensions with the true continuation; then the same
clips' first frames, saved as PNG, continued by 16 frames (image to video: the one frame is the first window's
context, which grows with the frames made); and the 16 frames before the same clips' last frames (backward
extension, with no label; a per-frame codec's model only). Past the first window, each window keeps its first
``--frames-per-window`` new frames (default 1 with a per-frame codec, as the bundled model's: one network call per
new frame, its steadiest clips; 4 keeps whole windows, a quarter of the calls; README "Use it", `frames_per_window`,
and "Clips generated past the window" in "Bundled model").
"""

from __future__ import annotations

import time
from pathlib import Path

from . import ArgumentParser, check_output_dir, non_negative_int, positive_int, user_errors


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled model)")
    p.add_argument("--num-frames", type=positive_int, default=16, help="frames per generated clip")
    p.add_argument("--frames-per-window", type=positive_int, default=None,
                   help="new frames kept per window past the first (default 1 with a per-frame codec: one call per "
                        "new frame; whole windows with a causal video VAE)")
    p.add_argument("--motion-copy", type=non_negative_int, default=None, metavar="R",
                   help="the motion_copy radius of generation and the extensions, in latent pixels (default: the "
                        "model's sample.motion_copy, 4 for the bundled model); the second generated clip per digit "
                        "and the third extension take 0 where this is not 0, else 4")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_output_dir(args.out)

    import numpy as np
    import torch

    from ..data.moving_digits import MovingDigits
    from ..frames import pixels_to_uint8
    from ..io import grid, save_image, save_video
    from ..pipeline import MFVideoPipeline

    out = Path(args.out)
    pipe = MFVideoPipeline.from_pretrained(args.checkpoint)
    pipe.set_progress_bar_config(disable=True)  # seconds in all; the demo reports each step itself
    cfg = pipe.cfg
    t0 = time.perf_counter()
    n = args.frames_per_window or (1 if pipe.codec.temporal_factor == 1 else None)
    k = pipe.window // 2
    per = n or pipe.window - k  # new frames kept per window past the first
    copy = cfg.sample.motion_copy if args.motion_copy is None else args.motion_copy
    other = 0 if copy else 4  # the network's own frames, or the copy, whichever is not the default
    gen = pipe.generate(num_frames=args.num_frames, class_labels=list(range(10)), seed=args.seed,
                        output_type="uint8", frames_per_window=n, motion_copy=copy)
    t_gen = time.perf_counter() - t0
    gen_other = pipe.generate(num_frames=args.num_frames, class_labels=list(range(10)), seed=args.seed,
                              output_type="uint8", frames_per_window=n, motion_copy=other)
    for d, (clip, clip_other) in enumerate(zip(gen.frames, gen_other.frames)):
        save_video(clip, out / "generated" / f"digit_{d}.mp4", fps=gen.fps)
        save_video(clip_other, out / "generated" / f"digit_{d}_motion_copy_{other}.mp4", fps=gen.fps)
    save_image(grid(np.stack([gen.frames, gen_other.frames], axis=1).reshape(-1, *gen.frames.shape[1:])),
               out / "generated.png")

    real = MovingDigits(split="test", num_frames=k + 16, resolution=cfg.data.resolution, digit_size=cfg.data.digit_size,
                        speed=cfg.data.speed, channels=1, seed=cfg.data.seed + 1)
    truth = pixels_to_uint8(torch.stack([real[i]["x"] for i in range(3)]))  # (3, T, H, W, 3)
    rows, read = [], []
    t0 = time.perf_counter()
    for i, clip in enumerate(truth):
        src = out / "extended" / f"input_{i}.mp4"
        save_video(clip[:k], src, fps=gen.fps)
        ext = pipe.extend(src, num_new_frames=16, context_frames=k, seed=args.seed, output_type="uint8",
                          frames_per_window=n, motion_copy=copy)
        save_video(ext.frames[0], out / "extended" / f"extended_{i}.mp4", fps=gen.fps)
        ext_read = pipe.extend(src, num_new_frames=16, context_frames=k, seed=args.seed, output_type="uint8",
                               infer_label=bool(cfg.model.num_classes), frames_per_window=n, motion_copy=copy)
        save_video(ext_read.frames[0], out / "extended" / f"extended_{i}_read_class.mp4", fps=gen.fps)
        read.append("-" if ext_read.class_labels is None else str(int(ext_read.class_labels[0])))
        ext_other = pipe.extend(src, num_new_frames=16, context_frames=k, seed=args.seed, output_type="uint8",
                                frames_per_window=n, motion_copy=other)
        save_video(ext_other.frames[0], out / "extended" / f"extended_{i}_motion_copy_{other}.mp4", fps=gen.fps)
        rows += [clip, ext.frames[0], ext_read.frames[0], ext_other.frames[0]]
    t_ext = time.perf_counter() - t0
    save_image(grid(np.stack(rows)), out / "extended.png")
    still_rows = []
    for i, clip in enumerate(truth):  # image to video: a still, no label
        src = save_image(clip[0], out / "from_image" / f"input_{i}.png")
        moving = pipe.extend(src, num_new_frames=16, seed=args.seed, output_type="uint8", frames_per_window=n,
                             motion_copy=copy)
        save_video(moving.frames[0], out / "from_image" / f"from_image_{i}.mp4", fps=gen.fps)
        still_rows += [clip[: 1 + 16], moving.frames[0]]
    save_image(grid(np.stack(still_rows)), out / "from_image.png")
    before_rows = []
    if pipe.codec.temporal_factor == 1:  # backward extension: what came before each clip's last frames
        for i, clip in enumerate(truth):
            src = save_video(clip[-k:], out / "before" / f"input_{i}.mp4", fps=gen.fps)
            pre = pipe.extend(src, num_new_frames=16, context_frames=k, seed=args.seed, output_type="uint8",
                              frames_per_window=n, backward=True, motion_copy=copy)
            save_video(pre.frames[0], out / "before" / f"before_{i}.mp4", fps=gen.fps)
            before_rows += [clip, pre.frames[0]]
        save_image(grid(np.stack(before_rows)), out / "before.png")
    windows = 1 + -(-max(args.num_frames - pipe.window, 0) // per)
    print(f"generated 10 clips x {args.num_frames} frames ({windows} network calls per clip, batched) in {t_gen:.2f} s")
    print(f"extended 3 held-out clips by 16 frames from {k} context frames ({-(-16 // per)} calls each, "
          f"{per} new frame(s) kept per window), three times, in {t_ext:.2f} s; "
          f"classes read off the context: {', '.join(read)}")
    what = f"motion_copy={copy}" + (" (the given handwriting kept)" if copy else " (the network's own frames)")
    third = f", then with no label and motion_copy={other}" + (" (the network's own frames)" if copy else "")
    pairs = (f"per digit motion_copy={copy}" + (" (one hand per clip)" if copy else " (the network's own frames)")
             + f", then motion_copy={other}" + (" (the network's own frames)" if copy else ""))
    before = f", {out}/before.png (rows: true clip, then 16 frames made before its last {k} + those)" if before_rows \
        else ""
    print(f"wrote {out}/generated.png (rows: {pairs}), {out}/extended.png (rows: true clip, then input + extension "
          f"with no label, then with the class infer_label read off the input, both {what}{third}), "
          f"{out}/from_image.png (rows: true clip, then its first frame, a PNG, + 16 new frames){before} and the mp4s")
    return 0


if __name__ == "__main__":
    main()
