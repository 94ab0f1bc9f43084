import pytest
import torch
from einops import rearrange

from conftest import randomize, tiny_model
from mfvideo.models import MODELS, build_model, math_attention
from mfvideo.models.attention import attention


@pytest.mark.parametrize(
    "name, millions", [("STDiT-B/2", 131.1), ("STDiT-M/2", 308.0), ("STDiT-L/2", 459.1), ("STDiT-XL/2", 676.4)]
)
def test_parameter_counts_match_official_meanflow(name, millions):
    with torch.device("meta"):
        net = build_model(name, in_channels=4, num_classes=1000, temporal=False)
    count = sum(p.numel() for p in net.parameters()) / 1e6
    assert abs(count - millions) / millions < 0.005, count


def test_registry_has_all_sizes_and_patches():
    assert {f"STDiT-{s}/{p}" for s in ("S", "B", "M", "L", "XL") for p in (2, 4, 8)} == set(MODELS)
    with pytest.raises(KeyError, match="unknown model size"):
        build_model("STDiT-Q/2")


def test_image_and_video_shapes_and_any_grid_at_inference():
    net = randomize(tiny_model()).eval()
    img = torch.randn(2, 3, 8, 8)
    assert net(img, torch.rand(2), torch.zeros(2)).shape == img.shape
    for shape in [(2, 3, 4, 8, 8), (1, 3, 7, 12, 6)]:  # a grid never seen: positions are computed on the fly
        z = torch.randn(shape)
        out = net(z, torch.rand(shape[0]), torch.zeros(shape[0]))
        assert out.shape == z.shape and torch.isfinite(out).all()


def test_fresh_model_outputs_zero_adaln_zero():
    net = tiny_model()
    assert net(torch.randn(2, 3, 2, 8, 8), torch.rand(2), torch.zeros(2)).abs().max() == 0


def test_per_frame_times_equal_per_clip_times_when_constant():
    net = randomize(tiny_model()).double()
    z = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t, r = torch.tensor([0.7, 0.3], dtype=torch.float64), torch.tensor([0.2, 0.1], dtype=torch.float64)
    a = net(z, t, r)
    b = net(z, t[:, None].expand(2, 4), r[:, None].expand(2, 4))
    torch.testing.assert_close(a, b)
    # and per-frame times matter: changing one frame's time changes the output
    t2 = t[:, None].repeat(1, 4)
    t2[:, 0] = 0.0
    assert not torch.allclose(net(z, t2, r[:, None].expand(2, 4).clamp(max=0.0)), a)


def test_video_model_from_image_weights_is_the_image_model_per_frame():
    image = randomize(tiny_model(temporal=False)).double()
    video = tiny_model(temporal=True).double()
    missing, unexpected = video.load_state_dict(image.state_dict(), strict=False)
    assert not unexpected and missing and all("temporal" in k for k in missing)
    z = torch.randn(2, 3, 5, 8, 8, dtype=torch.float64)
    t, r, y = torch.tensor([0.9, 0.4]), torch.tensor([0.1, 0.4]), torch.tensor([3, -1])
    out = video(z, t, r, y)
    for f in range(5):
        torch.testing.assert_close(out[:, :, f], image(z[:, :, f], t, r, y))


def test_labels_change_output_and_unconditional_model_refuses_labels():
    net = randomize(tiny_model())
    z, t, r = torch.randn(2, 3, 2, 8, 8), torch.rand(2), torch.zeros(2)
    assert not torch.allclose(net(z, t, r, torch.tensor([1, 2])), net(z, t, r, torch.tensor([3, 4])))
    torch.testing.assert_close(net(z, t, r, None), net(z, t, r, torch.tensor([-1, -1])))  # None = null class
    with pytest.raises(ValueError, match="no classes"):
        tiny_model(num_classes=0)(z, t, r, torch.tensor([1, 2]))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_backends_agree_in_value_and_tangent(qk_norm):
    from torch.func import jvp

    net = randomize(tiny_model(qk_norm=qk_norm)).double()
    z = torch.randn(2, 3, 3, 8, 8, dtype=torch.float64)
    t, r = torch.tensor([0.8, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.5], dtype=torch.float64)
    tangents = (torch.randn_like(z), torch.ones_like(t), torch.zeros_like(r))
    results = {}
    for backend in ("math", "sdpa", "xformers", "jvp_flash"):  # xformers / jvp_flash fall back off CUDA
        net.set_attn_backend(backend)
        results[backend] = jvp(lambda z_, t_, r_: net(z_, t_, r_), (z, t, r), tangents)
    for backend in ("sdpa", "xformers", "jvp_flash"):
        torch.testing.assert_close(results[backend][0], results["math"][0])
        torch.testing.assert_close(results[backend][1], results["math"][1])


