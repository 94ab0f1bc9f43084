import subprocess
import sys

import pytest
import torch

from conftest import randomize, tiny_model
from mfvideo.method import (MeanFlow, consistency_sample, context_mask, euler_sample, meanflow_sample,
                            sample_context_masks)


def bc(a, x):
    return a.view(-1, *([1] * (x.ndim - 1)))


def fd_target(net, z, t, r, v, y, dt_tangent, eps=1e-7):
    """v - (t - r) du/dt with du/dt a central finite difference of net along (v, 0, dt_tangent)."""
    with torch.no_grad():
        plus = net(z + eps * v, t + eps * dt_tangent, r, y=y)
        minus = net(z - eps * v, t - eps * dt_tangent, r, y=y)
    dudt = (plus - minus) / (2 * eps)
    h = t - r
    h = h[:, None, :, None, None] if h.ndim == 2 else bc(h, z)
    return v - h * dudt


@pytest.mark.parametrize("prediction, refiner", [("u", 0), ("x", 0), ("x", 8)])
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (4, 3, 3, 8, 8)], ids=["image-4d", "video-5d"])
def test_jvp_target_equals_finite_difference(shape, prediction, refiner):
    torch.manual_seed(0)
    net = randomize(tiny_model(temporal=len(shape) == 5, prediction=prediction, refiner_channels=refiner)).double()
    x, e = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    t = torch.tensor([0.9, 0.6, 0.5, 0.3], dtype=torch.float64)
    r = torch.tensor([0.1, 0.6, 0.2, 0.0], dtype=torch.float64)
    z, v, y = (1 - bc(t, x)) * x + bc(t, x) * e, e - x, torch.tensor([1, 2, -1, 4])
    _, u_tgt = MeanFlow().predict_and_target(net, z, t, r, v, y=y)
    expected = fd_target(net, z, t, r, v, y, torch.ones_like(t))
    torch.testing.assert_close(u_tgt, expected, rtol=1e-5, atol=1e-5)
    # The tangent matters: a wrong one, (v, 0, 0), gives another target.
    wrong = fd_target(net, z, t, r, v, y, torch.zeros_like(t))
    assert (wrong - u_tgt).abs().max() > 100 * (expected - u_tgt).abs().max()


@pytest.mark.parametrize("prediction, reference, refiner, copy, kernel", [
    ("u", False, 0, 0, None), ("x", False, 0, 0, None), ("x", True, 0, 0, None), ("x", False, 8, 0, None),
    ("x", False, 0, 2, "softmax"), ("x", False, 0, 2, "bilinear")])
def test_jvp_target_equals_finite_difference_per_frame_times(prediction, reference, refiner, copy, kernel):
    torch.manual_seed(1)
    net = randomize(tiny_model(prediction=prediction, context_reference=reference, refiner_channels=refiner,
                               copy_radius=copy, copy_kernel=kernel or "softmax")).double()
    x, e = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    mask = torch.tensor([[True, False, False, False], [False, False, True, True]])
    gen = (~mask).double()
    t, r = torch.tensor([0.8, 0.7], dtype=torch.float64)[:, None] * gen, torch.tensor([0.3, 0.1])[:, None] * gen
    tb = t[:, None, :, None, None]
    z, v = (1 - tb) * x + tb * e, (e - x) * gen[:, None, :, None, None]
    _, u_tgt = MeanFlow().predict_and_target(net, z, t, r, v, dt_tangent=gen, y=torch.tensor([0, 5]))
    expected = fd_target(net, z, t, r, v, torch.tensor([0, 5]), gen)
    torch.testing.assert_close(u_tgt, expected, rtol=1e-5, atol=1e-5)
    assert (u_tgt[:, :, ~mask[0]][0]).abs().sum() > 0 and (u_tgt[0, :, 0] == 0).all()  # context target = v_g = 0


@pytest.mark.parametrize("mode", ["detached", "fused"])
def test_model_tangent_follows_the_networks_own_velocity_and_not_the_samples(mode):
    """iMF's tangent: du/dt along (sg(net(z, t, t)), 0, 1), per-frame times with context frames held still."""
    torch.manual_seed(2)
    net = randomize(tiny_model(prediction="x")).double()
    x, e = torch.randn(3, 3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 3, 4, 8, 8, dtype=torch.float64)
    mask = torch.tensor([[True, False, False, False], [False, False, False, False], [False, False, True, True]])
    gen = (~mask).double()
    t = torch.tensor([0.8, 0.6, 0.7], dtype=torch.float64)[:, None] * gen
    r = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)[:, None] * gen  # row 1: r = t, no JVP
    tb = t[:, None, :, None, None]
    z, v = (1 - tb) * x + tb * e, (e - x) * gen[:, None, :, None, None]
    y = torch.tensor([0, 5, -1])
    _, u_tgt = MeanFlow(tangent="model", jvp_mode=mode).predict_and_target(net, z, t, r, v, dt_tangent=gen, y=y)
    with torch.no_grad():
        v_own = net(z, t, t, y=y) * gen[:, None, :, None, None]
    expected = fd_target(net, z, t, r, v_own, y, gen)
    expected = v - (v_own - expected)  # the regression target stays the sample's v; only du/dt's path changes
    jump = [0, 2]
    torch.testing.assert_close(u_tgt[jump], expected[jump], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u_tgt[1], v[1])  # r = t: the target is v, tangent or not
    _, u_sample = MeanFlow(jvp_mode=mode).predict_and_target(net, z, t, r, v, dt_tangent=gen, y=y)
    assert (u_sample[jump] - u_tgt[jump]).abs().max() > 100 * (expected[jump] - u_tgt[jump]).abs().max()


@pytest.mark.parametrize("guided, classes", [(True, True), (False, True), (True, False)],
                         ids=["guided", "unguided", "unconditional_guided_by_context"])
def test_model_tangent_reuses_the_guidance_call_where_it_made_the_rows_own_velocity(guided, classes):
    """On a guided recipe the guidance's no-grad call has made u(z, t, t, y) for the label a row shows (v_cond where it
    is the guiding label, v_unc on null-label rows that kept their own z): the targets equal those of the tangent
    made afresh by hand, and only the rows it did not make (a context_guidance row) cost a forward of their own."""
    torch.manual_seed(3)
    net = randomize(tiny_model(prediction="x", num_classes=10 if classes else 0)).double()
    B, T = 4, 4
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[2:, 0] = True  # rows 2, 3 have a context frame
    gen = (~mask).double()
    t = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    r = torch.tensor([0.2, 0.1, 0.3, 0.0], dtype=torch.float64)
    t_in, r_in = t[:, None] * gen, r[:, None] * gen
    z = (1 - t_in[:, None, :, None, None]) * x + t_in[:, None, :, None, None] * e
    v = e - x
    y_guide = torch.tensor([3, -1, 5, 7])  # row 1 dropped (guided as null), rows 2-3 shown null, guided by their label
    y = torch.tensor([3, -1, -1, -1])
    if not classes:  # an unconditional model: its guidance is context_guidance's alone, v_cond its own velocity
        y = y_guide = None
    free = torch.tensor([False, False, False, True])  # row 3: context_guidance (the branch without its context)
    t_unc = torch.where(free[:, None], t[:, None].expand(B, T), t_in)
    z_unc = (1 - t_unc[:, None, :, None, None]) * x + t_unc[:, None, :, None, None] * e
    mf = MeanFlow(tangent="model", cfg_kappa=0.5 if guided else 0.0, context_guidance=0.5 if guided else 0.0)
    calls = []
    counting = lambda z_, t_, r_, y=None, **kw: calls.append(z_.shape[0]) or net(z_, t_, r_, y=y, **kw)  # noqa: E731
    counting.modules = net.modules  # the copy-path hook looks for modules
    drop = torch.tensor([False, True, False, False]) if classes else None
    _, u_tgt = mf.meanflow_rows(counting, None, z, t, v, y, y_guide, t_in, r_in, gen, gen, drop,
                                z_unc if guided else None, t_unc if guided else None)
    v_g = mf.guided_velocity(net, z, t, v, y_guide, t_in, z_unc if guided else None, t_unc if guided else None)
    v_g = (v_g if drop is None else torch.where(bc(drop, v), v, v_g)) * gen[:, None, :, None, None]
    with torch.no_grad():
        own = net(z, t_in, t_in, y=y) * gen[:, None, :, None, None]
    expected = v_g - (own - fd_target(net, z, t_in, r_in, own, y, gen))  # fd_target: own - (t - r) du/dt
    torch.testing.assert_close(u_tgt, expected, rtol=1e-5, atol=1e-5)
    # guided: the batched guidance call (2B rows), the one row it lacked (none on an unconditional model), the
    # forward with grad, the JVP; unguided: the tangent of every row made afresh, the forward, the JVP
    assert calls == ([2 * B, *([1] if classes else []), B, B] if guided else [B, B, B]), calls


