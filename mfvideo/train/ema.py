"""Exponential moving averages of the weights, one or more decays, kept in fp32 by the trainer."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copies of a model's floating-point parameters: s <- decay s + (1 - decay) p.

    With ``warmup`` the decay is min(decay, (1 + n) / (10 + n)) after n updates, so short runs average recent
    weights instead of staying near the initialisation.
    """

    def __init__(self, model: nn.Module, decays: list[float], warmup: bool = False):
        self.decays = [float(d) for d in decays]
        self.warmup = warmup
        self.num_updates = 0
        self.names = [n for n, p in model.named_parameters()]
        self.shadows = {d: [p.detach().float().clone() for _, p in model.named_parameters()] for d in self.decays}

    def decay_at(self, decay: float) -> float:
        n = self.num_updates
        return min(decay, (1 + n) / (10 + n)) if self.warmup else decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach().float() for p in model.parameters()]
        for d, shadow in self.shadows.items():
            torch._foreach_lerp_(shadow, params, 1.0 - self.decay_at(d))
        self.num_updates += 1

    def state_dict(self, decay: float) -> dict[str, torch.Tensor]:
        return {n: s.contiguous() for n, s in zip(self.names, self.shadows[decay])}

    @torch.no_grad()
    def load_state_dict(self, decay: float, state: dict[str, torch.Tensor]) -> None:
        for n, s in zip(self.names, self.shadows[decay]):
            s.copy_(state[n])

    @torch.no_grad()
    def copy_to(self, model: nn.Module, decay: float) -> None:
        for p, s in zip(model.parameters(), self.shadows[decay]):
            p.copy_(s.to(p.dtype))
