"""A sheet of unlabelled extensions with and without ``motion_copy``, for looking at: per held-out clip the true clip,
the model's extension, and the same extension (same noise) with motion copy; the first frames are the given ones.

    python scripts/motion_copy_sheet.py [--checkpoint DIR] [--n 6] [--new 16] [--frames-per-window 1]
                                        [--radius 4] --out results/motion_copy_sheet.png
"""

import argparse

import numpy as np
from PIL import Image

from mfvideo.cli import check_output_path, non_negative_int, positive_int, user_errors
from mfvideo.eval.digits import real_clips
from mfvideo.io import grid, save_image
from mfvideo.pipeline import MFVideoPipeline


@user_errors  # bad input: one line and exit status 2
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=positive_int, default=6)
    p.add_argument("--new", type=positive_int, default=16, help="new frames per clip")
    p.add_argument("--frames-per-window", type=positive_int, default=1)
    p.add_argument("--radius", type=non_negative_int, default=4)
    p.add_argument("--scale", type=positive_int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    check_output_path(a.out, "--out")
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    d, k = pipe.cfg.data, pipe.window // 2
    clips, _ = real_clips(a.n, "test", k + a.new, d.resolution, d.digit_size, d.speed, seed=d.seed + 4)
    kw = dict(seed=0, output_type="uint8", frames_per_window=a.frames_per_window)
    plain = pipe.extend(clips[:, :k], a.new, **kw).frames
    copied = pipe.extend(clips[:, :k], a.new, motion_copy=a.radius, **kw).frames
    img = Image.fromarray(grid(np.stack([r for i in range(a.n) for r in (clips[i], plain[i], copied[i])]), scale=1))
    save_image(np.asarray(img.resize((img.width * a.scale, img.height * a.scale), Image.NEAREST)), a.out)  # atomic
    print(f"wrote {a.out}: per clip the true clip, the extension, the extension with motion_copy={a.radius}")


if __name__ == "__main__":
    main()
