"""The moving-digits report: real held-out clips vs a model's 1-NFE / k-NFE samples, extensions and interpolations.

Extensions and interpolations run with the null label (a user's video has none): what the model keeps of the
digit comes from the context frames alone. Generation, extensions and interpolations score the network's own frames
(``motion_copy=0``, whatever the model's ``sample.motion_copy``) unless given a radius.
"""

from __future__ import annotations

import time

import numpy as np

from ..frames import grey
from .digits import DigitSuite, centroids, glyph_match, real_clips, sharpness


def evaluate_pipeline(pipe, suite: DigitSuite, n: int = 200, steps: int | None = None, seed: int = 0,
                      sampler: str | None = None, motion_copy: int = 0) -> dict:
    """Class-conditional samples (n, labels cycling 0..9) scored against n real held-out clips; and extension.

    ``sampler`` / ``steps`` as in the pipeline (default: the model's own sampler, MeanFlow 1-NFE or Euler 50);
    ``motion_copy``: the samples' radius (0: the network's own frames); the extension here is always the network's.
    """
    cfg = pipe.cfg.data
    T = pipe.window
    real, _ = real_clips(n, "test", T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 1)
    labels = np.arange(n) % 10
    t0 = time.perf_counter()
    frames = pipe.generate(class_labels=labels.tolist(), seed=seed, steps=steps, sampler=sampler, output_type="uint8",
                           motion_copy=motion_copy).frames
    elapsed = time.perf_counter() - t0
    out = suite.clip_metrics(frames, labels, real)
    out["seconds_per_clip"] = elapsed / n
    k = T // 2
    long, _ = real_clips(n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 2)
    ext = pipe.extend(long[:, :k], num_new_frames=T, context_frames=k, steps=steps, seed=seed, sampler=sampler,
                      output_type="uint8", motion_copy=0).frames  # the network's own frames
    out.update(suite.extension_metrics(long[:, :k], ext[:, k:], long[:, k:]))
    return out


def evaluate_real(suite: DigitSuite, cfg, n: int = 200) -> dict:
    """The same metrics on real clips (a second held-out draw against the first): the ceiling."""
    a, labels = real_clips(n, "test", cfg.num_frames, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 1)
    b, _ = real_clips(n, "test", cfg.num_frames, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 3)
    return suite.clip_metrics(b, _, a)


