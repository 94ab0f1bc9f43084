"""The STDiT's norms, attention, adaLN and timestep features with forward-mode rules (the MeanFlow JVP) that cost a
few kernels, not dozens.

PyTorch's forward-AD rules are general: a LayerNorm's recomputes the statistics from scratch (18 operators for one
``native_layer_norm``), the math attention's runs every product rule through zero tangents and layout copies (34 for
softmax(q k^T) v). On a GPU in bf16 the MeanFlow step is host-bound (`docs/benchmark.md`): the time goes to launching
kernels, and the JVP dispatched 5.7-5.9x the forward's operators (3.1-3.2x with these rules; `bench.py --only
dispatch`). The rules here reuse what the forward computed:

- layer norm (no affine), y = (x - mean) * rstd:  y_t = rstd * (x_t - mean(x_t) - y * mean(y * x_t))  (7 operators);
- RMS norm (the QK-norm), y = x rrms w:  y_t = w rrms (x_t - x^ mean(x^ x_t)), x^ = x rrms  (12 operators, rrms
  recomputed in fp32; PyTorch's rule took 24 besides the primal);
- attention, P = softmax(s q k^T), o = P v:  s_t = s (q_t k^T + q k_t^T),  P_t = P * (s_t - sum(P * s_t)),
  o_t = P_t v + P v_t  (10 operators);
- adaLN's modulation, y = x (1 + scale) + shift:  y_t = x_t (1 + scale) + x scale_t + shift_t  (2 addcmul, the
  forward's 1 + scale reused), and its gated residual, y = x + gate h:  y_t = x_t + gate_t h + gate h_t  (2 addcmul);
- the timestep embeddings' features, e = [cos(a), sin(a)] with a = x freqs:  e_t = [-sin(a), cos(a)] a_t, from e
  itself (6 operators; the tangent along t passes through every timestep embedding, PyTorch's rule took ~20).
- an addend fixed along the JVP's direction (the spatial and frame positions, the label and guidance embeddings,
  r in t - r), y = x + c:  y_t = x_t  (none; PyTorch's rule made c a zero tangent first, 5 operators).

Each is an ``autograd.Function`` with the standard backward (the fused JVP mode's primal carries the gradient), a
vmap rule, and the same primal operators as the code it replaces (autocast included: layer norm in the dtype autocast
gives ``F.layer_norm``, the matmuls in the autocast dtype), so the primal output is bit for bit the plain one's. Used
only under forward AD (``under_forward_ad``); elsewhere the modules run PyTorch's own kernels. ``pytorch_rules()``
turns them off (PyTorch's rules again: for the benchmark's comparison, or to rule them out when debugging a JVP).
"""

from __future__ import annotations

import collections
import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .linear import _has_tangent, under_forward_ad

_lean = True


@contextlib.contextmanager
def pytorch_rules():
    """Inside the block, layer norm, RMS norm, math attention, adaLN's modulation and gated residual and the sin-cos
    features take PyTorch's own forward-AD rules (the values are the same; the operators more)."""
    global _lean
    before, _lean = _lean, False
    try:
        yield
    finally:
        _lean = before


def _use_lean(x: torch.Tensor) -> bool:
    return _lean and under_forward_ad(x)


_LAYER_NORM_DTYPE: dict[tuple, torch.dtype] = {}


def _layer_norm_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.layer_norm`` computes in for ``x`` here: under autocast fp32 on CUDA, the input's on CPU (asked of
    ``F.layer_norm`` itself once per device and dtypes, so that the rule's primal is the plain one's everywhere)."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x.dtype
    key = (device, x.dtype, torch.get_autocast_dtype(device))
    if key not in _LAYER_NORM_DTYPE:
        _LAYER_NORM_DTYPE[key] = F.layer_norm(torch.zeros(1, 2, dtype=x.dtype, device=x.device), (2,)).dtype
    return _LAYER_NORM_DTYPE[key]