def test_qk_norm_takes_the_fused_rms_norm_under_bf16_autocast():
    """Under bf16 autocast the QK-norm's fp32 weight is cast to the bf16 queries' dtype (as autocast casts a Linear's),
    so PyTorch's fused rms_norm runs (no "Mismatch dtype" fallback) in the forward, the JVP and the backward, with
    ``nn.RMSNorm``'s value and gradients."""
    import warnings

    from mfvideo.method.jvp import forward_jvp
    from mfvideo.models.attention import RMSNorm

    ours, theirs = RMSNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(16) + 0.5), theirs.weight.copy_(ours.weight)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, 4, 7, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.functional.linear(x, torch.eye(16))  # bf16, as the qkv projection's output
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*Mismatch dtype")
            out = ours(h)
            _, tangent = forward_jvp(ours, (h,), (torch.ones_like(h),))
            out.float().square().sum().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = theirs(h)
            ref.float().square().sum().backward()
    assert out.dtype == tangent.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=2e-2, atol=1e-2)
    assert ours.weight.grad.dtype == torch.float32
    # the network's QK-norm is this module
    net = tiny_model(qk_norm=True)
    assert all(type(m.q_norm) is RMSNorm and type(m.k_norm) is RMSNorm for m in net.modules() if hasattr(m, "q_norm"))


def test_sdpa_backend_is_used_outside_jvp_and_math_inside(monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    q = torch.randn(1, 2, 5, 4)
    torch.testing.assert_close(attention(q, q, q, "sdpa"), math_attention(q, q, q))
    assert calls == [1]
    torch.func.jvp(lambda a: attention(a, a, a, "sdpa"), (q,), (q,))
    assert calls == [1]  # the fused kernel has no forward AD: the math path ran


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused JVP kernels need CUDA")
@pytest.mark.parametrize("api", ["forward_ad", "func"])
@pytest.mark.parametrize("backend", ["xformers", "jvp_flash", "sdpa"])
def test_gpu_attention_kernels_match_math_in_value_tangent_and_gradient(backend, api):
    """bf16 kernels vs the fp32 math path: forward, JVP tangent and the gradient through the JVP's primal, through
    dual tensors (what the loss uses) and through torch.func.jvp."""
    from mfvideo.method.jvp import forward_jvp
    from mfvideo.models.attention import jvp_flash_available, xformers_available

    if backend == "xformers" and not xformers_available() or backend == "jvp_flash" and not jvp_flash_available():
        pytest.skip(f"{backend} not installed")
    torch.manual_seed(0)
    q, k, v, dq, dk, dv = (torch.randn(2, 4, 256, 64, device="cuda") for _ in range(6))

    def run(fn, dtype):
        qq, kk, vv = (a.detach().to(dtype).requires_grad_() for a in (q, k, v))  # fresh leaves each run
        out = fn(qq, kk, vv)
        jvp = forward_jvp if api == "forward_ad" else torch.func.jvp
        prim, tan = jvp(fn, (qq, kk, vv), tuple(a.to(dtype) for a in (dq, dk, dv)))
        prim.float().square().sum().backward()
        return out.float(), tan.float(), qq.grad.float()

    ref = run(math_attention, torch.float32)
    got = run(lambda a, b, c: attention(a, b, c, backend), torch.bfloat16)
    for name, a, b in zip(("value", "tangent", "gradient"), got, ref):
        assert (a - b).norm() / b.norm() < 2e-2, name
    if backend == "jvp_flash":  # the fused kernel ran, not the math fallback
        from mfvideo.models.attention import _jvp_flash_refused

        assert not _jvp_flash_refused


def test_temporal_patch_and_divisibility_error():
    net = randomize(tiny_model(temporal_patch_size=2))
    z = torch.randn(1, 3, 4, 8, 8)
    assert net(z, torch.rand(1), torch.zeros(1)).shape == z.shape
    with pytest.raises(ValueError, match="not divisible"):
        net(torch.randn(1, 3, 3, 8, 8), torch.rand(1), torch.zeros(1))


def test_lean_linear_jvp_equals_pytorch_rule_and_skips_the_zero_weight_matmul():
    """Our Linear's JVP (one matmul) = nn.Linear's (x_t W^T + x W_t^T with W_t = 0), value, tangent and gradient."""
    import torch.autograd.forward_ad as fwAD
    from torch.func import functional_call, jvp
    from torch.profiler import profile

    from mfvideo.models.linear import Linear

    torch.manual_seed(0)
    lean = Linear(16, 24)
    ref = torch.nn.Linear(16, 24)
    ref.load_state_dict(lean.state_dict())
    x, dx = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    lean.double(), ref.double()
    for api in ("func", "forward_ad"):
        if api == "func":
            (o1, t1), (o2, t2) = jvp(lean, (x,), (dx,)), jvp(ref, (x,), (dx,))
        else:
            with fwAD.dual_level():
                o1, t1 = fwAD.unpack_dual(lean(fwAD.make_dual(x, dx)))
                o2, t2 = fwAD.unpack_dual(ref(fwAD.make_dual(x, dx)))
        assert torch.allclose(o1, o2, atol=1e-12) and torch.allclose(t1, t2, atol=1e-12)
        assert torch.allclose(t1, dx @ lean.weight.T, atol=1e-12)  # no bias in the tangent
    # the primal of the JVP carries the parameter gradient (fused JVP mode): same gradients as nn.Linear
    grads = []
    for m in (lean, ref):
        m.zero_grad()
        xi = x.clone().requires_grad_()
        out, tan = jvp(m, (xi,), (dx,))
        (out.square().sum() + (tan * out).sum()).backward()
        grads.append([xi.grad, m.weight.grad, m.bias.grad])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)
    # one matmul for the tangent, where PyTorch's rule runs two (the second against a zero W_t)
    def matmuls(m):
        with torch.no_grad(), profile() as prof:
            jvp(m, (x,), (dx,))
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))

    assert matmuls(lean) == 2 < matmuls(ref)  # primal + tangent; PyTorch: 3 or 4 by input rank
    # forward AD with respect to the weights takes PyTorch's own rule, so it stays exact
    params = dict(lean.named_parameters())
    w_t = {k: torch.randn_like(v) for k, v in params.items()}
    _, tan = jvp(lambda p: functional_call(lean, p, (x,)), (params,), (w_t,))
    assert torch.allclose(tan, x @ w_t["weight"].T + w_t["bias"], atol=1e-12)


