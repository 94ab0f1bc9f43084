"""The guidance scale as a condition of the network (improved MeanFlow): ``model.guidance_embed`` +
``method.cfg_scale_range`` in training, ``guidance_scale`` at sampling, one call per window still."""

import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize, tiny_model
from mfvideo.builders import build_model
from mfvideo.config import ConfigError, load_config
from mfvideo.method import MeanFlow, meanflow_sample
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.weights import load_into
from test_method import bc, fd_target

ROOT = Path(__file__).resolve().parents[1]


def test_a_model_gaining_the_scale_starts_as_the_model_it_came_from_at_every_scale():
    """The scale's embedder starts at zero: loaded from a model without it (``model.init_from``), the network is
    that model at every scale; trained (random weights here), scales change the output row by row, and None is 1."""
    torch.manual_seed(0)
    base = randomize(tiny_model(prediction="x")).double()
    gained = tiny_model(prediction="x", guidance_embed=True).double()
    fresh = load_into(gained, base.state_dict(), "base", allow_missing_temporal=True)
    assert fresh and all(k.startswith("g_embedder.") for k in fresh)
    z, t, r, y = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64), torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.1]), \
        torch.tensor([3, -1])
    t, r = t.double(), r.double()
    with torch.no_grad():
        ref = base(z, t, r, y=y)
        for w in (None, 1.0, 3.0, torch.tensor([1.5, 7.0])):
            assert torch.equal(gained(z, t, r, y=y, guidance=w), ref)
        net = randomize(gained, seed=1)
        one, three = net(z, t, r, y=y, guidance=1.0), net(z, t, r, y=y, guidance=3.0)
        assert torch.equal(net(z, t, r, y=y), one) and (one - three).abs().max() > 1e-3
        rows = net(z, t, r, y=y, guidance=torch.tensor([1.0, 3.0]))
        torch.testing.assert_close(rows, torch.cat([one[:1], three[1:]]))


def test_a_model_without_the_condition_refuses_a_scale_other_than_one():
    net = randomize(tiny_model())
    z, t = torch.randn(1, 3, 2, 8, 8), torch.tensor([0.5])
    assert torch.equal(net(z, t, t, guidance=1.0), net(z, t, t))
    with pytest.raises(ValueError, match="takes no guidance scale"):
        net(z, t, t, guidance=2.0)


def test_scale_conditioned_guidance_is_the_kappa_form_at_each_rows_scale():
    """v_g = v + (1 - 1 / w) (v_cond - v_unc): v_cond made at the row's scale, v_unc with the null label at scale 1;
    outside the guidance interval v."""
    torch.manual_seed(1)
    net = randomize(tiny_model(guidance_embed=True)).double()
    z, v = torch.randn(3, 3, 2, 8, 8, dtype=torch.float64), torch.randn(3, 3, 2, 8, 8, dtype=torch.float64)
    t, y, w = torch.tensor([0.5, 0.3, 0.9], dtype=torch.float64), torch.tensor([1, 2, 3]), torch.tensor([2.0, 4.0, 3.0])
    mf = MeanFlow(cfg_scale_range=[1.0, 5.0], cfg_t_end=0.8)
    v_g = mf.guided_velocity(net, z, t, v, y, t, w=w)
    with torch.no_grad():
        v_cond, v_unc = net(z, t, t, y=y, guidance=w), net(z, t, t, y=torch.full_like(y, -1), guidance=1.0)
    expected = v + bc(1 - 1 / w, v).double() * (v_cond - v_unc)
    torch.testing.assert_close(v_g[:2], expected[:2])
    torch.testing.assert_close(v_g[2], v[2])  # t = 0.9 lies outside the guidance interval
    # the scale matters: the same call at another scale is another target
    assert (mf.guided_velocity(net, z, t, v, y, t, w=w + 1) - v_g)[:2].abs().max() > 1e-3


