"""Moving digits needs no preparation: clips are rendered from scikit-learn's bundled digits on the fly.

This script exports clips as mp4 files in the video-folder layout (<digit>/<index>.mp4), e.g. to test the video
pipeline end to end or to extend real files:

    python datasets/moving_digits/prepare.py --out data/moving_digits_mp4 --num-clips 100 --split test
"""

import argparse
from pathlib import Path

import numpy as np

from mfvideo.cli import non_negative_float, positive_float, positive_int, user_errors
from mfvideo.data.moving_digits import render_clip
from mfvideo.io import save_video


@user_errors  # a bad value is one line and exit status 2, as for the console scripts
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--num-clips", type=positive_int, default=100)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--num-frames", type=positive_int, default=16)
    p.add_argument("--resolution", type=positive_int, default=16)
    p.add_argument("--digit-size", type=positive_int, default=8)
    p.add_argument("--speed", type=non_negative_float, default=1.0, help="pixels per frame")
    p.add_argument("--fps", type=positive_float, default=6.0)
    a = p.parse_args(argv)
    for i in range(a.num_clips):
        clip = render_clip(i, a.split, a.num_frames, a.resolution, 1, a.digit_size, a.speed)
        frames = (np.clip(clip.frames, 0, 1) * 255).astype(np.uint8)
        save_video(frames, Path(a.out) / str(clip.label) / f"{i:05d}.mp4", fps=a.fps)
    print(f"wrote {a.num_clips} clips to {a.out}")


if __name__ == "__main__":
    main()