def test_lean_linear_jvp_under_bf16_autocast_matches_fp32():
    from torch.func import jvp

    from mfvideo.models.linear import Linear

    torch.manual_seed(0)
    lin = Linear(32, 32)
    x, dx = torch.randn(8, 32), torch.randn(8, 32)
    o32, t32 = jvp(lin, (x,), (dx,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o16, t16 = jvp(lin, (x,), (dx,))
    assert o16.dtype == t16.dtype == torch.bfloat16
    assert (t16.float() - t32).norm() / t32.norm() < 2e-2 and (o16.float() - o32).norm() / o32.norm() < 2e-2


def test_lean_linear_with_frozen_weights_still_gives_input_gradients():
    from torch.func import jvp

    from mfvideo.models.linear import Linear

    torch.manual_seed(0)
    lin = Linear(8, 4).requires_grad_(False)
    ref = torch.nn.Linear(8, 4).requires_grad_(False)
    ref.load_state_dict(lin.state_dict())
    grads = []
    for m in (lin, ref):
        x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        out, tan = jvp(m, (x,), (torch.ones_like(x),))
        (out.square().sum() + tan.sum()).backward()
        grads.append(x.grad)
    assert torch.allclose(*grads, atol=1e-6)


@pytest.mark.parametrize("jvp_mode", ["detached", "fused"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(jvp_mode):
    from mfvideo.method import MeanFlow

    torch.manual_seed(0)
    plain = randomize(tiny_model(attention="joint"))
    ckpt = randomize(tiny_model(attention="joint"))
    ckpt.enable_gradient_checkpointing()
    calls = []
    inner = ckpt._gradient_checkpointing_func
    ckpt._set_gradient_checkpointing(True, lambda *a: calls.append(1) or inner(*a))
    g = torch.Generator().manual_seed(1)
    x, noise = torch.randn(4, 3, 2, 8, 8, generator=g), torch.randn(4, 3, 2, 8, 8, generator=g)
    t = torch.rand(4, generator=g) * 0.8 + 0.2
    r = torch.where(torch.arange(4) % 2 == 0, t * 0.5, t)
    mf = MeanFlow(ratio_r_neq_t=0.5, jvp_mode=jvp_mode)
    grads = []
    for net in (plain, ckpt):
        loss, _ = mf.loss(net, x, torch.tensor([1, 2, 3, 4]), t=t, r=r, noise=noise)
        loss.backward()
        grads.append((loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters()])))
    assert calls, "no block was checkpointed"
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("attention, starts_as_image", [("factorised", True), ("spacetime", True), ("joint", False)])
def test_video_model_from_image_weights_starts_as_the_image_model_per_frame(attention, starts_as_image):
    """Temporal sub-layers start at zero (factorised, spacetime): frame by frame the video model is the image model.
    Joint attention mixes frames from the first step (what the design table measures)."""
    torch.manual_seed(0)
    image = randomize(tiny_model(temporal=False))
    video = tiny_model(attention=attention)  # fresh: its temporal gates are zero
    missing = video.load_state_dict(image.state_dict(), strict=False).missing_keys
    assert all("temporal" in k for k in missing)
    x = torch.randn(2, 3, 4, 8, 8)
    t, r = torch.rand(2), torch.rand(2) * 0.3
    with torch.no_grad():
        per_frame = torch.stack([image(x[:, :, i], t, r) for i in range(4)], dim=2)
        out = video(x, t, r)
    assert torch.allclose(out, per_frame, atol=1e-5) == starts_as_image


def grown(depth: int, **part):
    """A random float64 model and the same model gaining a zero-started ``part`` by ``init_from``'s rule: (base, model,
    the keys left at their init)."""
    from mfvideo.weights import load_into

    torch.manual_seed(0)
    base = randomize(tiny_model(depth=depth)).double()
    model = tiny_model(depth=depth, **part).double()
    return base, model, load_into(model, base.state_dict(), "base", allow_missing_temporal=True)


def test_clip_attention_starts_as_the_model_it_extends_and_links_other_positions_across_frames():
    """clip_attention is a zero-gated addition (a trained factorised model gains it unchanged); opened, it carries a
    context token to a new frame at another spatial position within one sub-layer, which per-position temporal
    attention cannot: with spatial attention and the frame-position gate shut, only the clip sub-layer links them."""
    base, model, fresh = grown(1, clip_attention=True)
    assert fresh and all(k.startswith("blocks.0.clip.") for k in fresh)
    z = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.7, 0.7, 0.7]], dtype=torch.float64)
    r = torch.zeros_like(t)
    with torch.no_grad():
        torch.testing.assert_close(model(z, t, r), base(z, t, r))  # starts as the model it extends
        d = model.config.hidden_size
        for net in (base, model):
            net.blocks[0].adaLN_modulation[-1].weight[2 * d:3 * d].zero_()  # spatial attention's gate
            net.blocks[0].adaLN_modulation[-1].bias[2 * d:3 * d].zero_()
    reach = {}
    for name, net in (("factorised", base), ("clip", model)):
        if name == "clip":
            randomize(net.blocks[0].clip, std=0.3, seed=2)
        (g,) = torch.autograd.grad(net(z, t, r)[0, :, 2, 6:, 6:].sum(), z)  # frame 2, the last patch (3, 3)
        reach[name] = g[0, :, 0, :2, :2].abs().sum().item()  # from frame 0, the first patch (0, 0)
        assert g[0, :, 0, 6:, 6:].abs().sum() > 0  # the same position is linked either way (temporal attention)
    assert reach["factorised"] == 0 and reach["clip"] > 1e-6
    with pytest.raises(ValueError, match="factorised video models only"):
        tiny_model(attention="spacetime", clip_attention=True)


