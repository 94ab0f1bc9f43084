import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from conftest import randomize
from mfvideo.builders import build_model
from mfvideo.config import ConfigError, load_config
from mfvideo.data.video_io import VideoError, probe, read_video
from mfvideo.io import save_image, save_video
from mfvideo.method import euler_sample, meanflow_sample
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.train.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random model saved as a checkpoint folder: 4-frame window, 16x16, 1 channel, 10 classes."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    cfg.model.in_channels, cfg.model.num_classes = 1, 10
    torch.manual_seed(0)
    model = randomize(build_model(cfg.model), std=0.05)
    path = tmp_path_factory.mktemp("ckpt")
    MFVideoPipeline(model, training_config=cfg).save_pretrained(path)
    return path


class CallCounter:
    def __init__(self, model):
        self.model, self.calls, self.frames = model, 0, []

    def __call__(self, z, t, r, y=None):
        self.calls += 1
        self.frames.append(z.shape[2])
        return self.model(z, t, r, y)


def test_generate_shapes_seeds_and_sliding(ckpt):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    out = pipe.generate(class_labels=[0, 3, 7], seed=1, output_type="uint8")
    assert out.frames.shape == (3, 4, 16, 16, 3) and out.frames.dtype == np.uint8
    again = pipe.generate(class_labels=[0, 3, 7], seed=1, output_type="uint8")
    assert np.array_equal(out.frames, again.frames)
    assert not np.array_equal(out.frames, pipe.generate(class_labels=[0, 3, 7], seed=2).frames)
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    long = pipe.generate(num_frames=9, num_clips=2, seed=1)  # 4 frames, then windows of 2 context + 2 new
    assert long.frames.shape == (2, 9, 16, 16, 3)
    assert counter.calls == 4 and max(counter.frames) == 4  # 1 + ceil(5 / 2) calls, never more than a window


def test_fewer_frames_than_the_window_are_the_start_of_a_full_window(ckpt):
    """A video model always draws its trained window from noise and cuts it: one frame, or a short clip, is the start
    of the full window of the same seed, drawn by one call of the full window's length (drawn alone, from shorter
    noise than it was trained on, the bundled model's single frames read right 0.87 of the time, cut 0.94)."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    full = pipe.generate(class_labels=[0, 3], seed=1, output_type="uint8").frames  # (2, 4, 16, 16, 3)
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    for n in (1, 3):
        short = pipe.generate(num_frames=n, class_labels=[0, 3], seed=1, output_type="uint8").frames
        assert short.shape == (2, n, 16, 16, 3) and np.array_equal(short, full[:, :n])
    assert counter.frames == [4, 4]
    keys = np.stack([np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)])
    whole = pipe.condition(keys, frame_indices=[0, 2], seed=0, output_type="uint8").frames
    counter.frames = []
    cut = pipe.condition(keys, frame_indices=[0, 2], num_frames=3, seed=0, output_type="uint8").frames
    assert cut.shape == (1, 3, 16, 16, 3) and np.array_equal(cut, whole[:, :3]) and counter.frames == [4]


def test_first_window_steps_changes_the_first_window_alone(ckpt):
    """``first_window_steps=2``: the first window is the 2-step window of the same noise, the later windows one call
    each (7 calls for 9 frames: 2 + 3 + 2 more if the first were 2-step throughout, 2 + 3 here) and continue it
    as they would continue it in a 1-step clip."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    two = pipe.generate(class_labels=[0, 3], seed=1, steps=2, output_type="uint8").frames
    one = pipe.generate(class_labels=[0, 3], seed=1, output_type="uint8").frames
    assert not np.array_equal(one, two)
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    mixed = pipe.generate(num_frames=9, class_labels=[0, 3], seed=1, first_window_steps=2, output_type="uint8")
    assert counter.calls == 2 + 3
    np.testing.assert_array_equal(mixed.frames[:, :4], two)
    pipe.transformer = pipe.model
    g = torch.Generator().manual_seed(1)
    pipe.method.noise((2, *pipe._latent_shape(pipe.window)), generator=g)  # the first window's noise
    first = pipe.generate(class_labels=[0, 3], seed=1, steps=2).frames  # float frames: no rounding in between
    rest = pipe.extend(first, num_new_frames=5, class_labels=[0, 3], generator=g, context_frames=2,
                       output_type="uint8")  # the same windows, continued as an extension of those frames
    assert np.abs(mixed.frames.astype(int) - rest.frames.astype(int)).max() <= 1
    assert np.array_equal(pipe.generate(num_frames=9, class_labels=[0, 3], seed=1, first_window_steps=1).frames,
                          pipe.generate(num_frames=9, class_labels=[0, 3], seed=1).frames)
    with pytest.raises(ValueError, match="first_window_steps is for clips generated from noise"):
        pipe(video=two[0], first_window_steps=2)


class NoiseRecorder(CallCounter):
    """The network's input at the frames it starts from noise (t = 1) and at the other frames (the context), for every
    call that starts from noise (a window's later calls are left out)."""

    def __init__(self, model):
        super().__init__(model)
        self.noise, self.context = [], []

    def __call__(self, z, t, r, y=None):
        new = (t == 1) if t.ndim == 2 else (t == 1)[:, None].expand(-1, z.shape[2])  # (B, T): per-frame times or not
        new = new[0]
        if bool(new.any()):
            self.noise.append(z[:, :, new].clone())
            if not bool(new.all()):
                self.context.append(z[:, :, ~new].clone())
        return super().__call__(z, t, r, y)