def _frame_accuracy(suite: DigitSuite, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of clips whose frame i is read as the clip's true digit: (T,)."""
    preds, _ = suite.predict(frames)
    return (preds == labels[:, None]).mean(axis=0)


def _extension_scores(suite: DigitSuite, new_frames: np.ndarray, labels: np.ndarray) -> dict:
    """The new frames (N, m, H, W, 3) against the true digits: accuracy by distance from the context (m,), and the
    share of clips whose majority is the true digit."""
    by_distance = _frame_accuracy(suite, new_frames, labels)
    return {"extension_accuracy_by_distance": np.round(by_distance.astype(float), 4).tolist(),
            "extension_identity_kept": float((suite.clip_class(new_frames) == labels).mean())}


def _midpoint_accuracy(acc: np.ndarray) -> float:
    """Per-frame accuracy (T,) of a window whose first and last frames are given -> that of the frames farthest
    from both."""
    T = acc.shape[0]
    dist = np.minimum(np.arange(T), T - 1 - np.arange(T))
    return float(acc[dist == dist.max()].mean())


def evaluate_context(pipe, suite: DigitSuite, n: int = 200, steps: int | None = None, seed: int = 0,
                     sampler: str | None = None, long_frames: int = 64, frames_per_window: int | None = None,
                     motion_copy: int = 0) -> dict:
    """How well generated frames follow unlabelled context, on held-out clips (null label throughout).

    - ``extension_accuracy_by_distance``: 4 context + 8 new frames; the share of clips whose new frame at distance
      d = 1..8 from the context is read as the true digit; ``extension_identity_kept``: the majority of the new
      frames is the true digit.
    - ``interpolation_accuracy_by_frame``: frames 0 and T - 1 given; accuracy of every frame in between;
      ``interpolation_midpoint_accuracy``: the frames farthest from both given frames.
    - ``context_noise``: the level the model's own frames are noised to when they become context (the pipeline's).
    - long extension of ``long_frames`` new frames (windows of T, T / 2 context): ``long_identity_kept_last_window``
      (majority of the last window's new frames), per-window ``long_window_accuracy``, ``long_window_brightness``
      and ``long_window_contrast`` (mean and 99th-percentile intensity relative to the context's), and
      ``long_seam_flicker``: mean |frame difference| across window seams over that inside windows (1 = no jump).
      "Windows" of these figures are blocks of T / 2 new frames; with ``frames_per_window`` (the pipeline's option,
      for the extensions; it does not touch interpolation) the seams are every ``frames_per_window`` frames, and
      with 1 every frame is one (flicker None).
    - ``*glyph_match*`` (``digits.glyph_match``): the new frames against the given frame's handwriting, 1 for a
      true continuation; the same digit by another writer scores ~0.85, another digit ~0.67, a blur of sigma 0.8
      px ~0.92 (held-out clips).
    - ``motion_copy``: the pipeline's option (``pipeline.motion_copy``) for the extensions and the interpolation;
      ``extension_trajectory_error``: pixels between the new frames' ink centroids and the true clip's.
    - ``extension_sharpness*`` (``digits.sharpness``): the new frames' edge energy per unit ink over the given
      frame's; ~1 for sharp glyphs, a true continuation or not, 0.33 for that 0.8 px blur. Read with glyph match.
    """
    cfg = pipe.cfg.data
    T = pipe.window
    k = T // 2
    clips, labels = real_clips(n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
    kw = dict(context_frames=k, steps=steps, seed=seed, sampler=sampler, output_type="uint8",
              frames_per_window=frames_per_window, motion_copy=motion_copy)
    ext = pipe.extend(clips[:, :k], num_new_frames=T, **kw).frames
    out = {"context_noise": pipe.resolve_context_noise(None), "frames_per_window": frames_per_window or T - k,
           **_extension_scores(suite, ext[:, k:], labels)}
    glyph = glyph_match(clips[:, k - 1], ext[:, k:])  # (n, T): same handwriting as the last context frame?
    out["extension_glyph_match_by_distance"] = np.round(glyph.mean(axis=0), 4).tolist()
    out["extension_glyph_match"] = float(glyph.mean())
    sharp = sharpness(clips[:, k - 1], ext[:, k:])  # (n, T): blur, which glyph match rates as handwriting
    out["extension_sharpness_by_distance"] = np.round(sharp.mean(axis=0), 4).tolist()
    out["extension_sharpness"] = float(sharp.mean())
    drift = np.linalg.norm(centroids(ext[:, k:]) - centroids(clips[:, k:]), axis=-1)  # (n, T) pixels
    out["extension_trajectory_error"] = float(drift.mean())

    given = clips[:, [0, T - 1]]
    mid = pipe.condition(given, [0, T - 1], num_frames=T, steps=steps, seed=seed, sampler=sampler, output_type="uint8",
                         motion_copy=motion_copy).frames
    acc = _frame_accuracy(suite, mid, labels)
    out["interpolation_accuracy_by_frame"] = np.round(acc.astype(float), 4).tolist()
    out["interpolation_midpoint_accuracy"] = _midpoint_accuracy(acc)
    out["interpolation_midpoint_glyph_match"] = _midpoint_accuracy(glyph_match(given[:, 0], mid).mean(axis=0))

    new = T - k
    long = pipe.extend(clips[:, :k], num_new_frames=long_frames, **kw).frames[:, k:]  # (n, long_frames, H, W, 3)
    windows = long[:, : long_frames // new * new].reshape(n, -1, new, *long.shape[2:])  # (n, W, new, H, W, 3)
    lum = grey(windows)  # (n, W, new, H, W)
    ctx = grey(clips[:, :k])
    win_acc = [float(_frame_accuracy(suite, windows[:, w], labels).mean()) for w in range(windows.shape[1])]
    win_glyph = glyph_match(clips[:, k - 1], long[:, : windows.shape[1] * new]).reshape(n, -1, new).mean(axis=(0, 2))
    last_major = suite.clip_class(windows[:, -1])
    diffs = np.abs(np.diff(grey(long), axis=1)).mean(axis=(0, 2, 3))  # (F - 1,)
    stride = out["frames_per_window"]
    seams = np.arange(stride - 1, diffs.shape[0], stride)  # difference between the last frame of a window and the next
    inside = np.setdiff1d(np.arange(diffs.shape[0]), seams)
    out.update({
        "long_new_frames": long_frames,
        "long_identity_kept_last_window": float((last_major == labels).mean()),
        "long_window_accuracy": np.round(win_acc, 4).tolist(),
        "long_window_glyph_match": np.round(win_glyph, 4).tolist(),
        "long_window_brightness": np.round((lum.mean(axis=(0, 2, 3, 4)) / ctx.mean()).astype(float), 4).tolist(),
        "long_window_contrast": np.round(
            [float(np.percentile(lum[:, w], 99) / np.percentile(ctx, 99)) for w in range(lum.shape[1])], 4).tolist(),
        "long_seam_flicker": float(diffs[seams].mean() / diffs[inside].mean()) if inside.size else None,
    })
    return out


def evaluate_read_label(pipe, suite: DigitSuite, n: int = 200, steps: int | None = None, seed: int = 0,
                        sampler: str | None = None, long_frames: int = 64) -> dict:
    """Extension when the class is read off the context by the model itself (``infer_label=True``), against the
    true label (the ceiling of any reading), on the clips of ``evaluate_context``.

    - ``read_label_accuracy``: the read class is the true digit;
    - ``read_label_extension_identity_kept`` / ``..._accuracy_by_distance``: as in ``evaluate_context``;
    - ``read_label_interpolation_midpoint_accuracy``: first and last frame given, the class read off those two;
    - ``true_label_extension_identity_kept``; ``read_label_long_identity_kept_last_window``.
    """
    cfg = pipe.cfg.data
    T = pipe.window
    k = T // 2
    clips, labels = real_clips(n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
    kw = dict(context_frames=k, steps=steps, seed=seed, sampler=sampler, output_type="uint8", motion_copy=0)
    ext = pipe.extend(clips[:, :k], num_new_frames=T, infer_label=True, **kw)
    read = ext.class_labels.tolist()
    out = {"read_label_accuracy": float((ext.class_labels == labels).mean())}
    out.update({f"read_label_{m}": v for m, v in _extension_scores(suite, ext.frames[:, k:], labels).items()})
    truth = pipe.extend(clips[:, :k], num_new_frames=T, class_labels=labels.tolist(), **kw).frames
    out.update({f"true_label_{m}": v for m, v in _extension_scores(suite, truth[:, k:], labels).items()})
    mid = pipe.condition(clips[:, [0, T - 1]], [0, T - 1], num_frames=T, steps=steps, seed=seed, sampler=sampler,
                         output_type="uint8", infer_label=True, motion_copy=0).frames
    out["read_label_interpolation_midpoint_accuracy"] = _midpoint_accuracy(_frame_accuracy(suite, mid, labels))
    last = pipe.extend(clips[:, :k], num_new_frames=long_frames, class_labels=read, **kw).frames[:, -(T - k):]
    out["read_label_long_identity_kept_last_window"] = float((suite.clip_class(last) == labels).mean())
    return out