def test_rope_scores_depend_only_on_the_offset_between_two_tokens():
    """3-D RoPE: the score of a query and a key is the same for every pair of grid positions with the same (frame, row,
    column) offset, differs between offsets, and the rotation keeps each vector's length."""
    from mfvideo.models.embeddings import apply_rope, rope_3d

    T, H, W, d = 4, 5, 6, 12
    rope = rope_3d(T, H, W, d)  # (2, T*H*W, d / 2)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    at = lambda f, i, j: (f * H + i) * W + j  # noqa: E731  frame-major, as the STDiT flattens a clip

    def score(a, b):
        L = rope.shape[1]
        qs, ks = torch.zeros(L, d, dtype=torch.float64), torch.zeros(L, d, dtype=torch.float64)
        qs[a], ks[b] = q, k
        return (apply_rope(qs, rope)[a] * apply_rope(ks, rope)[b]).sum()

    base = score(at(2, 3, 4), at(1, 2, 4))  # offset (1 frame, 1 row, 0 columns)
    for shift in [(0, 0, 0), (1, 1, 0), (-1, -2, 1), (1, 0, -3)]:
        a = at(2 + shift[0], 3 + shift[1], 4 + shift[2])
        b = at(1 + shift[0], 2 + shift[1], 4 + shift[2])
        torch.testing.assert_close(score(a, b), base)
    for other in [at(1, 2, 3), at(0, 2, 4), at(1, 3, 4)]:  # one column, one frame, one row further off
        assert (score(at(2, 3, 4), other) - base).abs() > 1e-3
    x = torch.randn(2, 3, T * H * W, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(apply_rope(x, rope).norm(dim=-1), x.norm(dim=-1))


def test_clip_rope_changes_the_clip_attention_keeps_value_and_tangent_exact_and_is_refused_without_it():
    from torch.func import jvp

    from mfvideo.config import ConfigError, load_config

    torch.manual_seed(0)
    plain = randomize(tiny_model(clip_attention=True)).double()
    rope = tiny_model(clip_attention=True, clip_rope=True).double()
    rope.load_state_dict(plain.state_dict())  # no new weights: the same network, rotated queries and keys
    z = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t, r = torch.tensor([0.8, 0.5], dtype=torch.float64), torch.tensor([0.2, 0.5], dtype=torch.float64)
    with torch.no_grad():
        assert (rope(z, t, r) - plain(z, t, r)).abs().max() > 1e-4
    dz = torch.randn_like(z)
    tangents = (dz, torch.ones_like(t), torch.zeros_like(r))
    out = {}
    for backend in ("math", "sdpa"):
        rope.set_attn_backend(backend)
        out[backend] = jvp(lambda z_, t_, r_: rope(z_, t_, r_), (z, t, r), tangents)
    torch.testing.assert_close(out["sdpa"][0], out["math"][0])
    torch.testing.assert_close(out["sdpa"][1], out["math"][1])
    eps = 1e-6
    with torch.no_grad():
        fd = (rope(z + eps * dz, t + eps, r) - rope(z - eps * dz, t - eps, r)) / (2 * eps)
    torch.testing.assert_close(out["math"][1], fd, rtol=1e-5, atol=1e-6)
    for attention in ("spacetime", "joint"):  # every attention over the whole clip takes it
        torch.manual_seed(0)
        a = randomize(tiny_model(attention=attention)).double()
        b = tiny_model(attention=attention, clip_rope=True).double()
        b.load_state_dict(a.state_dict())
        with torch.no_grad():
            assert (a(z, t, r) - b(z, t, r)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="clip_rope"):
        tiny_model(clip_rope=True)  # factorised without clip attention: nothing spans the clip
    with pytest.raises(ConfigError, match="model.clip_rope"):
        load_config("configs/moving_digits.yaml", ["model.clip_rope=true"])
    assert load_config("configs/moving_digits.yaml", ["model.clip_rope=true", "model.clip_attention=true"]).model.clip_rope


def test_nearest_context_frame_for_every_mask_kind():
    from mfvideo.models.copy import nearest_context

    masks = torch.tensor([
        [1, 1, 1, 1, 0, 0, 0, 0],  # extension: every new frame takes the last given one
        [0, 0, 0, 0, 1, 1, 1, 1],  # backward extension: the first given one
        [1, 0, 0, 0, 0, 0, 0, 1],  # interpolation: the nearer end
        [1, 0, 1, 0, 0, 0, 0, 0],  # a tie (frame 1) goes to the earlier frame
    ]).bool()
    assert nearest_context(masks).tolist() == [
        [0, 1, 2, 3, 3, 3, 3, 3], [4, 4, 4, 4, 4, 5, 6, 7], [0, 0, 0, 0, 7, 7, 7, 7], [0, 0, 2, 2, 2, 2, 2, 2]]


def test_context_reference_starts_as_the_model_it_extends_and_gives_each_frame_its_nearest_context_frame():
    """A zero-started addition (a trained model gains it unchanged); opened, a new frame's tokens take its nearest
    context frame and the signed distance to it, nothing of another frame, and rows without context get nothing."""
    base, model, fresh = grown(1, context_reference=True)
    assert fresh == ["reference_embedder.proj.weight", "reference_embedder.proj.bias"]
    z = torch.randn(3, 3, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.7] * 4, [0.9, 0.9, 0.0, 0.9]], dtype=torch.float64)
    r = torch.zeros_like(t)
    with torch.no_grad():
        torch.testing.assert_close(model(z, t, r), base(z, t, r))  # starts as the model it extends
        randomize(model.reference_embedder, std=0.3, seed=1)
        out, ref = model(z, t, r), base(z, t, r)
        assert (out[0] - ref[0]).abs().max() > 1e-3 and (out[2] - ref[2]).abs().max() > 1e-3
        torch.testing.assert_close(out[1], ref[1])  # no context frames: untouched
        torch.testing.assert_close(model(z, t[1, 0], r[1, 0]), base(z, t[1, 0], r[1, 0]))  # per-clip times: none
        emb = model.reference_embedder
        tokens = emb(z, torch.tensor([[True, True, False, False]] * 3))  # (B, T', N, D)
        proj = lambda frame, offset: emb.proj(torch.cat([frame, torch.full_like(frame[:, :1], offset)], dim=1))
        for f, (src, offset) in enumerate([(0, 0.0), (1, 0.0), (1, 0.25), (1, 0.5)]):  # offsets in clips (T = 4)
            want = rearrange(proj(z[:, :, src:src + 1], offset), "b d t h w -> b t (h w) d")[:, 0]
            torch.testing.assert_close(tokens[:, f], want)
    with pytest.raises(ValueError, match="needs a video model"):
        tiny_model(temporal=False, context_reference=True)


