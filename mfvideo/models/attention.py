"""Multi-head self-attention behind one module, with interchangeable backends.

Backends:
- ``"sdpa"``  PyTorch's ``scaled_dot_product_attention`` (fused flash / memory-efficient kernels);
- ``"math"``  an explicit softmax(QK^T / sqrt(d)) V, differentiable in every mode;
- ``"xformers"`` ``xformers.ops.memory_efficient_attention`` when installed and the input is on CUDA;
- ``"jvp_flash"`` SDPA for the primal and, under the JVP, the optional ``jvp_flash_attention`` Triton kernel on
  CUDA (``pip install --no-deps jvp_flash_attention``: its metadata asks for torchvision, which it does not need).

Forward-mode AD (the MeanFlow JVP) is not implemented by the fused SDPA kernels nor by xformers
(``NotImplementedError ... forward AD ... _scaled_dot_product_flash_attention_for_cpu``). Whenever the
inputs carry a tangent (``torch.func.jvp`` or ``torch.autograd.forward_ad``) we route to the math path, with a lean
forward-mode rule (``jvp_rules``), or to the fused JVP kernel with ``jvp_flash``, so the JVP is exact on every device.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .embeddings import apply_rope
from .jvp_rules import RMSNorm, lean_math_attention, math_attention
from .linear import Linear, under_forward_ad

BACKENDS = ("sdpa", "math", "xformers", "jvp_flash")
log = logging.getLogger(__name__)


def _first_line(e: Exception) -> str:
    """An exception's message in one line (xformers' and Triton's run to dozens), or its type if it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@functools.cache
def xformers_available() -> bool:
    """True when xformers' memory-efficient kernel runs here: it imports, CUDA is present, and a tiny bf16 call works.

    An xformers wheel built for another torch imports but has no CUDA operators ("xFormers wasn't build with CUDA
    support"): the probe catches that once, logs why, and the ``xformers`` backend then runs as ``sdpa``.
    """
    if not torch.cuda.is_available():
        return False
    try:
        import xformers.ops as xops

        q = torch.zeros(1, 32, 1, 64, device="cuda", dtype=torch.bfloat16)  # (B, L, heads, d)
        xops.memory_efficient_attention(q, q, q)
    except Exception as e:  # missing, or a build for another torch / CUDA
        log.warning("xformers attention unavailable (%s); the xformers backend runs as sdpa",
                    _first_line(e))
        return False
    return True


@functools.cache
def jvp_flash_available() -> bool:
    """True when the optional ``jvp_flash_attention`` Triton kernel imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import jvp_flash_attention.jvp_attention  # noqa: F401
    except Exception:  # missing, or a Triton / torch mismatch
        return False
    return True


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


JVP_FLASH_HEAD_DIMS = (16, 32, 64, 128, 256)
_jvp_flash_refused: set[tuple] = set()  # (L, d, dtype) the kernel raised on: the math path for those from then on


def jvp_flash_fits(q: torch.Tensor) -> bool:
    """The kernel's own limits: an even sequence of >= 32 tokens, a head size in 16..256 (powers of two), half floats
    or fp32. Shorter sequences (temporal attention over a few frames) take the math path, which is cheap there."""
    length, d = q.shape[-2:]
    return length >= 32 and length % 2 == 0 and d in JVP_FLASH_HEAD_DIMS and q.dtype in (
        torch.float16, torch.bfloat16, torch.float32)


def _jvp_flash(q, k, v):
    """The fused JVP kernel on forward-AD dual tensors, or None if unavailable or it refused this shape (logged once).

    ``JVPAttn.fwd_dual`` reads the tangents off the dual inputs; the package's plain ``attention`` (``JVPAttn.fwd``)
    takes none and, under ``torch.func.jvp``, fails or returns a tangent it never computed: never call that here.
    """
    key = (q.shape[-2], q.shape[-1], q.dtype)
    if q.is_cuda and not jvp_flash_available():
        _warn_once("jvp_flash_missing", "attn_backend=jvp_flash: the jvp_flash_attention package is not importable "
                   "here (pip install --no-deps jvp_flash_attention); the JVP takes the math path")
        return None
    if key in _jvp_flash_refused or not (q.is_cuda and jvp_flash_fits(q)):
        return None
    from jvp_flash_attention.jvp_attention import JVPAttn

    try:
        return JVPAttn.fwd_dual(q, k, v)  # (B, heads, L, d), its tangent attached
    except Exception as e:  # a shape or dtype the kernel does not support after all
        _jvp_flash_refused.add(key)
        log.warning("jvp_flash attention refused %s: %s; using the math path for the JVP at this shape",
                    tuple(q.shape), _first_line(e))
        return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa",
              xformers_op=None) -> torch.Tensor:
    """Attention over (B, heads, L, d) tensors with the named backend; JVP-safe on every device.

    ``jvp_flash``: under the JVP, the ``jvp_flash_attention`` Triton kernel (flash attention with a forward-mode
    rule) on CUDA when installed; otherwise, and outside the JVP, as ``sdpa``.
    """
    if under_forward_ad(q):
        out = _jvp_flash(q, k, v) if backend == "jvp_flash" else None
        return lean_math_attention(q, k, v) if out is None else out  # math_attention's value, a lean JVP rule
    if backend == "math":
        return math_attention(q, k, v)
    if backend == "xformers" and q.is_cuda and xformers_available():
        out = _xformers(q, k, v, xformers_op)
        if out is not None:
            return out
    return F.scaled_dot_product_attention(q, k, v)


_xformers_refused: set[tuple] = set()  # (L, d, dtype, op) no xformers operator accepted: sdpa for those from then on


def _xformers(q, k, v, op=None):
    """xformers' memory-efficient attention on (B, heads, L, d), or None where no operator of this build takes the
    inputs (e.g. fp32 in a build with only the flash kernels): logged once per shape, then sdpa."""
    import xformers.ops as xops

    key = (q.shape[-2], q.shape[-1], q.dtype, op)
    if key in _xformers_refused:
        return None
    try:
        # xformers takes (B, L, heads, d).
        out = xops.memory_efficient_attention(*(rearrange(a, "b h l d -> b l h d") for a in (q, k, v)), op=op)
    except (NotImplementedError, ValueError) as e:  # (an operator that refuses the inputs raises ValueError)
        _xformers_refused.add(key)
        log.warning("xformers has no operator for %s %s (%s); using sdpa there", tuple(q.shape), q.dtype,
                    _first_line(e))
        return None
    return rearrange(out, "b l h d -> b h l d")


class Attention(nn.Module):
    """Self-attention over a (B, L, D) sequence, with optional QK-norm (RMSNorm per head)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, backend: str = "sdpa"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
        self.num_heads = num_heads
        self.backend = backend
        self.xformers_op = None  # the operator xformers is asked to use (diffusers' ``attention_op``); None: its choice
        self.qkv = Linear(dim, 3 * dim)
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, L, D); rope: rotary table (2, L, d / 2) of the queries and keys (``embeddings.rope_3d``) or None
        qkv = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        if under_forward_ad(qkv):  # one copy for q, k, v and one for their tangents, not one per operand of the rule
            qkv = qkv.contiguous()
        q, k, v = self.q_norm(qkv[0]), self.k_norm(qkv[1]), qkv[2]  # (B, heads, L, d)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = attention(q, k, v, self.backend, self.xformers_op)  # (B, heads, L, d)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))  # (B, L, D)
