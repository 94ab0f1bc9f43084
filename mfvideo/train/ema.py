"""Exponential moving averages of the weights, one or more decays, kept in fp32 by the trainer.

With a sharded model (FSDP2) each shadow is sharded like its parameter; ``state_dict`` gathers full tensors (every
rank must call it) and ``load_state_dict`` takes full tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from .sharding import full, is_sharded, like


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
        self.sharded = is_sharded(model)

    def decay_at(self, decay: float) -> float:
        n = self.num_updates
        return min(decay, (1 + n) / (10 + n)) if self.warmup else decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach().float() for p in model.parameters()]
        for d, shadow in self.shadows.items():
            if self.sharded:  # DTensor shards: one lerp each
                for s, p in zip(shadow, params):
                    s.lerp_(p, 1.0 - self.decay_at(d))
            else:
                torch._foreach_lerp_(shadow, params, 1.0 - self.decay_at(d))
        self.num_updates += 1

    def state_dict(self, decay: float) -> dict[str, torch.Tensor]:
        return {n: full(s).contiguous() for n, s in zip(self.names, self.shadows[decay])}

    @torch.no_grad()
    def load_state_dict(self, decay: float, state: dict[str, torch.Tensor]) -> None:
        for n, s in zip(self.names, self.shadows[decay]):
            s.copy_(like(s, state[n]))