def test_copy_path_starts_as_the_model_it_extends_and_moves_the_nearest_context_frame_by_its_kernel():
    """A zero-started addition (a trained model gains it unchanged); with its kernels set to one tap and its gate
    open, every new frame of an x-predicting model is its nearest context frame moved by that tap (its border
    shifted in); rows without context, or per-clip times, get no copy."""
    import torch.nn.functional as F

    from mfvideo.weights import load_into

    torch.manual_seed(0)
    base = randomize(tiny_model(depth=1, prediction="x")).double()
    model = tiny_model(depth=1, prediction="x", copy_radius=2).double()
    assert load_into(model, base.state_dict(), "base", allow_missing_temporal=True) == ["copier.head.weight",
                                                                                        "copier.head.bias"]
    z = torch.randn(3, 3, 5, 8, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 1.0, 0.8, 0.6], [0.7] * 5, [0.0, 0.6, 0.6, 0.6, 0.0]], dtype=torch.float64)
    r = torch.zeros_like(t)
    denoised = lambda net: z - t[:, None, :, None, None] * net(z, t, r)  # x-prediction: the network's clip
    with torch.no_grad():
        torch.testing.assert_close(model(z, t, r), base(z, t, r))  # starts as the model it extends
        head = model.copier.head.bias.view(-1, 2 * 5 + 1)  # per pixel slot: 5 vertical taps, 5 horizontal, the gate
        head[:, 1], head[:, 5 + 4], head[:, 10] = 60.0, 60.0, 1.0  # tap (-1, +2): from one row up, two columns right
        out = denoised(model)
    # (C, H, W): the value at (y, x) from (y - 1, x + 2), the frame's border continued outside it (not zeros: black
    # would turn grey in [-1, 1] pixels)
    moved = lambda frame: F.pad(frame[None], (0, 2, 1, 0), mode="replicate")[0, :, :8, 2:]
    for f in (2, 3, 4):  # clip 0: given 0-1, new 2-4, all from frame 1
        torch.testing.assert_close(out[0, :, f], moved(z[0, :, 1]), rtol=0, atol=1e-9)
    for f, src in ((1, 0), (2, 0), (3, 4)):  # clip 2: interpolation, each from the nearer end (ties: the earlier)
        torch.testing.assert_close(out[2, :, f], moved(z[2, :, src]), rtol=0, atol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(model(z, t, r)[1], base(z, t, r)[1])  # no context frames: untouched
        torch.testing.assert_close(model(z, t[1, 0], r[1, 0]), base(z, t[1, 0], r[1, 0]))  # per-clip times: none
    with pytest.raises(ValueError, match="copy_radius copies from the nearest context frame"):
        tiny_model(temporal=False, copy_radius=2)


def test_bilinear_copy_moves_the_nearest_context_frame_by_its_predicted_offset():
    """copy_kernel=bilinear: one offset per axis; an integer offset is an exact move of the nearest context frame
    (its border continued outside it), a half-pixel one the mean of the two moves around it, and snapped the nearer
    whole move; zero-started, the copy is the frame in place and the gate closed."""
    import torch.nn.functional as F

    from mfvideo.models.copy import bilinear_taps

    torch.manual_seed(0)
    model = randomize(tiny_model(depth=1, prediction="x", copy_radius=3, copy_kernel="bilinear")).double()
    model.copier.reset_parameters()
    z = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.9, 0.9]], dtype=torch.float64)
    clean = t == 0
    tokens = torch.randn(2, 4, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        copy, gate = model.copier.copy_and_gate(tokens, z, clean)
        torch.testing.assert_close(copy[0, :, 1:], z[0, :, :1].expand(-1, 3, -1, -1))  # in place
        assert (gate == 0).all()
        bias = model.copier.head.bias.view(-1, 3)  # (pixel slots, vertical offset | horizontal | gate)

        def moved(dy, dx):  # every frame's nearest context frame moved by (dy, dx): value at (y, x) from (y-dy, x-dx)
            pad = F.pad(z.flatten(0, 1), (3, 3, 3, 3), mode="replicate").view(2, 3, 4, 14, 14)
            return pad[..., 3 - dy : 11 - dy, 3 - dx : 11 - dx]

        for (oy, ox), want in (((1.0, -2.0), moved(-1, 2)), ((0.5, 0.0), (moved(0, 0) + moved(-1, 0)) / 2)):
            bias[:, 0], bias[:, 1] = (3 * torch.atanh(torch.tensor(o / 3, dtype=torch.float64)) for o in (oy, ox))
            copy, _ = model.copier.copy_and_gate(tokens, z, clean)
            torch.testing.assert_close(copy[0, :, 1:], want[0, :, :1].expand(-1, 3, -1, -1), atol=1e-9, rtol=0)
            torch.testing.assert_close(copy[1, :, 2:], want[1, :, 1:2].expand(-1, 2, -1, -1), atol=1e-9, rtol=0)
        # snapped (sampling only): an offset of 1.3 / -1.8 is the whole move (1, -2), a gate of 0.7 fully open
        bias[:, 0], bias[:, 1] = (3 * torch.atanh(torch.tensor(o / 3, dtype=torch.float64)) for o in (1.3, -1.8))
        bias[:, 2] = 0.7
        model.copier.snap = True
        copy, gate = model.copier.copy_and_gate(tokens, z, clean)
        torch.testing.assert_close(copy[0, :, 1:], moved(-1, 2)[0, :, :1].expand(-1, 3, -1, -1), atol=1e-9, rtol=0)
        assert (gate == 1).all()
        model.copier.snap = False
        assert not torch.equal(model.copier.copy_and_gate(tokens, z, clean)[0], copy)
    taps = bilinear_taps(torch.tensor([[[[0.3]]]], dtype=torch.float64), 2)[0, :, 0, 0, 0]
    d = 2 * torch.tanh(torch.tensor(0.15, dtype=torch.float64))
    torch.testing.assert_close(taps, torch.stack([0 * d, 0 * d, 1 - d, d, 0 * d]))  # weights sum to 1, mean = d
    for radius in (0, 2):  # refused with the path off too: a typo is not silently a model without it
        with pytest.raises(ValueError, match="unknown copy_kernel 'gauss'"):
            tiny_model(copy_radius=radius, copy_kernel="gauss")


def test_context_summary_starts_at_zero_and_carries_only_the_context_frames_content():
    """The embedder is a zero-started addition (a trained video model gains it unchanged); trained, it passes what
    the clean frames show to the new frames even with every temporal path shut, and nothing of the new frames."""
    base, model, fresh = grown(2, context_summary=True)
    assert fresh == ["context_embedder.proj.weight", "context_embedder.proj.bias"]
    z = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.7, 0.7, 0.7]], dtype=torch.float64)  # frames at 0 are context
    r = torch.zeros_like(t)
    y = torch.tensor([-1, 2])
    with torch.no_grad():
        torch.testing.assert_close(model(z, t, r, y), base(z, t, r, y))  # starts as the model it extends
        for block in model.blocks:  # shut every path between frames except the embedder
            block.temporal.adaLN_modulation[-1].weight.zero_()
            block.temporal.adaLN_modulation[-1].bias.zero_()
        model.temporal_pos_gate.zero_()
        per_clip = torch.tensor([0.7, 0.3], dtype=torch.float64)  # one time per clip: no context, nothing added
        without = model(z, per_clip, per_clip * 0, y)
        randomize(model.context_embedder, std=0.5, seed=1)
        out = model(z, t, r, y)
        other_context = z.clone()
        other_context[0, :, :2] = torch.randn(3, 2, 8, 8, dtype=torch.float64)
        other_context[1, :, 0] = torch.randn(3, 8, 8, dtype=torch.float64)
        assert (model(other_context, t, r, y)[:, :, 2:] - out[:, :, 2:]).abs().amin() > 0  # new frames see it
        other_new = z.clone()
        other_new[:, :, 3] = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        torch.testing.assert_close(model(other_new, t, r, y)[:, :, 2], out[:, :, 2])  # new frames do not feed it
        torch.testing.assert_close(model(z, per_clip, per_clip * 0, y), without)
        # Noise-augmented context (t = r = s below the new frames' time) feeds it too; frames all at one time do not.
        ctx = t == 0
        t_s, r_s = t.masked_fill(ctx, 0.2), r.masked_fill(ctx, 0.2)
        noisy = model(z, t_s, r_s, y)
        assert (model(other_context, t_s, r_s, y)[:, :, 2:] - noisy[:, :, 2:]).abs().amin() > 0
        torch.testing.assert_close(model(other_new, t_s, r_s, y)[:, :, 2], noisy[:, :, 2])
        flat = torch.full_like(t, 0.4)  # r = t everywhere, one level: no context
        model.context_embedder.proj.bias.data.add_(1.0)  # were it applied, every output would move
        with_bias = model(z, flat, flat, y)
        model.context_embedder.proj.bias.data.sub_(1.0)
        torch.testing.assert_close(with_bias, model(z, flat, flat, y))


