"""Which class does a clip show? Read it off the generative model itself (a diffusion classifier).

For a clean clip x, noise e and time t, z_t = (1 - t) x + t e and the flow's velocity is v = e - x. A
class-conditional network that models class c's flow predicts v well only when x looks like class c, so the class
whose conditional velocity u(z_t, t, t | c) errs least, averaged over a few (t, e) draws, is the model's reading of
x (Li et al., 2023, "Your diffusion model is secretly a zero-shot classifier"). The same draws serve every class,
so the comparison is paired and a handful of draws suffice. Cost: classes x draws network calls per clip.

Imports torch only; works with any callable ``net(z, t, r, y=None)``.
"""

from __future__ import annotations

import torch

from .noise import prior_noise


@torch.no_grad()
def class_errors(net, x: torch.Tensor, num_classes: int, draws: int = 8, t_range: tuple[float, float] = (0.1, 0.5),
                 generator: torch.Generator | None = None, batch_size: int = 256, frame_correlation: float = 0.0
                 ) -> torch.Tensor:
    """Mean squared velocity error of each class for each clip: (B, num_classes); lower is likelier.

    x: clean latents (B, C, T, H, W). The ``draws`` times are spread evenly over ``t_range``; the noise comes from
    ``generator`` (CPU), shared by the classes. On the bundled model's held-out clips (4 frames, 100 clips), 8 draws
    over (0.1, 0.5) read 94 % of the digits right, over (0.3, 0.9) 92 %, over (0.7, 0.99) 73 %: the class shows
    best where the frame is still half visible. ``frame_correlation``: the model's ``method.noise_frame_correlation``
    (its noise prior).
    """
    if num_classes < 2:
        raise ValueError(f"reading a class needs a class-conditional model (num_classes >= 2), got {num_classes}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    B = x.shape[0]
    lo, hi = t_range
    t = torch.linspace(lo, hi, draws, dtype=x.dtype) if draws > 1 else torch.tensor([(lo + hi) / 2], dtype=x.dtype)
    e = prior_noise((draws * B, *x.shape[1:]), frame_correlation, generator, dtype=x.dtype)
    e = e.view(draws, *x.shape).to(x.device)  # (D, B, C, T, H, W)
    t = t.to(x.device)
    tb = t.view(-1, 1, 1, 1, 1, 1)
    z = (1 - tb) * x + tb * e  # (D, B, C, T, H, W)
    z, v = z.flatten(0, 1), (e - x).flatten(0, 1)  # (D B, C, T, H, W): row d B + b
    # every (class, draw, clip) triple is one row, class-major; a batch gathers its (draw, clip) rows by index, so the
    # noised clips are not copied once per class
    K, D = num_classes, draws
    rows = torch.arange(K * D * B, device=x.device)
    cls, db = rows // (D * B), rows % (D * B)
    tt = t.repeat_interleave(B)  # (D B,)
    err = torch.empty(K * D * B, device=x.device, dtype=x.dtype)
    for i in range(0, err.shape[0], batch_size):
        j = db[i : i + batch_size]
        u = net(z[j], tt[j], tt[j], y=cls[i : i + batch_size])
        err[i : i + batch_size] = (u - v[j]).float().pow(2).flatten(1).mean(dim=1).to(err.dtype)
    return err.view(K, D, B).mean(dim=1).T  # (B, K)


def infer_class(net, x: torch.Tensor, num_classes: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (B,), margins (B,)): the class of least error, and how much the runner-up's error exceeds it
    relative to the best (0 = a tie)."""
    err = class_errors(net, x, num_classes, **kwargs)  # (B, K)
    best = err.topk(2, dim=1, largest=False).values  # (B, 2)
    return err.argmin(dim=1), (best[:, 1] - best[:, 0]) / best[:, 0].clamp_min(1e-12)