def test_unknown_tangent_is_refused_with_its_choices(tmp_path):
    from mfvideo.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="tangent 'v'.*sample.*model"):
        load_config("configs/tiny.yaml", ["method.tangent=v"])
    assert load_config("configs/tiny.yaml", ["method.tangent=model"]).method.tangent == "model"


@pytest.mark.parametrize("kw, says", [
    ({"cfg_omega": float("nan")}, "cfg_omega must be a finite number"),  # passed every range check: nan losses
    ({"time_mean": float("inf")}, "time_mean must be a finite number"),
    ({"time_std": 0.0}, "time_std must be > 0"), ({"adaptive_eps": 0.0}, "adaptive_eps > 0"),
    ({"cfg_t_end": 1.5}, "cfg_t_start and cfg_t_end must lie in"),
])
def test_method_values_that_would_train_on_nan_or_nothing_are_refused(kw, says):
    with pytest.raises(ValueError, match=says):
        MeanFlow(**kw)
    MeanFlow(adaptive_p=0.0, adaptive_eps=0.0)  # the plain squared error needs no eps


def test_r_equal_t_target_is_v_and_flow_matching_is_ratio_zero():
    net = randomize(tiny_model()).double()
    z, v = torch.randn(3, 3, 2, 8, 8, dtype=torch.float64), torch.randn(3, 3, 2, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    _, u_tgt = MeanFlow().predict_and_target(net, z, t, t, v)
    assert torch.equal(u_tgt, v)
    t_fm, r_fm = MeanFlow(ratio_r_neq_t=0.0).sample_t_r(64)
    assert torch.equal(t_fm, r_fm)
    t_mf, r_mf = MeanFlow(ratio_r_neq_t=0.25).sample_t_r(64)
    assert (t_mf != r_mf).sum() == 16 and (t_mf >= r_mf).all() and ((0 < r_mf) & (t_mf < 1)).all()


def test_guidance_off_gives_plain_velocity_and_on_mixes_network_predictions():
    net = randomize(tiny_model())
    z, t, v, y = torch.randn(2, 3, 2, 8, 8), torch.tensor([0.5, 0.9]), torch.randn(2, 3, 2, 8, 8), torch.tensor([1, 2])
    assert MeanFlow(cfg_omega=1.0, cfg_kappa=0.0).guided_velocity(net, z, t, v, y, t) is v
    mf = MeanFlow(cfg_omega=0.2, cfg_kappa=0.5, cfg_t_start=0.0, cfg_t_end=0.8)
    v_g = mf.guided_velocity(net, z, t, v, y, t)
    v_unc, v_cond = net(z, t, t, torch.tensor([-1, -1])), net(z, t, t, y)
    torch.testing.assert_close(v_g[0], (0.2 * v + 0.3 * v_unc + 0.5 * v_cond)[0])
    torch.testing.assert_close(v_g[1], v[1])  # t = 0.9 lies outside the guidance interval


@pytest.mark.parametrize("variant", [dict(skip_jvp_when_r_eq_t=True), dict(jvp_mode="detached")], ids=["skip", "detached"])
def test_skipping_the_jvp_on_r_equal_t_rows_changes_nothing(variant):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 2, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    t = torch.rand(8, dtype=torch.float64) * 0.9 + 0.1
    r = torch.where(torch.arange(8) % 3 == 0, t * 0.5, t)
    noise = torch.randn_like(x)
    grads, losses = [], []
    for kw in (variant, dict(skip_jvp_when_r_eq_t=False)):  # vs the full JVP on every row, fused
        net = randomize(tiny_model()).double()
        loss, logs = MeanFlow(**kw).loss(net, x, y, t=t, r=r, noise=noise)
        loss.backward()
        losses.append((loss.detach(), logs["loss_unweighted"]))
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_loss_is_sum_over_non_batch_dims_with_adaptive_weight():
    net = randomize(tiny_model()).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t = r = torch.tensor([0.5, 0.25], dtype=torch.float64)
    noise = torch.randn_like(x)
    loss, logs = MeanFlow(adaptive_p=1.0, adaptive_eps=0.01).loss(net, x, t=t, r=r, noise=noise)
    z = (1 - bc(t, x)) * x + bc(t, x) * noise
    per = ((net(z, t, r) - (noise - x)) ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(logs["loss_unweighted"], per.mean())
    torch.testing.assert_close(loss, (per / (per + 0.01)).mean())


def test_context_frames_do_not_count_and_carry_time_zero():
    torch.manual_seed(0)
    net = randomize(tiny_model()).double()
    x = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    mask = context_mask("first", 2, 4, k=2)
    seen = {}

    def spy(z, t, r, y=None):
        seen["t"], seen["z"] = t, z
        return net(z, t, r, y)

    t = torch.tensor([0.7, 0.7], dtype=torch.float64)
    kw = dict(t=t, r=t, noise=torch.randn_like(x), context=mask)
    mf = MeanFlow(adaptive_p=0.0)
    loss_a, _ = mf.loss(spy, x, **kw)
    assert (seen["t"][:, :2] == 0).all() and (seen["t"][:, 2:] == 0.7).all()
    assert torch.equal(seen["z"][:, :, :2], x[:, :, :2])  # clean context replaces the noise in place

    def corrupt_context(z, t, r, y=None):  # change the prediction on context frames only
        u = net(z, t, r, y).clone()
        u[:, :, :2] += 100.0
        return u

    loss_b, _ = mf.loss(corrupt_context, x, **kw)
    torch.testing.assert_close(loss_a, loss_b)


def test_context_mask_mix():
    m = sample_context_masks(256, 8, {"none": 1, "first": 1, "last": 1, "every": 1, "random_frame": 1},
                             generator=torch.Generator().manual_seed(0))
    assert m.shape == (256, 8) and (~m).any(dim=1).all()  # every row generates something
    counts = m.sum(1)
    assert (counts == 0).sum() > 20 and (m[:, 0] & ~m[:, -1]).sum() > 20 and (m[:, -1] & ~m[:, 0]).sum() > 20
    assert not (m[:, 0] & m[:, -1]).any()  # no kind above gives both ends of an 8-frame clip
    ends = sample_context_masks(256, 8, {"ends": 1}, max_context=4, generator=torch.Generator().manual_seed(0))
    assert (ends[:, 0] & ends[:, -1]).all() and not ends[:, 2:6].any()  # 1 or 2 frames at each end, the middle new
    assert set(ends.sum(1).tolist()) == {2, 4} and torch.equal(ends, ends.flip(1))
    assert context_mask("ends", 1, 6, k=2).tolist() == [[True, True, False, False, True, True]]
    with pytest.raises(ValueError, match="unknown context mask"):
        sample_context_masks(2, 8, {"middle": 1.0})


def _overfit(shape, steps, temporal, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    net = tiny_model(hidden_size=64, depth=2, num_heads=4, num_classes=0, temporal=temporal)
    x = torch.randn(shape)
    mf = MeanFlow()
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.95))
    first = None
    for _ in range(steps):
        loss, logs = mf.loss(net, x.expand(8, *shape[1:]))  # one sample, 8 noises per step
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = logs["loss_unweighted"].item() if first is None else first
    return net, x, mf, first


@pytest.mark.parametrize("shape, temporal", [((1, 3, 8, 8), False), ((1, 3, 2, 8, 8), True)], ids=["image", "video"])
def test_overfit_single_sample_loss_falls_and_one_step_returns_it(shape, temporal):
    net, x, mf, first = _overfit(shape, 400, temporal)
    losses = [mf.loss(net, x.expand(8, *shape[1:]))[1]["loss_unweighted"].item() for _ in range(11)]
    assert sorted(losses)[5] < first / 10  # the median: rows with r != t have a heavy-tailed target
    noise = torch.randn(8, *shape[1:])
    err = (meanflow_sample(net, noise) - x).abs().mean() / x.abs().mean()  # one network evaluation from fresh noise
    assert err < 0.2, err
    assert (noise - x).abs().mean() / x.abs().mean() > 1.0  # the noise itself is far from the sample


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (4, 3, 2, 8, 8)], ids=["image", "video"])
def test_overfit_one_fixed_batch_with_classes(shape):
    """Fixed data, labels, noise and (t, r): the loss (JVP target included) must collapse."""
    torch.manual_seed(0)
    net = tiny_model(hidden_size=64, num_heads=4, temporal=len(shape) == 5)
    x, y, noise = torch.randn(shape), torch.tensor([0, 1, 2, 3]), torch.randn(shape)
    t, r = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.2, 0.7, 0.1, 0.3])
    mf = MeanFlow()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, betas=(0.9, 0.95))
    hist = []
    for _ in range(200):
        loss, logs = mf.loss(net, x, y, t=t, r=r, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(logs["loss_unweighted"].item())
    assert min(hist[-10:]) < hist[0] / 10, (hist[0], hist[-10:])


def test_multi_step_and_euler_samplers_call_the_net_as_documented():
    calls = []

    def net(z, t, r, y=None):
        calls.append((float(t.flatten()[0]), float(r.flatten()[0])))
        return torch.ones_like(z)

    e = torch.zeros(1, 1, 2, 2)
    out = meanflow_sample(net, e, steps=2)
    assert calls == [(1.0, 0.5), (0.5, 0.0)] and torch.allclose(out, -torch.ones_like(e))
    calls.clear()
    euler_sample(net, e, steps=4)
    assert calls == [(1.0, 1.0), (0.75, 0.75), (0.5, 0.5), (0.25, 0.25)]


def test_consistency_sampler_jumps_from_noise_then_from_the_clip_noised_back():
    """``consistency_sample``, 3 steps on the real STDiT with context frames, against the steps written out: the
    one-step jump from the noise, then at t = 2/3 and 1/3 the clip noised back with the next fresh draw and jumped to
    0 (new frames at (t, 0), context frames at t = r = 0 and kept); one step is MeanFlow's one-step sampler."""
    torch.manual_seed(0)
    net = randomize(tiny_model()).double()
    B, T = 2, 4
    e, ctx = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    draws = [torch.randn(B, 3, T, 8, 8, dtype=torch.float64) for _ in range(2)]
    mask = context_mask("first", B, T, k=1)
    m5, gen = mask[:, None, :, None, None], (~mask).double()
    y = torch.tensor([3, -1])
    fresh = iter(draws)
    out = consistency_sample(net, e, y=y, steps=3, context=ctx, context_mask=mask, fresh=lambda: next(fresh))
    z = torch.where(m5, ctx, e)
    x = torch.where(m5, ctx, z - net(z, gen, 0 * gen, y=y))
    for t, d in zip((2 / 3, 1 / 3), draws):
        z = torch.where(m5, ctx, (1 - t) * x + t * d)
        x = torch.where(m5, ctx, z - t * net(z, t * gen, 0 * gen, y=y))
    torch.testing.assert_close(out, x)
    one = consistency_sample(net, e, y=y, steps=1, context=ctx, context_mask=mask)
    torch.testing.assert_close(one, meanflow_sample(net, e, y=y, steps=1, context=ctx, context_mask=mask))


def test_method_imports_without_models_or_data():
    code = "import sys, mfvideo.method; bad=[m for m in sys.modules if m.startswith(('mfvideo.models','mfvideo.data','diffusers'))]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("on", [False, True], ids=["plain", "context_label_guidance"])
def test_unlabelled_context_rows_keep_their_true_labels_guidance_only_when_asked(on):
    torch.manual_seed(0)
    net = randomize(tiny_model()).double()
    x, noise = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    y = torch.tensor([3, 5])
    mask = torch.tensor([[True, True, False, False], [False] * 4])  # row 0 continues a context, row 1 does not
    t = torch.tensor([0.6, 0.6], dtype=torch.float64)
    mf = MeanFlow(adaptive_p=0.0, cfg_omega=1.0, cfg_kappa=0.5, class_dropout=0.0, context_class_dropout=1.0,
                  context_label_guidance=on)
    seen = []

    def spy(z, t, r, y=None):
        seen.append(y.clone())
        return net(z, t, r, y)

    loss, _ = mf.loss(spy, x, y, t=t, r=t, noise=noise, context=mask)
    assert seen[-1].tolist() == [-1, 5]  # the network itself sees the null label on the context row either way
    gen = (~mask).double()[:, None, :, None, None]  # (B, 1, T, 1, 1)
    t_in = t[:, None] * (~mask).double()  # (B, T)
    z = (1 - t_in[:, None, :, None, None]) * x + t_in[:, None, :, None, None] * noise
    v = noise - x
    with torch.no_grad():
        guided = v - 0.5 * net(z, t_in, t_in, torch.tensor([-1, -1])) + 0.5 * net(z, t_in, t_in, y)
    v_g = torch.stack([guided[0] if on else v[0], guided[1]]) * gen
    expected = (((net(z, t_in, t_in, torch.tensor([-1, 5])) - v_g) * gen) ** 2).sum(dim=(1, 2, 3, 4)).mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("label_guidance", [False, True], ids=["context_only", "with_true_label"])
@pytest.mark.parametrize("classes", [True, False], ids=["labelled_model", "unconditional_model"])
def test_context_guidance_takes_the_unconditional_velocity_without_the_context(label_guidance, classes):
    """context_guidance: on context rows the guidance's unconditional branch sees neither label nor context (context
    frames noised to the row's t, every frame at t), and the row stays guided even with its label dropped; rows
    without context are guided as before."""
    torch.manual_seed(0)
    net = randomize(tiny_model(num_classes=10 if classes else 0)).double()
    x, noise = torch.randn(3, 3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 3, 4, 8, 8, dtype=torch.float64)
    y = torch.tensor([3, 5, 7]) if classes else None
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True, False, False, False]])
    t = torch.tensor([0.6, 0.6, 0.9], dtype=torch.float64)
    mf = MeanFlow(adaptive_p=0.0, cfg_omega=1.0, cfg_kappa=0.5, class_dropout=0.0, context_class_dropout=1.0,
                  context_label_guidance=label_guidance, context_guidance=1.0)
    loss, _ = mf.loss(net, x, y, t=t, r=t, noise=noise, context=mask)
    gen = (~mask).double()[:, None, :, None, None]  # (B, 1, T, 1, 1)
    t_in = t[:, None] * (~mask).double()  # (B, T)
    z = (1 - t_in[:, None, :, None, None]) * x + t_in[:, None, :, None, None] * noise
    t_all = t[:, None].expand(3, 4)
    z_free = (1 - t_all[:, None, :, None, None]) * x + t_all[:, None, :, None, None] * noise
    assert torch.equal(z_free[1], z[1]) and not torch.equal(z_free[0], z[0])
    null = torch.full((3,), -1) if classes else None
    seen = torch.tensor([-1, 5, -1]) if classes else None  # what the network sees: context rows unlabelled
    guide = (y if label_guidance else seen) if classes else None
    with torch.no_grad():
        v_g = (noise - x) - 0.5 * net(z_free, t_all, t_all, null) + 0.5 * net(z, t_in, t_in, guide)
    expected = (((net(z, t_in, t_in, seen) - v_g * gen) * gen) ** 2).sum(dim=(1, 2, 3, 4)).mean()
    torch.testing.assert_close(loss, expected)
    # Without it the unconditional branch keeps the context (and, for an unconditional model, nothing is guided).
    off = MeanFlow(adaptive_p=0.0, cfg_omega=1.0, cfg_kappa=0.5, class_dropout=0.0, context_class_dropout=1.0,
                   context_label_guidance=label_guidance)
    assert (off.loss(net, x, y, t=t, r=t, noise=noise, context=mask)[0] - loss).abs() > 1e-4