def test_refiner_starts_as_the_model_it_extends_and_reaches_one_frame_and_pixel_per_layer():
    """A zero-started addition (a trained model gains it unchanged, by init_from's rule); opened, it changes the
    output, per clip and per frame times alike; each 3 x 3 x 3 layer reaches one frame and one pixel further and no
    more; the input z and the times enter it."""
    from mfvideo.models.refiner import ConvRefiner

    base, model, fresh = grown(1, refiner_channels=8)
    assert sorted(fresh) == sorted(f"refiner.convs.{i}.{p}" for i in range(3) for p in ("weight", "bias"))
    z = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.7] * 4], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(z, t, t * 0), base(z, t, t * 0))
        torch.testing.assert_close(model(z[:, :, 0], t[:, 0], t[:, 0] * 0), base(z[:, :, 0], t[:, 0], t[:, 0] * 0))
        randomize(model.refiner, std=0.2, seed=1)
        assert (model(z, t, t * 0) - base(z, t, t * 0)).abs().max() > 1e-3
        out = torch.zeros_like(z)
        assert (model.refiner(out, z, t, t * 0) - model.refiner(out, z, t.flip(1), t * 0)).abs().max() > 1e-3  # t enters
        assert (model.refiner(out, z, t, t * 0) - model.refiner(out, z, t, t * 0.5)).abs().max() > 1e-3  # so does r
    torch.manual_seed(0)
    ref = randomize(ConvRefiner(channels=1, hidden=4, layers=2), std=0.3).double()
    out = torch.zeros(1, 1, 6, 9, 9, dtype=torch.float64)
    zz = torch.zeros_like(out).requires_grad_(True)
    tt = torch.zeros(1, 6, dtype=torch.float64)
    y = ref(out, zz, tt, tt)  # (1, 1, 6, 9, 9)
    (g,) = torch.autograd.grad(y[0, 0, 3, 4, 4], zz)  # which input pixels reach output frame 3, pixel (4, 4)?
    reach = g[0, 0].abs() > 0  # (6, 9, 9)
    frames, rows, cols = (reach.any(dim=d).nonzero().flatten().tolist() for d in ((1, 2), (0, 2), (0, 1)))
    assert frames == [1, 2, 3, 4, 5] and rows == cols == [2, 3, 4, 5, 6]  # 2 layers: +-2 frames and pixels
    with pytest.raises(ValueError, match="refiner_channels must be >= 0"):
        tiny_model(refiner_channels=-1)