def test_temperature_scales_every_window_s_noise_and_nothing_else(ckpt):
    """``temperature=T``: the noise the network starts every window from is the prior's draw times T, exactly, in
    generation (first and sliding windows), extension and conditioning, the given context untouched; the model's
    ``sample.one_step_temperature`` is the default for windows made in one call, 1 for windows of more (their later
    calls would see a noise level off the path); ``latents=`` are scaled as drawn noise is; bad values are one-line
    errors."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    model = pipe.model
    video = np.random.default_rng(0).integers(0, 255, (1, 5, 16, 16, 3), dtype=np.uint8)
    keys = video[:, [0, 3]]
    calls = {"generate": lambda **kw: pipe.generate(num_frames=9, class_labels=[0, 3], seed=1, **kw),
             "extend": lambda **kw: pipe.extend(video, num_new_frames=5, context_frames=2, seed=1, **kw),
             "condition": lambda **kw: pipe.condition(keys, frame_indices=[0, 3], seed=1, **kw)}
    for name, call in calls.items():
        seen = {}
        for temp in (None, 1.0, 0.5):
            pipe.transformer = seen[temp] = NoiseRecorder(model)
            call(**({} if temp is None else {"temperature": temp}))
        pipe.transformer = model
        plain, half = seen[1.0], seen[0.5]
        assert plain.calls == half.calls >= (2 if name != "condition" else 1), name
        for a, b in zip(seen[None].noise + seen[None].context, plain.noise + plain.context):
            assert torch.equal(a, b), name  # the default is 1
        if name != "generate":  # the given frames as they were
            assert all(torch.equal(a, b) for a, b in zip(plain.context[:1], half.context[:1])), name
        for a, b in zip(plain.noise, half.noise):
            assert torch.equal(b, 0.5 * a), name
        assert not np.array_equal(call(temperature=1.0).frames, call(temperature=0.5).frames), name
        if name == "generate":
            seen_generate = plain
    pipe.cfg.sample.one_step_temperature = 0.5  # the model's default for windows of one call, 1 for more
    assert np.array_equal(pipe.generate(class_labels=[3], seed=2).frames,
                          pipe.generate(class_labels=[3], seed=2, temperature=0.5).frames)
    assert np.array_equal(pipe.generate(class_labels=[3], seed=2, steps=2).frames,
                          pipe.generate(class_labels=[3], seed=2, steps=2, temperature=1.0).frames)
    pipe.transformer = rec = NoiseRecorder(model)  # 2 calls for the first window at 1, then 1 call per window at 0.5
    pipe.generate(num_frames=9, class_labels=[0, 3], seed=1, first_window_steps=2)
    pipe.transformer = model
    assert [torch.equal(a, b) for a, b in zip(rec.noise, seen_generate.noise[:1] + [
        0.5 * e for e in seen_generate.noise[1:]])] == [True] * 4 and rec.calls == 5
    pipe.cfg.sample.one_step_temperature = 1.0
    e = pipe.method.noise((1, *pipe._latent_shape(pipe.window)), generator=torch.Generator().manual_seed(4))
    assert np.array_equal(pipe.generate(class_labels=[3], latents=e, temperature=0.5, output_type="latent").frames,
                          pipe.generate(class_labels=[3], latents=0.5 * e, output_type="latent").frames)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            pipe.generate(class_labels=[3], temperature=bad)
    with pytest.raises(ConfigError, match="sample.one_step_temperature"):
        load_config(ROOT / "configs" / "tiny.yaml", ["sample.one_step_temperature=0"])


def test_consistency_sampler_draws_its_fresh_noise_from_the_call_s_generator(ckpt):
    """``sampler="consistency"``: the window's noise, then the fresh noise of its later calls, from the same generator
    (a seed gives the same clip; the fresh draw follows the window's noise); its noise starts at the prior's scale
    whatever ``sample.one_step_temperature`` says, and extension and conditioning run it too."""
    from mfvideo.method import consistency_sample

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    pipe.cfg.sample.one_step_temperature = 0.5
    out = pipe.generate(class_labels=[0, 3], seed=1, sampler="consistency", output_type="latent").frames
    g = torch.Generator().manual_seed(1)
    shape = (2, *pipe._latent_shape(pipe.window))
    e, fresh = pipe.method.noise(shape, generator=g), pipe.method.noise(shape, generator=g)
    expected = consistency_sample(pipe.model, e, y=torch.tensor([0, 3]), steps=2, fresh=lambda: fresh)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert np.array_equal(pipe.generate(class_labels=[0, 3], seed=1, sampler="consistency").frames,
                          pipe.generate(class_labels=[0, 3], seed=1, sampler="consistency").frames)
    video = np.random.default_rng(0).integers(0, 255, (1, 5, 16, 16, 1), dtype=np.uint8).repeat(3, axis=-1)  # grey
    ext = pipe.extend(video, num_new_frames=3, context_frames=2, seed=1, sampler="consistency", output_type="uint8")
    assert np.array_equal(ext.frames[:, :5], video)
    assert not np.array_equal(ext.frames, pipe.extend(video, num_new_frames=3, context_frames=2, seed=1,
                                                      output_type="uint8").frames)
    mid = pipe.condition(video[:, [0, 3]], frame_indices=[0, 3], seed=1, sampler="consistency", output_type="uint8")
    assert np.array_equal(mid.frames[:, [0, 3]], video[:, [0, 3]])


def test_the_commands_offer_every_sampler_of_the_table():
    """The commands' ``--sampler`` choices are ``SAMPLERS`` (written out in the CLI, which loads without torch)."""
    from mfvideo.cli import ArgumentParser, add_sampler_args
    from mfvideo.method import SAMPLERS

    p = ArgumentParser(prog="x")
    add_sampler_args(p)
    assert next(a.choices for a in p._actions if a.dest == "sampler") == list(SAMPLERS)


def test_an_image_model_generates_single_frames_and_says_it_cannot_slide(tmp_path):
    """The image base mode (a 1-frame window) through the pipeline and mfvideo-sample: its frames are the 1-NFE
    sampler's of the same noise, also as ``.images``, diffusers' name for an image pipeline's output (a clip's output
    has none); asking it for more frames or an extension is a one-line error."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.num_frames=1"])
    cfg.model.in_channels, cfg.model.num_classes = 1, 10
    torch.manual_seed(0)
    model = randomize(build_model(cfg.model), std=0.05)
    MFVideoPipeline(model, training_config=cfg).save_pretrained(tmp_path / "img")
    pipe = MFVideoPipeline.from_pretrained(tmp_path / "img")
    out = pipe.generate(class_labels=[2, 5], seed=3, output_type="uint8")
    assert out.frames.shape == (2, 1, 16, 16, 3)
    noise = pipe.method.noise((2, *pipe._latent_shape(1)), generator=torch.Generator().manual_seed(3))
    expected = pipe.codec.decode_frames(meanflow_sample(pipe.model, noise, torch.tensor([2, 5]), steps=1))
    assert np.array_equal(out.frames, expected) and out.frames.std() > 10
    assert np.array_equal(out.images, expected[:, 0])  # diffusers' image pipelines' .images: (B, H, W, 3)
    pil = pipe(class_labels=[2, 5], generator=[torch.Generator().manual_seed(s) for s in (0, 1)], output_type="pil")
    assert [np.asarray(im).shape for im in pil.images] == [(16, 16, 3)] * 2  # a list of PIL images, one per class
    twice = pipe(class_labels=[2, 5], num_images_per_prompt=2, generator=torch.Generator().manual_seed(3)).images
    assert twice.shape == (4, 16, 16, 3) and np.array_equal(  # diffusers' image name for num_videos_per_prompt
        twice, pipe(class_labels=[2, 5], num_videos_per_prompt=2, generator=torch.Generator().manual_seed(3)).images)
    with pytest.raises(AttributeError, match=r"images: the output is \(1, 4, 16, 16, 3\), not one frame per clip"):
        MFVideoPipeline.from_pretrained(ROOT / "mfvideo" / "assets" / "moving_digits").generate(
            class_labels=[1], num_frames=4, seed=0).images
    for call in (lambda: pipe.generate(num_frames=3, class_labels=[2]),
                 lambda: pipe.extend(np.zeros((2, 16, 16, 3), np.uint8), num_new_frames=2)):
        with pytest.raises(ValueError, match="a 1-frame model .* has no room for context frames"):
            call()
    proc = _cli("scripts/sample.py", "--checkpoint", str(tmp_path / "img"), "--classes", "4", "--seed", "3",
                "--out", str(tmp_path / "s"))
    assert proc.returncode == 0 and "wrote 1 image to" in proc.stdout, proc.stderr
    png = imageio.imread(tmp_path / "s" / "image_000_class4.png")  # lossless: the pipeline's frame exactly
    assert np.array_equal(png, pipe.generate(class_labels=[4], seed=3, output_type="uint8").frames[0, 0])


def test_a_folder_of_frames_extends_as_its_frames_do(ckpt, tmp_path, capsys):
    """``pipe.extend(folder)`` and ``mfvideo-extend FOLDER``: the folder's frames in natural order, as the same frames
    given as an array; written at the model's frame rate (a folder has none)."""
    from PIL import Image

    from mfvideo.cli import extend

    clip = (np.random.default_rng(0).random((6, 24, 24, 3)) * 255).astype(np.uint8)
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{i}.png")
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    folder, array = (pipe.extend(v, 4, seed=0, output_type="uint8") for v in (tmp_path / "frames", clip))
    assert np.array_equal(folder.frames, array.frames) and folder.fps == pipe.fps
    assert extend.main([str(tmp_path / "frames"), "--checkpoint", str(ckpt), "--num-new-frames", "4", "--out",
                        str(tmp_path / "e.mp4")]) == 0
    assert probe(tmp_path / "e.mp4").num_frames == 10 and probe(tmp_path / "e.mp4").fps == pipe.fps


def test_extend_keeps_the_input_and_calls_once_per_window(ckpt, tmp_path):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    video[..., 1] = video[..., 2] = video[..., 0]  # a grey clip: the 1-channel model sees it exactly
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    out = pipe.extend(video, num_new_frames=7, context_frames=2, seed=0, output_type="uint8")
    assert out.frames.shape == (1, 12, 16, 16, 3)
    assert np.array_equal(out.frames[0, :5], video)
    assert counter.calls == 4 and counter.frames == [4, 4, 4, 3]  # windows of 2 context + 2 new; the last 2 + 1
    # the same through a file on disk
    path = save_video(video, tmp_path / "in.mp4", fps=5)
    from_file = pipe.extend(path, num_new_frames=3, context_frames=2, seed=0, output_type="uint8")
    assert from_file.frames.shape == (1, 8, 16, 16, 3)
    assert np.abs(from_file.frames[0, :5].astype(int) - read_video(path)[0].astype(int)).max() == 0


def test_a_still_image_or_a_short_input_is_all_context(ckpt, tmp_path):
    """Image to video: with the default context (half the window), an input of fewer frames is all context for the
    first window, and the later windows' context grows with the frames made up to the default (one frame says
    nothing of motion); from an array or a PNG path, and through mfvideo-extend. A context asked for explicitly holds
    in every window and is checked against the input."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    imageio.imwrite(tmp_path / "still.png", img)
    inputs = []
    counter = CallCounter(pipe.model)
    pipe.transformer = lambda z, t, r, y=None: (inputs.append(z.clone()), counter(z, t, r, y))[1]
    out = pipe.extend(img[None], num_new_frames=5, seed=0, output_type="uint8").frames  # default context: 2 frames
    assert out.shape == (1, 6, 16, 16, 3) and np.array_equal(out[0, 0], img)
    # 1 given frame + 3 new, then the context grows to the default 2 frames: the 2 latest, + the 2 still wanted
    assert counter.frames == [4, 4]
    latents = pipe.codec.encode_frames(out, pipe.cfg.data.channels)  # (1, C, 6, 16, 16)
    assert torch.allclose(inputs[0][:, :, :1], latents[:, :, :1], atol=1e-6)
    assert torch.allclose(inputs[1][:, :, :2].clamp(-1, 1), latents[:, :, 2:4], atol=1 / 127)  # frames 2-3 (uint8 here)
    inputs.clear()
    held = pipe.extend(img[None], num_new_frames=5, context_frames=1, seed=0, output_type="uint8").frames
    assert [z.shape[2] for z in inputs] == [4, 3]  # asked for: 1 context frame in every window
    pipe.transformer = pipe.model
    from_png = pipe.extend(tmp_path / "still.png", num_new_frames=5, seed=0, output_type="uint8").frames
    assert np.array_equal(out, from_png) and np.array_equal(out[:, :4], held[:, :4])
    assert not np.array_equal(out[:, 4:], held[:, 4:])
    with pytest.raises(ValueError, match="fewer than the 2 context frames requested"):
        pipe.extend(img[None], num_new_frames=5, context_frames=2)
    proc = _cli("scripts/extend.py", str(tmp_path / "still.png"), "--checkpoint", str(ckpt), "--num-new-frames", "5",
                "--out", str(tmp_path / "moving.mp4"))
    assert proc.returncode == 0 and probe(tmp_path / "moving.mp4").num_frames == 6, proc.stderr


def test_a_video_file_is_read_at_the_models_frame_rate(ckpt, tmp_path):
    """A model trained on every k-th frame (``data.target_fps`` / ``frame_stride``) continues a file read the same
    way, up to its last frame, and writes it at the rate of the frames it kept: frame i of the test video is a flat
    grey of 8 i, so which frames were read shows in the output."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    n = 21
    save_video(np.stack([np.full((16, 16, 3), 8 * i, np.uint8) for i in range(n)]), tmp_path / "v.mp4", fps=20)
    seen = lambda frames: np.round(frames[0].astype(float).mean(axis=(1, 2, 3)) / 8).astype(int)  # noqa: E731
    out = pipe.extend(str(tmp_path / "v.mp4"), 2, seed=0, output_type="uint8")  # the bundled habit: every frame
    assert out.fps == 20 and list(seen(out.frames)[:n]) == list(range(n))
    assert pipe.fps == 8.0 and pipe.cfg.sample.fps is None  # generated clips: sample.fps, else data.target_fps, else 8
    pipe.cfg.data.target_fps = 12.5
    assert pipe.fps == 12.5 and pipe.generate(seed=0).fps == 12.5
    for key, value, stride in (("target_fps", 10.0, 2), ("target_fps", 6.0, 3), ("frame_stride", 4, 4)):
        pipe.cfg.data.target_fps, pipe.cfg.data.frame_stride = None, 1
        setattr(pipe.cfg.data, key, value)
        kept = list(range((n - 1) % stride, n, stride))  # up to the last frame
        out = pipe.extend(str(tmp_path / "v.mp4"), 2, seed=0, output_type="uint8")
        assert out.fps == pytest.approx(20 / stride) and list(seen(out.frames)[: len(kept)]) == kept, (key, value)
        assert out.frames.shape[1] == len(kept) + 2
        tail = pipe.extend(str(tmp_path / "v.mp4"), 2, seed=0, output_type="uint8", include_input=False)
        assert list(seen(tail.frames)[:2]) == kept[-2:] and np.array_equal(tail.frames, out.frames[:, -4:])
        stream = pipe.extend_stream(str(tmp_path / "v.mp4"), 2, seed=0)
        assert stream.fps == pytest.approx(20 / stride)
        assert np.array_equal(np.concatenate(list(stream), axis=1), out.frames)
        arrays = pipe.extend(out.frames[:, : len(kept)], 2, seed=0, output_type="uint8")  # arrays: as they are
        assert arrays.fps == pipe.fps and np.array_equal(arrays.frames, out.frames)
    save_video(np.zeros((5, 16, 16, 3), np.uint8), tmp_path / "short.mp4", fps=20)  # frames 0 and 4 at a step of 4
    with pytest.raises(ValueError, match="the input has 2 frames at a step of 4 .*, fewer than the 3 context"):
        pipe.extend(str(tmp_path / "short.mp4"), 2, context_frames=3)
    with pytest.raises(VideoError, match=r"has 5 frames, fewer than the 3 context frames requested \(9 frames at a step of 4"):
        pipe.extend(str(tmp_path / "short.mp4"), 2, context_frames=3, include_input=False)


def test_every_frame_layout_is_read_as_the_same_clip(ckpt, tmp_path):
    """What users hand over: uint8 channels last (the reference), float, grey, RGBA (alpha dropped, as for files),
    torch's channels first (T, 3, H, W) and a pipeline's own "pt" output (B, T, 3, H, W), bf16, one image (H, W, 3) or
    a (3, H, W) tensor. Each is the same clip (a channels-first tensor was read as a batch of grey clips before)."""
    from mfvideo.frames import frames_shape, to_uint8
    from mfvideo.io import grid, save_image
    from mfvideo.pipeline.inputs import frame_count

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    rgb = (np.random.default_rng(0).random((4, 16, 16, 3)) * 255).astype(np.uint8)
    unit = torch.from_numpy(rgb).float() / 255
    ref = pipe.extend(rgb, 4, seed=0, output_type="uint8").frames
    layouts = {"float": rgb / 255.0, "rgba": np.concatenate([rgb, np.full((4, 16, 16, 1), 9, np.uint8)], -1),
               "TCHW": unit.permute(0, 3, 1, 2), "BTCHW": unit.permute(0, 3, 1, 2)[None],
               "bf16 TCHW": unit.permute(0, 3, 1, 2).bfloat16(), "list": list(rgb)}
    for name, video in layouts.items():
        assert frames_shape(video)[-4:] == (4, 16, 16, 3) and frame_count(video) == 4, name
        assert np.array_equal(pipe.extend(video, 4, seed=0, output_type="uint8").frames, ref), name
    grey = rgb[..., 0]
    assert np.array_equal(to_uint8(grey), np.repeat(grey[..., None], 3, -1)) and frame_count(grey) == 4
    assert np.array_equal(pipe.extend(grey, 4, seed=0, output_type="uint8").frames,
                          pipe.extend(np.repeat(grey[..., None], 3, -1), 4, seed=0, output_type="uint8").frames)
    pt = pipe.extend(rgb, 4, seed=0, output_type="pt").frames  # (1, 8, 3, H, W): fed back as it came
    assert np.array_equal(pipe.extend(pt, 2, seed=1, output_type="uint8").frames,
                          pipe.extend(ref, 2, seed=1, output_type="uint8").frames)
    one = pipe.extend(rgb[0], 3, seed=0, output_type="uint8").frames  # one image, as a PNG path is
    assert frame_count(rgb[0]) == 1 and one.shape == (1, 4, 16, 16, 3) and np.array_equal(one[0, 0], rgb[0])
    assert np.array_equal(pipe.extend(unit[0].permute(2, 0, 1), 3, seed=0, output_type="uint8").frames, one)
    assert np.array_equal(grid(pt), grid(ref))
    save_image(unit[0].permute(2, 0, 1), tmp_path / "chw.png")
    assert np.array_equal(imageio.imread(tmp_path / "chw.png"), rgb[0])
    with pytest.raises(ValueError, match="grid expects frames"):
        grid(rgb)


def test_pil_frames_and_lists_are_read_as_a_file_of_them_is(ckpt, tmp_path):
    """diffusers' habit: ``load_video`` gives a list of PIL images (a GIF's first one in palette mode, the rest RGB),
    ``load_image`` one, ``output_type="pil"`` a list of lists. Each reads as the same clip as its file or array; a
    palette image is its colours, not its indices (they were read as grey values); a list of paths or of clips of
    different lengths is a one-line error naming what is wrong (it was numpy's "inhomogeneous shape")."""
    from diffusers.utils import load_video
    from PIL import Image

    from mfvideo.frames import to_uint8
    from mfvideo.pipeline.inputs import frame_count

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    rgb = (np.random.default_rng(0).random((4, 16, 16, 3)) * 255).astype(np.uint8)
    pil = [Image.fromarray(f) for f in rgb]
    ref = pipe.extend(rgb, 4, seed=0, output_type="uint8").frames
    assert frame_count(pil) == 4 and np.array_equal(pipe.extend(pil, 4, seed=0, output_type="uint8").frames, ref)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 0)]
    batch = pipe(video=[pil, pil[::-1]], num_new_frames=4, generator=gens[:2], output_type="uint8").frames
    one = pipe(video=pil, num_new_frames=4, generator=gens[2:], output_type="uint8").frames  # a list of clips: a batch
    assert batch.shape == (2, 8, 16, 16, 3) and np.array_equal(batch[:1], one)
    assert np.array_equal(batch[1, :4], rgb[::-1])
    palette = pil[0].quantize(colors=16)  # indices 0..15, colours anywhere in 0..255
    assert palette.mode == "P" and np.asarray(palette).max() < 16 < to_uint8(palette).max()
    assert np.array_equal(to_uint8(palette), np.asarray(palette.convert("RGB")))
    assert np.array_equal(pipe.extend(palette, 3, seed=0, output_type="uint8").frames[0, 0], to_uint8(palette))
    imageio.mimsave(tmp_path / "c.gif", [np.asarray(f.quantize(colors=64).convert("RGB")) for f in pil], duration=0.1)
    frames = load_video(str(tmp_path / "c.gif"))
    assert frames[0].mode == "P" and frames[1].mode == "RGB"  # diffusers' mix
    assert np.array_equal(pipe.extend(frames, 4, seed=0, output_type="uint8").frames,
                          pipe.extend(str(tmp_path / "c.gif"), 4, seed=0, output_type="uint8").frames)
    with pytest.raises(ValueError, match="video: a list holding a path that is not a still image; pass one video"):
        pipe.extend([str(tmp_path / "c.gif")] * 2, 4)
    for i, frame in enumerate(rgb):  # a list of image files is a clip, each frame read as its file alone is
        save_image(np.pad(frame, ((0, 0), (8 * i, 0), (0, 0))), tmp_path / f"f{i}.png")  # of different sizes too
    files = [tmp_path / f"f{i}.png" for i in range(4)]
    keys = np.concatenate([pipe.extend(f, 1, seed=0, output_type="uint8").frames[:, :1] for f in files], axis=1)
    assert np.array_equal(pipe.extend([str(f) for f in files], 4, seed=0, output_type="uint8").frames[:, :4], keys)
    cond = pipe.condition(files[::3], [0, 3], seed=0, output_type="uint8").frames  # keyframes from their files
    assert np.array_equal(cond, pipe.condition(keys[:, [0, 3]], [0, 3], seed=0, output_type="uint8").frames)
    # returned as given, in colour: a grey model's decoded frames were an expanded view, one byte for the three
    # channels, so writing the given frames in left each pixel's last channel in all three
    assert np.array_equal(cond[0, [0, 3]], keys[0, [0, 3]])
    with pytest.raises(ValueError, match=r"video: a list of 2 frames or clips of different shapes \(\(4, 16, 16, 3\), "
                                         r"\(3, 16, 16, 3\)\)"):
        pipe.extend([rgb, rgb[:3]], 4)


