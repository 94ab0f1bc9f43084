"""The lean forward-mode rules (``mfvideo.models.jvp_rules``) against PyTorch's own rules, and what they save."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from conftest import randomize, tiny_model
from mfvideo.method.jvp import forward_jvp
from mfvideo.models.attention import math_attention
from mfvideo.models.jvp_rules import (OperatorCount, add_fixed, gated_add, layer_norm, lean_math_attention,
                                      modulate, pytorch_rules, rms_norm, sin_cos)


def _inputs(rule):
    """float64 inputs as the STDiT hands them: views that are not contiguous, conditioning broadcast over tokens."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    tokens = lambda: rand(2, 8, 3, 5).permute(0, 2, 3, 1)  # noqa: E731  (B, T, N, D) as a channels-first view
    if rule in ("layer_norm", "rms_norm"):
        return (tokens(),)
    if rule == "attention":  # (B, heads, L, d) views of one qkv tensor
        return tuple(rand(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0))
    if rule == "add_fixed":  # per-frame conditioning (B, T, 1, D) added to the tokens
        return tokens(), rand(2, 3, 1, 8)
    if rule == "sin_cos":  # per-frame times (B, T)
        return (torch.rand(2, 4, generator=g, dtype=torch.float64),)
    return tokens(), rand(2, 1, 1, 8), tokens() if rule == "gated_add" else rand(2, 1, 1, 8)


FREQS = torch.exp(-torch.arange(6, dtype=torch.float64) * 1.5)  # (half,)
WEIGHT = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)  # the QK-norm's: a plain tensor, cast to the input's dtype
OFFSET = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(3, 1, 8)  # (T, 1, D): the frame positions
LEAN = {"layer_norm": lambda x: layer_norm(x, (8,), 1e-6), "rms_norm": lambda x: rms_norm(x, (8,), WEIGHT, 1e-6),
        "attention": lean_math_attention, "modulate": modulate,
        "modulate_positions": lambda x, shift, scale: add_fixed(modulate(x, shift, scale),
                                                                OFFSET.to(x.device, x.dtype)),
        "gated_add": gated_add, "sin_cos": lambda x: sin_cos(x, FREQS.to(x.device, x.dtype)),
        "add_fixed": lambda x, c: add_fixed(x, c, subtract=True)}
PLAIN = {"layer_norm": lambda x: F.layer_norm(x, (8,), eps=1e-6), "attention": math_attention,
         "rms_norm": lambda x: F.rms_norm(x, (8,), WEIGHT.to(x.device, x.dtype), 1e-6),
         "modulate": lambda x, shift, scale: x * (1 + scale) + shift, "gated_add": lambda x, gate, h: x + gate * h,
         "modulate_positions": lambda x, shift, scale: x * (1 + scale) + shift + OFFSET.to(x.device, x.dtype),
         "add_fixed": lambda x, c: x - c,
         "sin_cos": lambda x: torch.cat([torch.cos(x[..., None] * FREQS.to(x.device, x.dtype)),
                                         torch.sin(x[..., None] * FREQS.to(x.device, x.dtype))], dim=-1)}


@pytest.mark.parametrize("api", ["dual", "func"])
@pytest.mark.parametrize("rule", list(LEAN))
def test_lean_rule_equals_pytorchs_in_value_tangent_and_gradient(rule, api):
    """Value and tangent (through dual tensors and torch.func.jvp) equal PyTorch's rule on the plain expression, and
    the gradient through the JVP's primal (the fused JVP mode's) equals the plain one's."""
    primals = _inputs(rule)
    tangents = tuple(torch.randn_like(p) for p in primals)
    ref_out, ref_tan = torch.func.jvp(PLAIN[rule], primals, tangents)
    leaves = [p.detach().clone().requires_grad_() for p in primals]
    if api == "dual":
        with fwAD.dual_level():
            out, tan = fwAD.unpack_dual(LEAN[rule](*(fwAD.make_dual(p, t) for p, t in zip(leaves, tangents))))
            out.pow(3).sum().backward()
    else:
        out, tan = torch.func.jvp(LEAN[rule], tuple(leaves), tangents)
        out.pow(3).sum().backward()
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-14)
    torch.testing.assert_close(tan, ref_tan, rtol=1e-12, atol=1e-12)
    assert tan.abs().max() > 0.1
    plain = [p.detach().clone().requires_grad_() for p in primals]
    PLAIN[rule](*plain).pow(3).sum().backward()
    for a, b in zip(leaves, plain):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    # and the backward against finite differences, the rule called directly
    inputs = tuple(p.detach().requires_grad_() for p in plain)
    assert torch.autograd.gradcheck(lambda *a: _primal_under_forward_ad(LEAN[rule], *a), inputs)


