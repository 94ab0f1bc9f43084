"""Samplers: plain functions of (net, noise, conditioning, steps). t = 1 is noise, t = 0 is data.

Frame conditioning: ``context`` holds clean latents (B, C, T, H, W) and ``context_mask`` (B, T) marks the frames
to keep. Those frames replace the noisy ones before every call and carry per-frame times t = r = 0.
"""

from __future__ import annotations

import torch


def _frame_time(t: float, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Time t as (B,), or per frame (B, T) with 0 on context frames."""
    tt = torch.full((z.shape[0],), t, device=z.device, dtype=z.dtype)
    if mask is None:
        return tt
    return tt[:, None] * (~mask).to(z.dtype)  # (B, T)


def _keep_context(z, context, mask):
    if mask is None:
        return z
    if context is None or context.shape != z.shape:
        raise ValueError("a context mask needs clean context latents of the same shape as the noise")
    return torch.where(mask[:, None, :, None, None], context, z)  # (B, C, T, H, W)


def time_grid(steps: int) -> list[float]:
    """Descending times 1 = t_0 > ... > t_steps = 0, uniform."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1.0 - i / steps for i in range(steps + 1)]


@torch.no_grad()
def meanflow_sample(net, noise, y=None, steps: int = 1, context=None, context_mask=None) -> torch.Tensor:
    """z_r = z_t - (t - r) net(z_t, t, r) over a descending grid; 1 step is x = e - net(e, t=1, r=0)."""
    grid = time_grid(steps)
    z = _keep_context(noise, context, context_mask)
    for t, r in zip(grid[:-1], grid[1:]):
        u = net(z, _frame_time(t, z, context_mask), _frame_time(r, z, context_mask), y=y)
        z = _keep_context(z - (t - r) * u, context, context_mask)
    return z


@torch.no_grad()
def euler_sample(net, noise, y=None, steps: int = 50, context=None, context_mask=None) -> torch.Tensor:
    """Flow-matching baseline: Euler steps of the instantaneous velocity v = net(z_t, t, t)."""
    grid = time_grid(steps)
    z = _keep_context(noise, context, context_mask)
    for t, s in zip(grid[:-1], grid[1:]):
        tt = _frame_time(t, z, context_mask)
        z = _keep_context(z - (t - s) * net(z, tt, tt, y=y), context, context_mask)
    return z


# name -> (sampler, default network calls per window). One table: the pipeline, the CLIs and the evaluation read it.
SAMPLERS = {"meanflow": (meanflow_sample, 1), "euler": (euler_sample, 50)}


def sample(net, noise, sampler: str = "meanflow", steps: int | None = None, y=None, context=None,
           context_mask=None) -> torch.Tensor:
    """Run the named sampler (``SAMPLERS``) with ``steps`` network calls per window (default: the sampler's own)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    fn, default = SAMPLERS[sampler]
    return fn(net, noise, y=y, steps=default if steps is None else steps, context=context, context_mask=context_mask)