def test_diffusers_call_names_image_height_width_prompt(ckpt, tmp_path):
    """diffusers' image-to-video habit, ``pipe(image=..., num_frames=N)``: the output's N frames begin with the image,
    the same frames as ``extend`` of it by N - 1 (before: a TypeError); the default is one window. ``height`` /
    ``width`` at the model's resolution are taken, others refused, as is ``prompt`` (naming class_labels), and
    ``num_frames`` beside ``video=`` (it was dropped without a word: the output had the window's length)."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    still = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    save_image(still, tmp_path / "still.png")
    for image in (str(tmp_path / "still.png"), still):
        out = pipe(image=image, num_frames=6, generator=torch.Generator().manual_seed(0), output_type="uint8").frames
        ref = pipe.extend(still, 5, generator=torch.Generator().manual_seed(0), output_type="uint8").frames
        assert out.shape == (1, 6, 16, 16, 3) and np.array_equal(out, ref) and np.array_equal(out[0, 0], still)
    assert pipe(image=still, height=16, width=16, output_type="uint8").frames.shape[1] == pipe.window
    with pytest.raises(ValueError, match=r"height=32: this model draws 16 x 16 frames"):
        pipe(height=32)
    with pytest.raises(ValueError, match=r"this model takes no text prompt: it is conditioned on class_labels="):
        pipe(prompt="a red fox")
    with pytest.raises(ValueError, match=r"with video=, num_new_frames sets how many frames are made"):
        pipe(video=still, num_frames=12)
    with pytest.raises(ValueError, match=r"num_frames=1 with image=: .* at least 2"):
        pipe(image=still, num_frames=1)
    # a zero is a count, not "the default" (it made a window's worth of frames, 8, without a word)
    with pytest.raises(ValueError, match=r"num_frames=0 with image=: .* at least 2"):
        pipe(image=still, num_frames=0)
    with pytest.raises(ValueError, match=r"num_new_frames must be >= 1, got 0"):
        pipe(video=still[None].repeat(4, 0), num_new_frames=0)


def test_extension_uses_its_context(ckpt):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    a = np.zeros((4, 16, 16, 3), np.uint8)
    b = np.full((4, 16, 16, 3), 255, np.uint8)
    ea = pipe.extend(a, 2, context_frames=2, seed=0).frames[0, 4:]
    eb = pipe.extend(b, 2, context_frames=2, seed=0).frames[0, 4:]
    assert not np.array_equal(ea, eb)  # same noise, different context


class TimeRecorder(CallCounter):
    """Also records the (t, r) of every call, and with them the input: ``seen`` holds (z, t, r)."""

    def __init__(self, model):
        super().__init__(model)
        self.times, self.seen = [], []

    def __call__(self, z, t, r, y=None):
        self.times.append((t.clone(), r.clone()))
        self.seen.append((z.clone(), *self.times[-1]))
        return super().__call__(z, t, r, y)


def test_frames_per_window_keeps_the_first_new_frames_and_slides_by_them(ckpt):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    video = np.random.default_rng(1).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    video[..., 1] = video[..., 2] = video[..., 0]
    every = pipe.extend(video, num_new_frames=4, context_frames=2, seed=0, output_type="pt").frames
    same = pipe.extend(video, num_new_frames=4, context_frames=2, seed=0, output_type="pt", frames_per_window=2).frames
    assert torch.equal(every, same)  # all of a window's new frames: the default
    rec = TimeRecorder(pipe.model)
    pipe.transformer = rec
    one = pipe.extend(video, num_new_frames=3, context_frames=2, seed=0, output_type="pt", frames_per_window=1).frames
    assert one.shape == (1, 5, 3, 16, 16) and rec.frames == [4, 4, 4]  # one full window per new frame
    torch.testing.assert_close(one[:, 2], every[:, 2], atol=0, rtol=0)  # the same first window, its first frame
    assert not torch.equal(one[:, 3], every[:, 3])
    for i, ((z, t, _), (z_next, t_next, _)) in enumerate(zip(rec.seen, rec.seen[1:])):
        assert (t_next[:, :2] == 0).all() and (t_next[:, 2:] == 1).all()
        assert torch.equal(z_next[:, :, 0], z[:, :, 1])  # the context slides by the one kept frame ...
        made = one[0, 2 + i, 0].double() * 2 - 1  # ... whose newest frame is the frame just kept (as uint8, in [-1, 1])
        torch.testing.assert_close(z_next[0, 0, 1].double().clamp(-1, 1), made, atol=1.01 / 255, rtol=0)
    rec.seen.clear()
    long = pipe.generate(num_frames=7, num_clips=1, seed=0, context_frames=2, frames_per_window=1)
    assert long.frames.shape == (1, 7, 16, 16, 3) and len(rec.seen) == 4  # a window of 4, then one per frame
    for bad in (0, 3):  # (1.5: not a whole number, test_counts_ids_and_seeds_are_whole_numbers...)
        with pytest.raises(ValueError, match=r"frames_per_window must lie in \[1, 2\] with 2 context frames"):
            pipe.extend(video, 2, context_frames=2, frames_per_window=bad)


def test_only_the_models_own_frames_are_noised_when_they_become_context(ckpt):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    model = pipe.model
    video = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    video[..., 1] = video[..., 2] = video[..., 0]
    rec = TimeRecorder(pipe.model)
    pipe.transformer = rec
    out = pipe.extend(video, num_new_frames=4, context_frames=2, seed=0, context_noise=0.25, output_type="pt").frames
    (z0, t0, r0), (z1, t1, r1) = rec.seen  # two windows of 2 context + 2 new
    given = torch.from_numpy(video[..., 0]).double() / 255 * 2 - 1  # the identity codec's [-1, 1]
    torch.testing.assert_close(z0[0, 0, :2].double(), given, atol=1e-6, rtol=0)  # the user's frames: clean, t = 0
    assert (t0[:, :2] == 0).all() and (t0[:, 2:] == 1).all()
    own = out[0, 2:4, 0].double() * 2 - 1  # what the first window made, as frames in [-1, 1]
    assert (t1[:, :2] == 0.25).all() and (r1[:, :2] == 0.25).all() and (t1[:, 2:] == 1).all()
    assert (z1[0, 0, :2].double() - own).abs().mean() > 0.1  # noised, not the frames themselves
    # The level defaults to the model's sample.context_noise (0 unless set), and generate noises its own frames too.
    rec.seen.clear()
    pipe.cfg.sample.context_noise = 0.1
    pipe.generate(num_frames=8, num_clips=1, seed=0)  # a window of 4, then two of 2 context + 2 new
    assert len(rec.seen) == 3 and rec.seen[0][1].ndim == 1  # the first window has no context
    assert [float(t[0, 0]) for _, t, _ in rec.seen[1:]] == [pytest.approx(0.1)] * 2
    with pytest.raises(ValueError, match="context_noise"):
        pipe.extend(video, num_new_frames=2, context_frames=2, context_noise=1.5)


def test_sampler_choice_defaults_and_euler_values(ckpt, tmp_path):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    assert pipe.default_sampler == "meanflow" and pipe.resolve_sampler(None, None) == ("meanflow", 1)
    with pytest.raises(ValueError, match="unknown sampler"):
        pipe.generate(num_clips=1, sampler="heun")
    # Euler through the pipeline = the method's Euler sampler on the same noise; every call has r = t
    rec = TimeRecorder(pipe.model)
    pipe.transformer = rec
    out = pipe.generate(class_labels=[1, 2], seed=3, steps=3, sampler="euler")
    assert rec.calls == 3 and all(torch.equal(t, r) for t, r in rec.times)
    assert [float(t[0]) for t, _ in rec.times] == pytest.approx([1.0, 2 / 3, 1 / 3])
    noise = pipe._noise(2, 4, torch.Generator().manual_seed(3))
    ref = euler_sample(rec.model, noise, y=torch.tensor([1, 2]), steps=3)
    assert np.array_equal(out.frames, pipe.codec.decode_frames(ref) / np.float32(255))
    assert not np.array_equal(out.frames, pipe.generate(class_labels=[1, 2], seed=3, steps=3).frames)
    # extension with Euler: context frames carry t = r = 0, new frames t = r = the grid time
    rec.calls, rec.times = 0, []
    pipe.extend(np.zeros((2, 16, 16, 3), np.uint8), num_new_frames=2, context_frames=2, steps=2, sampler="euler", seed=0)
    t, r = rec.times[0]
    assert rec.calls == 2 and torch.equal(t, r) and t[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    # a model trained as flow matching (ratio_r_neq_t = 0) samples with 50 Euler steps by default
    fm = MFVideoPipeline.from_pretrained(ckpt)
    fm.cfg.method.ratio_r_neq_t = 0.0
    fm.save_pretrained(tmp_path / "fm")
    fm = MFVideoPipeline.from_pretrained(tmp_path / "fm")
    assert fm.default_sampler == "euler"
    fm.transformer = rec = CallCounter(fm.model)
    fm.generate(num_clips=1, seed=0)
    assert rec.calls == 50


def test_counts_ids_and_seeds_are_whole_numbers_or_an_error_that_names_them(ckpt):
    """``int()`` had turned fractions, bools and strings into other numbers without a word: num_frames=8.5 made 8
    frames, steps=1.5 one step, class 3.7 class 3 and True class 1, seed 1.5 a torch error. Now each is a one-line
    error naming the argument as the caller spelt it; whole floats and numpy / torch integers are numbers still."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    clip = np.zeros((4, 16, 16, 3), np.uint8)
    bad = {
        "num_frames": lambda: pipe.generate(num_frames=4.5, class_labels=[1]),
        "num_clips": lambda: pipe.generate(num_clips=1.5),
        "steps": lambda: pipe.generate(steps=1.5, class_labels=[1]),
        "a class id": lambda: pipe.generate(class_labels=[3.7]),
        "a class id ": lambda: pipe.generate(class_labels=[True]),
        "num_new_frames": lambda: pipe.extend(clip, num_new_frames=2.5),
        "context_frames": lambda: pipe.extend(clip, num_new_frames=2, context_frames=1.5),
        "frames_per_window": lambda: pipe.extend(clip, num_new_frames=2, frames_per_window=1.5),
        "seed": lambda: pipe.extend(clip, num_new_frames=2, seed=1.5),
        "num_inference_steps": lambda: pipe(class_labels=[1], num_inference_steps=1.5),
        "num_frames ": lambda: pipe(image=clip[0], num_frames="6"),
        "motion_copy": lambda: pipe.extend(clip, num_new_frames=2, motion_copy=True),
    }
    for name, call in bad.items():
        with pytest.raises(ValueError, match=rf"^{name.strip()} (must be a whole number|is a radius)"):
            call()
    a = pipe.generate(num_frames=4, class_labels=[3], steps=1, seed=2, output_type="uint8").frames
    b = pipe.generate(num_frames=4.0, class_labels=torch.tensor([3]), steps=np.int64(1), seed=np.int64(2),
                      output_type="uint8").frames
    assert np.array_equal(a, b)
    for one in (3, np.int64(3), torch.tensor(3), 3.0):  # one label for the batch: numpy's and torch's 3 were refused
        assert np.array_equal(pipe.generate(num_frames=4, class_labels=one, seed=2, output_type="uint8").frames, a)


