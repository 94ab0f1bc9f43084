"""The noise end of the path: a standard normal per element, optionally correlated between the frames of a clip.

With ``frame_correlation`` rho, a clip's noise is e = sqrt(1 - rho) e_frame + sqrt(rho) e_clip, e_frame drawn per
frame and e_clip once per clip and shared by its frames (the mixed noise prior of PYoCo, Ge et al. 2023): every
element stays N(0, 1), and two frames' noise at the same position correlate by rho. A one-step model maps its noise
to the clip in one call; noise that already agrees between frames asks less of the network to make frames that agree
(one glyph, one hand), and a video model started from an image model (temporal layers at zero) makes the same image
in every frame at rho -> 1 instead of eight unrelated ones. Measured on the moving digits it does not help: a moving
object has to leave the place where the shared noise pins it (docs/method.md). Training and sampling must use the
same rho: it is part of the model (``method.noise_frame_correlation``, saved with the checkpoint). rho = 0 draws
exactly what ``torch.randn`` does.
"""

from __future__ import annotations

import math

import torch


def prior_noise(shape, frame_correlation: float = 0.0, generator: torch.Generator | None = None, device=None,
                dtype=None) -> torch.Tensor:
    """Noise of ``shape`` (B, C, T, H, W) for videos, any other rank as plain N(0, 1); drawn on ``generator``'s
    device, returned on ``device`` (default: the generator's)."""
    shape = tuple(shape)
    rho = float(frame_correlation)
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"frame_correlation must lie in [0, 1), got {rho}")
    gen_device = generator.device if generator is not None else device
    e = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    if rho > 0 and len(shape) == 5:
        shared = torch.randn((shape[0], shape[1], 1, *shape[3:]), generator=generator, device=gen_device, dtype=dtype)
        e = math.sqrt(1.0 - rho) * e + math.sqrt(rho) * shared  # (B, C, T, H, W): shared over T
    return e if device is None else e.to(device)