def _primal_under_forward_ad(fn, x, *rest):
    """fn(x, *rest) under a dual level, x carrying a zero tangent (so the rule's Function runs), its primal out."""
    with fwAD.dual_level():
        return fwAD.unpack_dual(fn(fwAD.make_dual(x, torch.zeros_like(x)), *rest)).primal


def test_rms_norm_rule_gives_the_weights_gradient_and_leaves_a_weight_tangent_to_pytorch():
    """The QK-norm's weight is a parameter: through the lean rule (the fused JVP mode's primal) its gradient and the
    input's equal F.rms_norm's; a weight that carries a tangent of its own (forward AD with respect to the weights)
    takes PyTorch's rule, whose tangent includes it."""
    x, w = _inputs("rms_norm")[0], WEIGHT.clone()
    grads = []
    for lean in (True, False):
        xx, ww = x.detach().clone().requires_grad_(), w.clone().requires_grad_()
        with fwAD.dual_level():
            dual = fwAD.make_dual(xx, torch.ones_like(xx))
            out = fwAD.unpack_dual(rms_norm(dual, (8,), ww, 1e-6) if lean else F.rms_norm(dual, (8,), ww, 1e-6)).primal
        out.pow(3).sum().backward()
        grads.append((xx.grad, ww.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    rule = lambda a, b: rms_norm(a, (8,), b, 1e-6)  # noqa: E731
    assert torch.autograd.gradcheck(lambda a, b: _primal_under_forward_ad(rule, a, b), (x.detach().requires_grad_(),
                                                                                       w.requires_grad_()))
    dx, dw = torch.randn_like(x), torch.randn_like(w)
    ours = torch.func.jvp(lambda a, b: rms_norm(a, (8,), b, 1e-6), (x, w), (dx, dw))[1]
    ref = torch.func.jvp(lambda a, b: F.rms_norm(a, (8,), b, 1e-6), (x, w), (dx, dw))[1]
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_positions_added_after_the_modulation_keep_a_tangent_or_a_gradient_of_their_own():
    """The temporal sub-layer's ``add_fixed(modulate(...), pos_t)``: positions that carry a tangent or need a gradient
    (a learned position table) keep them."""
    x, shift, scale = _inputs("modulate")
    dx, d_off = torch.randn_like(x), torch.randn_like(OFFSET)
    ours = torch.func.jvp(lambda a, o: add_fixed(modulate(a, shift, scale), o), (x, OFFSET), (dx, d_off))[1]
    ref = torch.func.jvp(lambda a, o: PLAIN["modulate"](a, shift, scale) + o, (x, OFFSET), (dx, d_off))[1]
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    offset = OFFSET.clone().requires_grad_()
    with fwAD.dual_level():
        fwAD.unpack_dual(add_fixed(modulate(fwAD.make_dual(x, dx), shift, scale), offset)).primal.sum().backward()
    torch.testing.assert_close(offset.grad, torch.full_like(OFFSET, x.numel() / OFFSET.numel()))


def test_add_fixed_passes_the_tangent_on_without_operators_and_gives_the_addends_gradient():
    """x + c with c fixed along the JVP (positions, a label embedding, r): the tangent is x's, at no operator beyond
    the primal add (PyTorch's rule: 6), under dual tensors and torch.func.jvp; c's gradient (the temporal position
    gate's) flows through the primal."""
    x, c = _inputs("add_fixed")
    dx = torch.randn_like(x)
    c = c.clone().requires_grad_()
    with fwAD.dual_level():
        with OperatorCount() as ours:
            out = add_fixed(fwAD.make_dual(x, dx), c)
        with pytorch_rules(), OperatorCount() as theirs:
            fwAD.make_dual(x, dx) + c
        primal, tan = fwAD.unpack_dual(out)
        primal.pow(2).sum().backward()
    assert ours.total == 1 and theirs.total >= 5, (ours.ops, theirs.ops)
    assert torch.equal(primal, x + c) and torch.equal(tan, dx)
    torch.testing.assert_close(c.grad, (2 * (x + c)).sum_to_size(c.shape), rtol=1e-12, atol=1e-12)
    _, tan = torch.func.jvp(lambda a: add_fixed(a, c.detach(), subtract=True), (x,), (dx,))
    assert torch.equal(tan, dx)
    dc = torch.randn_like(c)  # and the other way round: x fixed, the addend moving
    with fwAD.dual_level():
        tan = fwAD.unpack_dual(add_fixed(x, fwAD.make_dual(c.detach(), dc), subtract=True)).tangent
    torch.testing.assert_close(tan, (-dc).expand_as(x), rtol=0, atol=0)


@pytest.mark.parametrize("rule", list(LEAN))
def test_lean_rule_composes_with_vmap(rule):
    """Per-row JVPs under vmap (the generated vmap rule) equal the batched JVP."""
    primals = _inputs(rule)
    tangents = tuple(torch.randn_like(p) for p in primals)
    batched = torch.func.jvp(LEAN[rule], primals, tangents)[1]
    dims = tuple(0 for _ in primals)
    per_row = torch.func.vmap(lambda p, t: torch.func.jvp(LEAN[rule], p, t)[1], in_dims=(dims, dims))(primals, tangents)
    torch.testing.assert_close(per_row, batched, rtol=1e-12, atol=1e-12)


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="gpu_cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA's autocast lists (softmax in fp32) need a GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", list(LEAN))
def test_lean_rule_under_bf16_autocast_keeps_the_plain_primal_and_a_bf16_tangent(rule, device):
    """Under bf16 autocast (CPU's lists, and CUDA's, where softmax runs in fp32): the primal bit for bit the plain
    expression's (layer norm in fp32, matmuls in bf16), the tangent in the primal's dtype and within bf16 rounding of
    the fp32 tangent."""
    primals = tuple(p.float().to(device) for p in _inputs(rule))
    if rule in ("attention", "rms_norm", "gated_add"):  # as the network hands them: bf16 out of a Linear
        primals = primals[:1] + tuple(p.bfloat16() for p in primals[1:]) if rule == "gated_add" else tuple(
            p.bfloat16() for p in primals)
    for inputs in (primals, tuple(p.bfloat16() for p in primals)) if rule == "layer_norm" else (primals,):
        # (a layer norm of bf16 input: CUDA's autocast computes it in fp32, CPU's in bf16; the rule follows either)
        tangents = tuple(torch.randn_like(p) for p in inputs)
        with torch.autocast(device, dtype=torch.bfloat16):
            plain = PLAIN[rule](*inputs)
            with fwAD.dual_level():
                out, tan = fwAD.unpack_dual(LEAN[rule](*(fwAD.make_dual(p, t) for p, t in zip(inputs, tangents))))
        assert torch.equal(out, plain) and out.dtype == plain.dtype == tan.dtype
        ref = torch.func.jvp(PLAIN[rule], tuple(p.double() for p in inputs), tuple(t.double() for t in tangents))[1]
        assert (tan.double() - ref).abs().max() <= 0.03 * ref.abs().max()


@pytest.mark.parametrize("device", DEVICES)
def test_the_networks_jvp_launches_about_three_forwards_of_operators_under_bf16_autocast(device):
    """The host-bound bf16 JVP: with PyTorch's rules this network's JVP dispatched 4.6 times the forward's operators
    (layer norm 18 per norm, attention 34 per call, adaLN's modulation 11), with the lean rules 2.6 times (2.7 before
    ``add_fixed``; this tiny model's QK-norm weighs more than a B/2's). And no
    tangent is copied into its primal's layout (``_new_zeros_with_same_feature_meta``: a rule's output laid out
    otherwise)."""
    net = randomize(tiny_model(depth=3, hidden_size=32, num_heads=2, qk_norm=True)).to(device)
    z, dz = torch.randn(2, 3, 4, 16, 16, device=device), torch.randn(2, 3, 4, 16, 16, device=device)
    t, r = torch.tensor([0.8, 0.6], device=device), torch.tensor([0.2, 0.6], device=device)
    y = torch.tensor([3, -1], device=device)
    fn = lambda z_, t_, r_: net(z_, t_, r_, y=y)  # noqa: E731
    jvp = lambda: forward_jvp(fn, (z, t, r), (dz, torch.ones_like(t), None), module=net)  # noqa: E731
    counts, tangents = {}, {}
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        for name, call in {"forward": lambda: net(z, t, r, y=y), "jvp": jvp}.items():
            call()  # autocast's weight cache filled, as in training
            with OperatorCount() as mode:
                out = call()
            counts[name], tangents[name] = mode.ops, out
        with pytorch_rules(), OperatorCount() as mode:
            theirs = jvp()
    ratio = sum(counts["jvp"].values()) / sum(counts["forward"].values())
    if device == "cpu":  # (CUDA's autocast lists add casts of their own: there the comparison below)
        assert ratio < 2.8, (ratio, counts["jvp"].most_common(12))
    assert counts["jvp"]["_new_zeros_with_same_feature_meta"] == 0
    # PyTorch's rules (pytorch_rules(), the benchmark's comparison): the same primal, the tangent within bf16
    # rounding, a third more operators
    assert sum(mode.ops.values()) > 1.3 * sum(counts["jvp"].values())
    ours = tangents["jvp"]
    assert torch.equal(ours[0], theirs[0])
    assert (ours[1].float() - theirs[1].float()).abs().max() <= 0.03 * theirs[1].float().abs().max()


@pytest.mark.parametrize("kw", [dict(qk_norm=True, context_summary=True),
                                dict(attention="joint", clip_rope=True, qk_norm=True),
                                dict(attention="spacetime", clip_rope=True)],
                         ids=["qk_norm", "joint_rope", "spacetime_rope"])
def test_the_networks_jvp_through_every_rule_equals_a_finite_difference(kw):
    """Every rule composed in the network (QK-norm, rotary positions, attention over the whole clip, per-frame times):
    the JVP along (v, dt, 0) equals a central finite difference of the network in float64, and PyTorch's rules'."""
    torch.manual_seed(0)
    net = randomize(tiny_model(**kw)).double()
    z, dz = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 0.8, 0.8], [0.7, 0.7, 0.7, 0.7]], dtype=torch.float64)  # first frames context
    r = torch.tensor([[0.0, 0.0, 0.3, 0.3], [0.1, 0.1, 0.1, 0.1]], dtype=torch.float64)
    dt = (t > 0).double()
    y = torch.tensor([2, -1])
    fn = lambda z_, t_, r_: net(z_, t_, r_, y=y)  # noqa: E731
    with torch.no_grad():
        _, ours = forward_jvp(fn, (z, t, r), (dz, dt, None))
        with pytorch_rules():
            _, theirs = forward_jvp(fn, (z, t, r), (dz, dt, None))
        eps = 1e-6
        fd = (fn(z + eps * dz, t + eps * dt, r) - fn(z - eps * dz, t - eps * dt, r)) / (2 * eps)
    torch.testing.assert_close(ours, fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert ours.abs().max() > 1e-2
