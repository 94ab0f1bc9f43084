"""The JVP that MeanFlow's target needs, on PyTorch's forward-mode AD with dual tensors.

``torch.func.jvp`` computes the same numbers, but wraps every tensor at every operation (functorch's dynamic layer
stack): on a dispatch-bound step (a small model, or a B/2 model in bf16 on an H200, where the GPU sat idle half the
MeanFlow step) it costs up to twice the host time per operation of ``torch.autograd.forward_ad``
(``scripts/bench.py``'s JVP API rows). Inputs whose tangent is zero (r) stay plain tensors, so nothing is
differentiated along them. Inside another functorch transform (vmap, grad) or an open ``dual_level``, where dual
levels cannot nest, and through an FSDP2-sharded module, whose hooks have no forward-AD rule, it is
``torch.func.jvp``.

Imports torch only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD


def _nested() -> bool:
    """Inside a functorch transform or an open forward-AD level: dual levels cannot nest there."""
    return torch._C._functorch.peek_interpreter_stack() is not None or fwAD._current_level >= 0


def _fsdp_sharded(module) -> bool:
    """An FSDP2 module (``fully_shard``): its forward hooks apply an autograd Function that returns its inputs as they
    are and has no forward-AD rule, which dual tensors reject ("returning a view ... the jvp is not")."""
    if module is None or not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, torch.nn.Module) and any(isinstance(m, FSDPModule) for m in module.modules())


def forward_jvp(fn: Callable[..., torch.Tensor], primals: Sequence[torch.Tensor],
                tangents: Sequence[torch.Tensor | None], module=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(*primals), its directional derivative along ``tangents``); a None tangent is a zero one.

    Same contract as ``torch.func.jvp`` for one tensor output: the primal output keeps its autograd graph (the fused
    JVP mode backpropagates through it); the tangent is exact, not a finite difference. ``module``: the network
    ``fn`` calls, if any; FSDP2-sharded ones take ``torch.func.jvp``. An output that carries no tangent is an error,
    not a zero tangent (``uncompiled``).
    """
    if _nested() or _fsdp_sharded(module):
        full = tuple(torch.zeros_like(p) if d is None else d for p, d in zip(primals, tangents))
        return torch.func.jvp(fn, tuple(primals), full)
    with fwAD.dual_level():
        args = [p if d is None else fwAD.make_dual(p, d.to(p.dtype)) for p, d in zip(primals, tangents)]
        out, tangent = fwAD.unpack_dual(fn(*args))
    if tangent is None:  # MeanFlow's u always depends on z and t: the tangent was dropped on the way
        raise ValueError("the network's output carries no tangent: something between its inputs and its output drops "
                         "forward-mode AD (a torch.compile'd function or submodule, a .detach(), a trip through "
                         "numpy), and the JVP would silently be zero, MeanFlow's target flow matching's; run the JVP "
                         "through the eager network (MeanFlow.loss(..., jvp_net=...))")
    return out, tangent


def uncompiled(net):
    """``net`` without its ``torch.compile`` wrappers (the module it compiled, a DDP wrapper inside kept): a compiled
    graph drops dual tensors, so a JVP through it has no tangent (torch 2.13; measured: MeanFlow's target came out
    equal to v, flow matching's, with no error). The compiled module still serves the plain forward."""
    while type(net).__name__ == "OptimizedModule" and hasattr(net, "_orig_mod"):
        net = net._orig_mod
    return net
