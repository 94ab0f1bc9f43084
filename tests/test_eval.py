import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import rank_teardown_env
from mfvideo.eval.frechet import cached_stats, feature_stats, frechet_distance, frechet_distance_features
from mfvideo.eval.networks import FeatureNetwork


def test_frechet_matches_scipy_and_known_answers():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8)) + 1.5
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    # closed forms: identical sets give 0; N(0, I) vs N(m, 4 I) in d dims gives |m|^2 + d (1 + 4 - 2 * 2)
    assert abs(frechet_distance_features(a, a)) < 1e-8
    assert frechet_distance(np.zeros(8), np.eye(8), np.full(8, 2.0), 4 * np.eye(8)) == pytest.approx(32 + 8)


def test_stats_cache(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.random.default_rng(0).normal(size=(50, 4))

    mu, s = cached_stats("protocol-a", tmp_path, compute)
    mu2, s2 = cached_stats("protocol-a", tmp_path, compute)
    assert len(calls) == 1 and np.array_equal(mu, mu2) and np.array_equal(s, s2)
    cached_stats("protocol-b", tmp_path, compute)
    assert len(calls) == 2


class TinyInception(torch.nn.Module):
    """Same call interface as the clean-fid Inception TorchScript: floats in [0, 255], return_features flag."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 16)

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 4).flatten(1)
        f = self.proj(x)
        return f if return_features else f.softmax(-1)


class TinyI3D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 2 * 4 * 4, 12)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True) -> torch.Tensor:
        assert x.shape[-1] == 224 and x.min() >= -1 and x.max() <= 1
        return self.proj(torch.nn.functional.adaptive_avg_pool3d(x, (2, 4, 4)).flatten(1))


@pytest.mark.parametrize("kind, module, per", [("inception", TinyInception, "frame"), ("i3d", TinyI3D, "clip")])
def test_torchscript_metric_networks_load_and_batch(tmp_path, kind, module, per):
    torch.manual_seed(0)
    path = tmp_path / f"{kind}.pt"
    torch.jit.script(module()).save(str(path))
    net = FeatureNetwork(str(path), kind, batch_size=3)
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 255, (7, 4, 32, 32, 3), dtype=np.uint8)
    feats = net.features(clips)
    assert feats.shape[0] == (7 * 4 if per == "frame" else 7)
    # batching does not change features
    single = FeatureNetwork(str(path), kind, batch_size=100).features(clips)
    np.testing.assert_allclose(feats, single, rtol=1e-5, atol=1e-6)
    other = rng.integers(0, 60, (7, 4, 32, 32, 3), dtype=np.uint8)  # darker clips: a real distance
    assert frechet_distance_features(feats, feats) < 1e-6 < frechet_distance_features(feats, net.features(other))
    with pytest.raises(FileNotFoundError, match="not found"):
        FeatureNetwork(str(tmp_path / "missing.pt"), kind)
    torch.save(module().state_dict(), tmp_path / "weights.pt")  # a state dict, not the scripted network
    with pytest.raises(ValueError, match=r"weights.pt: not a TorchScript file \(.+\)$"):
        FeatureNetwork(str(tmp_path / "weights.pt"), kind)


def test_evaluate_script_end_to_end_and_resumable(tmp_path):
    """FVD through the real script: the bundled model's checkpoint, a scripted network of I3D's interface."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    net = tmp_path / "i3d.pt"
    torch.jit.script(TinyI3D()).save(str(net))
    cmd = [sys.executable, "scripts/evaluate.py", "--network", str(net), "--kind", "i3d", "--num-clips", "12",
           "--num-frames", "8", "--batch-size", "4", "--work", str(tmp_path / "work"), "--cache", str(tmp_path / "stats"),
           "--out", str(tmp_path / "fvd.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]

    first = json.loads((tmp_path / "fvd.json").read_text())
    assert first["num_generated"] == 12 and first["FVD"] > 0
    files = sorted((tmp_path / "work").rglob("features_*.npy"))
    assert len(files) == 3 and len(list((tmp_path / "stats").glob("*.npz"))) == 1
    mtimes = [f.stat().st_mtime_ns for f in files]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)  # resumed: nothing recomputed
    assert proc.returncode == 0 and [f.stat().st_mtime_ns for f in files] == mtimes
    assert json.loads((tmp_path / "fvd.json").read_text())["FVD"] == pytest.approx(first["FVD"])
    # other frames into the same --work: features of their own, never the 8-frame clips' taken as theirs
    proc = subprocess.run([*cmd[:8], "--num-frames", "4", *cmd[10:]], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(len(list(d.glob("features_*.npy"))) for d in (tmp_path / "work").iterdir()) == [3, 3]
    assert json.loads((tmp_path / "fvd.json").read_text())["protocol"]["frames"] == 4
    # video prediction: the held-out clips' first 4 frames continued to 8, scored against the same clips whole
    proc = subprocess.run([*cmd, "--context-frames", "4"], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scored = json.loads((tmp_path / "fvd.json").read_text())
    assert scored["FVD of extensions from 4 frames"] > 0 and scored["protocol"]["context_frames"] == 4
    assert len(list((tmp_path / "work").iterdir())) == 3 and len(list((tmp_path / "stats").glob("*.npz"))) == 2
    # 2 processes (torchrun, as the docstring says): each samples its share, the main one scores; the same FVD. The
    # ranks end without the interpreter's teardown (its gloo threads can abort a finished rank: train/dist.py)
    env = rank_teardown_env(tmp_path)
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29300 + os.getpid() % 200), *cmd[1:]]
    two[two.index(str(tmp_path / "work"))] = str(tmp_path / "work2")
    proc = subprocess.run(two, capture_output=True, text=True, cwd=root, env=env)
    assert proc.returncode == 0 and "interpreter teardown" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.count("FVD8 = ") == 1  # one process speaks
    assert json.loads((tmp_path / "fvd.json").read_text())["FVD"] == pytest.approx(first["FVD"], rel=1e-5)


def test_extension_features_continue_the_real_clips_they_are_given(tmp_path):
    """sample_features with contexts: batch b's clips begin with its real clips' first K frames, as given, and go on
    with frames of the model's own (the bundled model, no label: it reads the digit)."""
    from mfvideo.eval.real import RealClips
    from mfvideo.eval.sampling import sample_features
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    real = RealClips(pipe.cfg.data, "test", 8, 6, batch_size=3)
    assert len(real) == 2 and real.batch(1).shape == (3, 8, 16, 16, 3)
    raw = sample_features(pipe, lambda clips: clips.reshape(len(clips), -1).astype(np.float64), tmp_path, 6,
                          num_frames=8, batch_size=3, context=real.batch, context_frames=3, progress=False)
    made = raw.reshape(6, 8, 16, 16, 3)
    truth = np.concatenate(list(real))  # (6, 8, 16, 16, 3)
    assert np.array_equal(made[:, :3], truth[:, :3])  # the given frames, as given
    assert not np.array_equal(made[:, 3:], truth[:, 3:]) and made[:, 3:].std() > 10  # made, not copied from the truth


def test_reference_statistics_and_the_default_real_split(tmp_path):
    from mfvideo.config import DataConfig
    from mfvideo.eval.real import load_stats, pixel_source, real_split

    np.savez(tmp_path / "ref.npz", mu=np.arange(3.0), sigma=np.eye(3))  # ADM's reference batches hold mu and sigma
    mu, sigma = load_stats(tmp_path / "ref.npz")
    assert mu.tolist() == [0, 1, 2] and sigma.dtype == np.float64
    np.savez(tmp_path / "other.npz", arr_0=np.zeros((2, 3)))
    np.savez(tmp_path / "bent.npz", mu=np.zeros(3), sigma=np.eye(4))
    np.save(tmp_path / "code.npy", np.array([object()], dtype=object))
    np.save(tmp_path / "mu.npy", np.zeros(3))
    for name, said in (("mu.npy", "one array, not an .npz"), ("other.npz", "holds arr_0, not mu and sigma"), ("bent.npz", "are not"),
                       ("code.npy", "not a readable .npz"), ("missing.npz", "not a readable .npz")):
        with pytest.raises(ValueError, match=said):
            load_stats(tmp_path / name)
    for split in ("train", "val"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
    folder = DataConfig(kind="image_folder", root=str(tmp_path / "imgs"))
    assert real_split(folder, None) == "val" and real_split(folder, "train") == "train"
    assert real_split(DataConfig(kind="moving_digits"), None) == "test"
    assert real_split(DataConfig(kind="image_folder", root=str(tmp_path / "imgs" / "train")), None) == "train"
    assert pixel_source(folder) is folder
    with pytest.raises(FileNotFoundError, match="does not say what it was encoded from"):
        pixel_source(DataConfig(kind="latent_cache", root=str(tmp_path)))
    (tmp_path / "settings.json").write_text('{"num_items": 3}')  # a cache's settings without its data
    with pytest.raises(FileNotFoundError, match="does not say what it was encoded from"):
        pixel_source(DataConfig(kind="latent_cache", root=str(tmp_path)))
    (tmp_path / "settings.json").write_text(json.dumps({"data": {"kind": "image_folder", "root": str(tmp_path / "x"),
                                                                 "resolution": 8, "num_frames": 1}}))
    with pytest.raises(FileNotFoundError, match="was encoded from .*x, which is not there"):
        pixel_source(DataConfig(kind="latent_cache", root=str(tmp_path)))
    (tmp_path / "x").mkdir()
    source = pixel_source(DataConfig(kind="latent_cache", root=str(tmp_path)))
    assert (source.kind, source.resolution, source.num_frames) == ("image_folder", 8, 1)


def test_digit_suite_ranks_real_then_bundled_then_untrained():
    from mfvideo.eval.digits import DigitSuite, heldout_accuracy
    from mfvideo.eval.report import evaluate_pipeline, evaluate_real
    from mfvideo.pipeline import MFVideoPipeline

    suite = DigitSuite.load()
    assert heldout_accuracy(suite.classifier, n=500) > 0.9  # the shipped classifier reads held-out handwriting
    bundled = MFVideoPipeline.from_pretrained()
    real = evaluate_real(suite, bundled.cfg.data, n=80)
    trained = evaluate_pipeline(bundled, suite, n=80)
    untrained = MFVideoPipeline.from_pretrained()
    torch.manual_seed(0)
    for p in untrained.model.parameters():
        p.data.normal_(0, 0.02)
    noise = evaluate_pipeline(untrained, suite, n=80)
    # At n = 80 the FD of real clips is itself sampling noise (~140): a trained model lands near it, noise far away.
    assert trained["fd"] < 1.5 * real["fd"] < 0.05 * noise["fd"], (real["fd"], trained["fd"], noise["fd"])
    # Guided one-step digits can be read more reliably than real handwriting: accuracy is bounded, not ranked.
    assert trained["class_accuracy"] > 0.85 > 0.3 > noise["class_accuracy"], (trained, noise)
    # sharpness against real clips: real ~1, the bundled 1-NFE frames softer (~0.92; 0.77 before post-training), an
    # untrained network's smooth fields nothing like a glyph (~0.16)
    assert abs(real["sharpness"] - 1) < 0.1 and 0.6 < trained["sharpness"] < 0.97, (real, trained)
    assert not 0.5 < noise["sharpness"] < 2, noise


class _Oracle:
    """A 'pipeline' whose extensions and interpolations are the true held-out clips: the context metrics' ceiling."""

    def __init__(self, cfg):
        self.cfg, self.window = cfg, cfg.data.num_frames

    def _truth(self, n, frames):
        from mfvideo.eval.digits import real_clips

        d = self.cfg.data
        return real_clips(n, "test", frames, d.resolution, d.digit_size, d.speed, seed=d.seed + 4)[0]

    def extend(self, context, num_new_frames, **kw):
        return SimpleNamespace(frames=self._truth(len(context), context.shape[1] + num_new_frames))

    def condition(self, given, idx, num_frames, **kw):
        return SimpleNamespace(frames=self._truth(len(given), num_frames))

    def resolve_context_noise(self, level):
        return 0.0


def test_context_metrics_read_true_continuations_as_right_and_noise_as_wrong():
    from mfvideo.eval.digits import DigitSuite
    from mfvideo.eval.report import evaluate_context
    from mfvideo.pipeline import MFVideoPipeline

    suite = DigitSuite.load()
    cfg = MFVideoPipeline.from_pretrained().cfg
    truth = evaluate_context(_Oracle(cfg), suite, n=60, long_frames=16)
    assert min(truth["extension_accuracy_by_distance"]) > 0.85 and truth["interpolation_midpoint_accuracy"] > 0.85
    assert truth["long_identity_kept_last_window"] > 0.85 and truth["extension_identity_kept"] > 0.9
    assert abs(truth["long_seam_flicker"] - 1) < 0.25  # a real clip has no seams
    assert all(abs(b - 1) < 0.15 for b in truth["long_window_brightness"])
    assert truth["extension_glyph_match"] > 0.99 and min(truth["long_window_glyph_match"]) > 0.99
    assert truth["interpolation_midpoint_glyph_match"] > 0.99
    assert abs(truth["extension_sharpness"] - 1) < 0.05
    assert len(truth["extension_sharpness_by_distance"]) == len(truth["extension_glyph_match_by_distance"])
    untrained = MFVideoPipeline.from_pretrained()
    torch.manual_seed(0)
    for p in untrained.model.parameters():
        p.data.normal_(0, 0.02)
    noise = evaluate_context(untrained, suite, n=60, long_frames=16)
    assert noise["extension_identity_kept"] < 0.4 and noise["interpolation_midpoint_accuracy"] < 0.4
    assert noise["extension_glyph_match"] < 0.8 and max(noise["long_window_glyph_match"]) < 0.8


def test_unlabelled_extension_keeps_the_digit_with_the_reader_and_loses_it_without():
    """The bundled model keeps the digit of unlabelled context as often as with the true label through its context
    reader, and its new frames show it far less often with the reader taken out (per-frame accuracy ~0.95 against
    ~0.77 on 60 clips; the clip's majority digit, 0.97 against 0.87 since the session-34 weights, which hold the
    context's digit better without a reader than the earlier ones); the diffusion classifier (``infer_label``) reads
    the digit too, and conditioned on that reading the extensions keep it nearly as often as with the true label."""
    from mfvideo.eval.digits import DigitSuite
    from mfvideo.eval.report import evaluate_context, evaluate_read_label
    from mfvideo.pipeline import MFVideoPipeline

    suite, pipe = DigitSuite.load(), MFVideoPipeline.from_pretrained()
    read = evaluate_read_label(pipe, suite, n=60, long_frames=8)
    null = evaluate_context(pipe, suite, n=60, long_frames=8)
    reader, pipe.transformer.class_reader = pipe.transformer.class_reader, None
    without = evaluate_context(pipe, suite, n=60, long_frames=8)
    pipe.transformer.class_reader = reader
    true = read["true_label_extension_identity_kept"]
    assert read["read_label_accuracy"] > 0.8, read
    assert read["read_label_extension_identity_kept"] > true - 0.15, read
    assert null["extension_identity_kept"] > true - 0.05, (null, true)
    assert null["extension_identity_kept"] > without["extension_identity_kept"] + 0.05, (null, without)
    per_frame = {k: np.mean(r["extension_accuracy_by_distance"]) for k, r in (("null", null), ("without", without))}
    assert per_frame["null"] > per_frame["without"] + 0.1, per_frame
    assert null["interpolation_midpoint_accuracy"] > without["interpolation_midpoint_accuracy"] + 0.1, (null, without)


def test_speckle_counts_isolated_ink_and_not_strokes():
    from mfvideo.eval.digits import real_clips, speckle

    clips, _ = real_clips(20, "test", 4)
    assert speckle(clips) == 0.0  # strokes are connected ink
    dotted = clips.copy()
    dotted[:, :, 0, 0] = 255  # one isolated dot in a corner of every frame
    dotted[:, :, 15, 8] = 200  # and one on the bottom edge
    dotted[:, :, 15, 9] = 200  # ... with a neighbour: a 2-pixel blob is not isolated
    assert speckle(dotted) == 1.0
    dim = clips.copy()
    dim[:, :, 0, 0] = 40  # below the ink level
    assert speckle(dim) == 0.0


def test_peak_ink_reads_real_clips_as_bright_and_a_faded_glyph_as_faint():
    """Every real clip's brightest strokes lie above ``FAINT``; the same clips with their ink at half strength (a
    faint ghost) below it, and ``clip_metrics`` counts them."""
    from mfvideo.eval.digits import FAINT, DigitSuite, peak_ink, real_clips

    clips, labels = real_clips(100, "test", 8, seed=3)
    peak = peak_ink(clips)
    assert peak.shape == (100,) and peak.min() > 0.77 and 0.9 < peak.mean() <= 1.0
    faded = (clips // 2).astype(np.uint8)
    np.testing.assert_allclose(peak_ink(faded), peak / 2, atol=1 / 255)
    assert (peak_ink(faded) < FAINT).all()
    mixed = np.concatenate([clips[:75], faded[75:]])
    assert DigitSuite.load().clip_metrics(mixed)["faint"] == 0.25


def test_glyph_match_scores_the_same_handwriting_moved_as_one_and_others_lower():
    from mfvideo.eval.digits import glyph_match, real_clips

    clips, labels = real_clips(200, "test", 12)
    same = glyph_match(clips[:, 3], clips[:, 4:])  # the true continuation: the glyph translated
    assert same.shape == (200, 8) and np.allclose(same, 1.0, atol=1e-6)
    # the same class by another writer, another class, a blur: each a step further from 1
    other = np.stack([clips[next(j for j in range(200) if j != i and labels[j] == labels[i]), 4:] for i in range(50)])
    wrong = np.stack([clips[next(j for j in range(200) if labels[j] != labels[i]), 4:] for i in range(50)])
    assert 0.7 < glyph_match(clips[:50, 3], other).mean() < 0.95
    assert glyph_match(clips[:50, 3], wrong).mean() < glyph_match(clips[:50, 3], other).mean() - 0.08
    blurred = clips.astype(np.float32)
    blurred[:, :, 1:-1] = (blurred[:, :, :-2] + blurred[:, :, 1:-1] + blurred[:, :, 2:]) / 3  # vertical box blur
    assert glyph_match(clips[:, 3], blurred[:, 4:].astype(np.uint8)).mean() < 0.97
    # a clip whose frames each come from another writer of the same digit keeps its class but not one hand
    from mfvideo.eval.digits import glyph_consistency

    assert glyph_consistency(clips) > 0.999
    mixed = clips[:50, :5].copy()
    mixed[:, 1:] = other[:, :4]
    assert 0.7 < glyph_consistency(mixed) < 0.95
    # a shift larger than max_shift is not searched: a far-moved glyph is no longer matched
    moved = np.zeros_like(clips[:, :1])
    moved[:, 0, 8:] = clips[:, 3, :8]
    assert glyph_match(clips[:, 3], moved, max_shift=0).mean() < glyph_match(clips[:, 3], moved).mean()


def test_sharpness_is_one_for_sharp_glyphs_whoever_wrote_them_and_falls_with_blur():
    """sharpness tells blur from handwriting, which glyph_match cannot: the true next frames and another writer's
    digit score ~1, a blur of the true frames well below, falling with its width, and more than glyph_match does."""
    from mfvideo.eval.digits import glyph_match, real_clips, sharpness

    clips, labels = real_clips(100, "test", 8)
    true = sharpness(clips[:, 3], clips[:, 4:])
    assert true.shape == (100, 4) and abs(true.mean() - 1) < 0.03
    other = np.stack([clips[next(j for j in range(100) if j != i and labels[j] == labels[i]), 4:] for i in range(50)])
    assert abs(sharpness(clips[:50, 3], other).mean() - 1) < 0.1

    def blur(frames: np.ndarray, passes: int) -> np.ndarray:  # a 3 x 3 box blur, repeated
        x = frames.astype(np.float32)
        for _ in range(passes):
            pad = np.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)], mode="edge")
            x = sum(pad[..., dy:dy + x.shape[-3], dx:dx + x.shape[-2], :] for dy in range(3) for dx in range(3)) / 9
        return x.round().astype(np.uint8)

    once, twice = sharpness(clips[:, 3], blur(clips[:, 4:], 1)).mean(), sharpness(clips[:, 3], blur(clips[:, 4:], 2)).mean()
    assert twice < once < 0.6
    # glyph match rates the blurred true glyph above another writer's sharp one; sharpness puts it far below
    assert glyph_match(clips[:50, 3], blur(clips[:50, 4:], 1)).mean() > glyph_match(clips[:50, 3], other).mean()
    assert sharpness(clips[:50, 3], blur(clips[:50, 4:], 1)).mean() < sharpness(clips[:50, 3], other).mean() - 0.4