def test_context_guidance_share_drops_the_context_on_that_share_of_context_rows_only():
    """context_guidance = 0.5: the unconditional branch sees the clip without its context on about half the context
    rows (a mean target of half-strength guidance), with it on the others, and rows without context are untouched."""
    torch.manual_seed(0)
    B = 64
    x, noise = torch.randn(B, 1, 4, 4, 4), torch.randn(B, 1, 4, 4, 4)
    mask = context_mask("first", B, 4, k=2)
    mask[B // 2:] = False
    calls = []

    def spy(z, t, r, y=None):
        calls.append((z, t))
        return torch.zeros_like(z)

    mf = MeanFlow(cfg_kappa=0.5, ratio_r_neq_t=0.0, context_guidance=0.5)
    mf.loss(spy, x, torch.zeros(B, dtype=torch.long), noise=noise, context=mask, generator=torch.Generator().manual_seed(0))
    z_unc, t_unc = calls[0][0][:B], calls[0][1][:B]  # the batched guidance call: unconditional half first
    z, t_in = calls[1]  # the network's own forward
    free = (z_unc != z).flatten(1).any(dim=1)  # (B,)
    assert not free[B // 2:].any() and 8 < int(free[: B // 2].sum()) < 24
    assert torch.equal(t_unc[free], t_in[free].amax(dim=1, keepdim=True).expand(-1, 4))  # every frame at t
    assert torch.equal(t_unc[~free], t_in[~free])


def test_self_context_continues_the_models_own_frames_and_scores_the_real_clip():
    """self_context = 1: every prefix-context row with k >= 2 frames has its context frames j..k-1 replaced by the
    network's one-step continuation of its first j real frames (j in [1, k - 1]); other rows keep real context; the
    loss still regresses the real clip's new frames."""
    torch.manual_seed(0)
    net = randomize(tiny_model()).double()
    B, T = 12, 6
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = context_mask("first", B, T, k=4)
    mask[8] = context_mask("first", 1, T, k=2)[0]
    mask[9] = context_mask("first", 1, T, k=1)[0]  # too short to make frames from
    mask[10] = context_mask("every", 1, T, n=2)[0]  # not a prefix
    mask[11] = False  # no context
    y = torch.arange(B) % 10
    calls = []

    def spy(z, t, r, y=None):
        calls.append((z, t, r, y))
        return net(z, t, r, y)

    t = torch.full((B,), 0.7, dtype=torch.float64)
    mf = MeanFlow(adaptive_p=0.0, ratio_r_neq_t=0.0, self_context=1.0)
    loss, _ = mf.loss(spy, x, y, t=t, r=t, noise=e, context=mask, generator=torch.Generator().manual_seed(0))
    (z1, t1, r1, y1), (z, t_in, _, _) = calls  # the one-step continuation, then the network's own forward
    assert z1.shape[0] == 9 and torch.equal(y1, y[:9])  # the prefix rows with k >= 2, labels as the network sees them
    given = t1 == 0  # (9, T)
    j = given.sum(dim=1)
    assert ((j >= 1) & (j <= mask[:9].sum(dim=1) - 1)).all() and len(set(j.tolist())) > 1
    assert torch.equal(r1, torch.zeros_like(r1)) and ((t1 == 0) | (t1 == 1)).all()
    g5 = given[:, None, :, None, None].expand_as(z1)
    assert torch.equal(z1[g5], x[:9][g5])
    with torch.no_grad():
        made = z1 - t1[:, None, :, None, None] * net(z1, t1, r1, y1)
    x_seen = x.clone()
    for b in range(9):
        x_seen[b, :, j[b] : int(mask[b].sum())] = made[b, :, j[b] : int(mask[b].sum())]
    ctx = mask[:, None, :, None, None].expand_as(z)
    torch.testing.assert_close(z[ctx], x_seen[ctx])  # context = real frames < j, then the model's own frames
    assert not torch.equal(z[:9][ctx[:9]], x[:9][ctx[:9]])
    gen = (~mask).double()[:, None, :, None, None]
    z_exp = (1 - t_in[:, None, :, None, None]) * x_seen + t_in[:, None, :, None, None] * e
    torch.testing.assert_close(z, z_exp)
    expected = (((net(z_exp, t_in, t_in, y) - (e - x) * gen) * gen) ** 2).sum(dim=(1, 2, 3, 4)).mean()
    torch.testing.assert_close(loss, expected)  # the targets are the real clip's frames


def test_self_made_context_never_sees_the_frames_it_replaces():
    """The made frames depend on the first j real frames only: changing every later frame leaves them as they were."""
    torch.manual_seed(1)
    net = randomize(tiny_model()).double()
    B, T = 16, 6
    x = torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, 1:] = torch.randn_like(x2[:, :, 1:])  # the same first frame, everything after it different
    mask = context_mask("first", B, T, k=3)
    mf = MeanFlow(self_context=1.0)
    a = mf.self_made_context(net, x, mask, None, torch.Generator().manual_seed(0))
    b = mf.self_made_context(net, x2, mask, None, torch.Generator().manual_seed(0))
    j1 = (a[:, :, 1] != x[:, :, 1]).flatten(1).any(dim=1)  # rows made from the first frame alone: frame 1 replaced
    assert 0 < int(j1.sum()) < B
    torch.testing.assert_close(a[j1][:, :, :3], b[j1][:, :, :3])  # their context is the same
    assert torch.equal(a[:, :, 3:], x[:, :, 3:])  # frames after the context are the real ones
    assert not torch.equal(a[~j1][:, :, 2], b[~j1][:, :, 2])  # made from two real frames: frame 1 matters


def test_time_dist_draws_logit_normal_by_default_and_uniform_for_the_paper_s_ablation():
    """t = max, r = min of two draws: logit-normal(time_mean, time_std) as before (the same draws from the same
    generator), or U(0, 1) (MeanFlow's Table 1d), whose max and min have means 2/3 and 1/3 and CDFs x^2 and
    1 - (1 - x)^2; a context_time_mean with uniform is refused (it would be ignored)."""
    n = 200_000
    g = torch.Generator().manual_seed(0)
    t, r = MeanFlow(ratio_r_neq_t=1.0).sample_t_r(n, generator=torch.Generator().manual_seed(0))
    s = torch.sigmoid(torch.randn(2, n, generator=g) * 1.0 - 0.4)
    assert torch.equal(t, s.max(0).values) and torch.equal(r, s.min(0).values)
    t, r = MeanFlow(ratio_r_neq_t=1.0, time_dist="uniform").sample_t_r(n, generator=torch.Generator().manual_seed(1))
    assert abs(t.mean() - 2 / 3) < 5e-3 and abs(r.mean() - 1 / 3) < 5e-3 and (t >= r).all()
    for x in (0.2, 0.5, 0.8):
        assert abs((t <= x).float().mean() - x**2) < 5e-3 and abs((r <= x).float().mean() - (1 - (1 - x) ** 2)) < 5e-3
    t, r = MeanFlow(ratio_r_neq_t=0.0, time_dist="uniform").sample_t_r(1000)
    assert torch.equal(t, r) and abs(t.mean() - 2 / 3) < 0.05
    with pytest.raises(ValueError, match="context_time_mean .* needs time_dist='logit_normal'"):
        MeanFlow(time_dist="uniform", context_time_mean=1.0)
    with pytest.raises(ValueError, match="unknown time_dist 'beta'"):
        MeanFlow(time_dist="beta")


def test_context_rows_draw_their_times_from_their_own_mean():
    torch.manual_seed(0)
    x = torch.randn(512, 1, 4, 4, 4)
    mask = context_mask("first", 512, 4, k=2)
    mask[256:] = False  # half the rows continue a context
    seen = {}

    def spy(z, t, r, y=None):
        seen.setdefault("t", t)  # the first call: the network's own forward, per-frame times (B, T)
        return torch.zeros_like(z)

    MeanFlow(context_time_mean=2.0, ratio_r_neq_t=0.0).loss(spy, x, context=mask, generator=torch.Generator().manual_seed(0))
    t = seen["t"][:, -1]  # a generated frame's time
    assert t[:256].median() > 0.85 and 0.35 < t[256:].median() < 0.6  # sigmoid(2) = 0.88 vs sigmoid(-0.4) = 0.40


def test_context_noise_loss_equals_its_definition():
    """Context frames at a drawn level s: z = (1 - s) x + s e and t = r = s there, half the rows clean; the target is
    the finite-difference one along a tangent that leaves the context's time alone; only new frames count."""
    torch.manual_seed(2)
    net = randomize(tiny_model()).double()
    B = 8
    x, e = torch.randn(B, 3, 4, 8, 8, dtype=torch.float64), torch.randn(B, 3, 4, 8, 8, dtype=torch.float64)
    mask = context_mask("first", B, 4, k=2)
    seen = []

    def spy(z, t, r, y=None):
        seen.append((z, t, r))
        return net(z, t, r, y)

    t, r = torch.full((B,), 0.8, dtype=torch.float64), torch.full((B,), 0.3, dtype=torch.float64)
    mf = MeanFlow(adaptive_p=0.0, context_noise=0.4)
    _, logs = mf.loss(spy, x, t=t, r=r, noise=e, context=mask, generator=torch.Generator().manual_seed(0))
    z, t_in, r_in = seen[0]  # the forward with grad (jvp_mode "detached")
    s = t_in[:, 0]
    assert torch.equal(t_in[:, :2], r_in[:, :2]) and torch.equal(t_in[:, 1], s)  # one level per row, h = 0
    assert (t_in[:, 2:] == 0.8).all() and (r_in[:, 2:] == 0.3).all()
    assert (s == 0).sum() >= 2 and (s > 0).sum() >= 2 and (s < 0.4).all()  # some rows clean, some noised
    sb = s[:, None, None, None, None]
    torch.testing.assert_close(z[:, :, :2], (1 - sb) * x[:, :, :2] + sb * e[:, :, :2])
    gen = (~mask).double()
    v = (e - x) * gen[:, None, :, None, None]
    target = fd_target(net, z, t_in, r_in, v, None, gen)
    with torch.no_grad():
        err = (net(z, t_in, r_in) - target) ** 2 * gen[:, None, :, None, None]
    torch.testing.assert_close(logs["loss_unweighted"], err.sum(dim=(1, 2, 3, 4)).mean(), rtol=1e-5, atol=1e-5)
    # Off by default: context frames are clean and at time 0.
    seen.clear()
    MeanFlow(adaptive_p=0.0).loss(spy, x, t=t, r=r, noise=e, context=mask)
    assert (seen[0][1][:, :2] == 0).all() and torch.equal(seen[0][0][:, :, :2], x[:, :, :2])


@pytest.mark.parametrize("sampler", ["meanflow", "euler"])
def test_samplers_noise_the_context_to_the_asked_level_and_return_it_clean(sampler):
    calls = []

    def net(z, t, r, y=None):
        calls.append((z.clone(), t.clone(), r.clone()))
        return torch.ones_like(z)

    g = torch.Generator().manual_seed(0)
    noise, ctx = torch.randn(2, 1, 4, 2, 2, generator=g), torch.randn(2, 1, 4, 2, 2, generator=g)
    mask = torch.tensor([[True, True, False, False]] * 2)
    fn = meanflow_sample if sampler == "meanflow" else euler_sample
    out = fn(net, noise, steps=2, context=ctx, context_mask=mask, context_noise=0.3)
    assert len(calls) == 2
    for z, t, r in calls:
        torch.testing.assert_close(z[:, :, :2], 0.7 * ctx[:, :, :2] + 0.3 * noise[:, :, :2])
        assert torch.allclose(t[:, :2], torch.tensor(0.3)) and torch.allclose(r[:, :2], torch.tensor(0.3))
    assert (calls[0][1][:, 2:] == 1.0).all() and (calls[1][1][:, 2:] == 0.5).all()
    assert torch.equal(out[:, :, :2], ctx[:, :, :2])  # the given frames come back as given
    torch.testing.assert_close(out[:, :, 2:], noise[:, :, 2:] - 1.0)  # two half steps of u = 1
    with pytest.raises(ValueError, match="context_noise"):
        fn(net, noise, steps=1, context=ctx, context_mask=mask, context_noise=1.0)


def _two_step_by_hand(net, x, e, mask, y):
    """The two-step jump 1 -> 1/2 -> 0 with the context frames of x kept: written out, not the sampler."""
    m5 = mask[:, None, :, None, None]
    gen = (~mask).double()
    z = torch.where(m5, x, e)
    z = torch.where(m5, x, z - 0.5 * net(z, gen, 0.5 * gen, y=y))
    return torch.where(m5, x, z - 0.5 * net(z, 0.5 * gen, 0 * gen, y=y))


def test_split_consistency_regresses_the_one_step_jump_on_the_two_step_one():
    """split_consistency = 1: every row is trained at (t, r) = (1, 0) on its new frames towards e - x2, x2 the
    network's own two-step jump from the same noise and context; the target carries no gradient."""
    torch.manual_seed(0)
    net = randomize(tiny_model()).double()
    B, T = 6, 4
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[2:4] = context_mask("first", 2, T, k=2)
    mask[4:] = context_mask("ends", 2, T, k=1)
    y = torch.tensor([3, -1, 5, -1, 7, 1])
    mf = MeanFlow(adaptive_p=0.0, split_consistency=1.0, cfg_omega=1.0, cfg_kappa=0.5)
    t = torch.full((B,), 0.4, dtype=torch.float64)
    loss, logs = mf.loss(net, x, y, t=t, r=0.5 * t, noise=e, context=mask, generator=torch.Generator().manual_seed(0))
    gen = (~mask).double()
    g5 = gen[:, None, :, None, None]
    with torch.no_grad():
        target = e - _two_step_by_hand(net, x, e, mask, y)
    u = net(torch.where(mask[:, None, :, None, None], x, e), gen, 0 * gen, y=y)  # the one-step jump
    expected = (((u - target) * g5) ** 2).sum(dim=(1, 2, 3, 4)).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logs["loss_split"], expected.detach())
    assert "loss_mf" not in logs and "loss_fm" not in logs
    grads = torch.autograd.grad(loss, list(net.parameters()))
    ref = torch.autograd.grad(expected, list(net.parameters()))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b)  # no gradient through the two-step target


