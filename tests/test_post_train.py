"""Adversarial post-training of the one-step jump: its jump is the sampler's, its critic learns what blur is, its
GAN weight sets the gradient ratio it names, and a run moves the generator (never the reader) towards the frozen
two-step jump, the same on every run with the same seed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize, tiny_model
from mfvideo.method.samplers import meanflow_sample
from mfvideo.models.critic import ClipCritic
from mfvideo.train.adversarial import (FIELD_TIMES, PostTrainConfig, balanced_weight, critic_loss, dmd_loss,
                                       fake_field_loss, field_loss, field_times, noised, one_step_jump, post_train)

ROOT = Path(__file__).resolve().parents[1]


def test_one_step_jump_is_the_one_step_sampler_and_keeps_the_given_frames():
    torch.manual_seed(0)
    net = randomize(tiny_model(), std=0.1).double().eval()
    x, e = torch.randn(3, 3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 3, 4, 8, 8, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.bool)
    y = torch.tensor([1, -1, 4])
    jump = one_step_jump(net, x, e, mask, y)
    torch.testing.assert_close(jump, meanflow_sample(net, e, y=y, steps=1, context=x, context_mask=mask))
    given = mask[:, None, :, None, None].expand_as(x)
    assert torch.equal(jump[given], x[given])
    assert jump.requires_grad  # differentiable, unlike the sampler


def _glyphs(n, frames, g):
    """Sharp random blocks on black, (n, 1, T, 16, 16) in [-1, 1], moving one pixel per frame."""
    base = (torch.rand(n, 1, 1, 8, 8, generator=g) > 0.6).float()
    base = F.interpolate(base[:, :, 0], scale_factor=2, mode="nearest")[:, :, None]  # (n, 1, 1, 16, 16)
    return torch.cat([torch.roll(base, f, dims=-1) for f in range(frames)], 2) * 2 - 1


def _blur(x):
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    k2 = (k[:, None] * k[None, :])[None, None, None]  # (1, 1, 1, 3, 3)
    return F.conv3d(F.pad(x + 1, (1, 1, 1, 1, 0, 0)), k2) - 1


@pytest.mark.parametrize("frames", [8, 1])
def test_critic_learns_to_tell_blurred_clips_from_sharp_ones(frames):
    """The critic, trained by critic_loss on sharp clips against the same clips blurred, tells held-out ones apart;
    on images (T = 1) too."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    critic = ClipCritic(1, 0, width=8, frames=frames)
    opt = torch.optim.AdamW(critic.parameters(), lr=2e-3, betas=(0.0, 0.99))
    for _ in range(60):
        real = _glyphs(16, frames, g)
        loss, _, _ = critic_loss(critic, real, _blur(real), r1=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _glyphs(64, frames, g)
    with torch.no_grad():
        d_real, d_fake = critic(test).mean(1), critic(_blur(test)).mean(1)  # (64,)
    assert (d_real > d_fake).float().mean() > 0.95, (d_real - d_fake)
    assert critic(test).shape == (64, 4 * 4 * (4 if frames == 8 else 1))  # patches over (T', H', W')


def test_class_projection_makes_the_critic_conditional():
    torch.manual_seed(0)
    critic = randomize(ClipCritic(1, 10, width=8), std=0.2)
    x = torch.randn(2, 1, 8, 16, 16)
    a, b = critic(x, torch.tensor([3, 3])), critic(x, torch.tensor([3, 7]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    assert ClipCritic(1, 0, 8)(x).shape == critic(x, None).shape == a.shape


def test_critic_judges_a_generation_row_without_its_label_without_a_class():
    """y = -1 gives the unconditional logits (no class projection) on that row only; ``critic_labels`` gives -1 to
    exactly the generation rows whose label was dropped (a context row still shows its class)."""
    from mfvideo.train.adversarial import critic_labels

    torch.manual_seed(0)
    critic = ClipCritic(1, num_classes=10, width=8, frames=4)
    with torch.no_grad():
        critic.embed.weight.normal_()
    x = torch.randn(3, 1, 4, 16, 16)
    plain, mixed = critic(x), critic(x, torch.tensor([2, -1, 7]))
    assert torch.allclose(mixed[1], plain[1]) and not torch.allclose(mixed[0], plain[0])
    assert not torch.allclose(mixed[2], plain[2])
    labels = torch.tensor([3, 3, 3, 3])
    dropped = torch.tensor([True, True, False, False])
    mask = torch.tensor([[False] * 4, [True, False, False, False], [False] * 4, [True, False, False, False]])
    assert critic_labels(labels, dropped, mask).tolist() == [-1, 3, 3, 3]


def test_balanced_weight_sets_the_gradient_ratio():
    torch.manual_seed(0)
    fake = torch.randn(4, 1, 2, 6, 6, requires_grad=True)
    anchor = (fake - torch.randn_like(fake)).pow(2).mean()
    adv = F.softplus(-(fake * torch.randn_like(fake)).sum((1, 2, 3, 4))).mean()
    w = balanced_weight(anchor, adv, fake, 0.3)
    g_anchor, = torch.autograd.grad(anchor, fake, retain_graph=True)
    g_adv, = torch.autograd.grad(w * adv, fake)
    torch.testing.assert_close(g_adv.norm(), 0.3 * g_anchor.norm())
    assert not w.requires_grad


def test_field_term_holds_every_other_time_pair_and_is_zero_at_the_frozen_model():
    t, r = field_times(4000, torch.Generator().manual_seed(0))
    assert bool((r <= t).all()) and not bool(((t == 1.0) & (r == 0.0)).any())  # never the one-step jump
    on_grid = sum(((t == a) & (r == b)).float().mean() for a, b in FIELD_TIMES)
    assert 0.45 < float(on_grid) < 0.55 and float((r == t).float().mean()) > 0.05  # the samplers' pairs, Euler's
    torch.manual_seed(0)
    net = randomize(tiny_model(), std=0.1)
    other = randomize(tiny_model(), std=0.1, seed=1)
    x, e = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    mask, y = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool), torch.tensor([2, -1])
    tt, rr = torch.tensor([1.0, 0.4]), torch.tensor([0.5, 0.1])
    assert float(field_loss(net, net, x, e, mask, y, tt, rr).detach()) == 0.0
    loss = field_loss(net, other, x, e, mask, y, tt, rr)
    loss.backward()
    assert float(loss.detach()) > 0 and all(q.grad is None for q in other.parameters())
    # only the new frames count: a change of the given frame's output alone leaves it as it was
    given = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    shifted = lambda z, t, r, y=None: net(z, t, r, y=y) + (t == 0)[:, None, :, None, None]  # noqa: E731
    assert float(field_loss(shifted, net, x, e, given, y, tt, rr).detach()) == 0.0


def _point_field(c):
    """The exact field of a point mass at the clip c (C, T, H, W): x_hat(z_t) = c at every t > 0, so u = (z - c) / t
    (the given frames, t = 0, stay z)."""
    def field(z, t, r, y=None):
        return (z - c) / t.clamp_min(1e-6)[:, None, :, None, None]
    return field


def test_dmd_gradient_is_the_difference_of_the_two_fields_denoisers_on_the_known_rows_new_frames():
    """With the frozen field a point mass at a and the fake field one at b, DMD's gradient on the generated clip x is
    (b - a) / mean|x - a| per row over the new frames of the chosen rows (so a descent step moves x towards a), zero
    on given frames and other rows, and exactly zero when the fake field is the frozen one."""
    torch.manual_seed(0)
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    x = torch.randn(3, 2, 4, 3, 3, requires_grad=True)
    e = torch.randn(3, 2, 4, 3, 3)
    mask = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    rows = torch.tensor([True, True, False])
    t = torch.tensor([0.3, 0.9, 0.5])
    grad, = torch.autograd.grad(dmd_loss(_point_field(a), _point_field(b), x, e, mask, None, t, rows), x)
    new = (~mask & rows[:, None])[:, None, :, None, None].expand_as(x)  # (B, C, T, H, W)
    count = int(new.sum())
    for i in range(2):
        n = new[i]
        norm = (x[i] - a).abs()[n].mean()
        torch.testing.assert_close(grad[i][n], ((b - a)[n] / norm / count).detach())
    assert float(grad[~new].abs().max()) == 0.0
    same, = torch.autograd.grad(dmd_loss(_point_field(a), _point_field(a), x, e, mask, None, t, rows), x)
    assert float(same.abs().max()) == 0.0
    z, tt = noised(x.detach(), e, mask, t)  # the given frame stays clean, the new ones at t
    assert torch.equal(z[0, :, 0], x[0, :, 0].detach()) and torch.equal(tt[0], torch.tensor([0.0, 0.3, 0.3, 0.3]))


def test_fake_field_loss_is_the_denoising_error_over_the_new_frames():
    """Zero for the exact denoiser of the clips it is given, |c - x|^2 averaged over the new frames for one of
    another clip c; a change on the given frames does not count."""
    torch.manual_seed(0)
    x, e = torch.randn(1, 2, 4, 3, 3), torch.randn(1, 2, 4, 3, 3)
    c = torch.randn(2, 4, 3, 3)
    mask, t = torch.tensor([[1, 1, 0, 0]]), torch.tensor([0.7])
    mask = mask.bool()
    assert float(fake_field_loss(_point_field(x[0]), x, e, mask, None, t)) < 1e-10
    expected = (c - x[0])[:, 2:].pow(2).mean()
    torch.testing.assert_close(fake_field_loss(_point_field(c), x, e, mask, None, t), expected)


def test_post_train_config_refuses_bad_values():
    for bad in (dict(steps=0), dict(lr=0.0), dict(ratio=-0.1), dict(r1=float("nan")), dict(anchor_steps=0),
                dict(field_weight=-1.0), dict(ema_decay=1.0), dict(ema_decay=-0.5), dict(dmd_ratio=-1.0),
                dict(dmd_lr=0.0)):
        with pytest.raises(ValueError, match="post-training"):
            PostTrainConfig(**bad)


def _tiny_pipe(reader=False):
    """A tiny random class-conditional model on 4-frame 16 x 16 moving digits (configs/tiny.yaml), with a reader."""
    from mfvideo.builders import build_model
    from mfvideo.config import load_config
    from mfvideo.pipeline import MFVideoPipeline

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    cfg.model.in_channels, cfg.model.num_classes, cfg.model.context_reader = 1, 10, reader
    torch.manual_seed(0)
    return MFVideoPipeline(randomize(build_model(cfg.model), std=0.05), training_config=cfg)


def _anchor_gap(net, frozen, clips, seed=5):
    """Mean squared gap between the one-step jump and the frozen two-step jump on fixed noise (generation rows)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(clips.shape, generator=g)
    y = torch.arange(clips.shape[0]) % 10
    with torch.no_grad():
        return float((meanflow_sample(net, e, y=y, steps=1) - meanflow_sample(frozen, e, y=y, steps=2)).pow(2).mean())


def test_post_training_moves_the_one_step_jump_towards_the_two_step_jump_and_never_the_reader():
    """The anchor alone (ratio 0) brings the one-step jump towards the frozen two-step jump on held-out noise; with
    the critic (ratio > 0) only the generator's weights change (a fitted reader stays as fitted) and two runs with
    one seed are bit-identical."""
    import copy

    from mfvideo.train.reader import load_clips

    pipe = _tiny_pipe()
    frozen = copy.deepcopy(pipe.transformer).eval()
    clips, labels = load_clips(pipe.cfg.data, pipe.codec, "train", 256)
    before = _anchor_gap(pipe.transformer, frozen, clips[:64])
    stats = post_train(pipe, PostTrainConfig(steps=40, batch_size=16, lr=1e-3, ratio=0.0,
                                                     field_weight=0.0), clips, labels)
    assert _anchor_gap(pipe.transformer, frozen, clips[:64]) < 0.5 * before
    assert set(stats["final"]) == {"anchor"} and not pipe.transformer.training

    runs = []
    for _ in range(2):
        pipe = _tiny_pipe(reader=True)
        ref = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
        stats = post_train(pipe, PostTrainConfig(steps=3, batch_size=8, ratio=0.5), clips, labels, log_every=1)
        runs.append(pipe.transformer.state_dict())
    assert {"anchor", "field", "adv", "weight", "d_real", "d_fake"} <= set(stats["final"])
    changed = {k for k in ref if not torch.equal(runs[0][k], ref[k])}
    assert any(k.startswith("blocks.") for k in changed) and any(k.startswith("class_reader.") for k in ref)
    assert not any(k.startswith("class_reader.") for k in changed)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in ref)


def test_dmd_term_trains_its_fake_field_and_moves_the_generator_the_same_on_every_run():
    """With ``dmd_ratio`` the fake field leaves the frozen model (else DMD's gradient is exactly zero), the generator
    ends elsewhere than without the term, the reader stays as fitted, and two runs with one seed are bit-identical."""
    from mfvideo.train.reader import load_clips

    pipe = _tiny_pipe(reader=True)
    clips, labels = load_clips(pipe.cfg.data, pipe.codec, "train", 64)
    start = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    runs = []
    for ratio in (1.0, 1.0, 0.0):
        pipe = _tiny_pipe(reader=True)
        stats = post_train(pipe, PostTrainConfig(steps=4, batch_size=8, lr=1e-3, dmd_ratio=ratio, dmd_lr=1e-3),
                           clips, labels, log_every=4)
        runs.append((stats["final"], pipe.transformer.state_dict()))
    (first, a), (_, b), (plain, c) = runs
    assert first["dmd"] > 0 and first["dmd_weight"] > 0 and first["fake_field"] > 0 and "dmd" not in plain
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("blocks."))
    assert all(torch.equal(a[k], start[k]) for k in a if k.startswith("class_reader."))


def test_ema_decay_writes_the_moving_average_of_the_run_s_weights():
    """With ``ema_decay`` the output is the exponential moving average of the weights the same run (same seed)
    passes through without it, updated after every step from the weights it started at; the reader stays."""
    from mfvideo.train.reader import load_clips

    pipe = _tiny_pipe(reader=True)
    clips, labels = load_clips(pipe.cfg.data, pipe.codec, "train", 64)
    start = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    trajectory = []
    post_train(pipe, PostTrainConfig(steps=4, batch_size=8, lr=1e-3), clips, labels, log_every=1,
               callback=lambda step: trajectory.append({k: v.clone() for k, v in pipe.transformer.state_dict().items()}))
    decay = 0.6
    expected = {k: v.clone() for k, v in start.items()}
    for weights in trajectory:
        for k, v in expected.items():
            v.lerp_(weights[k], 1.0 - decay)
    pipe = _tiny_pipe(reader=True)
    post_train(pipe, PostTrainConfig(steps=4, batch_size=8, lr=1e-3, ema_decay=decay), clips, labels, log_every=1)
    out = pipe.transformer.state_dict()
    assert all(torch.equal(out[k], expected[k]) for k in out)
    moved = [k for k in out if not torch.equal(out[k], trajectory[-1][k])]
    assert any(k.startswith("blocks.") for k in moved) and not any(k.startswith("class_reader.") for k in moved)
    assert all(torch.equal(out[k], start[k]) for k in out if k.startswith("class_reader."))


def test_post_train_cli_writes_a_loadable_pipeline_and_refuses_its_source_as_output(tmp_path):
    from mfvideo.pipeline import MFVideoPipeline

    out = tmp_path / "sharp"
    cmd = [sys.executable, "-m", "mfvideo.cli.post_train", "--out", str(out), "--steps", "2", "--clips", "64",
           "--batch-size", "4"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "2 post-training steps" in res.stdout
    stats = json.loads((out / "post_train.json").read_text())
    assert stats["config"]["steps"] == 2 and stats["source"] == "bundled" and "d_real" in stats["final"]
    pipe, bundled = MFVideoPipeline.from_pretrained(out), MFVideoPipeline.from_pretrained()
    mine, theirs = pipe.transformer.state_dict(), bundled.transformer.state_dict()
    assert mine.keys() == theirs.keys() and not all(torch.equal(mine[k], theirs[k]) for k in mine)
    res = subprocess.run([sys.executable, "-m", "mfvideo.cli.post_train", str(out), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "source folder itself" in res.stderr and "Traceback" not in res.stderr


def test_sigterm_to_post_training_writes_the_weights_so_far(tmp_path):
    """SIGTERM (a scheduler's limit, the GPU script's `timeout`) used to lose the whole post-training run. Now the
    step under way finishes and the weights so far are written, whole, their step count and the signal in
    post_train.json; the command says so and exits 143, as a shell reports the signal."""
    import signal

    from mfvideo.pipeline import MFVideoPipeline

    out = tmp_path / "sharp"
    cmd = [sys.executable, "-m", "mfvideo.cli.post_train", "--out", str(out), "--steps", "100000", "--clips", "64",
           "--batch-size", "4", "--log-every", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    for line in proc.stderr:  # the first logged step (every 5): training is under way
        err.append(line)
        if "post-training step 5/100000" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest_out, rest_err = proc.communicate(timeout=300)
    err = "".join(err) + rest_err
    assert proc.returncode == 143, err[-3000:]
    stats = json.loads((out / "post_train.json").read_text())
    assert stats["stopped_by"] == "SIGTERM" and 5 <= stats["steps"] < 100000, stats
    assert f"stopped by SIGTERM at step {stats['steps']} of 100000; wrote {out} ({stats['steps']} post-training" in \
        rest_out
    assert err.count("SIGTERM received: stopping after this step, with the weights so far and the state to resume "
                     "from") == 1, err[-3000:]
    mine = MFVideoPipeline.from_pretrained(out).transformer.state_dict()
    theirs = MFVideoPipeline.from_pretrained().transformer.state_dict()
    assert not all(torch.equal(mine[k], theirs[k]) for k in mine)

    # --resume goes on to the weights of a run never stopped, bit for bit; then it has nothing left to do
    steps = stats["steps"] + 2
    short = [a if a != "100000" else str(steps) for a in cmd]
    res = subprocess.run(short + ["--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"post-training goes on from step {stats['steps']} of {steps}" in res.stderr
    resumed = json.loads((out / "post_train.json").read_text())
    assert resumed["steps"] == steps and resumed["stopped_by"] is None and not (out / "post_train_state.pt").exists()
    whole = tmp_path / "whole"
    res = subprocess.run([a if a != str(out) else str(whole) for a in short], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    a = MFVideoPipeline.from_pretrained(out).transformer.state_dict()
    b = MFVideoPipeline.from_pretrained(whole).transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    res = subprocess.run(short + ["--resume"], capture_output=True, text=True)
    assert res.returncode == 0 and "holds a complete post-training: nothing to resume" in res.stdout, res.stderr


def test_a_stopped_post_training_resumes_to_the_weights_of_one_never_stopped():
    """Stopped by a signal after step 2 of 4 (critic, distribution matching with its fake field, EMA, field term: all
    of the run's state), the returned state goes on to the weights of an unstopped 4-step run, bit for bit; other
    settings are refused, naming them."""
    import os
    import signal

    from mfvideo.train.adversarial import check_resumable
    from mfvideo.train.reader import load_clips

    pipe = _tiny_pipe(reader=True)
    clips, labels = load_clips(pipe.cfg.data, pipe.codec, "train", 64)
    cfg = PostTrainConfig(steps=4, batch_size=8, lr=1e-3, dmd_ratio=1.0, dmd_lr=1e-3, ema_decay=0.5)
    whole = post_train(pipe, cfg, clips, labels, log_every=1)
    expected = pipe.transformer.state_dict()

    pipe = _tiny_pipe(reader=True)
    stop = lambda step: step == 2 and os.kill(os.getpid(), signal.SIGUSR1)  # noqa: E731
    first = post_train(pipe, cfg, clips, labels, log_every=1, callback=stop)
    assert first["stopped_by"] == "SIGUSR1" and first["steps"] == 2 and first["state"]["step"] == 2
    assert not all(torch.equal(pipe.transformer.state_dict()[k], expected[k]) for k in expected)
    state = first["state"]
    with pytest.raises(ValueError, match="other settings.*lr 0.001 -> 0.002"):
        check_resumable(state, PostTrainConfig(steps=4, batch_size=8, lr=2e-3, dmd_ratio=1.0, dmd_lr=1e-3,
                                               ema_decay=0.5))
    with pytest.raises(ValueError, match="has run 2 steps already"):
        check_resumable(state, PostTrainConfig(steps=2, batch_size=8, lr=1e-3, dmd_ratio=1.0, dmd_lr=1e-3,
                                               ema_decay=0.5))
    pipe = _tiny_pipe(reader=True)  # the source again: the frozen anchor and the fake field's start
    rest = post_train(pipe, cfg, clips, labels, log_every=1, resume=state)
    out = pipe.transformer.state_dict()
    assert rest["steps"] == 4 and rest["stopped_by"] is None and "state" not in rest
    assert all(torch.equal(out[k], expected[k]) for k in expected)
    assert rest["final"] == whole["final"]


def test_resume_refuses_another_source_and_a_stopped_run_without_its_state(tmp_path):
    """``--resume`` goes on only from a run of the same source with its saved state: a stopped folder of another
    source, or one an older release stopped (no state), is a one-line error; no run there starts one; a complete
    one has nothing to resume."""
    from mfvideo.cli.post_train import STATE, main, stopped_run

    out = tmp_path / "sharp"
    assert stopped_run(out, None) is None
    out.mkdir()
    (out / "model_index.json").write_text("{}")
    (out / "post_train.json").write_text(json.dumps({"stopped_by": None, "source": "bundled"}))
    assert stopped_run(out, None) == "complete"
    (out / "post_train.json").write_text(json.dumps({"stopped_by": "SIGTERM", "source": "runs/a"}))
    with pytest.raises(ValueError, match="a post-training of runs/a, not of bundled"):
        stopped_run(out, None)
    with pytest.raises(ValueError, match=f"without its {STATE}"):
        stopped_run(out, "runs/a")
    torch.save({"step": 3}, out / STATE)
    assert stopped_run(out, "runs/a") == {"step": 3}
    (out / "post_train.json").write_text(json.dumps({"stopped_by": None, "source": "bundled"}))
    assert main(["--out", str(out), "--resume"]) == 0  # complete: nothing run, nothing written
    assert json.loads((out / "post_train.json").read_text())["stopped_by"] is None