class _LayerNormFn(torch.autograd.Function):
    """y = (x - mean) * rstd over the last ``len(shape)`` dims, no affine, computed in ``dtype`` (autocast's)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, shape, eps, dtype):
        return torch.native_layer_norm(x.to(dtype), shape, None, None, eps)  # (y, mean, rstd), the statistics (..., 1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, shape, _, _ = inputs
        y, mean, rstd = output
        ctx.mark_non_differentiable(mean, rstd)
        ctx.shape, ctx.in_dtype = shape, x.dtype
        ctx.save_for_forward(y, rstd)
        ctx.save_for_backward(x, mean, rstd)

    @staticmethod
    def jvp(ctx, x_t, *_):
        y, rstd = ctx.saved_tensors
        dims = tuple(range(-len(ctx.shape), 0))
        x_t = x_t.to(y.dtype)
        # y_t = (x_t - w) rstd with w = mean(x_t) + y mean(y x_t), written (w - x_t) (-rstd): an operation's output
        # takes the layout of its first full-size operand, and y's (contiguous) is the primal's; x_t's may be another
        # (the STDiT's tokens are a channels-first view), and autograd would copy a tangent laid out otherwise
        w = torch.addcmul(x_t.mean(dims, keepdim=True), y, (y * x_t).mean(dims, keepdim=True))
        return torch.add(w, x_t, alpha=-1) * rstd.neg(), None, None

    @staticmethod
    def backward(ctx, g, *_):
        x, mean, rstd = ctx.saved_tensors
        gx = torch.ops.aten.native_layer_norm_backward(g, x.to(g.dtype), ctx.shape, mean, rstd, None, None,
                                                       [True, False, False])[0]
        return gx.to(ctx.in_dtype), None, None, None


def layer_norm(x: torch.Tensor, shape: tuple[int, ...], eps: float) -> torch.Tensor:
    """``F.layer_norm(x, shape, eps=eps)`` (no affine), with the lean JVP rule under forward AD."""
    if _use_lean(x):
        return _LayerNormFn.apply(x, tuple(shape), eps, _layer_norm_dtype(x))[0]
    return F.layer_norm(x, shape, eps=eps)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose JVP is seven operators (without an affine; with one, PyTorch's rule). Same keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None and self.bias is None:
            return layer_norm(x, self.normalized_shape, self.eps)
        return super().forward(x)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (..., L, d) inputs, in plain differentiable ops (PyTorch's rules)."""
    scale = q.shape[-1] ** -0.5
    attn = torch.matmul(q * scale, k.transpose(-2, -1))  # (..., L, L)
    return torch.matmul(attn.softmax(dim=-1), v)  # (..., L, d)


class _RMSNormFn(torch.autograd.Function):
    """``F.rms_norm(x, shape, weight, eps)`` (the primal PyTorch's own, fused where it has a kernel); the tangent and
    the gradient from the reciprocal RMS, recomputed in fp32."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, consts, shape, eps):
        weight = consts[0] if consts else weight
        return F.rms_norm(x, shape, None if weight is None else weight.to(x.dtype), eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, consts, shape, eps = inputs
        weight = consts[0] if consts else weight
        ctx.shape, ctx.eps = shape, torch.finfo(x.dtype).eps if eps is None else eps
        ctx.dtypes, ctx.out_dtype = (x.dtype, None if weight is None else weight.dtype), output.dtype
        ctx.weight_is_input = not consts and weight is not None
        ctx.acc = torch.float64 if x.dtype == torch.float64 else torch.float32  # fp32 for half inputs
        ctx.save_for_forward(x, weight)
        ctx.save_for_backward(x, weight)

    @staticmethod
    def _normalised(ctx, x):  # x^ = x rrms and rrms (..., 1), in fp32 (or float64)
        dims = tuple(range(-len(ctx.shape), 0))
        x = x.to(ctx.acc)
        rrms = torch.rsqrt(x.square().mean(dims, keepdim=True) + ctx.eps)
        return x * rrms, rrms, dims

    @staticmethod
    def jvp(ctx, x_t, *_):
        x, weight = ctx.saved_tensors
        x_hat, rrms, dims = _RMSNormFn._normalised(ctx, x)
        x_t = x_t.to(ctx.acc)
        y_t = torch.addcmul(x_t, x_hat, (x_hat * x_t).mean(dims, keepdim=True), value=-1) * rrms
        return (y_t if weight is None else y_t * weight.to(ctx.acc)).to(ctx.out_dtype)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        x_hat, rrms, dims = _RMSNormFn._normalised(ctx, x)
        g = g.to(ctx.acc)
        g_y = g if weight is None else g * weight.to(ctx.acc)
        g_x = torch.addcmul(g_y, x_hat, (g_y * x_hat).mean(dims, keepdim=True), value=-1) * rrms
        g_w = (g * x_hat).sum_to_size(weight.shape).to(ctx.dtypes[1]) if ctx.weight_is_input else None
        return g_x.to(ctx.dtypes[0]), g_w, None, None, None


def rms_norm(x: torch.Tensor, shape: tuple[int, ...], weight: torch.Tensor | None, eps: float | None) -> torch.Tensor:
    """``F.rms_norm`` with the weight cast to the input's dtype (as autocast casts a Linear's: bf16 queries and an fp32
    weight would miss the fused kernel), and the lean JVP rule under forward AD when the weight carries no tangent of
    its own. The cast happens inside, so that the parameter itself is what is checked for a tangent."""
    if _use_lean(x) and not _has_tangent(weight):
        if weight is not None and torch.is_grad_enabled() and weight.requires_grad:
            return _RMSNormFn.apply(x, weight, None, tuple(shape), eps)
        return _RMSNormFn.apply(x, None, (weight,), tuple(shape), eps)  # no zero tangent made for the weight
    return F.rms_norm(x, shape, None if weight is None else weight.to(x.dtype), eps)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose weight takes the input's dtype, as autocast does for a Linear's, and whose JVP is the lean
    rule above. Same parameters and state-dict keys.

    Under bf16 autocast the queries and keys are bf16 and the weight stays fp32; PyTorch then cannot dispatch to its
    fused kernel ("Mismatch dtype between input and weight") and composes the norm from elementwise kernels, with the
    same result. Casting the weight gives the fused kernel; outside autocast it is a no-op.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


class _AttentionFn(torch.autograd.Function):
    """softmax(q k^T / sqrt(d)) v for (..., L, d) inputs: the math path's operators, the probabilities kept."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q, k, v):
        p = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)).softmax(dim=-1)  # (..., L, L)
        return torch.matmul(p, v), p  # (..., L, d), (..., L, L)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v = inputs
        out, p = output
        ctx.mark_non_differentiable(p)
        ctx.dtypes, ctx.out_dtype = (q.dtype, k.dtype, v.dtype), out.dtype
        ctx.save_for_forward(q, k, v, p)
        ctx.save_for_backward(q, k, v, p)

    @staticmethod
    def jvp(ctx, q_t, k_t, v_t):
        q, k, v, p = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        s_t = torch.add(torch.matmul(q, k_t.transpose(-2, -1)), torch.matmul(q_t, k.transpose(-2, -1)))  # (..., L, L)
        s_t = s_t.to(p.dtype) * scale
        p_t = p * (s_t - (p * s_t).sum(-1, keepdim=True))  # the softmax's Jacobian applied to s_t
        return torch.add(torch.matmul(p_t, v), torch.matmul(p, v_t)).to(ctx.out_dtype), None

    @staticmethod
    def backward(ctx, g, _):
        q, k, v, p = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        g_p = torch.matmul(g, v.transpose(-2, -1)).to(p.dtype)  # (..., L, L)
        g_s = p * (g_p - (p * g_p).sum(-1, keepdim=True)) * scale
        g_q = torch.matmul(g_s, k)
        g_k = torch.matmul(g_s.transpose(-2, -1), q)
        g_v = torch.matmul(p.transpose(-2, -1), g)
        return tuple(gr.to(dt) for gr, dt in zip((g_q, g_k, g_v), ctx.dtypes))


