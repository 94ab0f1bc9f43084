"""Sharded training with FSDP2 (``torch.distributed.fsdp.fully_shard``) and the one checkpoint format all runs share.

``train.distributed=fsdp`` shards every STDiT block and the root: gradients and optimizer state live in 1 / world of
the memory, and the parameters outside a step; a block's weights are all-gathered at its first call of a step and held
until the step's backward (``reshard_after_forward=False``). Freeing them after every call (FSDP's default) made each
call a collective, and the MeanFlow loss makes as many calls as the batch's draws need (a JVP only where rows have
r != t, a self-made context only where a row has a prefix): ranks whose draws differed met mismatched all-gathers and
hung. Held, every rank gathers each block once a micro-step and reduce-scatters it once, whatever calls without
gradient it makes in between. A second forward with gradient on some ranks only (``method.split_consistency``'s
one-step rows) still differs in the backward: that pairing is refused (``config.validate``). The MeanFlow JVP
runs through the same sharded module: ``fully_shard`` works by forward hooks on the module itself (there is no wrapper
to bypass, unlike DDP's ``.module``), so the tangent pass runs on the current weights like the primal one, and the
parameter gradient, reduce-scattered in the backward, is the average over ranks (tested against one process on the
combined batch, in both JVP modes).

Checkpoints always hold full (unsharded) tensors keyed by parameter name: the model and EMA weights in safetensors,
the optimizer state in ``optimizer.pt`` with parameter names as keys. So a sharded run resumes on another world size,
on one process, or as DDP, and the pipeline loads its weights like any other.
"""

from __future__ import annotations

import torch
from torch import nn


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard(model: nn.Module, mixed_precision: str = "no") -> nn.Module:
    """FSDP2 in place: each block of ``model.blocks`` is one unit, the rest (embedders, final layer) the root's.

    bf16 keeps fp32 master weights and reduces gradients in fp32 (the JVP's precision is the autocast's).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if mixed_precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.blocks:  # held from a step's first call to its backward: see the module's docstring
        fully_shard(block, mp_policy=policy, reshard_after_forward=False)
    fully_shard(model, mp_policy=policy, reshard_after_forward=False)
    return model


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (a collective: every rank calls it), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(template: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a full tensor) laid out as ``template``: this rank's shard of it when ``template`` is a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(template, DTensor):
        return distribute_tensor(value.to(template.device, template.dtype), template.device_mesh, template.placements)
    return value.to(template.device, template.dtype)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full tensors by parameter name, on the CPU (a collective when sharded)."""
    return {k: full(v).detach().cpu() for k, v in model.state_dict().items()}


@torch.no_grad()
def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Full tensors (e.g. from a checkpoint of any world size) into a plain or sharded model."""
    for k, p in model.state_dict().items():
        p.copy_(like(p, state[k]))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state with parameter names as keys and full tensors (a collective when sharded)."""
    names = {id(p): n for n, p in model.named_parameters()}
    sd = optimizer.state_dict()
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    state = {order[i]: {k: full(v).detach().cpu().clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in sd["state"].items()}  # copies: the optimizer updates its 'step' tensors in place
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Inverse of ``optimizer_state`` for this model's layout; an index-keyed state (earlier releases) loads as is."""
    groups = saved["param_groups"]
    if not groups or not groups[0]["params"] or not isinstance(groups[0]["params"][0], str):
        optimizer.load_state_dict(saved)
        return
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    current = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    if len(current) != len(groups) or any(set(c) != set(g["params"]) for c, g in zip(current, groups)):
        raise KeyError("the optimizer state names other parameters than this model's")
    index = {n: i for i, n in enumerate(n for c in current for n in c)}  # this optimizer's own order
    state = {index[n]: {k: like(params[n], v) if torch.is_tensor(v) and v.ndim else v for k, v in s.items()}
             for n, s in saved["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": [{**g, "params": [index[n] for n in c]}
                                                                for g, c in zip(groups, current)]})