def test_x_prediction_returns_u_from_the_denoised_field_and_its_one_step_sample_is_the_network_output():
    """prediction="x": the same weights' raw output x gives u = (z - x) / max(t, 0.05), per clip or per frame, and the
    1-NFE sample z_1 - u(z_1, 0, 1) is x itself (no trace of the input noise)."""
    from mfvideo.method import meanflow_sample

    torch.manual_seed(0)
    raw = randomize(tiny_model()).double()
    net = tiny_model(prediction="x").double()
    net.load_state_dict(raw.state_dict())
    z, y = torch.randn(3, 3, 4, 8, 8, dtype=torch.float64), torch.tensor([1, -1, 7])
    t, r = torch.tensor([0.9, 0.4, 0.02], dtype=torch.float64), torch.tensor([0.1, 0.4, 0.0], dtype=torch.float64)
    with torch.no_grad():
        x = raw(z, t, r, y)
        tb = torch.tensor([0.9, 0.4, 0.05], dtype=torch.float64)[:, None, None, None, None]  # 0.02 clamped to 0.05
        torch.testing.assert_close(net(z, t, r, y), (z - x) / tb)
        tf = torch.tensor([[0.0, 0.0, 0.8, 0.8], [0.0, 0.5, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
        per_frame = (z - raw(z, tf, tf * 0, y)) / tf.clamp(min=0.05)[:, None, :, None, None]
        torch.testing.assert_close(net(z, tf, tf * 0, y), per_frame)
        one = torch.ones(3, dtype=torch.float64)
        torch.testing.assert_close(meanflow_sample(net, z, y=y, steps=1), raw(z, one, one * 0, y))
        assert (meanflow_sample(raw, z, y=y, steps=1) - raw(z, one, one * 0, y)).abs().max() > 0.5  # u: z - u
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        tiny_model(prediction="eps")


@pytest.mark.parametrize("part", [{"refiner_channels": 8}, {"copy_radius": 2}, {"context_reference": True},
                                  {"context_summary": True, "context_reader": True}])
def test_a_bfloat16_model_takes_float32_latents_through_every_optional_part(part):
    """A pipeline loaded in bf16 hands the network float32 latents and per-frame times; every sub-layer casts what it
    takes (the refiner's convolution stopped: "Input type (float) and bias type (c10::BFloat16)"), and the output is
    the float32 model's up to bf16 rounding."""
    net = randomize(tiny_model(num_classes=10, **part)).eval()
    z = torch.randn(2, 3, 4, 8, 8)
    t = torch.tensor([[0.0, 0.0, 0.7, 0.7], [0.0, 0.5, 0.5, 0.5]])  # the context frames at t = r = 0
    r = torch.zeros(2, 4)
    y = torch.tensor([3, -1])
    with torch.no_grad():
        ref = net(z, t, r, y)
        half = net.to(torch.bfloat16)(z, t, r, y)
    assert torch.isfinite(half).all()
    assert (half.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