def lean_math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``math_attention``'s value, with the lean JVP rule (for inputs under forward AD).

    Inputs are made contiguous first (q, k, v are views of one qkv tensor, whose batch and head axes do not fold
    into one: else every matmul of the rule, on them or their tangents, copies its operand again)."""
    if not _lean:
        return math_attention(q, k, v)
    return _AttentionFn.apply(q.contiguous(), k.contiguous(), v.contiguous())[0]


def _keep_for_both(ctx, inputs, out, *tensors) -> None:
    """What an elementwise rule below keeps: its inputs' shapes and dtypes (their gradients are summed over the axes
    each was broadcast along), the output's dtype, and ``tensors`` for the JVP and the backward."""
    ctx.meta = [(a.shape, a.dtype) for a in inputs]
    ctx.out_dtype = out.dtype
    ctx.save_for_forward(*tensors)
    ctx.save_for_backward(*tensors)


def _input_grads(ctx, grads) -> tuple[torch.Tensor, ...]:
    return tuple(g.sum_to_size(shape).to(dtype) for g, (shape, dtype) in zip(grads, ctx.meta))


class _ModulateFn(torch.autograd.Function):
    """x * (1 + scale) + shift, the scale and shift broadcast over x (adaLN)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, shift, scale):
        one_plus = 1 + scale
        return x * one_plus + shift, one_plus

    @staticmethod
    def setup_context(ctx, inputs, output):
        out, one_plus = output
        ctx.mark_non_differentiable(one_plus)
        _keep_for_both(ctx, inputs, out, inputs[0], one_plus)

    @staticmethod
    def jvp(ctx, x_t, shift_t, scale_t):
        x, one_plus = ctx.saved_tensors
        return torch.addcmul(torch.addcmul(shift_t, x_t, one_plus), x, scale_t).to(ctx.out_dtype), None

    @staticmethod
    def backward(ctx, g, _):
        x, one_plus = ctx.saved_tensors
        return _input_grads(ctx, (g * one_plus, g, g * x))


class _GatedAddFn(torch.autograd.Function):
    """x + gate * h, the gate broadcast (adaLN-Zero's residual)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, gate, h):
        return x + gate * h

    @staticmethod
    def setup_context(ctx, inputs, output):
        _keep_for_both(ctx, inputs, output, *inputs[1:])  # gate, h

    @staticmethod
    def jvp(ctx, x_t, gate_t, h_t):
        gate, h = ctx.saved_tensors
        return torch.addcmul(torch.addcmul(x_t, gate_t, h), gate, h_t).to(ctx.out_dtype)

    @staticmethod
    def backward(ctx, g):
        gate, h = ctx.saved_tensors
        return _input_grads(ctx, (g, g * h, g * gate))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, with the lean JVP rule under forward AD."""
    if _use_lean(x):
        return _ModulateFn.apply(x, shift, scale)[0]
    return x * (1 + scale) + shift


def gated_add(x: torch.Tensor, gate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x + gate * h, with the lean JVP rule under forward AD."""
    if _use_lean(x):
        return _GatedAddFn.apply(x, gate, h)
    return x + gate * h


class _AddFixedFn(torch.autograd.Function):
    """x + c (or x - c), where c usually carries no tangent (positions, a label embedding, r)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, c, subtract):
        return x - c if subtract else x + c

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, c, ctx.subtract = inputs
        ctx.set_materialize_grads(False)  # a missing tangent (or gradient) stays None: no zeros made for it
        ctx.meta = [(x.shape, x.dtype), (c.shape, c.dtype)]
        ctx.out = (output.shape, output.dtype)

    @staticmethod
    def jvp(ctx, x_t, c_t, _):
        if c_t is None:
            out_t = x_t
        elif x_t is None:  # (the addend moves, x does not)
            out_t = c_t.neg() if ctx.subtract else c_t
        else:
            out_t = x_t - c_t if ctx.subtract else x_t + c_t
        shape, dtype = ctx.out
        return (out_t if out_t.dtype == dtype else out_t.to(dtype)).expand(shape)

    @staticmethod
    def backward(ctx, g):
        grads = [None, None, None]
        for i, (shape, dtype) in enumerate(ctx.meta):
            if g is not None and ctx.needs_input_grad[i]:
                grads[i] = (g.neg() if i == 1 and ctx.subtract else g).sum_to_size(shape).to(dtype)
        return tuple(grads)


def add_fixed(x: torch.Tensor, c: torch.Tensor, subtract: bool = False) -> torch.Tensor:
    """x + c (x - c with ``subtract``), with a lean JVP rule under forward AD for an addend fixed along the JVP's
    direction: PyTorch's rule makes c a zero tangent (5 operators), this one passes x's tangent on (none). (Not
    ``torch.add(..., alpha=-1)``: under forward AD inside a dispatch mode, a FLOP counter's or ours, PyTorch 2.13
    crashes on it with a zero tangent.)"""
    if _use_lean(x):
        return _AddFixedFn.apply(x, c, subtract)
    return x - c if subtract else x + c


class _SinCosFn(torch.autograd.Function):
    """[cos(a), sin(a)] of a = x freqs (the timestep embeddings' features)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, freqs):
        args = x[..., None].to(freqs.dtype) * freqs  # (..., half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, freqs = inputs
        ctx.x_dtype = x.dtype
        ctx.save_for_forward(output, freqs)
        ctx.save_for_backward(output, freqs)

    @staticmethod
    def _turned(emb, half):  # [-sin(a), cos(a)]: d emb / d a
        return torch.cat([emb[..., half:].neg(), emb[..., :half]], dim=-1)

    @staticmethod
    def jvp(ctx, x_t, _):
        emb, freqs = ctx.saved_tensors
        a_t = x_t[..., None].to(freqs.dtype) * freqs  # (..., half)
        return _SinCosFn._turned(emb, freqs.shape[0]) * torch.cat([a_t, a_t], dim=-1)

    @staticmethod
    def backward(ctx, g):
        emb, freqs = ctx.saved_tensors
        g_a = g * _SinCosFn._turned(emb, freqs.shape[0])  # (..., 2 half)
        return (g_a * torch.cat([freqs, freqs])).sum(-1).to(ctx.x_dtype), None


def sin_cos(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[cos(x freqs), sin(x freqs)]: (...), (half,) -> (..., 2 half) in freqs' dtype, with the lean JVP rule under
    forward AD."""
    if _use_lean(x):
        return _SinCosFn.apply(x, freqs)
    args = x[..., None].to(freqs.dtype) * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class OperatorCount(TorchDispatchMode):
    """Inside the block, the operators dispatched, by name (``ops``, a Counter), views and metadata left out: about the
    kernels a GPU launches for them. What the rules above are measured by (``bench.py --only dispatch``, the tests)."""

    METADATA = {"view", "t", "detach", "alias", "is_same_size", "_has_same_storage_numel", "_unsafe_view", "expand",
                "permute", "select", "unsqueeze", "squeeze", "slice", "transpose", "as_strided", "split", "unbind",
                "split_with_sizes", "_local_scalar_dense", "unflatten", "empty", "empty_like", "lift_fresh"}

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in self.METADATA:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))