@pytest.mark.parametrize("p, own", [(0.0, False), (1.0, False), (1.0, True)])
def test_split_consistency_share_leaves_the_other_rows_meanflow_rows(p, own):
    """A share of the rows (drawn first from the generator) is one-step rows; the rest get the very MeanFlow loss
    they would get without the option; with the adaptive weight, a one-step row weighs as a MeanFlow row of the
    batch's mean MeanFlow loss."""
    torch.manual_seed(1)
    net = randomize(tiny_model()).double()
    B, T = 16, 4
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = context_mask("first", B, T, k=1)
    mask[::3] = False
    y = torch.arange(B) % 10
    t = torch.rand(B, dtype=torch.float64) * 0.8 + 0.1
    r = t * torch.tensor([0.5, 1.0]).repeat(B // 2).double()
    mf = MeanFlow(adaptive_p=p, split_consistency=0.5, split_own_weight=own)
    loss, logs = mf.loss(net, x, y, t=t, r=r, noise=e, context=mask, generator=torch.Generator().manual_seed(3))
    split = torch.rand(B, generator=torch.Generator().manual_seed(3)) < 0.5
    assert 0 < int(split.sum()) < B
    one, rest = split.nonzero().squeeze(1), (~split).nonzero().squeeze(1)
    plain, plain_logs = MeanFlow(adaptive_p=p).loss(net, x[rest], y[rest], t=t[rest], r=r[rest], noise=e[rest],
                                                     context=mask[rest])
    with torch.no_grad():
        target = e[one] - _two_step_by_hand(net, x[one], e[one], mask[one], y[one])
    g = (~mask[one]).double()
    u = net(torch.where(mask[one][:, None, :, None, None], x[one], e[one]), g, 0 * g, y=y[one])
    split_rows = (((u - target) * g[:, None, :, None, None]) ** 2).sum(dim=(1, 2, 3, 4))
    split_weight = (split_rows if own else plain_logs["loss_unweighted"]) + 0.01  # own loss, or the MeanFlow mean
    torch.testing.assert_close(loss, (plain * rest.numel() + (split_rows / split_weight ** p).sum()) / B)


@pytest.mark.parametrize("share, share_context", [(0.0, 1.0), (1.0, 0.0)])
def test_split_context_chooses_rows_by_context_and_teaches_unlabelled_ones_the_labelled_jump(share, share_context):
    """split_context is the one-step share of the rows with context, split_consistency that of the others; an
    unlabelled context row (its label dropped, context_label_guidance) regresses the teacher's jump **with** its
    true label, while the network sees the null one; the rest keep their plain MeanFlow loss."""
    torch.manual_seed(4)
    net = randomize(tiny_model()).double()
    B, T = 12, 4
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = context_mask("first", B, T, k=2)
    mask[::2] = False  # even rows: no context
    y = torch.arange(B) % 10
    t = torch.rand(B, dtype=torch.float64) * 0.8 + 0.1
    r = t * torch.tensor([0.5, 1.0, 1.0]).repeat(B // 3).double()
    mf = MeanFlow(adaptive_p=0.0, split_consistency=share, split_context=share_context, context_class_dropout=1.0,
                  context_label_guidance=True)
    loss, logs = mf.loss(net, x, y, t=t, r=r, noise=e, context=mask, generator=torch.Generator().manual_seed(0))
    has = mask.any(dim=1)
    one, rest = (has if share_context else ~has).nonzero().squeeze(1), (~has if share_context else has).nonzero().squeeze(1)
    seen = torch.where(has, -1, y)  # every context row's label is dropped
    plain, _ = MeanFlow(adaptive_p=0.0, context_class_dropout=1.0, context_label_guidance=True).loss(
        net, x[rest], y[rest], t=t[rest], r=r[rest], noise=e[rest], context=mask[rest],
        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = e[one] - _two_step_by_hand(net, x[one], e[one], mask[one], y[one])  # the true label
    g = (~mask[one]).double()
    u = net(torch.where(mask[one][:, None, :, None, None], x[one], e[one]), g, 0 * g, y=seen[one])
    split_rows = (((u - target) * g[:, None, :, None, None]) ** 2).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(loss, (plain * rest.numel() + split_rows.sum()) / B)
    torch.testing.assert_close(logs["loss_split"], split_rows.mean())
    with pytest.raises(ValueError, match="split_context must lie in"):
        MeanFlow(split_context=1.5)


def test_split_consistency_training_closes_the_gap_between_one_and_two_steps():
    torch.manual_seed(0)
    net = tiny_model(hidden_size=64, num_heads=4)
    x = torch.randn(8, 3, 2, 8, 8)
    held = torch.randn(8, 3, 2, 8, 8)

    def gap():
        return (meanflow_sample(net, held, steps=1) - meanflow_sample(net, held, steps=2)).pow(2).mean().item()

    randomize(net)
    before = gap()
    mf = MeanFlow(split_consistency=1.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(60):
        loss, _ = mf.loss(net, x, noise=held, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gap() < 0.2 * before, (before, gap())


def test_split_steps_target_is_the_k_step_jump_and_two_is_the_least():
    torch.manual_seed(2)
    net = randomize(tiny_model()).double()
    x, e = torch.randn(3, 3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 3, 4, 8, 8, dtype=torch.float64)
    mask = context_mask("first", 3, 4, k=1)
    y = torch.tensor([1, 2, -1])
    target = MeanFlow(split_steps=4).split_target(net, e, x, mask, y)
    gen = (~mask).double()
    m5 = mask[:, None, :, None, None]
    z = torch.where(m5, x, e)
    with torch.no_grad():
        for t in (1.0, 0.75, 0.5, 0.25):  # four equal intervals, written out
            z = torch.where(m5, x, z - 0.25 * net(z, t * gen, (t - 0.25) * gen, y=y))
    torch.testing.assert_close(target, e - z)
    assert (target - MeanFlow().split_target(net, e, x, mask, y)).abs().max() > 1e-3  # two steps differ
    with pytest.raises(ValueError, match="split_steps must be >= 2"):
        MeanFlow(split_steps=1)


def frame_covariance(e: torch.Tensor) -> torch.Tensor:
    """(T, T) covariance between the frames of noise e (B, C, T, H, W), over every clip, channel and position."""
    return torch.cov(e.transpose(0, 2).reshape(e.shape[2], -1))


def test_prior_noise_is_randn_at_zero_and_correlates_the_frames_by_rho():
    from mfvideo.method.noise import prior_noise

    shape = (4, 2, 3, 5, 5)
    plain = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(prior_noise(shape, 0.0, torch.Generator().manual_seed(3)), plain)  # old draws, bit for bit
    e = prior_noise((4000, 1, 3, 4, 4), 0.7, torch.Generator().manual_seed(0))
    cov = frame_covariance(e)
    off = ~torch.eye(3, dtype=torch.bool)
    assert torch.allclose(cov.diagonal(), torch.ones(3), atol=0.03)  # every element still N(0, 1)
    assert torch.allclose(cov[off], torch.full((6,), 0.7), atol=0.03)
    pos = torch.cov(torch.stack([e[:, 0, 0, 0, 0], e[:, 0, 1, 2, 3]]))[0, 1]  # other frame, other position
    assert abs(float(pos)) < 0.05
    img = prior_noise((8, 3, 4, 4), 0.7, torch.Generator().manual_seed(3))  # images: no frames to share over
    assert torch.equal(img, torch.randn((8, 3, 4, 4), generator=torch.Generator().manual_seed(3)))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="frame_correlation"):
            prior_noise(shape, bad)
        with pytest.raises(ValueError, match="noise_frame_correlation"):
            MeanFlow(noise_frame_correlation=bad)


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_the_loss_noises_clips_with_the_frame_correlated_prior(rho):
    seen = []

    def net(z, t, r, y=None):
        seen.append(z)
        return z * 0

    x = torch.zeros(3000, 1, 3, 4, 4)  # z = e at t = 1
    t = r = torch.ones(3000)
    MeanFlow(noise_frame_correlation=rho).loss(net, x, t=t, r=r, generator=torch.Generator().manual_seed(0))
    cov = frame_covariance(seen[0])
    assert torch.allclose(cov.diagonal(), torch.ones(3), atol=0.03)
    assert torch.allclose(cov[0, 1:], torch.full((2,), rho), atol=0.03)


def test_a_compiled_network_gets_the_true_jvp_and_a_dropped_tangent_is_an_error():
    """``MeanFlow().loss(torch.compile(net), x)``, the natural way to speed a step up: the compiled graph drops dual
    tensors, and the JVP through it came out zero without a word, the target equal to v (flow matching's). The JVP now
    runs through the module the wrapper compiled: targets and gradients as eager. A JVP whose output carries no tangent
    (here a .detach() inside) is a one-line error, not a zero tangent."""
    from mfvideo.method.jvp import forward_jvp

    torch.manual_seed(0)
    net = randomize(tiny_model())
    z, v = torch.randn(4, 3, 2, 8, 8), torch.randn(4, 3, 2, 8, 8)
    t, r = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.1, 0.2, 0.4, 0.0])
    # dynamo's eager backend keeps the test quick; it breaks the JVP too (an error here, where inductor's compiled
    # graph gave zeros without one: that case is test_compiled_training_matches_eager's accelerate run)
    compiled = torch.compile(net, backend="eager")
    _, eager = MeanFlow().predict_and_target(net, z, t, r, v)
    _, through = MeanFlow().predict_and_target(compiled, z, t, r, v)
    assert (eager - v).norm() > 0.02 * v.norm() and torch.allclose(through, eager, atol=1e-4)
    x, grads = torch.randn(8, 3, 2, 8, 8), []
    for candidate in (net, compiled):
        net.zero_grad()
        loss, logs = MeanFlow().loss(candidate, x, generator=torch.Generator().manual_seed(1))
        loss.backward()
        grads.append((logs["loss_unweighted"], torch.cat([p.grad.flatten() for p in net.parameters()
                                                          if p.grad is not None])))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-5) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    with pytest.raises(ValueError, match="the network's output carries no tangent"):
        forward_jvp(lambda z_, t_, r_: net(z_.detach(), t_.detach(), r_), (z, t, r), (v, torch.ones_like(t), None))


def test_forward_jvp_equals_torch_func_jvp_in_value_tangent_and_gradient():
    """Dual tensors (forward_ad) give torch.func.jvp's numbers: output, tangent (a None tangent is a zero one) and the
    parameter gradient through the primal (the fused mode); inside vmap, where dual levels cannot nest, it still
    answers (via torch.func.jvp)."""
    from torch.func import jvp, vmap

    from mfvideo.method.jvp import forward_jvp

    torch.manual_seed(0)
    net = randomize(tiny_model(num_classes=10)).double()
    z, v = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)
    t, r, y = torch.tensor([0.7, 0.4], dtype=torch.float64), torch.tensor([0.2, 0.1], dtype=torch.float64), torch.tensor([1, 7])
    fn = lambda z_, t_, r_: net(z_, t_, r_, y=y)  # noqa: E731
    grads = []
    for api in ("ours", "func"):
        net.zero_grad()
        if api == "ours":
            u, du = forward_jvp(fn, (z, t, r), (v, torch.ones_like(t), None))
        else:
            u, du = jvp(fn, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
        (u.square().sum()).backward()
        grads.append((u.detach(), du, [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    (u1, d1, g1), (u2, d2, g2) = grads
    assert torch.allclose(u1, u2, atol=1e-12) and torch.allclose(d1, d2, atol=1e-12) and len(g1) == len(g2) > 0
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g1, g2))
    assert d1.abs().max() > 1e-3  # a real tangent, not zeros
    # along r alone, ours equals func's r-tangent (a None tangent elsewhere is zero)
    _, dr = forward_jvp(fn, (z, t, r), (None, None, torch.ones_like(r)))
    _, dr2 = jvp(fn, (z, t, r), (torch.zeros_like(z), torch.zeros_like(t), torch.ones_like(r)))
    assert torch.allclose(dr, dr2, atol=1e-12)
    # nested inside vmap: per-row JVPs equal the batched one
    per_row = vmap(lambda zz, vv, tt, rr, yy: forward_jvp(lambda a, b, c: net(a[None], b[None], c[None], y=yy[None])[0],
                                                         (zz, tt, rr), (vv, torch.ones_like(tt), None))[1])(z, v, t, r, y)
    with torch.no_grad():
        assert torch.allclose(per_row, d1, atol=1e-10)


def test_fused_and_detached_modes_agree_under_bf16_autocast():
    """Under autocast the network's output is bf16: the fused mode's u (rows put together from two calls) takes the
    dtype of what the calls return (it was fp32 and index_put refused), and both modes give one loss."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 2, 8, 8), torch.randint(0, 10, (8,))
    t = torch.rand(8) * 0.9 + 0.1
    r = torch.where(torch.arange(8) % 3 == 0, t * 0.5, t)
    noise = torch.randn_like(x)
    net = randomize(tiny_model())
    losses = []
    for mode in ("fused", "detached"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, logs = MeanFlow(jvp_mode=mode).loss(net, x, y, t=t, r=r, noise=noise)
        loss.backward()
        losses.append(float(logs["loss_unweighted"]))
    assert abs(losses[0] - losses[1]) <= 2e-2 * abs(losses[1])


def _graph_case(rows, seed=0, per_frame=False):
    g = torch.Generator().manual_seed(seed)
    z, v = torch.randn(rows, 3, 4, 8, 8, generator=g), torch.randn(rows, 3, 4, 8, 8, generator=g)
    t = torch.rand((rows, 4) if per_frame else (rows,), generator=g) * 0.8 + 0.2
    r, y = t * 0.5, torch.randint(0, 10, (rows,), generator=g)
    dt = torch.ones_like(t)
    if per_frame:
        dt[:, :2] = 0  # context frames: their time does not move
    return z, t, r, y, v, dt


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_graphed_jvp_pads_rows_to_few_shapes_and_follows_the_weights(compiled):
    """The CUDA-graph JVP's static-buffer path (eager here, or through torch.compile: ``train.compile_jvp``): any row
    count is padded to a multiple (one buffer set per padded count and input shape), the padding rows never leak into
    the answer, which equals the eager JVP, also after the parameters change in place (as AdamW changes them: a
    compiled call that froze the weights it was traced with fails here); the attention backends are restored."""
    from mfvideo.method.jvp import forward_jvp
    from mfvideo.method.jvp_graph import GraphedJVP

    torch.manual_seed(0)
    net = randomize(tiny_model(num_classes=10))
    gj = GraphedJVP(net, row_multiple=4, capture=False, compile=compiled)
    tol = 20 if compiled else 1  # fused kernels sum in another order

    def eager(z, t, r, y, v, dt):
        with torch.no_grad():
            return forward_jvp(lambda a, b, c: net(a, b, c, y=y), (z, t, r), (v, dt, None))

    # compiled: one padded count and one input shape (each compile costs ~25 s on 2 cores), per-frame times as in
    # video training; a weight change between the two calls that share the compiled graph
    cases = [(3, True), (2, True)] if compiled else [(3, False), (5, False), (8, False), (2, False), (3, True)]
    changed_after = 0 if compiled else 1
    for i, (rows, per_frame) in enumerate(cases):
        case = _graph_case(rows, seed=i, per_frame=per_frame)
        u, du = gj.jvp(*case)
        ref_u, ref_du = eager(*case)
        assert u.shape == ref_u.shape == (rows, 3, 4, 8, 8) and du.abs().max() > 1e-3
        assert torch.allclose(u, ref_u, atol=1e-6 * tol) and torch.allclose(du, ref_du, atol=1e-5 * tol), (rows,
                                                                                                          per_frame)
        assert {m.backend for m in net.modules() if hasattr(m, "backend")} == {"sdpa"}
        if i == changed_after:
            with torch.no_grad():  # an optimizer step: in place, the buffers and graphs keep reading the parameters
                for p in net.parameters():
                    p.mul_(1.1).add_(0.01)
    # 3 and 2 rows share one buffer set (4 rows), 5 and 8 one (8 rows); per-frame times are another input shape
    assert sorted(k[1] for k in gj.graphs) == ([4] if compiled else [4, 4, 8]) and gj.disabled is None
    z, t, r, y, _, _ = _graph_case(3 if compiled else 5, seed=9, per_frame=compiled)
    with torch.no_grad():
        assert torch.allclose(gj.forward_no_grad(z, t, r, y=y), net(z, t, r, y=y), atol=1e-6 * tol)
    assert sorted(k[:2] for k in gj.graphs)[0] == ("forward", 4 if compiled else 8)
    assert sorted(gj._compiled) == (["forward", "jvp"] if compiled else [])


@pytest.mark.parametrize("kappa", [0.0, 0.5], ids=["unguided", "guided"])
def test_model_tangent_through_the_graphed_jvp_gives_the_eager_loss(kappa):
    """``train.cuda_graph_jvp`` with ``method.tangent=model``: the tangent made by the graphed no-grad forward (or
    taken from the guidance call) gives the eager step's loss and gradients (the static-buffer path, run eagerly)."""
    from mfvideo.method.jvp_graph import GraphedJVP

    torch.manual_seed(4)
    net = randomize(tiny_model(num_classes=10))
    x = torch.randn(6, 3, 4, 8, 8)
    y = torch.randint(0, 10, (6,))
    ctx = context_mask("first", 6, 4)
    ctx[:2] = False  # two rows without context
    mf = MeanFlow(tangent="model", ratio_r_neq_t=0.5, cfg_kappa=kappa, class_dropout=0.2)
    grads = []
    for jvp_net in (None, GraphedJVP(net, row_multiple=4, capture=False)):
        net.zero_grad()
        loss, _ = mf.loss(net, x, y, context=ctx, generator=torch.Generator().manual_seed(0), jvp_net=jvp_net)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    (l0, g0), (l1, g1) = grads
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g0, g1))