@pytest.mark.parametrize("tangent", ["sample", "model"])
def test_scale_conditioned_target_equals_finite_difference_at_the_rows_scale(tangent):
    """Every call of a row -- the guidance's, the tangent's own velocity, the forward with grad and the JVP -- runs
    at the row's scale: the target equals a central finite difference of the network at that scale (and differs
    from the one at scale 1, what a JVP that dropped the scale would compute). The tangent's own velocity reuses
    v_cond where it was made for the label the row shows, at the row's scale (a null-guided row's too); v_unc, made
    at scale 1, is not the own velocity of a null-label row at another scale, so such a row costs a forward."""
    torch.manual_seed(2)
    net = randomize(tiny_model(prediction="x", guidance_embed=True)).double()
    B, T = 3, 4
    x, e = torch.randn(B, 3, T, 8, 8, dtype=torch.float64), torch.randn(B, 3, T, 8, 8, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1:, 0] = True
    gen = (~mask).double()
    t, r = torch.tensor([0.9, 0.8, 0.6], dtype=torch.float64), torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)
    t_in, r_in = t[:, None] * gen, r[:, None] * gen
    z = (1 - t_in[:, None, :, None, None]) * x + t_in[:, None, :, None, None] * e
    v = e - x
    y_guide, y = torch.tensor([3, 5, -1]), torch.tensor([3, -1, -1])  # row 1: null label shown, guided by 5
    w = torch.tensor([1.5, 4.0, 2.5], dtype=torch.float64)
    mf = MeanFlow(tangent=tangent, cfg_scale_range=[1.0, 5.0])
    calls = []

    def counting(z_, t_, r_, y=None, guidance=None):
        calls.append((z_.shape[0], None if guidance is None else torch.as_tensor(guidance).clone()))
        return net(z_, t_, r_, y=y, guidance=guidance)

    counting.modules = net.modules
    _, u_tgt = mf.meanflow_rows(counting, None, z, t, v, y, y_guide, t_in, r_in, gen, gen, None, None, None, w=w)
    g_net = functools.partial(net, guidance=w)
    v_g = mf.guided_velocity(net, z, t, v, y_guide, t_in, w=w) * gen[:, None, :, None, None]
    tan = v_g
    if tangent == "model":
        with torch.no_grad():
            tan = g_net(z, t_in, t_in, y=y) * gen[:, None, :, None, None]
    expected = v_g - (tan - fd_target(g_net, z, t_in, r_in, tan, y, gen))
    torch.testing.assert_close(u_tgt, expected, rtol=1e-5, atol=1e-5)
    at_one = v_g - (tan - fd_target(functools.partial(net, guidance=1.0), z, t_in, r_in, tan, y, gen))
    assert (at_one - u_tgt).abs().max() > 1e-3
    # the guidance call (scale 1 for the null branch, then the rows' scales); for the iMF tangent the row whose
    # own velocity it did not make (row 1: null label shown at 4, guided by 5; v_unc was made at 1); the forward
    # with grad; the JVP -- every one with its rows' scales
    sizes = [n for n, _ in calls]
    assert sizes == ([2 * B, 1, B, B] if tangent == "model" else [2 * B, B, B]), sizes
    assert torch.equal(calls[0][1], torch.cat([torch.ones(B, dtype=w.dtype), w]))
    if tangent == "model":
        assert torch.equal(calls[1][1], w[1:2])
    assert all(torch.equal(g, w) for _, g in calls[-2:])


def test_the_loss_draws_log_uniform_scales_and_a_recipe_without_them_calls_as_before():
    lo, hi = 1.5, 6.0
    ws = MeanFlow(cfg_scale_range=[lo, hi]).sample_scales(20000, generator=torch.Generator().manual_seed(0))
    assert lo <= float(ws.min()) and float(ws.max()) <= hi
    assert abs(float(ws.log().mean()) - (math.log(lo) + math.log(hi)) / 2) < 0.01  # log-uniform
    assert abs(float((ws < math.sqrt(lo * hi)).float().mean()) - 0.5) < 0.02
    assert MeanFlow().sample_scales(4) is None

    torch.manual_seed(4)
    net = randomize(tiny_model(guidance_embed=True))
    seen = []

    def recording(z_, t_, r_, y=None, **kw):
        seen.append((z_.shape[0], kw.get("guidance")))
        return net(z_, t_, r_, y=y, **kw)

    recording.modules = net.modules
    x, y = torch.randn(8, 3, 4, 8, 8), torch.randint(0, 10, (8,))
    ctx = torch.zeros(8, 4, dtype=torch.bool)
    ctx[4:, :2] = True
    for kw in (dict(), dict(split_consistency=0.5, self_context=1.0)):
        seen.clear()
        g = torch.Generator().manual_seed(5)
        loss, _ = MeanFlow(cfg_scale_range=[lo, hi], class_dropout=0.3, **kw).loss(recording, x, y, context=ctx,
                                                                                    generator=g)
        assert torch.isfinite(loss) and len(seen) >= 3
        for n, w in seen:  # every call carries a scale per row, within the range (the null branch's 1)
            assert w is not None and w.shape == (n,) and bool(((w == 1) | ((w >= lo) & (w <= hi))).all()), (n, w)
    seen.clear()
    MeanFlow(cfg_kappa=0.5, class_dropout=0.3).loss(recording, x, y, context=ctx)
    assert seen and all(w is None for _, w in seen)  # no scale: the network is called exactly as before


