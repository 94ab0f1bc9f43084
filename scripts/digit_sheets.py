"""Sample sheets of a moving-digits model, for looking at (not scoring): what a person would see.

    python scripts/digit_sheets.py [--checkpoint DIR] [--out results] [--scale 3]

Writes (each PNG magnified ``--scale`` times, white gutters between frames):
- ``moving_digits_generated.png``: 1-NFE generation (8 frames = 1 network call), pairs of rows per digit 0..9: the
  model's defaults (the bundled model's ``motion_copy=4``: the window copied outwards from the frame its other frames
  are best explained by, where a move explains them), then the network's own frames (``motion_copy=0``), the same
  noise;
- ``moving_digits_extended.png``: held-out clips continued with the null label, threes of rows: the true clip, then
  its first 4 frames + 12 new frames (3 windows) with the model's defaults (the bundled model's ``motion_copy=4``:
  the given glyph moved where the network's frame is that move), then the network's own frames (``motion_copy=0``);
- ``moving_digits_extended_per_frame.png``: the same clips in threes of rows: the true clip, the default extension
  above, and the extension with ``frames_per_window=1`` (one network call per new frame, each next to its context);
- ``moving_digits_long.png``: three held-out clips continued by 64 frames with the null label, wrapped every 17
  frames (the 4 context frames first), each first with the model's defaults, then the network's own frames;
- ``moving_digits_interpolation.png``: threes of rows: the true clip, then frames 0 and 7 given and 1..6 generated,
  with the model's defaults, then the network's own frames.
"""

import argparse
from pathlib import Path

import numpy as np

from mfvideo.cli import positive_int, user_errors
from mfvideo.eval.digits import real_clips
from mfvideo.io import grid, save_image
from mfvideo.pipeline import MFVideoPipeline


def _save(rows: np.ndarray, path: Path, scale: int) -> None:
    sheet = grid(rows, scale=1)  # the whole sheet magnified below, gutters too
    save_image(np.kron(sheet, np.ones((scale, scale, 1), np.uint8)), path)
    print(f"wrote {path}")


def _interleave(*rows: np.ndarray) -> np.ndarray:
    """Sets of clips (N, T, H, W, 3) -> their rows in turn: a[0], b[0], ..., a[1], b[1], ..."""
    return np.stack(rows, axis=1).reshape(-1, *rows[0].shape[1:])


@user_errors  # bad input: one line and exit status 2
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default="results")
    p.add_argument("--scale", type=positive_int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    d, T = pipe.cfg.data, pipe.window
    k = T // 2
    gen = [pipe.generate(class_labels=list(range(10)), seed=a.seed, output_type="uint8", motion_copy=m).frames
           for m in (None, 0)]
    _save(_interleave(*gen), out / "moving_digits_generated.png", a.scale)

    clips, _ = real_clips(6, "test", k + 12, d.resolution, d.digit_size, d.speed, seed=d.seed + 11)
    kw = dict(context_frames=k, seed=a.seed, output_type="uint8")
    ext = pipe.extend(clips[:, :k], 12, **kw).frames
    own = pipe.extend(clips[:, :k], 12, motion_copy=0, **kw).frames
    _save(_interleave(clips, ext, own), out / "moving_digits_extended.png", a.scale)
    one = pipe.extend(clips[:, :k], 12, frames_per_window=1, **kw).frames
    _save(_interleave(clips, ext, one), out / "moving_digits_extended_per_frame.png", a.scale)

    long = np.stack([pipe.extend(clips[:3, :k], 64, motion_copy=m, **kw).frames for m in (None, 0)], 1)  # (3, 2, 68,
    # H, W, 3): per clip the defaults, then the network's own frames
    _save(long.reshape(3 * 2 * 4, 17, *long.shape[3:]), out / "moving_digits_long.png", a.scale)  # 68 = 4 rows of 17

    mid = [pipe.condition(clips[:, [0, T - 1]], [0, T - 1], num_frames=T, seed=a.seed, output_type="uint8",
                          motion_copy=m).frames for m in (None, 0)]
    _save(_interleave(clips[:, :T], *mid), out / "moving_digits_interpolation.png", a.scale)


if __name__ == "__main__":
    main()
