"""The context reader: unlabelled rows with context read the class off it and take its embedding from the middle
block on; labelled rows and rows without context are untouched; fitting it changes nothing else."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import randomize, tiny_model
from mfvideo.models.embeddings import LabelEmbedder


POOLS = ["mean", "attention"]


def _pair(depth=4, pool="mean", **kw):
    """A model with a reader (pooling ``pool``) and the same model without one (shared weights), float64."""
    torch.manual_seed(0)
    base = randomize(tiny_model(depth=depth, **kw)).double()
    model = tiny_model(depth=depth, context_reader=True, reader_pool=pool, **kw).double()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("class_reader.") for k in missing) and missing
    randomize(model.class_reader, std=0.3, seed=2)
    return base, model


def _inputs():
    z = torch.randn(4, 3, 4, 8, 8, dtype=torch.float64)
    ctx = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    t = (1.0 - ctx.double()) * torch.tensor([1.0, 0.7, 0.6, 0.9], dtype=torch.float64)[:, None]
    return z, t, torch.zeros_like(t)


def _with_label_from(base, block, y):
    """Reference, independent of the model's own code: ``base`` run with the null label, the conditioning of every
    block from ``block`` on (and of the final layer) shifted by E_y - E_null (hooks on their inputs)."""
    table = base.y_embedder.embedding_table.weight
    delta = (table[y] - table[-1])[:, None, None]  # (B, 1, 1, D), against c (B, 1 | T, 1, D)

    def shift(_, args):
        x, c, *rest = args
        return (x, c + delta, *rest)

    hooks = [b.register_forward_pre_hook(shift) for b in base.blocks[block:]]
    hooks.append(base.final_layer.register_forward_pre_hook(shift))
    return hooks


@pytest.mark.parametrize("pool", POOLS)
def test_reader_leaves_labelled_rows_and_rows_without_context_unchanged(pool):
    base, model = _pair(pool=pool)
    z, t, r = _inputs()
    with torch.no_grad():
        y = torch.tensor([3, 1, -1, 7])  # labelled rows 0, 1, 3; row 2 has no context
        torch.testing.assert_close(model(z, t, r, y), base(z, t, r, y), rtol=0, atol=0)
        per_clip = torch.tensor([0.9, 0.5, 0.3, 1.0], dtype=torch.float64)  # one time per clip: no context at all
        null = torch.full((4,), -1)
        torch.testing.assert_close(model(z, per_clip, per_clip * 0, null), base(z, per_clip, per_clip * 0, null),
                                   rtol=0, atol=0)
        moved = (model(z, t, r, null) - base(z, t, r, null)).abs().flatten(1).amax(1)
        assert (moved[[0, 1, 3]] > 1e-6).all() and moved[2] == 0  # unlabelled rows with context read a class


@pytest.mark.parametrize("pool", POOLS)
def test_confident_reader_equals_the_label_given_from_the_middle_block_on(pool):
    base, model = _pair(depth=4, pool=pool)
    z, t, r = _inputs()
    y_read = torch.tensor([3, 1, 0, 7])
    head = model.class_reader.head[-1]
    with torch.no_grad():  # a reader that reads y_read with certainty: logits +-200 from its bias alone
        rows = []
        for i in range(4):  # per-row logits need a per-row input: make the head constant per row via the bias
            head.weight.zero_()
            head.bias.fill_(-200.0)
            head.bias[y_read[i]] = 200.0
            rows.append(model(z[i : i + 1], t[i : i + 1], r[i : i + 1], torch.tensor([-1]))[0])
        out = torch.stack(rows)
        hooks = _with_label_from(base, 2, y_read)
        try:
            ref = base(z, t, r, torch.full((4,), -1))
        finally:
            for h in hooks:
                h.remove()
        plain = base(z, t, r, torch.full((4,), -1))
    for i in (0, 1, 3):
        torch.testing.assert_close(out[i], ref[i], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[2], plain[2], rtol=1e-10, atol=1e-12)  # no context: nothing read (batch of 1 vs 4)
    assert (ref[0] - plain[0]).abs().max() > 1e-4  # the reference is not trivially the null model


@pytest.mark.parametrize("pool", POOLS)
def test_reader_is_soft_and_differentiable_and_its_jvp_matches_finite_differences(pool):
    from mfvideo.method import MeanFlow

    _, model = _pair(depth=2, pool=pool)
    z, t, r = _inputs()
    t, r = t * 0.8, t * 0.3
    y = torch.full((4,), -1)
    v = torch.randn_like(z) * (t != 0).double()[:, None, :, None, None]
    gen = (t != 0).double()
    _, u_tgt = MeanFlow().predict_and_target(model, z, t, r, v, dt_tangent=gen, y=y)
    eps = 1e-6
    with torch.no_grad():
        plus = model(z + eps * v, t + eps * gen, r, y)
        minus = model(z - eps * v, t - eps * gen, r, y)
    expected = v - (t - r)[:, None, :, None, None] * (plus - minus) / (2 * eps)
    torch.testing.assert_close(u_tgt, expected, rtol=1e-5, atol=1e-5)
    model.zero_grad()
    model(z, t, r, y).square().sum().backward()
    assert model.class_reader.head[0].weight.grad.abs().sum() > 0  # the loss reaches the reader
    if pool == "attention":
        assert model.class_reader.query.grad.abs().sum() > 0 and model.class_reader.key.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("pool", POOLS)
def test_a_held_reading_of_the_same_input_reproduces_the_forward_and_of_another_holds_it(pool):
    base, model = _pair(depth=4, pool=pool, context_summary=True)
    randomize(model.context_embedder, std=0.3, seed=3)
    z, t, r = _inputs()
    y = torch.tensor([-1, 2, -1, -1])
    with torch.no_grad():
        own = model.read_context(z, t, r, y)
        torch.testing.assert_close(model(z, t, r, y, reading=own), model(z, t, r, y), rtol=1e-12, atol=1e-12)
        other = torch.randn_like(z)
        other[:, :, :1] = z[:, :, :1]
        held = model(other, t, r, y, reading=own)
        assert (held - model(other, t, r, y))[[0, 1, 3]].abs().amax() > 1e-6  # the held reading is used
        # ... and is all the context frames feed beyond the temporal paths: shut those, and the new frames of
        # `other` with the held reading no longer depend on other's context frames
        for block in model.blocks:
            block.temporal.adaLN_modulation[-1].weight.zero_()
            block.temporal.adaLN_modulation[-1].bias.zero_()
        model.temporal_pos_gate.zero_()
        own = model.read_context(z, t, r, y)
        moved = other.clone()
        moved[:, :, 0] = torch.randn_like(moved[:, :, 0])
        a, b = model(other, t, r, y, reading=own), model(moved, t, r, y, reading=own)
        gen = t[:, None, :, None, None].expand_as(a) > 0
        gen[2] = False  # row 2 has no context: its frame 0 is a new frame, changed on purpose
        torch.testing.assert_close(a[gen], b[gen], rtol=1e-12, atol=1e-12)
        assert (model(moved, t, r, y) - model(other, t, r, y))[gen].abs().max() > 1e-6  # read afresh, they do


def test_attention_pooled_reader_reads_only_the_context_tokens_in_any_order_and_packed():
    """Attention pooling: the logits depend on the context frames' tokens only, not on their order, and equal an
    independent reference (each row's context tokens alone, softmax over them); ``reader_features``' packing (context
    tokens first, padding between batches) gives the same logits as the full token set."""
    from mfvideo.train.reader import _cat

    _, model = _pair(depth=2, pool="attention")
    reader = model.class_reader
    x = torch.randn(4, 4, 6, 32, dtype=torch.float64)  # (B, T, N, D) tokens at the middle block
    clean = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        logits, has = reader(x, clean)
        other = x.clone()
        other[~clean] = torch.randn_like(other[~clean])  # new frames changed: nothing read changes (rows with context)
        torch.testing.assert_close(reader(other, clean)[0][:3], logits[:3], rtol=0, atol=0)
        for b in range(3):  # the reference: this row's context tokens only
            tok = reader.norm(x[b][clean[b]]).reshape(-1, 32)  # (L_b, D)
            att = (reader.query @ reader.key(tok).T / 32**0.5).softmax(-1)  # (Q, L_b)
            ref = reader.head((att @ reader.value(tok)).reshape(-1))
            torch.testing.assert_close(logits[b], ref, rtol=1e-10, atol=1e-10)
            perm = torch.randperm(tok.shape[0])  # token order does not matter
            feats = (tok[perm][None], torch.ones(1, tok.shape[0], dtype=torch.bool))
            torch.testing.assert_close(reader.classify(*feats)[0], ref, rtol=1e-10, atol=1e-10)
        assert has.tolist() == [True, True, True, False] and torch.isfinite(logits[3]).all()
        # packed as the fit stores them: context tokens first, padded to a longer batch's length
        (tokens, keep), _ = reader.features(x, clean)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :12]
        packed = (tokens.gather(1, order[..., None].expand(-1, -1, 32)), keep.gather(1, order))
        longer = (torch.randn(2, 20, 32, dtype=torch.float64), torch.ones(2, 20, dtype=torch.bool))
        tok_all, keep_all = _cat([packed, longer])
        torch.testing.assert_close(reader.classify(tok_all[:3], keep_all[:3]), logits[:3], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="reader_pool"):
        tiny_model(context_reader=True, reader_pool="max")


def test_reader_needs_a_class_conditional_video_model():
    with pytest.raises(ValueError, match="class-conditional video model"):
        tiny_model(num_classes=0, context_reader=True)
    with pytest.raises(ValueError, match="class-conditional video model"):
        tiny_model(temporal=False, context_reader=True)
    model = tiny_model(context_reader=True)
    with pytest.raises(ValueError, match="per-frame times"):
        model.read_context(torch.randn(1, 3, 4, 8, 8), torch.tensor([0.5]), torch.tensor([0.5]))


def test_fitted_reader_reads_held_out_digits_and_changes_nothing_else():
    """On the bundled digits model: fitted on 3,000 training clips it reads the digit of held-out clips (other
    handwriting) far above chance, in the null-label extension setting too; only the reader's head changes."""
    from mfvideo.builders import build_model
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.train.reader import fit_context_reader, load_clips

    pipe = MFVideoPipeline.from_pretrained()
    cfg = pipe.cfg
    cfg.model.context_reader = True
    model = build_model(cfg.model).eval()
    model.load_state_dict(pipe.transformer.state_dict(), strict=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = load_clips(cfg.data, pipe.codec, "train", 3000)
    vx, vy = load_clips(cfg.data, pipe.codec, "test", 500)
    stats = fit_context_reader(model, x, y, dict(cfg.train.context_masks), cfg.train.max_context_frames, vx, vy,
                               steps=300, batch_size=256)
    assert stats["val_accuracy"] > 0.75, stats  # chance is 0.1
    model.train()
    with pytest.raises(ValueError, match=r"would take .* GiB .*--clips.*--pool mean"):  # before memory runs out
        fit_context_reader(model, x, y, dict(cfg.train.context_masks), cfg.train.max_context_frames, steps=1,
                           max_feature_gib=1e-3)
    assert model.training  # left as it was
    model.eval()
    after = model.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed and all(k.startswith("class_reader.") for k in changed)
    # The extension setting: 4 clean frames, 4 new ones at t = 1.
    t = torch.tensor([0.0] * 4 + [1.0] * 4).expand(vx.shape[0], 8)
    reading = model.read_context(torch.cat([vx[:, :, :4], torch.randn_like(vx[:, :, 4:])], 2), t, torch.zeros_like(t))
    assert reading.has_context.all() and (reading.class_probs.argmax(1) == vy).float().mean() > 0.8


def test_fit_reader_cli_writes_a_loadable_pipeline_and_refuses_unconditional_models(tmp_path):
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.train.reader import add_context_reader

    bundled = MFVideoPipeline.from_pretrained()
    other = {"mean": "attention", "attention": "mean"}[bundled.transformer.class_reader.pool]
    out = tmp_path / "with_reader"
    cmd = [sys.executable, "-m", "mfvideo.cli.fit_reader", "--out", str(out), "--clips", "300", "--val-clips", "100",
           "--steps", "20", "--pool", other]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "held-out" in res.stdout and (out / "context_reader.json").is_file()
    pipe = MFVideoPipeline.from_pretrained(out)  # the bundled reader replaced by one of the other pooling
    assert pipe.cfg.model.context_reader and pipe.transformer.class_reader.pool == other == pipe.cfg.model.reader_pool
    # the generator is the bundled one: every other weight is the same, a labelled clip too (up to a rounding of
    # the last bit: a batch of one runs oneDNN kernels that depend on where the weights lie in memory)
    mine, theirs = pipe.transformer.state_dict(), bundled.transformer.state_dict()
    shared = [k for k in theirs if not k.startswith("class_reader.")]
    assert shared == [k for k in mine if not k.startswith("class_reader.")]
    assert all(torch.equal(mine[k], theirs[k]) for k in shared)
    a = pipe.generate(class_labels=[3], seed=0, output_type="pt").frames
    b = bundled.generate(class_labels=[3], seed=0, output_type="pt").frames
    torch.testing.assert_close(a, b, rtol=0, atol=1 / 255 + 1e-6)
    # a user mistake: one line, exit 2
    res = subprocess.run([sys.executable, "-m", "mfvideo.cli.fit_reader", str(out), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "source folder itself" in res.stderr and "Traceback" not in res.stderr
    bundled.cfg.model.num_classes = 0
    with pytest.raises(ValueError, match="class-conditional video model"):
        add_context_reader(bundled, 10, 0)


def test_extend_holds_the_reading_of_the_given_video_for_every_window():
    """The bundled model reads the class off the given frames once and holds it over later windows (whose context
    is its own frames); ``reread_context`` reads each window. The first window is the same either way."""
    from mfvideo.eval.digits import real_clips
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    d = pipe.cfg.data
    clips, labels = real_clips(20, "test", 4, d.resolution, d.digit_size, d.speed, seed=d.seed + 4)
    calls = {"reader": 0, "summary": 0}
    net = pipe.transformer
    hooks = [net.class_reader.register_forward_hook(lambda *a: calls.__setitem__("reader", calls["reader"] + 1)),
             net.context_embedder.register_forward_hook(lambda *a: calls.__setitem__("summary", calls["summary"] + 1))]
    try:
        held = pipe.extend(clips, num_new_frames=12, context_frames=4, seed=0, output_type="uint8")
        n_held = dict(calls)
        calls.update(reader=0, summary=0)
        reread = pipe.extend(clips, num_new_frames=12, context_frames=4, seed=0, output_type="uint8",
                             reread_context=True)
        n_reread = dict(calls)
    finally:
        for h in hooks:
            h.remove()
    # one reading in all vs the reported one + one per window (3 windows), for the class and the summary alike
    assert n_held == {"reader": 1, "summary": 1} and n_reread == {"reader": 1 + 3, "summary": 1 + 3}
    np.testing.assert_array_equal(held.frames[:, :8], reread.frames[:, :8])  # the first window: the same reading
    assert (held.frames[:, 8:] != reread.frames[:, 8:]).any()
    assert reread.class_labels is not None and (held.class_labels == reread.class_labels).all()
    assert (held.class_labels == labels).mean() >= 0.8  # the read digits (chance 0.1)
    labelled = pipe.extend(clips[:2], num_new_frames=4, context_frames=4, seed=0, class_labels=[1, -1])
    assert labelled.class_labels[0] == -1 and labelled.class_labels[1] >= 0  # only the unlabelled row is read


@pytest.mark.parametrize("rho", [0.0, 0.7])
def test_reader_features_noise_the_new_frames_with_the_models_prior(rho):
    from mfvideo.train.reader import reader_features

    class Recorder:
        def context_features(self, z, t, r):
            self.z, self.t = z, t
            return (z.flatten(1),), None

    rec = Recorder()
    x = torch.zeros(4000, 1, 4, 2, 2)  # z / t is the noise on the new frames
    reader_features(rec, x, {"last": 1.0}, 1, torch.Generator().manual_seed(0), frame_correlation=rho)
    assert bool((rec.t[:, :3] > 0).all()) and bool((rec.t[:, 3] == 0).all())  # frames 0-2 new, frame 3 given
    e = rec.z[:, :, :3] / rec.t[:, None, :3, None, None]  # (B, C, 3, H, W)
    cov = torch.cov(e.transpose(0, 2).reshape(3, -1))
    assert torch.allclose(cov.diagonal(), torch.ones(3), atol=0.05)
    assert torch.allclose(cov[0, 1:], torch.full((2,), rho), atol=0.05)


def test_generate_holds_what_it_read_off_its_first_window():
    """Past the first window a generated clip continues its own frames: the reading of the first window's last frames
    holds for every later window (one reading in all), ``reread_context`` reads each window's; the first window and
    the first continuation window are the same either way. Holding is what keeps long clips bright and on class
    (docs/bundled_model.md, "Clips generated past the window")."""
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    calls = {"summary": 0}
    hook = pipe.transformer.context_embedder.register_forward_hook(
        lambda *a: calls.__setitem__("summary", calls["summary"] + 1))
    try:
        kw = dict(num_frames=20, class_labels=[-1, -1], seed=0, output_type="uint8")  # (a label would enter through
        # the held reading only: test_a_given_label_enters_through_the_reader)
        held = pipe.generate(**kw).frames
        n_held = calls["summary"]
        calls["summary"] = 0
        reread = pipe.generate(**kw, reread_context=True).frames
        n_reread = calls["summary"]
        calls["summary"] = 0
        pipe.generate(**kw, context_noise=0.3)  # own frames noised as context: still read once, off them clean
        n_noised = calls["summary"]
    finally:
        hook.remove()
    assert n_held == 1 and n_reread == 1 + 3 and n_noised == 1  # 8 frames, then 3 windows of 4 new frames
    np.testing.assert_array_equal(held[:, :12], reread[:, :12])  # the first window and the first continuation
    assert (held[:, 12:] != reread[:, 12:]).any()


def test_a_given_label_enters_through_the_reader():
    """On a model with a class reader, labelled rows of a window with given frames run with the null label and the
    given class as the reader's (held) reading: the frames equal those of the unlabelled extension whose reading is
    replaced by the one-hot class; rows without a label keep what the reader read; ``reread_context=True`` (no held
    reading) keeps the labelled (guided) path; an interpolation's label takes the same route."""
    import dataclasses

    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    video = np.asarray(pipe.generate(class_labels=[3, 7, 1], seed=1, output_type="uint8").frames)[:, :4]
    kw = dict(context_frames=4, seed=0, output_type="uint8", include_input=False)
    labelled = pipe.extend(video, 8, class_labels=[3, -1, 1], **kw)
    assert labelled.class_labels[0] == -1 and labelled.class_labels[2] == -1 and labelled.class_labels[1] >= 0
    original = pipe._read_given

    def forced(noise, y, context, mask):
        reading, read = original(noise, y, context, mask)
        probs = reading.class_probs.clone()
        probs[0], probs[2] = torch.eye(10)[3], torch.eye(10)[1]
        return dataclasses.replace(reading, class_probs=probs), read

    pipe._read_given = forced
    try:
        by_hand = pipe.extend(video, 8, **kw)
    finally:
        pipe._read_given = original
    np.testing.assert_array_equal(labelled.frames, by_hand.frames)
    guided = pipe.extend(video, 8, class_labels=[3, -1, 1], reread_context=True, **kw)
    assert (guided.frames[[0, 2]] != labelled.frames[[0, 2]]).any()
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("y", a[3] if len(a) > 3 else None)),
                                                      with_kwargs=True)
    try:
        pipe.condition(video[:, [0, 3]], [0, 7], num_frames=8, class_labels=[3, 7, 1], seed=0)
    finally:
        hook.remove()
    assert all(y is not None and bool((y == -1).all()) for y in seen)



def test_a_folder_s_clips_are_sampled_across_its_classes_and_held_out_only_from_a_test_split(tmp_path, caplog):
    """A video folder lists its files class by class: ``load_clips`` reads at most n in a fixed shuffled order (the
    first n were the first classes' alone; more than the split holds was an error, so the default 60000 failed on any
    smaller dataset), and ``add_context_reader`` scores held-out clips only where the data has a test split apart
    from its training clips (a folder of class folders read its training clips as "test", and called them held out)."""
    from mfvideo.builders import build_model
    from mfvideo.config import load_config
    from mfvideo.data import has_split
    from mfvideo.io import save_video
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.train.reader import add_context_reader, load_clips

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b", "c"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                clip = (rng.random((4, 16, 16, 3)) * 255).astype(np.uint8)
                save_video(clip, tmp_path / split / c / f"{i}.mp4", fps=8)

    def pipeline(root):
        cfg = load_config(None, ["model.size=null", "model.hidden_size=32", "model.depth=2", "model.num_heads=2",
                                 "model.patch_size=4", "model.num_classes=3", "model.in_channels=3",
                                 "data.kind=video_folder", f"data.root={root}", "data.resolution=16",
                                 "data.num_frames=4", "train.context_masks={none: 1.0, first: 1.0}"])
        torch.manual_seed(0)
        return MFVideoPipeline(build_model(cfg.model), training_config=cfg)

    alone, split = pipeline(tmp_path / "train"), pipeline(tmp_path)
    assert not has_split(alone.cfg.data, "test") and has_split(split.cfg.data, "test")
    x, y = load_clips(alone.cfg.data, alone.codec, "train", 6)
    assert x.shape[0] == 6 and len(set(y.tolist())) > 1  # not the first class's six
    with caplog.at_level("WARNING"):
        x, y = load_clips(alone.cfg.data, alone.codec, "train", 100)
    assert x.shape[0] == 18 and sorted(y.tolist()) == [0] * 6 + [1] * 6 + [2] * 6  # the whole split, each clip once
    assert "the train split has 18 clips: taking 18, not 100" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        stats = add_context_reader(alone, 60000, 3000, steps=2, batch_size=8)
    assert "val_accuracy" not in stats and "no held-out score" in caplog.text
    stats = add_context_reader(split, 60000, 3000, steps=2, batch_size=8)
    assert 0 <= stats["val_accuracy"] <= 1
    split.cfg.train.context_masks = {"none": 1.0}  # a model trained on no context: said before any clip is read
    with pytest.raises(ValueError, match="trained without context frames"):
        add_context_reader(split, 60000, 3000, steps=2, batch_size=8)
