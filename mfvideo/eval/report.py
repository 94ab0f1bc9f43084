"""The moving-digits report: real held-out clips vs a model's 1-NFE / k-NFE samples and extensions."""

from __future__ import annotations

import time

import numpy as np

from .digits import DigitSuite, real_clips


def evaluate_pipeline(pipe, suite: DigitSuite, n: int = 200, steps: int | None = None, seed: int = 0,
                      sampler: str | None = None) -> dict:
    """Class-conditional samples (n, labels cycling 0..9) scored against n real held-out clips; and extension.

    ``sampler`` / ``steps`` as in the pipeline (default: the model's own sampler, MeanFlow 1-NFE or Euler 50).
    """
    cfg = pipe.config.data
    T = pipe.window
    real, _ = real_clips(n, "test", T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 1)
    labels = np.arange(n) % 10
    t0 = time.perf_counter()
    frames = pipe.generate(class_labels=labels.tolist(), seed=seed, steps=steps, sampler=sampler).frames
    elapsed = time.perf_counter() - t0
    out = suite.clip_metrics(frames, labels, real)
    out["seconds_per_clip"] = elapsed / n
    k = T // 2
    long, _ = real_clips(n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 2)
    ext = pipe.extend(long[:, :k], num_new_frames=T, context_frames=k, steps=steps, seed=seed, sampler=sampler).frames
    out.update(suite.extension_metrics(long[:, :k], ext[:, k:], long[:, k:]))
    return out


def evaluate_real(suite: DigitSuite, cfg, n: int = 200) -> dict:
    """The same metrics on real clips (a second held-out draw against the first): the ceiling."""
    a, labels = real_clips(n, "test", cfg.num_frames, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 1)
    b, _ = real_clips(n, "test", cfg.num_frames, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 3)
    return suite.clip_metrics(b, _, a)
