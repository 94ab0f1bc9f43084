"""Datasets: the built-in moving digits, image folders, video folders and latent caches."""

from __future__ import annotations

from .moving_digits import MovingDigits, render_clip


def build_dataset(cfg, split: str | None = None):
    """A dataset from a ``DataConfig``. Items are dicts with ``x`` (C, [T,] H, W) and ``y`` (int, -1 = none)."""
    split = split or cfg.split
    if cfg.kind == "moving_digits":
        return MovingDigits(
            split=split, num_clips=cfg.num_clips, num_frames=cfg.num_frames, resolution=cfg.resolution,
            num_digits=cfg.num_digits, digit_size=cfg.digit_size, speed=cfg.speed, seed=cfg.seed,
            channels=cfg.channels,
        )
    if cfg.kind == "image_folder":
        from .images import ImageFolder

        return ImageFolder(cfg.root, split=split, resolution=cfg.resolution, hflip=cfg.hflip)
    if cfg.kind == "video_folder":
        from .videos import VideoFolder

        return VideoFolder.from_config(cfg, split=split).scan()  # bad files found once, before any worker starts
    if cfg.kind == "latent_cache":
        from .latent_cache import LatentCache

        return LatentCache(cfg.root)
    raise ValueError(f"unknown data.kind {cfg.kind!r}; known: moving_digits, image_folder, video_folder, latent_cache")


__all__ = ["MovingDigits", "build_dataset", "render_clip"]