@pytest.mark.parametrize("overrides, match", [
    (["method.cfg_scale_range=[1,4]"], "go together"),
    (["model.guidance_embed=true"], "go together"),
    (["method.cfg_scale_range=[0.5,4]", "model.guidance_embed=true"], "1 <= w_min <= w_max"),
    (["method.cfg_scale_range=[1,4,8]", "model.guidance_embed=true"], "two scales"),
    (["method.cfg_scale_range=[1,4]", "model.guidance_embed=true", "method.cfg_kappa=0.5"], "replaces cfg_omega"),
    (["method.cfg_scale_range=[1,4]", "model.guidance_embed=true", "train.compile_jvp=true"], "take no guidance"),
    (["sample.guidance_scale=2"], "takes no guidance scale"),
    (["method.cfg_scale_range=[1,4]", "model.guidance_embed=true", "sample.guidance_scale=0.5"], ">= 1"),
])
def test_scale_config_errors_are_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ROOT / "configs" / "tiny.yaml", overrides)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """A tiny random model trained (config) with the scale as a condition and a context summary, saved as a
    checkpoint folder."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["method.cfg_scale_range=[1,4]", "model.guidance_embed=true",
                                                       "model.context_summary=true"])
    cfg.model.in_channels, cfg.model.num_classes = 1, 10
    torch.manual_seed(0)
    model = randomize(build_model(cfg.model), std=0.05)
    path = tmp_path_factory.mktemp("scaled")
    MFVideoPipeline(model, training_config=cfg).save_pretrained(path)
    return path


def test_pipeline_samples_at_the_scale_asked_for_with_one_call(scaled):
    """``guidance_scale`` is the network's condition on every call (one per window): the frames are the 1-NFE
    sampler's of the network at that scale; the default is the trained range's geometric middle (2 for [1, 4])."""
    pipe = MFVideoPipeline.from_pretrained(scaled)
    noise = pipe.method.noise((2, *pipe._latent_shape(4)), generator=torch.Generator().manual_seed(3))
    y = torch.tensor([2, 5])
    frames = {}
    for s in (1.0, 2.0, 4.0):
        frames[s] = pipe.generate(class_labels=[2, 5], seed=3, output_type="uint8", guidance_scale=s).frames
        expected = pipe.codec.decode_frames(meanflow_sample(functools.partial(pipe.model, guidance=s), noise, y))
        assert np.array_equal(frames[s], expected)
    assert not np.array_equal(frames[1.0], frames[4.0])
    assert np.array_equal(pipe.generate(class_labels=[2, 5], seed=3, output_type="uint8").frames, frames[2.0])
    # an extension reads its context and continues it at the scale asked for (reader, summary and windows alike)
    clip = frames[4.0][:1, :2]
    a = pipe.extend(clip, 4, guidance_scale=1.0, seed=0, output_type="uint8").frames
    b = pipe.extend(clip, 4, guidance_scale=4.0, seed=0, output_type="uint8").frames
    assert np.array_equal(a[:, :2], clip) and not np.array_equal(a, b)
    read, read_context = [], pipe.transformer.read_context
    pipe.transformer.read_context = lambda *a, **kw: read.append(kw.get("guidance")) or read_context(*a, **kw)
    pipe.extend(clip, 4, guidance_scale=3.0, seed=0)
    assert read == [3.0]  # what the model reads off the given frames is read at the scale too
    with pytest.raises(ValueError, match=">= 1"):
        pipe.generate(class_labels=[1], guidance_scale=0.5)


def test_a_folded_model_refuses_a_scale_in_one_line(tmp_path):
    """The bundled model's guidance is folded in at training: asking it for a scale says so, writes nothing."""
    pipe = MFVideoPipeline.from_pretrained()
    with pytest.raises(ValueError, match="takes no guidance scale"):
        pipe.generate(class_labels=[1], guidance_scale=2.0)
    proc = subprocess.run([sys.executable, "scripts/sample.py", "--guidance-scale", "2", "--out", str(tmp_path / "s")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "takes no guidance scale" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()


def test_training_with_scales_learns_the_condition_and_loads_back(tmp_path, scaled):
    """A short run with the scale as a condition trains its embedder (zero-started: it moves off zero), and the
    checkpoint samples through mfvideo-sample at a scale given on the command line."""
    from mfvideo.train.loop import train

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["method.cfg_scale_range=[1,4]", "model.guidance_embed=true",
                                                       "method.cfg_kappa=0", f"train.output_dir={tmp_path / 'run'}",
                                                       "train.max_steps=6", "train.checkpoint_every=6",
                                                       "train.sample_every=0", "train.log_every=3"])
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000006"
    pipe = MFVideoPipeline.from_checkpoint(ckpt, weights="model")
    assert pipe.model.g_embedder.mlp[2].weight.abs().max() > 0
    proc = subprocess.run([sys.executable, "scripts/sample.py", "--checkpoint", str(ckpt), "--classes", "3",
                           "--guidance-scale", "3", "--out", str(tmp_path / "s")], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0 and (tmp_path / "s" / "clip_000_class3.mp4").is_file(), proc.stderr


def test_the_reader_is_fitted_on_features_at_the_scales_training_drew():
    """``reader_features`` with the model's scale range reads each row at a drawn scale (the draw comes after the
    clip is noised, so the same seed gives the same input): a range of [1, 1] is the unscaled features, [3, 3]
    another set."""
    from mfvideo.train.reader import reader_features

    torch.manual_seed(6)
    net = randomize(tiny_model(guidance_embed=True, context_reader=True, depth=4)).eval()
    x = torch.randn(6, 3, 4, 8, 8)
    masks = {"first": 1.0}

    def feats(scale_range):
        return reader_features(net, x, masks, 2, torch.Generator().manual_seed(0), scale_range=scale_range)[0]

    assert torch.equal(feats([1.0, 1.0]), feats(None))
    assert (feats([3.0, 3.0]) - feats(None)).abs().max() > 1e-4


def test_post_training_runs_every_call_of_a_row_at_its_drawn_scale(scaled, monkeypatch):
    """Post-training a scale-conditioned model: the student's one-step jump and the frozen model's two-step target
    (and the field term) see the same per-row scales, drawn in the trained range; a folded model gets none."""
    import mfvideo.train.adversarial as adv

    seen = {"jump": [], "target": []}
    jump, sample = adv.one_step_jump, adv.meanflow_sample

    def rec(kind, fn):
        def wrapped(net, *a, **kw):
            seen[kind].append(getattr(net, "keywords", {}).get("guidance"))
            return fn(net, *a, **kw)
        return wrapped

    monkeypatch.setattr(adv, "one_step_jump", rec("jump", jump))
    monkeypatch.setattr(adv, "meanflow_sample", rec("target", sample))
    for path, scaled_model in ((scaled, True), (None, False)):
        seen["jump"].clear(), seen["target"].clear()
        pipe = MFVideoPipeline.from_pretrained(path)
        clips = torch.rand(16, 1, pipe.window, 16, 16) * 2 - 1
        adv.post_train(pipe, adv.PostTrainConfig(steps=2, batch_size=4, clips=16), clips=clips,
                       labels=torch.randint(0, 10, (16,)), log_every=1)
        assert len(seen["jump"]) == len(seen["target"]) == 2
        for a, b in zip(seen["jump"], seen["target"]):
            if scaled_model:
                assert a is b and a.shape == (4,) and bool(((a >= 1) & (a <= 4)).all())
            else:
                assert a is None and b is None