def test_condition_on_arbitrary_frames_returns_them(ckpt):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    keys = np.stack([np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)])
    out = pipe.condition(keys, frame_indices=[0, 3], seed=0, output_type="uint8")
    reversed_ = pipe.condition(keys[::-1], frame_indices=[3, 0], seed=0, output_type="uint8")
    assert out.frames.shape == (1, 4, 16, 16, 3)
    assert np.array_equal(out.frames[0, [0, 3]], keys) and np.array_equal(out.frames, reversed_.frames)
    with pytest.raises(ValueError, match="distinct"):
        pipe.condition(keys, frame_indices=[0, 0])
    for bad in ([0.5, 3], [0, True]):  # 0.5 was read as frame 0, True as frame 1
        with pytest.raises(ValueError, match="frame indices must be a whole number"):
            pipe.condition(keys, frame_indices=bad)
    assert np.array_equal(pipe.condition(keys, frame_indices=[np.int64(0), 3.0], seed=0, output_type="uint8").frames,
                          out.frames)  # numpy ints and whole floats are indices
    every = np.stack([keys[0], keys[1], keys[0], keys[1]])  # every frame given: nothing to make, the frames back
    assert np.array_equal(pipe.condition(every, frame_indices=[0, 1, 2, 3], output_type="uint8").frames[0], every)


def test_progress_bar_in_frames_past_one_window_as_diffusers_configures_it(ckpt, capsys):
    """A call that takes more than one window shows diffusers' progress bar in frames
    (``set_progress_bar_config`` applies), where stderr is a terminal by default; one window shows none."""
    import io

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    pipe.generate(num_frames=12, class_labels=[1], seed=0)
    assert capsys.readouterr().err == ""  # not a terminal: quiet
    buf = io.StringIO()
    pipe.set_progress_bar_config(disable=False, file=buf)
    pipe.generate(num_frames=12, class_labels=[1], seed=0)
    assert "12/12" in buf.getvalue()
    pipe.generate(num_frames=12, class_labels=[1], seed=0, output_type="latent")
    pipe.extend(np.zeros((3, 16, 16, 3), np.uint8), num_new_frames=6, seed=0)
    pipe.condition(np.zeros((2, 16, 16, 3), np.uint8), [0, 9], num_frames=10, seed=0)
    bars = [line.split("|")[-1] for line in buf.getvalue().split("\n") if line]
    assert [b.split()[0] for b in bars] == ["12/12", "12/12", "9/9", "8/8"], bars
    size = len(buf.getvalue())
    pipe.generate(num_frames=4, class_labels=[1], seed=0)  # one window
    pipe.set_progress_bar_config(disable=True)
    pipe.generate(num_frames=12, class_labels=[1], seed=0)
    assert len(buf.getvalue()) == size and capsys.readouterr().err == ""


def test_backward_extension_makes_the_frames_before_the_clip_window_by_window(ckpt, tmp_path):
    """``extend(backward=True)``: the input's first frames are every first window's context, placed last in the
    window (the "last" mask), and the windows slide back in time, each with the frames made before as its context,
    clean, at t = 0; the output is the new frames, then the input exactly (a file streamed after them, or its context
    frames alone); ``mfvideo-extend --backward`` writes the same."""
    from mfvideo.cli import extend

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    model = pipe.model
    video = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    net = pipe.model
    pipe.transformer = rec = CallCounter(lambda z, t, r, y=None: rec.inputs.append((z.clone(), t.clone())) or net(z, t, r, y))
    rec.inputs = []
    lat = pipe.extend(video, num_new_frames=5, backward=True, seed=0, output_type="latent").frames  # (1, C, 7, h, w)
    assert lat.shape[2] == 5 + 2 and rec.calls == 3 and rec.frames == [4, 4, 3]  # 2 new + 2 given, 2 + 2, 1 + 2
    assert torch.equal(lat[:, :, 5:], pipe.codec.encode_frames(video[None, :2], pipe.cfg.data.channels))  # the first 2
    for (z, t), (new, ctx) in zip(rec.inputs, [(2, slice(5, 7)), (2, slice(3, 5)), (1, slice(1, 3))]):
        assert torch.equal(z[:, :, new:], lat[:, :, ctx]) and bool((t[:, new:] == 0).all() and (t[:, :new] == 1).all())
    pipe.transformer = net
    out = pipe.extend(video, num_new_frames=5, backward=True, seed=0, output_type="uint8").frames
    assert out.shape == (1, 10, 16, 16, 3) and np.array_equal(out[0, 5:], video)
    assert np.array_equal(pipe.decode_latents(lat, "uint8")[:, :5], out[:, :5])
    forward = pipe.extend(video[::-1], num_new_frames=5, seed=0, output_type="uint8").frames
    assert not np.array_equal(forward[0, 5:][::-1], out[0, :5])  # not the forward model run on reversed time
    save_video(video, tmp_path / "in.mp4", fps=8)
    given = read_video(tmp_path / "in.mp4")[0]
    streamed = pipe.extend(str(tmp_path / "in.mp4"), num_new_frames=5, backward=True, seed=0, output_type="uint8").frames
    want = pipe.extend(given, num_new_frames=5, backward=True, seed=0, output_type="uint8").frames
    assert np.array_equal(streamed, want)
    short = pipe.extend(str(tmp_path / "in.mp4"), 5, backward=True, seed=0, include_input=False, output_type="uint8")
    assert np.array_equal(short.frames, want[:, :7])
    assert extend.main([str(tmp_path / "in.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "5", "--backward",
                        "--out", str(tmp_path / "before.mp4")]) == 0
    assert np.abs(read_video(tmp_path / "before.mp4")[0].astype(int) - want[0].astype(int)).mean() < 3
    assert extend.main([str(tmp_path / "in.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "5", "--backward",
                        "--new-only", "--out", str(tmp_path / "new.mp4")]) == 0
    assert np.abs(read_video(tmp_path / "new.mp4")[0].astype(int) - want[0, :5].astype(int)).mean() < 3


def test_bundled_model_extends_backwards_as_well_as_forwards():
    """28 frames before the last 4 of held-out 32-frame clips (null label), by ``extend(backward=True)`` and by
    ``condition`` with the 4 given at the end: the digit read off the given frames holds as the windows slide back
    (``condition``'s windows each reading only their own context let it go: 0.88, 0.84 at the earliest four)."""
    from mfvideo.eval.digits import DigitSuite, real_clips

    pipe, suite = MFVideoPipeline.from_pretrained(), DigitSuite.load()
    clips, labels = real_clips(30, "test", 32, seed=4)
    out = pipe.extend(clips[:, 28:], num_new_frames=28, backward=True, seed=0, output_type="uint8")
    assert np.array_equal(out.frames[:, 28:], clips[:, 28:]) and (out.class_labels == labels).mean() >= 0.9
    filled = pipe.condition(clips[:, 28:], list(range(28, 32)), num_frames=32, seed=0, output_type="uint8").frames
    for frames in (out.frames, filled):
        preds, _ = suite.predict(frames[:, :28])
        right = preds == labels[:, None]
        assert right.mean() >= 0.92 and right[:, :4].mean() >= 0.9, (right.mean(), right[:, :4].mean())


def test_fill_plan_makes_every_frame_once_each_window_seeing_known_frames():
    """``fill_plan``: any given frames, any window: every unknown frame made exactly once by a window inside the
    clip that holds a known frame when it runs; a long gap is met from both sides, the last window in its middle."""
    from mfvideo.pipeline.fill import extension_side, fill_plan

    assert fill_plan([1] + [0] * 14 + [1], 8) == [(0, [1, 2, 3, 4, 5]), (8, [10, 11, 12, 13, 14]), (4, [6, 7, 8, 9])]
    assert fill_plan([1, 0, 0, 1], 8) == [(0, [1, 2])]  # no longer than the window: one window
    assert fill_plan([0] * 6 + [1, 1], 4) == [(4, [4, 5]), (2, [2, 3]), (0, [0, 1])]  # backwards, as extend slides
    rng = np.random.default_rng(0)
    for _ in range(500):
        n, w = int(rng.integers(1, 40)), int(rng.integers(2, 17))
        known = rng.random(n) < rng.choice([0.05, 0.2, 0.6])
        known[rng.integers(n)] = True
        have, made = known.copy(), []
        for start, make in fill_plan(known.tolist(), w):
            assert 0 <= start and start + min(w, n) <= n and all(start <= i < start + w for i in make)
            assert make and have[start : start + w].any() and not have[make].any()
            have[make] = True
            made += make
        assert sorted(made) == np.flatnonzero(~known).tolist()
    with pytest.raises(ValueError, match="at least one known frame"):
        fill_plan([False] * 3, 2)
    assert [extension_side(m, [2, 5]) for m in ([0, 1], [6, 7], [3, 4])] == ["before", "after", None]


def test_condition_past_the_window_fills_window_by_window_from_the_known_frames(ckpt):
    """A clip longer than the window (``condition``): one call per window of ``fill_plan``, each seeing the frames
    given or made before it, clean, in their places; the given frames come back exactly; ``latents`` is the first
    window's noise."""
    from mfvideo.pipeline.fill import fill_plan

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    keys = np.stack([np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)])[None]
    net = pipe.model
    pipe.transformer = rec = CallCounter(lambda z, t, r, y=None: rec.inputs.append((z.clone(), t.clone())) or net(z, t, r, y))
    rec.inputs = []
    lat = pipe.condition(keys, [0, 9], num_frames=10, seed=0, output_type="latent").frames  # (1, C, 10, h, w)
    plan = fill_plan([True] + [False] * 8 + [True], 4)
    assert len(plan) == 3 and rec.calls == 3 and rec.frames == [4, 4, 4]
    known = np.zeros(10, bool)
    known[[0, 9]] = True
    for (start, make), (z, t) in zip(plan, rec.inputs):
        ctx = np.flatnonzero(known[start : start + 4])
        assert len(ctx) and torch.equal(z[:, :, ctx], lat[:, :, start + ctx]) and bool((t[:, ctx] == 0).all())
        assert bool((t[:, [i - start for i in make]] == 1).all())
        known[make] = True
    pipe.transformer = net
    out = pipe.condition(keys, [0, 9], num_frames=10, seed=0, output_type="uint8").frames
    assert out.shape == (1, 10, 16, 16, 3) and np.array_equal(out[0, [0, 9]], keys[0])
    assert np.array_equal(pipe.decode_latents(lat, "uint8")[0, 1:9], out[0, 1:9])
    g = torch.Generator().manual_seed(0)
    first = pipe._noise(1, 4, g)  # the first window's noise; the later windows' come from g, as with seed=0
    assert np.array_equal(pipe.condition(keys, [0, 9], num_frames=10, latents=first, generator=g,
                                         output_type="uint8").frames, out)
    with pytest.raises(ValueError, match="the noise of a window of 4 frames"):
        pipe.condition(keys, [0, 9], num_frames=10, latents=pipe._noise(1, 10, torch.Generator()))


def test_mp4_round_trip_frame_count_size_fps(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (13, 48, 64, 3), dtype=np.uint8)
    path = save_video(frames, tmp_path / "clip.mp4", fps=12)
    for backend in ("decord", "imageio"):
        info = probe(path, backend)
        assert (info.num_frames, info.height, info.width) == (13, 48, 64) and abs(info.fps - 12) < 1e-6
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="even"):
        save_video(frames[:, :47], tmp_path / "odd.mp4")
    assert not (tmp_path / "odd.mp4").exists()


MAGIC = {".mp4": b"ftyp", ".mov": b"ftypqt", ".mkv": b"\x1aE\xdf\xa3", ".webm": b"\x1aE\xdf\xa3", ".gif": b"GIF89a"}


@pytest.mark.parametrize("suffix", list(MAGIC))
def test_a_video_is_written_as_its_name_says(suffix, tmp_path):
    """The file's suffix picks container and codec (.mp4 / .mov / .mkv H.264, .webm VP9, .gif one palette):
    ``--out clip.gif`` wrote an H.264 mp4 under that name, which nothing opened as a GIF. Every format reads back
    through mfvideo's own reader, frame for frame; a suffix that is none of them is a one-line error, nothing
    written."""
    from mfvideo.eval.digits import real_clips

    clips, _ = real_clips(1, "test", 9)  # grey digits: a GIF's palette holds them exactly
    frames = clips[0].repeat(2, axis=1).repeat(2, axis=2)  # (9, 32, 32, 3)
    path = save_video(frames, tmp_path / f"clip{suffix}", fps=8)
    head = path.read_bytes()[:12]
    assert MAGIC[suffix] in head if suffix != ".mov" else head[4:10] == MAGIC[suffix], head
    back, fps = read_video(path)
    assert back.shape == frames.shape and abs(fps - 8) < (0.5 if suffix == ".gif" else 0.01)  # GIF: 1/100 s delays
    err = np.abs(back.astype(int) - frames).mean()
    assert err == 0 if suffix == ".gif" else err < 3, err  # lossy codecs: a few levels
    if suffix == ".gif":  # no chroma subsampling: an odd size is fine
        assert read_video(save_video(frames[:, :31, :29], tmp_path / "odd.gif"))[0].shape == (9, 31, 29, 3)
    else:
        with pytest.raises(ValueError, match=f"a \\{suffix} video \\(yuv420p\\) needs an even frame size"):
            save_video(frames[:, :31], tmp_path / f"odd{suffix}")
    for name, says in (("clip.avi", "its suffix '.avi' is none of them"), ("clip", "it has no suffix")):
        with pytest.raises(ValueError, match=f"a video is written as .mp4, .mov, .mkv, .webm, .gif; {says}"):
            save_video(frames, tmp_path / name)
        assert not (tmp_path / name).exists()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_mfvideo_sample_offers_every_video_format(capsys):
    """``mfvideo-sample --format``'s choices are ``io.VIDEO_FORMATS``' (listed in the command, which imports no torch
    to parse its arguments)."""
    from mfvideo.cli import sample as sample_cli
    from mfvideo.io import VIDEO_FORMATS

    with pytest.raises(SystemExit):
        sample_cli.main(["--format", "avi", "--out", "x"])
    err = capsys.readouterr().err
    assert err.count("'") == 2 * len(VIDEO_FORMATS) + 2 and all(f"'{s[1:]}'" in err for s in VIDEO_FORMATS), err


