"""Datasets: the built-in moving digits, image folders, video folders and latent caches."""

from __future__ import annotations

from pathlib import Path

import torch

from .moving_digits import MovingDigits, render_clip


def build_dataset(cfg, split: str | None = None):
    """A dataset from a ``DataConfig``. Items are dicts with ``x`` (C, [T,] H, W) and ``y`` (int, -1 = none); its
    ``classes`` are the class names by id, named by ``cfg.class_names`` where given."""
    ds = _build_dataset(cfg, split or cfg.split)
    if getattr(cfg, "class_names", None):
        from .class_names import named_classes

        ds.classes = named_classes(getattr(ds, "classes", None), cfg.class_names)
    return ds


def _build_dataset(cfg, split: str):
    if cfg.kind == "moving_digits":
        return MovingDigits(
            split=split, num_clips=cfg.num_clips, num_frames=cfg.num_frames, resolution=cfg.resolution,
            num_digits=cfg.num_digits, digit_size=cfg.digit_size, speed=cfg.speed, seed=cfg.seed,
            channels=cfg.channels,
        )
    if cfg.kind == "image_folder":
        from .images import ImageFolder

        return ImageFolder(cfg.root, split=split, resolution=cfg.resolution, hflip=cfg.hflip, channels=cfg.channels)
    if cfg.kind == "video_folder":
        from .videos import VideoFolder

        return VideoFolder.from_config(cfg, split=split).scan()  # bad files found once, before any worker starts
    if cfg.kind == "latent_cache":
        from .latent_cache import LatentCache

        return LatentCache(cfg.root, hflip=cfg.hflip)  # images: the flipped view half the time, where asked for
    raise ValueError(f"unknown data.kind {cfg.kind!r}; known: moving_digits, image_folder, video_folder, latent_cache")


def sample_order(cfg, length: int, seed: int = 0):
    """The order in which to take a sample of a dataset's ``length`` items, the first n of it a fair sample: moving
    digits as they are (drawn in random order), anything else in a fixed shuffled order (a folder lists its files
    class by class, a latent cache as its source did: their first n were the first classes alone)."""
    if cfg.kind == "moving_digits":
        return torch.arange(length)
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))


def has_split(cfg, split: str) -> bool:
    """Whether ``split`` holds other clips than the training split (``cfg.split``): moving digits' held-out
    handwriting, or a folder's ``<split>/`` beside its training one. A folder of class folders alone, a manifest or a
    latent cache is one split: ``build_dataset`` reads the training clips for any split of it."""
    if split == cfg.split:
        return False
    if cfg.kind == "moving_digits":
        return True
    if cfg.kind in ("image_folder", "video_folder") and not cfg.manifest and cfg.root:
        return (Path(cfg.root) / split).is_dir()
    return False


__all__ = ["MovingDigits", "build_dataset", "has_split", "render_clip", "sample_order"]
