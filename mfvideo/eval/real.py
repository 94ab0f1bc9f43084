"""Real clips for a metric's reference statistics (FID / FVD): pixels, whatever the model was trained on.

A model trained on a latent cache never saw its pixels, but its FID is against them: the cache's ``settings.json``
records the dataset it was encoded from (its root made absolute), and the real clips are read from there, not decoded
from the latents (a VAE's reconstructions would score the VAE too).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..frames import pixels_to_uint8, with_time

HELD_OUT = ("test", "val", "validation")


def pixel_source(data):
    """The ``DataConfig`` whose items are real pixels: ``data`` itself, or the dataset a latent cache was encoded
    from."""
    if data.kind != "latent_cache":
        return data
    from ..config import DataConfig
    from ..data.latent_cache import SETTINGS

    path = Path(data.root or "") / SETTINGS
    recorded = json.loads(path.read_text()).get("data", {}) if path.is_file() else {}
    if "kind" not in recorded:  # no settings, or an early cache's without its data
        raise FileNotFoundError(f"the latent cache data.root={data.root} does not say what it was encoded from (its "
                                f"{SETTINGS}); give the real clips' statistics with --real-stats")
    names = {f.name for f in dataclasses.fields(DataConfig)}
    source = DataConfig(**{k: v for k, v in recorded.items() if k in names})
    if source.kind in ("image_folder", "video_folder") and not Path(source.root or "").is_dir():
        raise FileNotFoundError(f"the latent cache {data.root} was encoded from {source.root}, which is not there; "
                                "the real clips are read from it (give their statistics with --real-stats instead)")
    return source


def real_split(data, split: str | None) -> str:
    """``split``, or by default the first held-out split the data has (test, val, validation), else the training one."""
    from ..data import has_split

    if split is not None:
        return split
    return next((s for s in HELD_OUT if has_split(data, s)), data.split)


class RealClips:
    """At most ``n`` real clips of ``num_frames`` frames (1: images) from ``split``, a fair sample (``sample_order``),
    unflipped, in batches of uint8 (B, T, H, W, 3): iterated, or batch ``b`` alone (``batch``: the contexts of
    extension-FVD's batch b, whichever process makes it)."""

    def __init__(self, data, split: str, num_frames: int, n: int, batch_size: int = 16):
        from ..data import build_dataset, sample_order

        data = dataclasses.replace(pixel_source(data), num_frames=num_frames, split=split, hflip=False,
                                   class_names=None)  # pixels alone: the names are not read
        self.dataset, self.batch_size = build_dataset(data), batch_size
        self.order, self.n = sample_order(data, len(self.dataset)), min(n, len(self.dataset))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def batch(self, b: int) -> np.ndarray:
        take = self.order[b * self.batch_size : min(self.n, (b + 1) * self.batch_size)]
        x = torch.stack([self.dataset[int(j)]["x"] for j in take])  # (B, C, [T,] H, W)
        return pixels_to_uint8(with_time(x))  # images: one frame each

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.batch(b) for b in range(len(self)))


def load_stats(path) -> tuple[np.ndarray, np.ndarray]:
    """Reference statistics from an ``.npz`` with ``mu`` (D,) and ``sigma`` (D, D) (ADM's reference batches, clean-fid
    and ours hold them so), read without pickle."""
    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz of mu and sigma ({e})") from None
    if not hasattr(d, "files"):  # an .npy: one array
        raise ValueError(f"{path}: one array, not an .npz of mu and sigma")
    if "mu" not in d or "sigma" not in d:
        raise ValueError(f"{path} holds {', '.join(d.files) or 'nothing'}, not mu and sigma")
    mu, sigma = np.asarray(d["mu"], np.float64), np.asarray(d["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D, D)")
    return mu, sigma
