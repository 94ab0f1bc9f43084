"""Samplers: plain functions of (net, noise, conditioning, steps). t = 1 is noise, t = 0 is data.

Frame conditioning: ``context`` holds clean latents (B, C, T, H, W) and ``context_mask`` (B, T) marks the frames
to keep. Those frames replace the noisy ones before every call and carry per-frame times t = r = 0; with
``context_noise`` s > 0 they are first noised to level s with the noise at their own positions,
(1 - s) context + s noise, and carry t = r = s (for a model trained with ``method.context_noise``).
"""

from __future__ import annotations

import torch


def _frame_time(t: float, z: torch.Tensor, mask: torch.Tensor | None, s: float = 0.0) -> torch.Tensor:
    """Time t as (B,), or per frame (B, T) with s (the context's noise level) on context frames."""
    tt = torch.full((z.shape[0],), t, device=z.device, dtype=z.dtype)
    if mask is None:
        return tt
    m = mask.to(z.dtype)
    return tt[:, None] * (1 - m) + s * m  # (B, T)


def _noised_context(noise, context, mask, s: float):
    """Check the context against the noise and noise it to level s (s = 0: the context itself)."""
    if mask is None:
        return None
    if context is None or context.shape != noise.shape:
        raise ValueError("a context mask needs clean context latents of the same shape as the noise")
    if not 0.0 <= s < 1.0:
        raise ValueError(f"context_noise must lie in [0, 1), got {s}")
    return context if s == 0 else (1 - s) * context + s * noise


def _keep_context(z, context, mask):
    if mask is None:
        return z
    return torch.where(mask[:, None, :, None, None], context, z)  # (B, C, T, H, W)


def time_grid(steps: int) -> list[float]:
    """Descending times 1 = t_0 > ... > t_steps = 0, uniform."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1.0 - i / steps for i in range(steps + 1)]


@torch.no_grad()
def meanflow_sample(net, noise, y=None, steps: int = 1, context=None, context_mask=None,
                    context_noise: float = 0.0, fresh=None) -> torch.Tensor:
    """z_r = z_t - (t - r) net(z_t, t, r) over a descending grid; 1 step is x = e - net(e, t=1, r=0).

    The returned context frames are the given ``context`` (clean), whatever ``context_noise`` the network saw.
    ``fresh`` is unused (the path's only noise is ``noise``).
    """
    grid, s, m = time_grid(steps), context_noise, context_mask
    ctx = _noised_context(noise, context, m, s)
    z = _keep_context(noise, ctx, m)
    for t, r in zip(grid[:-1], grid[1:]):
        u = net(z, _frame_time(t, z, m, s), _frame_time(r, z, m, s), y=y)
        z = _keep_context(z - (t - r) * u, ctx, m)
    return _keep_context(z, context, m)


@torch.no_grad()
def euler_sample(net, noise, y=None, steps: int = 50, context=None, context_mask=None,
                 context_noise: float = 0.0, fresh=None) -> torch.Tensor:
    """Flow-matching baseline: Euler steps of the instantaneous velocity v = net(z_t, t, t) (``fresh`` unused)."""
    grid, m = time_grid(steps), context_mask
    ctx = _noised_context(noise, context, m, context_noise)
    z = _keep_context(noise, ctx, m)
    for t, t_next in zip(grid[:-1], grid[1:]):
        tt = _frame_time(t, z, m, context_noise)
        z = _keep_context(z - (t - t_next) * net(z, tt, tt, y=y), ctx, m)
    return _keep_context(z, context, m)


@torch.no_grad()
def consistency_sample(net, noise, y=None, steps: int = 2, context=None, context_mask=None,
                       context_noise: float = 0.0, fresh=None) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023) with the one-step jump: x = e - net(e, t=1, r=0), then for
    every later time t of the grid (1/2 for 2 steps) the clip is noised back to t with fresh noise e' and jumps to 0
    again, x = z_t - t net(z_t, t, 0) with z_t = (1 - t) x + t e'. Every call is the jump a one-step model is trained
    and post-trained for, from a state on the path; MeanFlow's own k steps (``meanflow_sample``) chain the field's
    shorter jumps instead. ``fresh()`` gives the fresh noise, shaped as ``noise`` (default ``torch.randn_like``; the
    pipeline draws it from the call's generator). Context frames as in ``meanflow_sample``.
    """
    grid, s, m = time_grid(steps), context_noise, context_mask
    ctx = _noised_context(noise, context, m, s)
    z = _keep_context(noise, ctx, m)
    for t in grid[:-1]:
        if t < 1.0:  # the clip so far, noised back to t
            e = fresh() if fresh is not None else torch.randn_like(noise)
            z = _keep_context((1 - t) * z + t * e, ctx, m)
        u = net(z, _frame_time(t, z, m, s), _frame_time(0.0, z, m, s), y=y)
        z = _keep_context(z - t * u, ctx, m)
    return _keep_context(z, context, m)


# name -> (sampler, default network calls per window). One table: the pipeline and the evaluation read it; the CLIs
# write its names out (they load without torch; a test holds them equal).
SAMPLERS = {"meanflow": (meanflow_sample, 1), "euler": (euler_sample, 50), "consistency": (consistency_sample, 2)}


def sample(net, noise, sampler: str = "meanflow", steps: int | None = None, y=None, context=None,
           context_mask=None, context_noise: float = 0.0, fresh=None) -> torch.Tensor:
    """Run the named sampler (``SAMPLERS``) with ``steps`` network calls per window (default: the sampler's own);
    ``fresh()``: noise shaped as ``noise`` for samplers that draw more (``consistency_sample``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    fn, default = SAMPLERS[sampler]
    return fn(net, noise, y=y, steps=default if steps is None else steps, context=context, context_mask=context_mask,
              context_noise=context_noise, fresh=fresh)
