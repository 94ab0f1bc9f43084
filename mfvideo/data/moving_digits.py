"""Moving digits: bouncing handwritten digits from scikit-learn's bundled ``load_digits`` (no download).

1797 real 8x8 handwritten digits, upscaled to ``digit_size`` and bounced around a ``resolution``^2 canvas.
Every clip is a pure function of (seed, split, index). The held-out split uses a disjoint set of digit images
(every fifth image), so held-out clips show handwriting the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SPLITS = {"train": 0, "test": 1}


@lru_cache(maxsize=None)
def digit_bank(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) float32 digit images in [0, 1] and their (N,) labels for one split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    held_out = np.arange(len(data.images)) % 5 == 0
    keep = held_out if split == "test" else ~held_out
    images = torch.from_numpy(data.images[keep] / 16.0).float()[:, None]  # (N, 1, 8, 8)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return images.clamp(0, 1).numpy(), data.target[keep].astype(np.int64)


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W) float32 in [0, 1]
    label: int  # the digit for one digit, -1 otherwise
    positions: np.ndarray  # (T, num_digits, 2) top-left corner (row, col) per frame
    digit_index: np.ndarray  # (num_digits,) index into the split's digit bank


def render_clip(
    index: int, split: str = "train", num_frames: int = 8, resolution: int = 32, num_digits: int = 1,
    digit_size: int = 16, speed: float = 1.5, seed: int = 0, angle: float | None = None,
) -> Clip:
    """One clip. ``angle`` (radians; 0 rightwards, pi / 2 downwards) fixes every digit's direction of motion instead
    of drawing it; every random draw stays the same, so the glyphs and starting positions do not change with it."""
    if split not in SPLITS:
        raise ValueError(f"unknown moving-digits split {split!r}; known: {list(SPLITS)}")
    if digit_size > resolution:
        raise ValueError(f"digit_size {digit_size} exceeds the frame resolution {resolution}")
    bank, labels = digit_bank(split, digit_size)
    rng = np.random.default_rng([seed, SPLITS[split], index])
    which = rng.integers(0, len(bank), num_digits)
    span = resolution - digit_size  # top-left corner lives in [0, span]
    pos = rng.uniform(0, span, (num_digits, 2))
    drawn = rng.uniform(0, 2 * np.pi, num_digits)  # drawn even when fixed: every later draw stays the same
    angle = drawn if angle is None else np.full(num_digits, float(angle))
    vel = speed * np.stack([np.sin(angle), np.cos(angle)], axis=1)  # (num_digits, 2)
    frames = np.zeros((num_frames, resolution, resolution), np.float32)
    positions = np.zeros((num_frames, num_digits, 2), np.float32)
    for f in range(num_frames):
        for d in range(num_digits):
            r, c = np.rint(pos[d]).astype(int)
            patch = frames[f, r : r + digit_size, c : c + digit_size]
            np.maximum(patch, bank[which[d]], out=patch)  # overlapping digits: brightest wins
        positions[f] = pos
        pos = pos + vel
        over, under = pos > span, pos < 0  # bounce off the walls
        pos = np.where(over, 2 * span - pos, np.where(under, -pos, pos))
        vel = np.where(over | under, -vel, vel)
    label = int(labels[which[0]]) if num_digits == 1 else -1
    return Clip(frames, label, positions, which)


class MovingDigits(Dataset):
    """Clips (C, T, H, W) in [-1, 1] (or images (C, H, W) when num_frames = 1) and digit labels."""

    def __init__(
        self, split: str = "train", num_clips: int = 20000, num_frames: int = 8, resolution: int = 32,
        num_digits: int = 1, digit_size: int = 16, speed: float = 1.5, seed: int = 0, channels: int = 1,
    ):
        if split not in SPLITS:  # here, not at the first clip drawn (after the run had written its folder)
            raise ValueError(f"unknown moving-digits split {split!r}; known: {list(SPLITS)}")
        self.kw = dict(split=split, num_frames=num_frames, resolution=resolution, num_digits=num_digits,
                       digit_size=digit_size, speed=speed, seed=seed)
        self.num_clips = num_clips
        self.channels = channels
        self.num_classes = 10 if num_digits == 1 else 0
        self.classes = [str(d) for d in range(self.num_classes)]  # class names, saved with the model
        self.num_frames = num_frames

    def __len__(self) -> int:
        return self.num_clips

    def clip(self, index: int) -> Clip:
        return render_clip(index, **self.kw)

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        x = torch.from_numpy(clip.frames) * 2 - 1  # (T, H, W) in [-1, 1]
        x = x[None].expand(self.channels, -1, -1, -1).clone()  # (C, T, H, W)
        if self.num_frames == 1:
            x = x[:, 0]  # (C, H, W)
        return {"x": x, "y": clip.label, "index": index}
