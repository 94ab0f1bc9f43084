"""A Linear layer whose forward-mode derivative (the MeanFlow JVP) costs one matmul, not two.

PyTorch's forward-AD rule for ``addmm`` / ``linear`` is ``x_t W^T + x W_t^T + b_t``. The parameters carry no
tangent in the JVP, but the rule still runs the second matmul against a materialised zero ``W_t``: a Linear's
JVP costs ~4x its forward, ours ~2.2x (a 4096 x 256 -> 1024 layer on CPU; step-level figures in ``scripts/bench.py``). Here, when the input carries a
tangent and the parameters do not, the layer runs an ``autograd.Function`` whose ``jvp`` is the one matmul
``x_t W^T``; forward AD with respect to the weights takes PyTorch's own rule.
Outside a JVP it is exactly ``nn.Linear`` (same parameters, same state-dict keys, PyTorch's own kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def under_forward_ad(x: torch.Tensor) -> bool:
    """True if ``x`` carries (or may carry) a forward-mode tangent.

    Inside ``torch.compile`` it is False: compiled code is the primal path (the training loop runs the JVP through
    the eager module), and the functorch check below is not traceable.
    """
    if torch.compiler.is_compiling():
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(x):  # inside torch.func.jvp / vmap / grad
        return True
    return torch.autograd.forward_ad._current_level >= 0  # inside forward_ad.dual_level()


class _LinearFn(torch.autograd.Function):
    """y = x W^T + b with a lean JVP; backward is the usual one (used by the fused JVP mode).

    Without grad mode the parameters travel as ``consts`` (a tuple autograd does not look into), so PyTorch does not
    materialise zero tangents for them either.
    """

    generate_vmap_rule = True  # composes with torch.func.vmap (e.g. a per-sample JVP)

    @staticmethod
    def forward(x, weight, bias, consts):
        weight, bias = consts or (weight, bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, consts = inputs
        ctx.weight, ctx.has_bias = (consts or (weight, bias))[0], bias is not None
        ctx.out_dtype = output.dtype  # bf16 under autocast
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, g):  # g (..., out)
        (x,), weight = ctx.saved_tensors, ctx.weight
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = (g @ weight.to(g.dtype)).to(x.dtype)  # (..., in)
        if ctx.needs_input_grad[1]:
            g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1]).to(g.dtype)
            gw = (g2.T @ x2).to(weight.dtype)  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.reshape(-1, g.shape[-1]).sum(0).to(weight.dtype)
        return gx, gw, gb, None

    @staticmethod
    def jvp(ctx, x_t, w_t, b_t, consts_t):
        # PyTorch hands zero-filled tangents for weight and bias; ``linear`` only routes here when they have none,
        # so their terms are skipped rather than multiplied out.
        if torch.is_autocast_enabled(x_t.device.type):  # the cast weight the forward used, from autocast's cache
            return F.linear(x_t, ctx.weight)  # (..., out)
        return F.linear(x_t.to(ctx.out_dtype), ctx.weight.to(ctx.out_dtype))  # (..., out)


def _has_tangent(p: torch.Tensor | None) -> bool:
    """Whether a parameter may carry its own tangent (forward AD *with respect to the weights*)."""
    if p is None:
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(p):  # e.g. torch.func.jvp over functional_call
        return True
    return torch.autograd.forward_ad._current_level >= 0 and torch.autograd.forward_ad.unpack_dual(p).tangent is not None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with the lean JVP rule when the input may carry a tangent and the parameters do not."""
    if under_forward_ad(x) and not (_has_tangent(weight) or _has_tangent(bias)):
        if torch.is_grad_enabled() and (weight.requires_grad or bias is not None and bias.requires_grad):
            return _LinearFn.apply(x, weight, bias, None)
        return _LinearFn.apply(x, None, None, (weight, bias))
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and keys) whose JVP is one matmul: ``y_t = x_t W^T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
