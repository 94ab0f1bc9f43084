"""Context masks for frame-conditional training: which frames of a clip are given clean.

A mask is (B, T) bool, True on context frames. Training draws a mix of kinds so one model learns
unconditional generation, extension (first k), backward extension (last k), in-betweening (every n-th),
interpolation between a clip's two ends (first and last k) and single-frame conditioning (one random frame).
"""

from __future__ import annotations

import torch

KINDS = ("none", "first", "last", "every", "ends", "random_frame")


def context_mask(kind: str, batch: int, frames: int, k: int = 1, n: int = 2, index: int = 0, device=None):
    """A (B, T) mask of one kind: first/last k frames, every n-th frame, the first and last k, or the frame at
    ``index``."""
    m = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    if kind == "first":
        m[:, :k] = True
    elif kind == "last":
        m[:, frames - k :] = True
    elif kind == "ends":
        m[:, :k] = True
        m[:, frames - k :] = True
    elif kind == "every":
        m[:, ::n] = True
    elif kind == "random_frame":
        m[:, index] = True
    elif kind != "none":
        raise ValueError(f"unknown context mask kind {kind!r}; known: {KINDS}")
    return m


def sample_context_masks(
    batch: int,
    frames: int,
    probs: dict[str, float],
    max_context: int | None = None,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One mask per row: kind drawn from ``probs`` (kind -> weight), k uniform in [1, max_context] (default T // 2;
    "ends" gives k // 2 frames, at least 1, at each end).

    Every row keeps at least one generated frame.
    """
    unknown = set(probs) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown context mask kinds {sorted(unknown)}; known: {KINDS}")
    kinds = list(probs)
    weights = torch.tensor([float(probs[k]) for k in kinds])
    if frames < 2 or weights.sum() <= 0:
        return torch.zeros(batch, frames, dtype=torch.bool, device=device)
    max_k = max(1, min(max_context or frames // 2, frames - 1))
    choice = torch.multinomial(weights, batch, replacement=True, generator=generator)  # (B,)
    ks = torch.randint(1, max_k + 1, (batch,), generator=generator)
    ns = torch.randint(2, max(3, frames // 2 + 1), (batch,), generator=generator)
    idx = torch.randint(0, frames, (batch,), generator=generator)
    ends = torch.tensor([kind == "ends" for kind in kinds])[choice]  # (B,)
    ks = torch.where(ends, (ks // 2).clamp_min(1), ks)  # k frames at each end
    rows = [
        context_mask(kinds[c], 1, frames, k=int(k), n=int(n), index=int(i))
        for c, k, n, i in zip(choice.tolist(), ks, ns, idx)
    ]
    return torch.cat(rows).to(device)
