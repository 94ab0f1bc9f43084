"""Sampling for evaluation: N clips through the pipeline, class-balanced, split across processes, resumable.

Each batch's features are written to their own file (atomically); a rerun skips finished batches, and rank k of
``world`` processes takes batches k, k + world, ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_features(pipe, features, out_dir, num_clips: int, num_frames: int | None = None, batch_size: int = 16,
                    steps: int | None = None, seed: int = 0, sampler: str | None = None, rank: int = 0, world: int = 1,
                    progress: bool = True, context=None, context_frames: int | None = None) -> np.ndarray:
    """Features of ``num_clips`` generated clips (labels cycle over the classes); returns all finished batches.

    With ``context`` (batch index -> uint8 real clips (B, T, H, W, 3), ``RealClips.batch``) and ``context_frames``
    K, batch b's clips are its real clips' first K frames continued to ``num_frames`` with no label (the model reads
    what it continues): the video prediction protocol, whose clips are scored whole against the real ones."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_batches = (num_clips + batch_size - 1) // batch_size
    classes = pipe.cfg.model.num_classes
    for b in tqdm(range(rank, n_batches, world), desc=f"eval[{rank}]", disable=not progress):
        path = out / f"features_{b:05d}.npy"
        if path.is_file():
            continue
        idx = np.arange(b * batch_size, min(num_clips, (b + 1) * batch_size))
        if context is not None:
            given = context(b)[:, :context_frames]  # (B, K, H, W, 3)
            clips = pipe.extend(given, num_new_frames=num_frames - context_frames, seed=seed + b, steps=steps,
                                sampler=sampler, output_type="uint8").frames
        else:
            labels = (idx % classes).tolist() if classes else None
            clips = pipe.generate(num_frames=num_frames, class_labels=labels, num_clips=len(idx), seed=seed + b,
                                  steps=steps, sampler=sampler, output_type="uint8").frames
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, features(clips))
        tmp.replace(path)
    files = sorted(out.glob("features_*.npy"))
    return np.concatenate([np.load(f) for f in files]) if files else np.zeros((0,))