def test_bad_inputs_are_clear_errors(ckpt, tmp_path):
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    with pytest.raises(ValueError, match="class id 12 out of range"):
        pipe.generate(class_labels=[12])
    with pytest.raises(VideoError, match="no such file"):
        pipe.extend(tmp_path / "missing.mp4", 3)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(VideoError, match="corrupt.mp4"):
        pipe.extend(corrupt, 3)
    with pytest.raises(ValueError, match="fewer than the 3 context frames"):
        pipe.extend(np.zeros((2, 16, 16, 3), np.uint8), 3, context_frames=3)
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    (empty / "config.yaml").write_text((ckpt / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="no weights"):
        MFVideoPipeline.from_pretrained(empty)
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    cfg.model.in_channels, cfg.model.num_classes = 1, 0
    unconditional = MFVideoPipeline(build_model(cfg.model), training_config=cfg)
    says = r"unconditional: it takes no class \(class_labels=None; no --classes / --class\)"
    with pytest.raises(ValueError, match=says):
        unconditional.generate(class_labels=[0])
    with pytest.raises(ValueError, match=says):
        unconditional.extend(np.zeros((4, 16, 16, 3)), 2, class_labels=[0])
    assert unconditional.generate(seed=0).class_labels is None


def _cli(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_sample_extend_and_one_line_errors(ckpt, tmp_path, capsys):
    """The sampling commands write what the pipeline makes; bad arguments are one line and exit 2 (in process but
    the extension, through its script: the console scripts' own process is tested in test_reliability)."""
    from mfvideo.cli import extend, sample

    assert sample.main(["--checkpoint", str(ckpt), "--classes", "1", "2", "--grid", "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["clip_000_class1.mp4", "clip_001_class2.mp4", "grid.png"]
    assert probe(tmp_path / "s" / "clip_000_class1.mp4").num_frames == 4
    assert sample.main(["--checkpoint", str(ckpt), "--classes", "1", "--num-frames", "6", "--first-window-steps", "2",
                        "--temperature", "0.5", "--grid", "--out", str(tmp_path / "f")]) == 0
    from mfvideo.io import grid

    written = imageio.imread(tmp_path / "f" / "grid.png")  # the frames, lossless
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    asked, default = (grid(pipe.generate(num_frames=6, class_labels=[1], generator=torch.Generator().manual_seed(0),
                                         first_window_steps=n, temperature=0.5, output_type="uint8").frames)
                      for n in (2, None))
    assert np.array_equal(written, asked) and not np.array_equal(written, default)
    proc = _cli("scripts/extend.py", str(tmp_path / "s" / "clip_000_class1.mp4"), "--checkpoint", str(ckpt),
                "--num-new-frames", "5", "--context-frames", "2", "--frames-per-window", "1", "--out", str(tmp_path / "e.mp4"))
    assert proc.returncode == 0, proc.stderr
    assert probe(tmp_path / "e.mp4").num_frames == 9
    capsys.readouterr()
    for main, args in (
        (sample.main, ["--checkpoint", str(ckpt), "--classes", "10", "--out", str(tmp_path / "bad")]),
        (extend.main, [str(tmp_path / "nope.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "3", "--out", str(tmp_path / "bad.mp4")]),
        (sample.main, ["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad")]),
        (sample.main, ["--checkpoint", str(ckpt), "--temperature", "0", "--out", str(tmp_path / "bad")]),
        (extend.main, [str(tmp_path / "e.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "3",
                       "--temperature", "nan", "--out", str(tmp_path / "bad.mp4")]),
        (extend.main, [str(tmp_path / "e.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "3",
                       "--context-frames", "2", "--frames-per-window", "3", "--out", str(tmp_path / "bad.mp4")]),
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("WARNING")]
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.mp4").exists()


def test_cli_interpolate_fills_the_frames_between_keyframes_and_bridges_two_clips(ckpt, tmp_path):
    """``mfvideo-interpolate``: START's last and END's first frames are a window's given frames (``condition``); the
    output is that window, or with ``--join`` all of START, the new frames, all of END."""
    from mfvideo.cli import interpolate

    yy, xx = np.mgrid[0:16, 0:16]
    clip = np.stack([np.stack([(8 * (xx + i)) % 256, 8 * yy, np.full_like(xx, 20 * i)], -1) for i in range(11)])
    clip = clip.astype(np.uint8)  # (11, 16, 16, 3), smooth: H.264 keeps it within a few levels
    save_video(clip[:5], tmp_path / "a.mp4", fps=8)
    save_video(clip[5:], tmp_path / "b.mp4", fps=8)
    a, b = read_video(tmp_path / "a.mp4")[0], read_video(tmp_path / "b.mp4")[0]
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    want = pipe.condition(np.stack([a[-1], b[0]])[None], [0, 3], seed=0, output_type="uint8").frames[0]
    other = pipe.condition(np.stack([a[-1], b[0]])[None], [0, 3], seed=1, output_type="uint8").frames[0]

    def diff(x, y):
        return np.abs(x.astype(int) - y.astype(int)).mean()

    base = ["--checkpoint", str(ckpt)]
    assert interpolate.main([str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), *base, "--out", str(tmp_path / "i.mp4")]) == 0
    got = read_video(tmp_path / "i.mp4")[0]
    assert got.shape == (4, 16, 16, 3) and diff(got, want) < 3 < 10 < diff(got[1:3], other[1:3])
    assert interpolate.main([str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), *base, "--join",
                             "--out", str(tmp_path / "j.mp4")]) == 0
    joined = read_video(tmp_path / "j.mp4")[0]  # 5 of START, 2 new, 6 of END
    assert joined.shape[0] == 13 and diff(joined[:5], a) < 3 and diff(joined[7:], b) < 3
    assert diff(joined[5:7], want[1:3]) < 3
    save_image(a[0], tmp_path / "k0.png")
    save_image(b[-1], tmp_path / "k1.png")  # two stills: the given frames come first and last
    assert interpolate.main([str(tmp_path / "k0.png"), str(tmp_path / "k1.png"), *base, "--num-frames", "3",
                             "--seed", "2", "--out", str(tmp_path / "k.mp4")]) == 0
    keys = pipe.condition(np.stack([a[0], b[-1]])[None], [0, 2], num_frames=3, seed=2, output_type="uint8").frames[0]
    assert diff(read_video(tmp_path / "k.mp4")[0], keys) < 3
    assert interpolate.main([str(tmp_path / "k0.png"), str(tmp_path / "k1.png"), *base, "--num-frames", "9",
                             "--out", str(tmp_path / "long.mp4")]) == 0  # past the 4-frame window: window by window
    keys = pipe.condition(np.stack([a[0], b[-1]])[None], [0, 8], num_frames=9, seed=0, output_type="uint8").frames[0]
    assert diff(read_video(tmp_path / "long.mp4")[0], keys) < 3


def test_cli_extend_new_only_writes_the_new_frames_alone(ckpt, tmp_path):
    """``mfvideo-extend --new-only``: the continuation by itself (the input decoded from near its end only), the same
    frames as the tail of the whole output."""
    from mfvideo.cli import extend

    yy, xx = np.mgrid[0:16, 0:16]
    video = np.stack([np.stack([(8 * (xx + i)) % 256, 8 * yy, np.full_like(xx, 20 * i)], -1) for i in range(9)])
    save_video(video.astype(np.uint8), tmp_path / "in.mp4", fps=8)
    args = [str(tmp_path / "in.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "5", "--frames-per-window", "1"]
    assert extend.main([*args, "--out", str(tmp_path / "whole.mp4")]) == 0
    assert extend.main([*args, "--new-only", "--out", str(tmp_path / "new.mp4")]) == 0
    whole, new = read_video(tmp_path / "whole.mp4")[0], read_video(tmp_path / "new.mp4")[0]
    assert whole.shape[0] == 9 + 5 and new.shape[0] == 5
    assert np.abs(new.astype(int) - whole[9:].astype(int)).mean() < 3  # H.264 apart


def test_cli_num_clips_writes_numbered_continuations_and_in_betweens(ckpt, tmp_path, capsys):
    """``mfvideo-extend --num-clips 3 --out e.mp4``: e_0.mp4 .. e_2.mp4, the input in each, three continuations;
    ``mfvideo-interpolate --num-clips 2 --join``: START and END in each, two bridges."""
    from mfvideo.cli import extend, interpolate

    yy, xx = np.mgrid[0:16, 0:16]
    video = np.stack([np.stack([(8 * (xx + i)) % 256, 8 * yy, np.full_like(xx, 20 * i)], -1) for i in range(9)])
    save_video(video.astype(np.uint8), tmp_path / "in.mp4", fps=8)
    assert extend.main([str(tmp_path / "in.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "5", "--num-clips", "3",
                        "--out", str(tmp_path / "e.mp4")]) == 0
    assert "wrote 14 frames (5 new) each to" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("e*")) == ["e_0.mp4", "e_1.mp4", "e_2.mp4"]
    clips = [read_video(tmp_path / f"e_{i}.mp4")[0].astype(int) for i in range(3)]
    assert all(c.shape[0] == 14 for c in clips)
    assert all(np.abs(c[:9] - clips[0][:9]).mean() < 3 for c in clips)  # the input, H.264 apart
    assert np.abs(clips[0][9:] - clips[1][9:]).mean() > 10 and np.abs(clips[1][9:] - clips[2][9:]).mean() > 10
    assert interpolate.main([str(tmp_path / "in.mp4"), str(tmp_path / "e_0.mp4"), "--checkpoint", str(ckpt), "--join",
                             "--num-clips", "2", "--out", str(tmp_path / "i.mp4")]) == 0
    assert "END each to" in capsys.readouterr().out
    (a, _), (b, _) = read_video(tmp_path / "i_0.mp4"), read_video(tmp_path / "i_1.mp4")
    a, b = a.astype(int), b.astype(int)
    assert a.shape[0] == b.shape[0] == 9 + 2 + 14  # START, the window's 2 new frames, END
    assert np.abs(a[:9] - clips[0][:9]).mean() < 3 and np.abs(a[11:] - clips[0]).mean() < 3
    assert np.abs(b[:9] - a[:9]).mean() < 3 and np.abs(b[11:] - a[11:]).mean() < 3
    assert np.abs(a[9:11] - b[9:11]).mean() > 10
    assert extend.main([str(tmp_path / "in.mp4"), "--checkpoint", str(ckpt), "--num-new-frames", "5",
                        "--out", str(tmp_path / "e.gif")]) == 0  # a GIF, as named
    assert (tmp_path / "e.gif").read_bytes()[:6] == b"GIF89a" and read_video(tmp_path / "e.gif")[0].shape[0] == 14


def test_cli_shows_progress_in_frames_on_a_terminal_only(ckpt, tmp_path, capsys, monkeypatch):
    """A long extension or clip shows a progress bar counted in frames when stderr is a terminal; piped or logged,
    stderr holds nothing but errors."""
    from mfvideo.cli import extend, sample

    src = tmp_path / "in.mp4"
    save_video(np.zeros((3, 16, 16, 3), np.uint8), src, fps=8)
    args = [str(src), "--checkpoint", str(ckpt), "--num-new-frames", "7", "--frames-per-window", "1"]
    assert extend.main([*args, "--out", str(tmp_path / "a.mp4")]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert extend.main([*args, "--out", str(tmp_path / "b.mp4")]) == 0
    err = capsys.readouterr().err
    assert "\rextend:   0%|" in err and "/10 [" in err  # 3 given + 7 new frames; cleared when done
    assert err.endswith("\r") and "\n" not in err and probe(tmp_path / "b.mp4").num_frames == 10
    assert extend.main([*args, "--backward", "--out", str(tmp_path / "c.mp4")]) == 0
    err = capsys.readouterr().err  # the frames counted as they are made, then as the clip is written
    making, _, writing = err.partition("\rextend:")  # one bar after the other (each redrawn as often as tqdm likes)
    assert making.startswith("\rextend (backward):   0%|") and "/7 [" in making and "/10 [" in writing
    assert probe(tmp_path / "c.mp4").num_frames == 10
    assert sample.main(["--checkpoint", str(ckpt), "--num-clips", "2", "--num-frames", "9", "--out",
                        str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "clips 1-2 of 2:   0%|" in err and "/9 [" in err


def test_file_names_keep_a_class_name_s_letters_in_any_script():
    """A class folder named ``éléphant`` gave files ``..._l-phant.mp4`` and one named ``猫`` none of its name: letters
    of any script stay (composed: a macOS folder's decomposed é is the same file name), what a file name cannot hold
    becomes ``-``."""
    import unicodedata
    from types import SimpleNamespace

    from mfvideo.cli import class_name

    names = ["éléphant", "猫", "a/b: c?", unicodedata.normalize("NFD", "éléphant"), "7", "..", "red fox"]
    pipe = SimpleNamespace(labels={str(i): n for i, n in enumerate(names)})
    got = [class_name(pipe, i) for i in range(len(names))]
    assert got == ["class0_éléphant", "class1_猫", "class2_a-b-c", "class3_éléphant", "class4_7", "class5",
                   "class6_red-fox"]
    assert class_name(SimpleNamespace(labels={}), 3) == "class3"


def test_cli_takes_class_names_and_names_the_files_by_them(ckpt, tmp_path, capsys):
    """A model trained on class folders knows its classes by name (``id2label``): ``--classes`` / ``--class`` take
    the names as the Python API does, the clips are those of the ids, and the files carry both. (In process but the
    first call, through the script: the console scripts' own process is tested in test_reliability.)"""
    from mfvideo.cli import extend, sample

    pipe = MFVideoPipeline.from_pretrained(ckpt)
    names = ["cat", "dog", "red fox"] + [f"c{i}" for i in range(3, 10)]
    named = tmp_path / "named"
    MFVideoPipeline(pipe.transformer, training_config=pipe.cfg, id2label=dict(enumerate(names))).save_pretrained(named)
    proc = _cli("scripts/sample.py", "--checkpoint", str(named), "--classes", "red fox", "cat", "--grid",
                "--out", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "clip_000_class2_red-fox.mp4", "clip_001_class0_cat.mp4", "grid.png"]
    sheets = {}
    for out, classes in (("i", ["2", "0"]), ("o", ["1", "0"])):
        assert sample.main(["--checkpoint", str(named), "--classes", *classes, "--grid", "--out", str(tmp_path / out)]) == 0
        sheets[out] = imageio.imread(tmp_path / out / "grid.png")
    named_sheet = imageio.imread(tmp_path / "s" / "grid.png")
    assert np.array_equal(named_sheet, sheets["i"]) and not np.array_equal(named_sheet, sheets["o"])
    clip = tmp_path / "s" / "clip_001_class0_cat.mp4"
    outs = {}
    for c in ("dog", "1", "cat"):
        assert extend.main([str(clip), "--checkpoint", str(named), "--num-new-frames", "4", "--class", c,
                            "--out", str(tmp_path / f"e_{c}.mp4")]) == 0
        outs[c] = read_video(tmp_path / f"e_{c}.mp4")[0]
    assert np.array_equal(outs["dog"], outs["1"]) and not np.array_equal(outs["dog"], outs["cat"])
    capsys.readouterr()
    for main, args in ((sample.main, ["--checkpoint", str(named), "--classes", "cat", "fox", "--out", str(tmp_path / "bad")]),
                       (extend.main, [str(clip), "--checkpoint", str(named), "--num-new-frames", "4", "--class", "fox",
                                      "--out", str(tmp_path / "bad.mp4")])):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("WARNING")]
        assert e.value.code == 2 and err == ["error: unknown class name 'fox' (did you mean 'red fox'?); known: c3, c4, c5, "
                                             "c6, c7, c8, c9, cat, dog, red fox"], err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.mp4").exists()



def test_class_names_as_imagenet_has_them_synonyms_any_case_and_shared_names(ckpt):
    """ImageNet's names ("tench, Tinca tinca"; "crane" twice, a bird and a machine) as diffusers' DiT takes them: a
    synonym names its class, in any case; a name two classes share is an error naming both; an unknown name among
    many says how many and guesses, not a thousand names in one line."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    names = ["tench, Tinca tinca", "great white shark, white shark, man-eater", "crane", "Crane, derrick", "crane",
             "3"] + [f"class {i}" for i in range(6, 10)] + [f"other {i}" for i in range(10)]
    named = MFVideoPipeline(pipe.transformer, training_config=pipe.cfg, id2label=dict(enumerate(names[:10])))
    asked = ["tench", "Tinca tinca", "white shark", "MAN-EATER", "tench, Tinca tinca", 7, "tench"]  # tench twice
    assert named.get_label_ids(asked) == [0, 0, 1, 1, 0, 7, 0]
    assert named.get_label_ids("3") == [5] and named.get_label_ids("4") == [4]  # a class named "3"; an id as text
    with pytest.raises(ValueError, match=r"'crane' is shared by classes 2, 4 \(crane; crane\): give the id"):
        named.get_label_ids(["crane"])
    assert named.get_label_ids(["derrick", "Crane"]) == [3, 3]  # exactly "Crane": class 3's synonym
    with pytest.raises(ValueError, match=r"'CRANE' is shared by classes 2, 3, 4"):  # in any case: three classes
        named.get_label_ids("CRANE")
    many = MFVideoPipeline(pipe.transformer, training_config=pipe.cfg, id2label=dict(enumerate(names)))
    with pytest.raises(ValueError) as e:
        many.get_label_ids("tenhc")
    assert str(e.value) == "unknown class name 'tenhc' (did you mean 'tench'?); 19 known (pipe.labels)"
    import unicodedata  # a class folder named on macOS: a decomposed é; typed on any keyboard: the composed one

    accents = MFVideoPipeline(pipe.transformer, training_config=pipe.cfg,
                              id2label={0: unicodedata.normalize("NFD", "éléphant"), 1: "café, espresso"})
    assert accents.get_label_ids(["éléphant", "Éléphant", unicodedata.normalize("NFD", "Café")]) == [0, 0, 1]


MEM = """
import resource, sys, numpy as np, torch
from mfvideo.pipeline import MFVideoPipeline
pipe = MFVideoPipeline.from_pretrained(sys.argv[1])
video = np.zeros((4, 16, 16, 3), np.uint8)
pipe.extend(video, 4, context_frames=2, seed=0)  # warm-up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = pipe.extend(video, int(sys.argv[2]), context_frames=2, seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, out.frames.shape[1])
"""


def test_extending_200_frames_keeps_peak_memory_flat(ckpt):
    growth = {}
    for n in (50, 200):
        proc = _cli("-c", MEM, str(ckpt), str(n))
        assert proc.returncode == 0, proc.stderr
        kb, frames = map(int, proc.stdout.split())
        assert frames == 4 + n
        growth[n] = kb
    assert growth[200] < growth[50] + 4096, growth  # peak RSS (KiB) beyond warm-up: no growth with length


def _tiny_64px_model(path):
    """A random tiny class-conditional pixel model of 64 x 64 frames (16 x 16 patches), saved to ``path``."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.resolution=64", "model.patch_size=16"])
    cfg.model.in_channels, cfg.model.num_classes = 1, 10
    torch.manual_seed(0)
    MFVideoPipeline(randomize(build_model(cfg.model), std=0.05), training_config=cfg).save_pretrained(path)


def _peak(run) -> int:
    """tracemalloc's peak (bytes; numpy reports to it) while ``run()`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_mfvideo_extend_streams_a_long_video_in_flat_memory(tmp_path):
    """mfvideo-extend decodes the input, makes the windows and encodes the mp4 chunk by chunk (``extend_stream``):
    extending a 512-frame 64x64 video by 512 frames allocates no more than 96 by 96 (tracemalloc's peak, which numpy
    reports to; the input is decoded 32 frames at a time). Holding the whole video (``extend``, then ``save_video``)
    grows with it, so the check can tell."""
    from mfvideo.cli import extend

    _tiny_64px_model(tmp_path / "m")
    rng = np.random.default_rng(0)
    for n in (96, 512):
        save_video((rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8) for _ in range(n // 32)), tmp_path / f"{n}.mp4")

    def cli(n):
        assert extend.main([str(tmp_path / f"{n}.mp4"), "--checkpoint", str(tmp_path / "m"), "--num-new-frames", str(n),
                            "--out", str(tmp_path / "out.mp4")]) == 0
        assert probe(tmp_path / "out.mp4").num_frames == 2 * n

    def whole(n):
        out = MFVideoPipeline.from_pretrained(tmp_path / "m").extend(tmp_path / f"{n}.mp4", n, output_type="uint8")
        save_video(out.frames[0], tmp_path / "out.mp4")

    cli(96)  # warm-up
    short, long, held = _peak(lambda: cli(96)), _peak(lambda: cli(512)), _peak(lambda: whole(512))
    assert long < short + 2**21, (short, long)
    assert held > short + 2**23, (short, held)  # 1,024 frames of 64x64x3 uint8: 12 MiB, twice over


def test_mfvideo_sample_streams_long_clips_in_flat_memory(tmp_path):
    """mfvideo-sample encodes clips longer than the window as their windows come (``generate_stream`` into
    ``save_videos``): two 512-frame 64x64 clips allocate no more than two 96-frame ones (tracemalloc's peak), where
    ``generate``'s whole clips take 12 MiB more; the files are ``generate``'s frames, encoded whole."""
    from mfvideo.cli import sample

    _tiny_64px_model(tmp_path / "m")

    def cli(n):
        assert sample.main(["--checkpoint", str(tmp_path / "m"), "--classes", "3", "5", "--num-frames", str(n),
                            "--out", str(tmp_path / str(n))]) == 0

    def whole(n):
        return MFVideoPipeline.from_pretrained(tmp_path / "m").generate(
            num_frames=n, class_labels=[3, 5], generator=torch.Generator().manual_seed(0), output_type="uint8")

    cli(96)  # warm-up
    short, long, held = _peak(lambda: cli(96)), _peak(lambda: cli(512)), _peak(lambda: whole(512))
    assert long < short + 2**21, (short, long)
    assert held > short + 2**23, (short, held)  # 1,024 frames of 64x64x3 uint8: 12 MiB
    out = whole(512)
    for b, c in enumerate((3, 5)):
        save_video(out.frames[b], tmp_path / "whole.mp4", fps=MFVideoPipeline.from_pretrained(tmp_path / "m").fps)
        assert (tmp_path / "512" / f"clip_{b:03d}_class{c}.mp4").read_bytes() == (tmp_path / "whole.mp4").read_bytes()


def test_generate_stream_gives_generates_frames_window_by_window(ckpt):
    """``generate_stream``: the first window, then one chunk per window, together ``generate``'s frames (labelled,
    drawn classes known when it is called, one frame per window); the network runs only as it is consumed."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    for kw in ({"class_labels": [1, 7]}, {"num_clips": 2, "frames_per_window": 1}):
        whole = pipe.generate(num_frames=9, seed=5, output_type="uint8", **kw)
        counter = CallCounter(pipe.model)
        pipe.transformer = counter
        stream = pipe.generate_stream(num_frames=9, seed=5, **kw)
        assert counter.calls == 0 and np.array_equal(stream.class_labels, whole.class_labels)
        chunks = list(stream)
        pipe.transformer = pipe.model
        assert chunks[0].shape[1] == 4 and counter.calls == len(chunks)  # one call per chunk
        assert np.array_equal(np.concatenate(chunks, axis=1), whole.frames)
        assert stream.num_frames == 9  # what a progress bar counts to


def test_extend_stream_gives_extends_frames_window_by_window(ckpt, tmp_path):
    """``extend_stream``: the input first, then one chunk per window, together ``extend``'s frames (from a file and
    from an array, with and without the input), the class read once the first window is made; arguments are checked
    when it is called, before any chunk; the network runs only as it is consumed."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    video = (np.random.default_rng(0).random((6, 16, 16, 3)) * 255).astype(np.uint8)
    save_video(video, tmp_path / "in.mp4", fps=8)
    decoded = read_video(tmp_path / "in.mp4")[0]
    for src in (tmp_path / "in.mp4", decoded):
        for include in (True, False):
            whole = pipe.extend(src, num_new_frames=5, seed=3, include_input=include, output_type="uint8")
            counter = CallCounter(pipe.model)
            pipe.transformer = counter
            stream = pipe.extend_stream(src, num_new_frames=5, seed=3, include_input=include)
            assert counter.calls == 0 and stream.class_labels is None
            chunks = list(stream)
            pipe.transformer = pipe.model
            assert [c.shape[1] for c in chunks][-3:] == [2, 2, 1] and counter.calls == 3  # windows of 2 + 2 new
            assert np.array_equal(np.concatenate(chunks, axis=1), whole.frames)
            assert np.array_equal(stream.class_labels, whole.class_labels)
            assert stream.num_frames == whole.frames.shape[1]  # known before the first chunk: a progress bar's total
    with pytest.raises(ValueError, match="fewer than the 3 context frames"):
        pipe.extend_stream(video[:2], num_new_frames=5, context_frames=3)


def test_a_model_with_temporal_patches_slides_in_whole_patches(tmp_path):
    """``model.temporal_patch_size=2``: the last window of a slide was cut to the frames still wanted (4 context + 1
    new), which no patch of 2 divides: the model's error in every extension and every generation past the window
    whose remainder was odd. Every window is now whole patches, the frames past the wanted ones dropped."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.temporal_patch_size=2", "data.num_frames=8"])
    cfg.model.in_channels, cfg.model.num_classes = 1, 10
    torch.manual_seed(0)
    MFVideoPipeline(randomize(build_model(cfg.model), std=0.05), training_config=cfg).save_pretrained(tmp_path)
    pipe = MFVideoPipeline.from_pretrained(tmp_path)
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    video = (np.random.default_rng(0).random((5, 16, 16, 3)) * 255).astype(np.uint8)
    assert pipe.generate(num_frames=13, class_labels=[1], seed=0).frames.shape[1] == 13  # 8, 4 + 4 new, 4 + 1
    assert pipe.extend(video, num_new_frames=5, seed=0).frames.shape[1] == 10  # 4 context + 4 new, 4 + 1
    assert pipe.extend(video, num_new_frames=5, seed=0, backward=True).frames.shape[1] == 10
    assert counter.frames == [8, 8, 6] + [8, 6] + [8, 6]  # 4 context + 1 new frame made as 4 + 2
    counter.frames.clear()
    for given in (video[:3], video[:1]):  # the diffusion classifier on whole patches: the latest 2, a still held
        assert pipe.extend(given, num_new_frames=2, seed=0, infer_label=True).frames.shape[1] == len(given) + 2
    assert all(t % 2 == 0 for t in counter.frames) and 2 in counter.frames  # (its calls: 2 frames, many clips)


def test_a_path_under_home_reads_and_writes_there(ckpt, tmp_path, monkeypatch):
    """"~/..." in Python, as in a shell: a saved video went to a folder named "~" made in the working folder, and
    the pipeline found neither a model nor a clip there."""
    import shutil

    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    shutil.copytree(ckpt, home / "model")
    pipe = MFVideoPipeline.from_pretrained("~/model")
    clip = pipe.generate(class_labels=[1], seed=0, output_type="uint8").frames[0]
    assert save_video(clip, "~/clips/a.mp4", fps=8) == home / "clips" / "a.mp4"
    save_image(clip[0], "~/clips/a.png")
    assert pipe.extend("~/clips/a.mp4", num_new_frames=2, seed=0).frames.shape[1] == 6
    assert pipe.condition("~/clips/a.png", [0], seed=0).frames.shape[1] == 4
    assert (home / "clips" / "a.png").is_file() and not any(work.iterdir())  # no "~" folder here


def test_a_stream_dropped_or_closed_unfinished_frees_its_decoder_at_once(ckpt, tmp_path, monkeypatch):
    """A stream left after its first chunks (a preview, a ``break``) held its generator in a reference cycle: it
    waited for the garbage collector, and with it, where decord is not installed, an ffmpeg process per stream."""
    import gc
    import weakref

    import mfvideo.data.video_io as video_io

    monkeypatch.setattr(video_io, "decord_available", lambda: False)  # the imageio-ffmpeg reader, a process
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    save_video((np.random.default_rng(0).random((70, 16, 16, 3)) * 255).astype(np.uint8), tmp_path / "in.mp4", fps=8)
    gc.disable()  # only reference counting frees what is dropped
    try:
        stream = pipe.extend_stream(tmp_path / "in.mp4", num_new_frames=4, seed=0)
        first = next(iter(stream))  # the file's first chunk: its decoder open
        alive = weakref.ref(stream)
        del stream
        assert alive() is None
        with pipe.extend_stream(tmp_path / "in.mp4", num_new_frames=4, seed=0) as stream:
            assert np.array_equal(next(iter(stream)), first)
        assert list(stream) == []  # closed: nothing more comes
    finally:
        gc.enable()


def test_latent_output_decodes_to_the_frames_and_given_latents_are_the_first_windows_noise(ckpt):
    """diffusers' ``output_type="latent"`` and ``latents=``: the latents of the frames a call makes decode
    (``decode_latents``) to the frames it gives, whatever the sliding; given noise is the first window's, the later
    windows' and any drawn class still come from the generator."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)
    for kw in ({}, {"num_frames": 3}, {"num_frames": 9}, {"num_frames": 9, "frames_per_window": 1},
               {"num_frames": 10, "motion_copy": 2}):
        lat = pipe.generate(class_labels=[0, 3], seed=1, output_type="latent", **kw).frames
        frames = pipe.generate(class_labels=[0, 3], seed=1, output_type="uint8", **kw).frames
        assert isinstance(lat, torch.Tensor) and lat.shape == (2, 1, frames.shape[1], 16, 16), kw
        assert np.array_equal(pipe.decode_latents(lat, "uint8"), frames), kw
    video = pipe.generate(num_frames=6, class_labels=[2], seed=0, output_type="uint8").frames
    lat = pipe.extend(video, num_new_frames=5, seed=0, output_type="latent").frames  # 2 context + 5 new latents
    tail = pipe.extend(video, num_new_frames=5, seed=0, output_type="uint8", include_input=False).frames
    assert lat.shape[2] == 7 and np.array_equal(pipe.decode_latents(lat, "uint8"), tail)
    assert torch.equal(lat[:, :, :2], pipe.codec.encode_frames(video[:, -2:], 1))  # the context, as encoded
    lat = pipe.condition(video[:, [0, 3]], [0, 3], seed=0, output_type="latent").frames
    assert np.array_equal(pipe.decode_latents(lat, "np"), pipe.condition(video[:, [0, 3]], [0, 3], seed=0).frames)
    # given noise: the generator's own first draw reproduces the seeded clips, later windows and drawn classes too
    g = torch.Generator().manual_seed(5)
    noise = pipe.method.noise((3, 1, 4, 16, 16), generator=g)
    given = pipe.generate(num_frames=7, latents=noise, generator=g, output_type="uint8")
    seeded = pipe.generate(num_frames=7, num_clips=3, seed=5, output_type="uint8")
    assert np.array_equal(given.frames, seeded.frames) and np.array_equal(given.class_labels, seeded.class_labels)
    other = pipe(class_labels=[4], latents=-noise, generator=torch.Generator().manual_seed(5), output_type="uint8")
    assert other.frames.shape[0] == 3 and not np.array_equal(other.frames, given.frames)  # one label, 3 clips
    g = torch.Generator().manual_seed(6)
    window = pipe.method.noise((1, 1, 4, 16, 16), generator=g)
    assert np.array_equal(pipe.condition(video[:, [0]], [0], latents=window, output_type="uint8").frames,
                          pipe.condition(video[:, [0]], [0], seed=6, output_type="uint8").frames)
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    for call, match in [(lambda: pipe.generate(latents=noise[:, :, :3]), r"shape \(B, 1, 4, 16, 16\)"),
                        (lambda: pipe.generate(class_labels=[1, 2], latents=noise), r"shape \(2, 1, 4, 16, 16\)"),
                        (lambda: pipe.generate(latents=noise.numpy()), "float tensor"),
                        (lambda: pipe.generate(latents=noise * float("nan")), "NaN"),
                        (lambda: pipe(video=video, latents=noise), "extension draws its noise"),
                        (lambda: pipe.extend(video, 3, output_type="latents"), "unknown output_type 'latents'"),
                        (lambda: pipe.decode_latents(lat, "latent"), "unknown output_type"),
                        (lambda: pipe.decode_latents(lat[:, :, 0]), r"shape \(B, 1, T, 16, 16\)"),  # torch's error
                        (lambda: pipe.decode_latents(lat.numpy()), r"shape \(B, 1, T, 16, 16\)")]:
        with pytest.raises(ValueError, match=match):
            call()
    assert counter.calls == 0  # refused before any network call


def test_one_generator_per_clip_makes_each_clip_as_it_would_be_made_alone(ckpt):
    """diffusers' list of generators: clip i's noise (every window's) and drawn class come from generator i, so a
    clip does not depend on the batch it is made in (up to float rounding of the batched network)."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    video = pipe.generate(num_frames=5, class_labels=[1, 6], seed=0, output_type="uint8").frames  # (2, 5, ...)
    makers = [lambda g, i: pipe.generate(num_frames=9, generator=g, output_type="latent"),  # drawn classes
              lambda g, i: pipe.generate(num_frames=9, class_labels=[2], generator=g, output_type="latent"),
              lambda g, i: pipe.extend(video if i is None else video[i : i + 1], 4, generator=g, output_type="latent"),
              lambda g, i: pipe.condition(video[:, [0, 3]] if i is None else video[i : i + 1, [0, 3]], [0, 3],
                                          generator=g, output_type="latent")]
    for make in makers:  # make(generator, the clip alone or None for both)
        together = make(gens(3, 8), None)
        assert together.frames.shape[0] == 2
        for i, seed in enumerate((3, 8)):
            alone = make(torch.Generator().manual_seed(seed), i)
            assert torch.allclose(together.frames[i], alone.frames[0], atol=1e-4)
            if together.class_labels is not None:
                assert together.class_labels[i] == alone.class_labels[0]
    assert not torch.allclose(*pipe.generate(generator=gens(3, 8), output_type="latent").frames)
    for call, match in [(lambda: pipe.generate(num_clips=3, generator=gens(1, 2)), "2 generator\\(s\\) for 3 clips"),
                        (lambda: pipe.extend(video, 2, generator=gens(1)), "1 generator\\(s\\) for 2 clips"),
                        (lambda: pipe.generate(generator=[]), "non-empty list"),
                        (lambda: pipe.generate(generator=7), "must be a torch.Generator, got int")]:
        with pytest.raises(ValueError, match=match):
            call()


def test_num_clips_makes_each_given_clip_k_times_each_as_it_would_be_made_alone(ckpt):
    """``extend`` / ``condition`` with ``num_clips`` a multiple of the B given clips: clip b * k + j is given clip b's
    j-th continuation, its own noise (a list of generators: the same clip as made alone), its given frames kept, the
    labels one, one per given clip or one per clip; __call__'s ``num_videos`` and diffusers' ``num_videos_per_prompt``
    reach them (``num_videos`` with ``video=`` was once ignored, and a label count off the batch a RuntimeError)."""
    pipe = MFVideoPipeline.from_pretrained(ckpt)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    video = pipe.generate(num_frames=5, class_labels=[1, 6], seed=0, output_type="uint8").frames  # (2, 5, ...)
    seeds = (3, 8, 5, 1)
    makers = [lambda v, g, **kw: pipe.extend(v, 4, generator=g, output_type="latent", **kw),
              lambda v, g, **kw: pipe.extend(v, 4, generator=g, output_type="latent", backward=True, **kw),
              lambda v, g, **kw: pipe.condition(v[:, [0, 3]], [0, 3], generator=g, output_type="latent", **kw)]
    for make in makers:
        for labels in (None, [4], [2, 7], [2, 3, 7, 9]):  # none, one, one per given clip, one per clip made
            together = make(video, gens(*seeds), num_clips=4, class_labels=labels).frames
            assert together.shape[0] == 4
            for i, seed in enumerate(seeds):
                b = i // 2
                own = None if labels is None else [labels[0] if len(labels) == 1 else labels[i * len(labels) // 4]]
                alone = make(video[b : b + 1], torch.Generator().manual_seed(seed), class_labels=own).frames
                assert torch.allclose(together[i], alone[0], atol=1e-4), (make, labels, i)
            assert not torch.allclose(together[0], together[1], atol=1e-2)  # one given clip, two continuations
    out = pipe.extend(video, 3, num_clips=6, output_type="uint8").frames  # (6, 8, ...): the input, then 3 new
    assert out.shape[:2] == (6, 8) and np.array_equal(out[:, :5], np.repeat(video, 3, axis=0))
    assert pipe.extend(video[0], 2, num_clips=3, infer_label=True).class_labels.shape == (3,)
    for call, match in [(lambda: pipe.extend(video, 2, num_clips=3), "num_clips=3: a multiple of the 2 given clips"),
                        (lambda: pipe.extend(video, 2, num_clips=0), "num_clips=0: a multiple"),
                        (lambda: pipe.extend(video[0], 2, num_clips=0), "num_clips=0: at least 1"),
                        (lambda: pipe.extend(video, 2, class_labels=[1, 2, 3]), "3 class labels for 2 clips: give one "
                                                                                 "or one per clip"),
                        (lambda: pipe.extend(video, 2, num_clips=4, class_labels=[1, 2, 3]),
                         "one per given clip \\(2\\)"),
                        (lambda: pipe.condition(video[:1, [0, 3]], [0, 3], class_labels=[1, 2]), "for 1 clip: give"),
                        (lambda: pipe(num_videos=2, num_videos_per_prompt=2), "give one of them"),
                        (lambda: pipe(num_videos_per_prompt=0), "num_videos_per_prompt must be >= 1")]:
        with pytest.raises(ValueError, match=match):
            call()
    # __call__: num_videos counts every clip, num_videos_per_prompt the clips per label or given clip
    extended = pipe.extend(video, 2, num_clips=4, generator=gens(*seeds), output_type="latent").frames
    for kw in (dict(num_videos=4), dict(num_videos_per_prompt=2)):
        called = pipe(video=video, num_new_frames=2, generator=gens(*seeds), output_type="latent", **kw).frames
        assert torch.equal(called, extended), kw
    made = pipe(image=video[1, 0], num_frames=4, num_videos_per_prompt=3, output_type="uint8").frames
    assert made.shape[:2] == (3, 4) and (made[:, 0] == video[1, 0]).all()
    per_label = pipe(class_labels=[1, 6], num_videos_per_prompt=2, generator=gens(*seeds), output_type="latent")
    assert torch.equal(per_label.frames, pipe(class_labels=[1, 1, 6, 6], generator=gens(*seeds),
                                               output_type="latent").frames)
    drawn = pipe(num_videos_per_prompt=3, generator=gens(3, 8, 5))  # labels drawn: k clips in all
    assert drawn.frames.shape[0] == 3 and drawn.class_labels.shape == (3,)


def test_extend_and_generate_through_a_causal_video_vae(monkeypatch):
    """Wan-style 4k+1 latents: windows slide in latent frames; each decoded window contributes its last 4 x new frames.
    With the motion copy and one of two new latents kept, the whole window is copied (it is decoded whole) and the
    next window's chain goes on from the kept latent."""
    from vae_configs import tiny_vae

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.num_frames=9", "data.resolution=64", "data.channels=3",
                                                      "model.patch_size=2"])
    cfg.model.in_channels, cfg.model.num_classes = 4, 10
    torch.manual_seed(0)
    cfg.latents.kind = "wan"
    pipe = MFVideoPipeline(randomize(build_model(cfg.model)), tiny_vae("wan"), training_config=cfg)
    assert pipe.latent_window == 3
    counter = CallCounter(pipe.model)
    pipe.transformer = counter
    video = np.random.default_rng(0).integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    out = pipe.extend(video, num_new_frames=10, context_frames=5, seed=0, output_type="uint8")  # 2 context latents
    assert out.frames.shape == (1, 17, 64, 64, 3) and np.array_equal(out.frames[0, :7], video)
    assert counter.calls == 3 and counter.frames == [3, 3, 3]  # 1 new latent = 4 frames per call
    # 1 context latent, 2 new per window; keeping 1 (4 pixel frames) per window: the same first window, its first
    # new latent's frames (pixel frames 1-4 of the 9 the window decodes to), then a window per 4 frames
    every = pipe.extend(video, num_new_frames=8, context_frames=1, seed=0, output_type="uint8").frames
    counter.calls, counter.frames = 0, []
    four = pipe.extend(video, num_new_frames=8, context_frames=1, seed=0, output_type="uint8", frames_per_window=4).frames
    assert four.shape == (1, 15, 64, 64, 3) and counter.frames == [3, 3]
    assert np.array_equal(four[:, 7:11], every[:, 7:11]) and not np.array_equal(four[:, 11:], every[:, 11:])
    with pytest.raises(ValueError, match=r"must be one of 4, 8 \(whole latent frames of the VAE's 4 frames each\) "
                                         "with 1 context frame in a 9-frame window, got 2"):
        pipe.extend(video, 4, context_frames=1, frames_per_window=2)
    counter.calls, counter.frames = 0, []
    gen = pipe.generate(num_frames=13, num_clips=2, seed=0)
    assert gen.frames.shape == (2, 13, 64, 64, 3) and counter.calls == 2
    counter.frames = []
    one = pipe.generate(num_frames=1, num_clips=2, seed=0).frames  # the full 3-latent window, cut
    assert counter.frames == [3] and np.array_equal(one, gen.frames[:, :1])
    lat = pipe.generate(num_frames=13, num_clips=2, seed=0, output_type="latent").frames  # 3 latents, then 1 more
    assert lat.shape == (2, 4, 4, 8, 8)
    one = pipe.generate(num_frames=9, num_clips=2, seed=0)  # one window: its latents decode to its frames
    assert np.array_equal(pipe.decode_latents(lat[:, :, :3]), one.frames)
    lat = pipe.extend(video, num_new_frames=10, context_frames=5, seed=0, output_type="latent").frames
    assert lat.shape == (1, 4, 2 + 3, 8, 8)  # 2 context latents, then 1 new latent (4 frames) per window
    assert torch.equal(lat[:, :, :2], pipe.codec.encode_frames(video[None, -5:]))
    with pytest.raises(ValueError, match=r"context_frames must lie in \[1, 5\]"):
        pipe.extend(video, 4, context_frames=9)
    with pytest.raises(ValueError, match="needs 4k\\+1 frames"):
        pipe.codec.encode(torch.zeros(1, 3, 8, 64, 64))
    for call in (lambda: pipe.extend(video, 4, backward=True), lambda: pipe.condition(video[None, [0]], [0])):
        with pytest.raises(NotImplementedError, match="needs a per-frame codec"):
            call()
    from mfvideo.pipeline.motion_copy import MotionCanvas

    views, known, step = [], [], MotionCanvas.step
    monkeypatch.setattr(MotionCanvas, "step", lambda self, frame, *a, **kw: views.append(self.view()) or
                        known.append(self.known.clone()) or step(self, frame, *a, **kw))
    lat = pipe.extend(video, num_new_frames=8, context_frames=1, seed=0, output_type="latent", frames_per_window=4,
                      motion_copy=1).frames  # (1, 4, 1 + 2, 8, 8): the context latent, then one kept per window
    assert len(views) == 4  # both new latents of each window copied
    assert torch.equal(views[0], lat[:, :, 0]) and torch.equal(views[2], lat[:, :, 1])
    # the chain goes on from the kept latent with its memory: a network whose new latents are the context's last one
    # moved a pixel further right per frame (every move accepted) shows the canvas one column wider after each kept
    # step, and the next window's first step starts from that canvas, not afresh from the kept latent
    sample_window = pipe._sample

    def moving(noise, y, how, context=None, mask=None, *a, **kw):  # (B, C, k + new, h, w)
        window = sample_window(noise, y, how, context, mask, *a, **kw)
        k = int(mask[0].sum())
        for j in range(k, window.shape[2]):
            window[:, :, j] = torch.roll(window[:, :, k - 1], j - k + 1, dims=-1)
        return window

    monkeypatch.setattr(pipe, "_sample", moving)
    views.clear(), known.clear()
    pipe.extend(video, num_new_frames=8, context_frames=1, seed=0, output_type="latent", frames_per_window=4,
                motion_copy=1)
    assert [int(k.sum()) for k in known] == [64, 72, 72, 80]  # window 2 begins with window 1's kept canvas


def test_demo_writes_its_sheets_and_videos(tmp_path, monkeypatch):
    """The Quick start's first command, on the bundled model: past the first window, its clips keep one new frame
    per window (the steadiest; README "Use it", `frames_per_window`) unless told otherwise; each held-out clip is extended
    three times, the first two with the model's motion_copy (the bundled model's 4, as every later extension), the
    third with the other setting (0: the network's own frames); every digit is generated with both, the model's first.
    ``--motion-copy 0`` swaps them."""
    from mfvideo.cli import demo
    from mfvideo.pipeline import MFVideoPipeline

    kept = []
    for name in ("extend", "generate"):
        real = getattr(MFVideoPipeline, name)
        monkeypatch.setattr(MFVideoPipeline, name, lambda self, *a, _real=real, _name=name, **kw:
                            kept.append((_name, kw.get("frames_per_window"), kw.get("motion_copy", 0)))
                            or _real(self, *a, **kw))
    assert demo.main(["--out", str(tmp_path / "demo")]) == 0
    assert kept == [("generate", 1, 4), ("generate", 1, 0)] + [
        ("extend", 1, 4), ("extend", 1, 4), ("extend", 1, 0)] * 3 + [
        ("extend", 1, 4)] * 6  # then image to video from each clip's first frame, and backwards from its last 4
    for name in ("generated.png", "extended.png", "generated/digit_0.mp4", "generated/digit_9_motion_copy_0.mp4",
                 "extended/extended_2.mp4",
                 "extended/extended_2_read_class.mp4", "extended/extended_2_motion_copy_0.mp4", "from_image.png",
                 "from_image/input_2.png", "before.png"):
        assert (tmp_path / "demo" / name).is_file(), name
    given = read_video(tmp_path / "demo" / "before" / "input_0.mp4")[0]
    before = read_video(tmp_path / "demo" / "before" / "before_0.mp4")[0]
    assert len(before) == 16 + 4 and np.abs(before[16:].astype(int) - given).mean() < 3  # 16 new, then the clip
    for name in ("extended_0.mp4", "extended_0_read_class.mp4", "extended_0_motion_copy_0.mp4"):
        assert probe(tmp_path / "demo" / "extended" / name).num_frames == 4 + 16
    still = read_video(tmp_path / "demo" / "from_image" / "from_image_1.mp4")[0]
    first = imageio.imread(tmp_path / "demo" / "from_image" / "input_1.png")
    assert len(still) == 1 + 16 and np.abs(still[0].astype(int) - first).mean() < 3  # the still, then 16 new frames
    # the sheet: 3 clips x (truth, extension with no label, with the read class, the network's own), 20 frames each
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "demo" / "extended.png"))
    assert sheet.shape[:2] == (12 * (48 + 2) + 2, 20 * (48 + 2) + 2)  # grid(): 16x16 frames magnified to 48x48
    gen = np.asarray(Image.open(tmp_path / "demo" / "generated.png"))  # 10 digits x (the model's copy, the network's)
    assert gen.shape[:2] == (20 * (48 + 2) + 2, 16 * (48 + 2) + 2)
    kept.clear()
    assert demo.main(["--out", str(tmp_path / "demo0"), "--motion-copy", "0", "--frames-per-window", "4"]) == 0
    assert kept == [("generate", 4, 0), ("generate", 4, 4)] + [
        ("extend", 4, 0), ("extend", 4, 0), ("extend", 4, 4)] * 3 + [
        ("extend", 4, 0)] * 6  # the third extension copies; whole windows where asked


def test_sampling_draws_the_noise_prior_the_model_was_trained_with(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    cfg.model.in_channels, cfg.model.num_classes = 1, 10
    cfg.method.noise_frame_correlation = 0.9
    MFVideoPipeline(randomize(build_model(cfg.model)), training_config=cfg).save_pretrained(tmp_path / "rho")
    pipe = MFVideoPipeline.from_pretrained(tmp_path / "rho")
    assert pipe.method.noise_frame_correlation == 0.9  # saved with the model
    seen = []

    def record(z, t, r, y=None):
        seen.append(z)
        return torch.zeros_like(z)

    pipe.transformer = record
    pipe.generate(num_clips=200, seed=0)  # one call at t = 1: z is the noise
    e = seen[0]  # (200, 1, 4, 16, 16)
    cov = torch.cov(e.transpose(0, 2).reshape(e.shape[2], -1))
    assert torch.allclose(cov.diagonal(), torch.ones(4), atol=0.03)
    assert torch.allclose(cov[0, 1:], torch.full((3,), 0.9), atol=0.03)


def test_generate_without_labels_draws_a_class_per_clip():
    """A class-conditional model asked for clips without labels draws one class per clip (after the first window's
    noise, from the same generator) and samples the guided conditional field: the clips are those of the drawn
    labels given explicitly, read as those classes, and ``class_labels`` reports them; ``-1`` asks for the null
    label, the model's unconditional branch (a different clip, nothing reported)."""
    from mfvideo.eval.digits import DigitSuite

    pipe = MFVideoPipeline.from_pretrained()
    out = pipe.generate(num_clips=20, seed=0, output_type="uint8")
    g = torch.Generator().manual_seed(0)
    pipe.method.noise((20, *pipe._latent_shape(pipe.window)), generator=g)
    np.testing.assert_array_equal(out.class_labels, torch.randint(0, 10, (20,), generator=g).numpy())
    assert len(set(out.class_labels.tolist())) >= 5
    given = pipe.generate(class_labels=out.class_labels.tolist(), seed=0, output_type="uint8")
    np.testing.assert_array_equal(out.frames, given.frames)
    assert given.class_labels is None
    assert (DigitSuite.load().clip_class(out.frames) == out.class_labels).mean() >= 0.9
    null = pipe.generate(num_clips=20, seed=0, class_labels=-1, output_type="uint8")
    assert null.class_labels is None and (null.frames != out.frames).any()


def test_cli_sample_names_the_drawn_class(tmp_path):
    proc = _cli("scripts/sample.py", "--num-clips", "3", "--seed", "0", "--out", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    drawn = MFVideoPipeline.from_pretrained().generate(num_clips=3, generator=torch.Generator().manual_seed(0))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        f"clip_{i:03d}_class{c}.mp4" for i, c in enumerate(drawn.class_labels)]


def test_bundled_model_fills_a_gap_longer_than_its_window_on_the_true_track():
    """Twelve frames between two given frames at each end of held-out 16-frame clips (twice the bundled model's
    8-frame window, null label): filled window by window from both sides, the new frames keep the digit and its
    track (one stretched 16-frame window, before session 39: the digit's centre 3.1 px off the true frames')."""
    from mfvideo.eval.digits import DigitSuite, centroids, real_clips

    pipe = MFVideoPipeline.from_pretrained()
    clips, labels = real_clips(30, "test", 16, seed=4)
    idx = [0, 1, 14, 15]
    new = pipe.condition(clips[:, idx], idx, num_frames=16, seed=0, output_type="uint8").frames[:, 2:14]
    preds, _ = DigitSuite.load().predict(new)
    assert (preds == labels[:, None]).mean() >= 0.9
    assert np.linalg.norm(centroids(new) - centroids(clips[:, 2:14]), axis=-1).mean() < 2.2