def test_graphed_jvp_gives_up_on_a_graph_that_disagrees_and_the_loss_stays_the_eager_one(monkeypatch, caplog):
    """A replay that disagrees with the eager call is caught on its first call: one warning, and from then on the
    eager JVP and forwards; the MeanFlow loss (with training-time guidance, whose no-grad forward goes through the
    graphs too) and gradient through a GraphedJVP equal the plain path's either way. The fused mode refuses it (its
    JVP carries the gradient)."""
    from mfvideo.method import jvp_graph
    from mfvideo.method.jvp_graph import GraphedJVP

    torch.manual_seed(0)
    net = randomize(tiny_model(num_classes=10))
    z, t, r, y, v, dt = _graph_case(8, seed=3)

    def loss_and_grad(jvp_net, mode="detached"):
        net.zero_grad()
        loss, _ = MeanFlow(ratio_r_neq_t=0.5, jvp_mode=mode, cfg_kappa=0.5).loss(net, z, y, t=t, r=torch.where(
            torch.arange(8) % 2 == 0, r, t), noise=v, jvp_net=jvp_net)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters()])

    ref_loss, ref_grad = loss_and_grad(None)
    graphed = GraphedJVP(net, row_multiple=3, capture=False)
    loss, grad = loss_and_grad(graphed)
    assert torch.allclose(loss, ref_loss, rtol=1e-6) and torch.allclose(grad, ref_grad, atol=1e-6)
    assert sorted(k[0] for k in graphed.graphs) == ["forward", "jvp"]  # the guidance forward and the JVP

    broken = GraphedJVP(net, capture=False)
    run = jvp_graph._Graph.run
    monkeypatch.setattr(jvp_graph._Graph, "run",
                        lambda self: (lambda out: tuple(o * 0 for o in out) if isinstance(out, tuple) else out * 0)(run(self)))
    with caplog.at_level("WARNING"):
        loss, grad = loss_and_grad(broken)
    assert broken.disabled and "differs from the eager one" in broken.disabled and not broken.graphs
    assert sum("CUDA graphs off" in rec.message for rec in caplog.records) == 1
    assert torch.allclose(loss, ref_loss, rtol=1e-6) and torch.allclose(grad, ref_grad, atol=1e-6)
    with pytest.raises(ValueError, match="detached mode's JVP only"):
        loss_and_grad(GraphedJVP(net, capture=False), mode="fused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("own_autocast", [False, True], ids=["plain", "forward-in-autocast"])
def test_gpu_graphed_jvp_replays_the_eager_jvp_in_bf16_through_optimizer_steps(own_autocast):
    """On CUDA: the replayed JVP (and no-grad forward) equals the eager one under bf16 autocast, where the primal
    forward already filled autocast's weight cache (a graph that captured a cached cast would read freed memory on
    the next step), for varying row counts, after AdamW steps; also when the module's forward enters autocast itself
    with its cache on (accelerate's mixed-precision wrapper); the graphs were captured (not given up)."""
    import types

    from mfvideo.method.jvp import forward_jvp
    from mfvideo.method.jvp_graph import GraphedJVP

    torch.manual_seed(0)
    net = randomize(tiny_model(num_classes=10)).cuda()
    if own_autocast:
        net.forward = types.MethodType(torch.autocast("cuda", dtype=torch.bfloat16)(type(net).forward), net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    gj = GraphedJVP(net, row_multiple=4)
    for step, rows in enumerate([6, 7, 3, 8, 6]):
        z, t, r, y, v, dt = (a.cuda() for a in _graph_case(rows, seed=step, per_frame=step % 2 == 1))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            u = net(z, t, r, y=y)  # the primal with grad: fills the weight cache
            u_g, du_g = gj.jvp(z, t, r, y, v, dt)
            with torch.no_grad():
                _, du = forward_jvp(lambda a, b, c: net(a, b, c, y=y), (z, t, r), (v, dt, None))
            f_g, f = gj.forward_no_grad(z, t, r, y=y), net(z, t, r, y=y).detach()  # the guidance forward
        rel = float((du_g.float() - du.float()).norm() / du.float().norm())
        assert rel < 1e-2, (step, rows, rel)
        assert float((f_g.float() - f.float()).norm() / f.float().norm()) < 1e-2, step
        u.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert gj.disabled is None, gj.disabled
    assert len(gj.graphs) >= 2 and all(isinstance(g.fn, torch.cuda.CUDAGraph) for g in gj.graphs.values())


def test_copy_loss_adds_the_copy_paths_regression_on_context_rows_and_reaches_kernels_behind_a_closed_gate():
    """method.copy_loss adds, per row with context frames, the squared error of the copy path's copy on the new
    frames (adaptively weighted like the main loss) from every forward with grad: the MeanFlow rows' at their own
    times and the one-step rows' at (1, 0); with copy_loss_rows=jump, the one-step rows' only. Behind a closed gate the main loss gives the kernels no gradient, the copy
    loss does. It needs a copy path and the detached JVP."""
    from mfvideo.config import ConfigError, load_config
    from mfvideo.method.meanflow import catching_copies

    torch.manual_seed(0)
    net = randomize(tiny_model(depth=1, prediction="x", copy_radius=2)).double()
    B, T = 8, 4
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = context_mask("first", B, T, k=2)
    mask[::4] = False  # rows 0 and 4 without context: no copy
    t = torch.rand(B, dtype=torch.float64) * 0.8 + 0.1
    r = t * torch.tensor([0.5, 1.0]).repeat(B // 2).double()
    kw = dict(t=t, r=r, noise=e, context=mask)
    base, _ = MeanFlow(split_consistency=0.5).loss(net, x, **kw, generator=torch.Generator().manual_seed(3))
    mf = MeanFlow(split_consistency=0.5, copy_loss=0.7)
    loss, logs = mf.loss(net, x, **kw, generator=torch.Generator().manual_seed(3))

    split = torch.rand(B, generator=torch.Generator().manual_seed(3)) < 0.5  # the first draw: the one-step rows
    assert 0 < int(split.sum()) < B
    gen = (~mask).double()
    t_row = torch.where(split[:, None], 1.0, t[:, None]).double() * gen  # (B, T): one-step rows at (1, 0)
    r_row = torch.where(split[:, None], 0.0, r[:, None]).double() * gen
    z = (1 - t_row[:, None, :, None, None]) * x + t_row[:, None, :, None, None] * e
    with catching_copies(net) as caught:
        net(z, t_row, r_row)
    (copy, clean), = caught
    assert torch.equal(clean, mask)
    err = (((copy - x) ** 2) * gen[:, None, :, None, None]).sum(dim=(1, 2, 3, 4))[mask.any(dim=1)]
    torch.testing.assert_close(loss - base, 0.7 * (err / (err.detach() + 0.01)).sum() / B)
    torch.testing.assert_close(logs["loss_copy"], err.detach().mean())
    # copy_loss_rows=jump: the one-step rows' copies only
    jump, logs = MeanFlow(split_consistency=0.5, copy_loss=0.7, copy_loss_rows="jump").loss(
        net, x, **kw, generator=torch.Generator().manual_seed(3))
    err = (((copy - x) ** 2) * gen[:, None, :, None, None]).sum(dim=(1, 2, 3, 4))[mask.any(dim=1) & split]
    assert 0 < err.numel() < int(mask.any(dim=1).sum())
    torch.testing.assert_close(jump - base, 0.7 * (err / (err.detach() + 0.01)).sum() / B)
    torch.testing.assert_close(logs["loss_copy"], err.detach().mean())

    closed = tiny_model(depth=1, prediction="x", copy_radius=2).double()  # a trained model gaining the path
    closed.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("copier.")}, strict=False)
    for weight, moves in ((0.0, False), (1.0, True)):
        loss, _ = MeanFlow(copy_loss=weight).loss(closed, x, **kw)
        grad, = torch.autograd.grad(loss, closed.copier.head.weight)  # (pixel slots x (5 + 5 taps, gate), D)
        taps = grad.view(-1, 2 * 5 + 1, 32)[:, :10]
        assert bool(taps.abs().amax() > 0) == moves and bool(grad.view(-1, 11, 32)[:, 10].abs().amax() > 0)
    with pytest.raises(ConfigError, match="method.copy_loss=1.0 trains a copy path's kernels: it needs model.copy_radius"):
        load_config("configs/tiny.yaml", ["method.copy_loss=1"])
    with pytest.raises(ConfigError, match="copy_loss .* needs jvp_mode='detached'"):
        load_config("configs/tiny.yaml", ["model.copy_radius=2", "method.copy_loss=1", "method.jvp_mode=fused"])
    with pytest.raises(ConfigError, match="copy_loss_rows='jump' .* needs split_consistency or split_context"):
        load_config("configs/tiny.yaml", ["model.copy_radius=2", "method.copy_loss=1", "method.copy_loss_rows=jump"])
