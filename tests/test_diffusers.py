"""diffusers-native use: save_pretrained / DiffusionPipeline.from_pretrained, __call__'s argument names and outputs,
export_to_video; one owner for the model's keys; one-way imports between training and the pipeline."""

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch

from mfvideo.builders import NOT_CONSTRUCTOR_KEYS
from mfvideo.config import ModelConfig
from mfvideo.data.video_io import read_video
from mfvideo.io import save_video
from mfvideo.models import STDiT
from mfvideo.pipeline import MFVideoPipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "digits"
    MFVideoPipeline.from_pretrained().save_pretrained(path)
    return path


def test_diffusion_pipeline_from_pretrained_generates_and_export_to_video_matches_save_video(saved, tmp_path):
    from diffusers import DiffusionPipeline
    from diffusers.utils import export_to_video

    assert {"model_index.json", "config.yaml", "transformer", "pipeline.py"} <= {p.name for p in saved.iterdir()}
    pipe = DiffusionPipeline.from_pretrained(saved, custom_pipeline=str(saved), trust_remote_code=True)
    assert type(pipe).__name__ == "MFVideoPipeline" and isinstance(pipe.transformer, STDiT)
    ours = MFVideoPipeline.from_pretrained(saved)
    out = pipe(class_labels=[3], generator=torch.Generator().manual_seed(0))  # diffusers' argument names
    ref = ours.generate(class_labels=[3], generator=torch.Generator().manual_seed(0), output_type="uint8")
    # a user's fresh interpreter, where nothing of mfvideo is imported before diffusers reads the folder: diffusers
    # 0.42 resolves the transformer's module (model_index.json: mfvideo.models.stdit) from sys.modules only, so the
    # shim's import must bring it (it did not: this test's own imports had hidden it)
    code = ("import sys, numpy as np, torch; from diffusers import DiffusionPipeline; "
            f"p = DiffusionPipeline.from_pretrained({str(saved)!r}, custom_pipeline={str(saved)!r}, "
            "trust_remote_code=True); "
            "o = p(class_labels=[3], generator=torch.Generator().manual_seed(0), output_type='uint8'); "
            f"np.save({str(tmp_path / 'fresh.npy')!r}, o.frames)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "fresh.npy"), ref.frames)
    assert out.frames.dtype == np.float32 and 0.0 <= out.frames.min() and out.frames.max() <= 1.0
    assert np.array_equal(np.round(out.frames * 255).astype(np.uint8), ref.frames)  # same weights, same noise
    export_to_video(out.frames[0], str(tmp_path / "diffusers.mp4"), fps=int(out.fps))
    save_video(out.frames[0], tmp_path / "ours.mp4", fps=out.fps)
    a, b = read_video(tmp_path / "diffusers.mp4")[0].astype(int), read_video(tmp_path / "ours.mp4")[0].astype(int)
    truth = ref.frames[0].astype(int)
    assert a.shape == b.shape == truth.shape
    # both encoders are lossy; an inverted or rescaled video would be off by ~100 or more
    assert np.abs(a - truth).mean() < 8 and np.abs(b - truth).mean() < 8 and np.abs(a - b).mean() < 8


def test_call_output_types_return_dict_and_extension(saved):
    pipe = MFVideoPipeline.from_pretrained(saved)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    base = pipe(class_labels=["7", 1], generator=g(), output_type="uint8").frames  # names via id2label
    assert base.shape == (2, pipe.window, 16, 16, 3) and base.dtype == np.uint8
    pt = pipe(class_labels=[7, 1], generator=g(), output_type="pt").frames
    assert pt.shape == (2, pipe.window, 3, 16, 16) and torch.equal((pt * 255).round().byte().permute(0, 1, 3, 4, 2),
                                                                  torch.from_numpy(base))
    pil = pipe(class_labels=[7, 1], generator=g(), output_type="pil").frames
    assert len(pil) == 2 and np.array_equal(np.asarray(pil[1][0]), base[1, 0])
    (frames,) = pipe(class_labels=[7, 1], generator=g(), return_dict=False)
    assert np.array_equal(np.round(frames * 255).astype(np.uint8), base)
    ext = pipe(video=base[:1], num_new_frames=5, generator=g(), output_type="uint8").frames
    assert ext.shape[1] == pipe.window + 5 and np.array_equal(ext[0, : pipe.window], base[0])
    pre = pipe(video=base[:1], num_new_frames=5, generator=g(), output_type="uint8", backward=True).frames
    assert np.array_equal(pre, pipe.extend(base[:1], 5, generator=g(), output_type="uint8", backward=True).frames)
    assert pre.shape[1] == pipe.window + 5 and np.array_equal(pre[0, 5:], base[0])
    with pytest.raises(ValueError, match="backward works on a given video"):
        pipe(class_labels=[1], backward=True)
    with pytest.raises(ValueError, match="unknown class name"):
        pipe(class_labels=["seven"])
    with pytest.raises(ValueError, match="output_type"):
        pipe(class_labels=[1], output_type="gif")


@pytest.mark.parametrize("how", ["dtype", "torch_dtype", "to"])
def test_a_pipeline_in_bfloat16_samples_float32_inputs(saved, how):
    """The GPU habit, ``from_pretrained(..., dtype=torch.bfloat16)`` (or ``torch_dtype=``) or ``.to(torch.bfloat16)``: the noise,
    the given frames and the context arrive in float32 and the model casts them (a conv3d dtype error before);
    generation, extension with its reader, a diffusion-classifier reading and interpolation all run, and the frames
    are the float32 model's up to bf16 rounding."""
    import warnings

    ref = MFVideoPipeline.from_pretrained(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' notes on the argument's name and on casting with .to()
        if how in ("dtype", "torch_dtype"):  # diffusers' current name and its older one
            pipe = MFVideoPipeline.from_pretrained(saved, **{how: torch.bfloat16})
        else:
            pipe = MFVideoPipeline.from_pretrained(saved).to(torch.bfloat16)
    assert next(pipe.transformer.parameters()).dtype == torch.bfloat16
    # the network's frames (motion_copy=0): a copy's per-frame accept / reject would turn rounding into whole frames
    a = pipe.generate(class_labels=[3, 5], seed=0, output_type="uint8", motion_copy=0).frames
    b = ref.generate(class_labels=[3, 5], seed=0, output_type="uint8", motion_copy=0).frames
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2  # the same clips, bf16 rounding apart
    ext = pipe.extend(b[:, :4], 4, seed=0, output_type="uint8")
    assert ext.frames.shape == (2, 8, 16, 16, 3) and list(ext.class_labels) == list(
        ref.extend(b[:, :4], 4, seed=0).class_labels)
    assert pipe.extend(b[:1, :4], 4, seed=0, infer_label=True).class_labels is not None
    assert pipe.condition(b[:1, [0, 7]], frame_indices=[0, 7], seed=0).frames.shape == (1, 8, 16, 16, 3)


def test_pipeline_to_takes_a_device_a_dtype_or_both_without_diffusers_false_warning(saved):
    """``pipe.to(dtype)``, ``to(device, dtype)``, ``to(dtype=...)``: the weights cast, the pipeline itself returned, and no
    "should be kept in float32: []" from diffusers' model cast (diffusers 0.42 logs it on every cast of any model)."""
    import logging

    import diffusers
    from packaging.version import Version

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")  # the library's root logger (it does not propagate)
    logger.addHandler(handler)
    try:
        pipe = MFVideoPipeline.from_pretrained(saved)
        for args, kwargs, dtype in [((torch.bfloat16,), {}, torch.bfloat16), (("cpu", torch.float64), {}, torch.float64),
                                    (("cpu",), {}, torch.float64), ((), {"dtype": torch.float32}, torch.float32)]:
            assert pipe.to(*args, **kwargs) is pipe
            assert {p.dtype for p in pipe.transformer.parameters()} == {dtype}, (args, kwargs)
        assert not [r for r in records if "kept in float32" in r.getMessage()], [r.getMessage() for r in records]
        super(MFVideoPipeline, pipe).to(torch.bfloat16)  # diffusers' own cast: what the override avoids
        if Version(diffusers.__version__) >= Version("0.42"):  # 0.33 (the lower bound) logs nothing to avoid
            assert [r for r in records if "kept in float32" in r.getMessage()]
    finally:
        logger.removeHandler(handler)


def test_the_sampling_commands_take_a_dtype(tmp_path, monkeypatch):
    """``--dtype bfloat16`` (mfvideo-sample, -extend, -interpolate): the bundled model's frames within bf16 rounding of
    float32's (a lossless grid), and the weights loaded in bf16."""
    import imageio.v2 as imageio

    from mfvideo.cli import sample

    grids = {}
    for dtype in ("float32", "bfloat16"):
        assert sample.main(["--classes", "3", "5", "--num-frames", "10", "--dtype", dtype, "--grid",
                            "--motion-copy", "0",  # the network's frames: a copy would turn rounding into frames
                            "--out", str(tmp_path / dtype)]) == 0
        grids[dtype] = imageio.imread(tmp_path / dtype / "grid.png").astype(int)
    diff = np.abs(grids["float32"] - grids["bfloat16"])
    assert 0 < diff.mean() < 2  # bf16 rounding: not the same weights, the same clips
    seen = []
    real = MFVideoPipeline.from_pretrained
    monkeypatch.setattr(MFVideoPipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **kw: seen.append(kw["dtype"]) or real(*a, **kw)))
    assert sample.main(["--classes", "1", "--dtype", "bfloat16", "--out", str(tmp_path / "x")]) == 0
    assert seen == [torch.bfloat16]


def test_diffusers_xformers_switch_reaches_our_attention(saved, monkeypatch):
    """``pipe.enable_xformers_memory_efficient_attention()`` (diffusers' switch, on the pipeline or the transformer)
    sets every attention layer's backend to ``xformers`` with the operator asked for, where diffusers' own walk would
    leave them silently as they were; off returns them to ``sdpa``. Without xformers installed: a one-line error, the
    backend unchanged. On a CPU tensor the xformers backend runs as sdpa: the same frames."""
    from mfvideo.models.attention import Attention
    from mfvideo.models import stdit

    pipe = MFVideoPipeline.from_pretrained(saved)
    layers = [m for m in pipe.transformer.modules() if isinstance(m, Attention)]
    assert len(layers) > 1 and all(m.backend == "sdpa" and m.xformers_op is None for m in layers)
    ref = pipe.generate(class_labels=[3], seed=0, output_type="uint8").frames
    if stdit.importlib.util.find_spec("xformers") is None:
        with pytest.raises(ModuleNotFoundError, match="xformers is not installed"):
            pipe.enable_xformers_memory_efficient_attention()
        assert all(m.backend == "sdpa" for m in layers)
        monkeypatch.setattr(stdit.importlib.util, "find_spec", lambda name, *a: object())  # as if installed
    op = object()
    pipe.enable_xformers_memory_efficient_attention(attention_op=op)
    assert all(m.backend == "xformers" and m.xformers_op is op for m in layers)
    assert np.array_equal(pipe.generate(class_labels=[3], seed=0, output_type="uint8").frames, ref)
    pipe.disable_xformers_memory_efficient_attention()
    assert all(m.backend == "sdpa" and m.xformers_op is None for m in layers)
    pipe.transformer.enable_xformers_memory_efficient_attention()
    assert all(m.backend == "xformers" and m.xformers_op is None for m in layers)


def test_export_cli_turns_a_training_checkpoint_into_a_pipeline_folder(tmp_path):
    from mfvideo.cli import export, train

    train.main([str(ROOT / "configs" / "tiny.yaml"), f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
                "train.checkpoint_every=2"])
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert export.main([str(ckpt), "--out", str(tmp_path / "exported")]) == 0
    a = MFVideoPipeline.from_pretrained(ckpt).generate(num_clips=2, seed=0, output_type="uint8").frames
    b = MFVideoPipeline.from_pretrained(tmp_path / "exported").generate(num_clips=2, seed=0, output_type="uint8").frames
    assert np.array_equal(a, b)
    assert MFVideoPipeline.from_pretrained(tmp_path / "exported").labels == {str(i): str(i) for i in range(10)}
    for folder in (ckpt, tmp_path / "exported"):  # either kind of folder loads in the dtype asked for
        half = MFVideoPipeline.from_pretrained(folder, dtype=torch.bfloat16)
        assert {p.dtype for p in half.transformer.parameters()} == {torch.bfloat16}
        c = half.generate(num_clips=2, seed=0, output_type="uint8").frames
        assert np.abs(c.astype(int) - a.astype(int)).mean() < 2  # bf16 rounding apart
    with pytest.raises(ValueError, match="dtype or torch_dtype"):
        MFVideoPipeline.from_pretrained(ckpt, dtype=torch.bfloat16, torch_dtype=torch.bfloat16)


def test_export_sets_a_pipeline_folder_s_sampling_defaults_and_keeps_its_records(tmp_path, capsys):
    """``mfvideo-export FOLDER --out DIR sample.KEY=VALUE``: a pipeline folder (a post-training's) exported with new
    sampling defaults samples as the source does when asked for them, carries the source's records along, and refuses
    any key outside ``sample.`` (the weights were trained with the rest), unknown keys and bad values, writing
    nothing; overrides may come before or after the options."""
    from mfvideo.cli import export

    src = tmp_path / "src"
    MFVideoPipeline.from_pretrained().save_pretrained(src)
    (src / "post_train.json").write_text('{"steps": 3}\n')
    assert export.main([str(src), "--out", str(tmp_path / "out"), "sample.one_step_temperature=0.5",
                        "sample.fps=9"]) == 0
    out = MFVideoPipeline.from_pretrained(tmp_path / "out")
    assert out.cfg.sample.one_step_temperature == 0.5 and out.fps == 9.0
    assert (tmp_path / "out" / "post_train.json").read_text() == '{"steps": 3}\n'
    source = MFVideoPipeline.from_pretrained(src)
    assert np.array_equal(out.generate(class_labels=[3, 5], seed=0, output_type="uint8").frames,
                          source.generate(class_labels=[3, 5], seed=0, temperature=0.5, output_type="uint8").frames)
    assert export.main([str(src), "sample.steps=2", "--out", str(tmp_path / "two")]) == 0
    assert MFVideoPipeline.from_pretrained(tmp_path / "two").cfg.sample.steps == 2
    capsys.readouterr()
    for bad, said in (("model.depth=3", "only sample.* settings change on export"),
                      ("sample.one_step_temperature=0", "must be a finite number > 0"),
                      ("sample.nope=1", "'sample.nope'")):
        with pytest.raises(SystemExit) as e:
            export.main([str(src), "--out", str(tmp_path / "bad"), bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and said in err[0], err
    assert not (tmp_path / "bad").exists()


def test_a_pipeline_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """mfvideo-export / -post-train / -fit-reader wrote into the output folder in place: a failure half-way left one
    run's weights beside another's config, and files of the folder's earlier contents (a post_train.json in a
    fit-reader output) stayed. Now the folder is written beside and renamed into place, the old one removed after."""
    from mfvideo.cli import export, train
    from mfvideo.io import NEW_DIR_MODE

    train.main([str(ROOT / "configs" / "tiny.yaml"), f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
                "train.checkpoint_every=2"])
    ckpt, out = tmp_path / "run" / "checkpoints" / "step_00000002", tmp_path / "out"
    assert export.main([str(ckpt), "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == NEW_DIR_MODE  # an ordinary folder, not mkdtemp's private one
    (out / "post_train.json").write_text("{}")  # what an earlier stage left there
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def fails_half_way(self, path, **kw):
        (Path(path) / "model_index.json").write_text("{}")  # diffusers writes this first
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(MFVideoPipeline, "save_pretrained", fails_half_way)
        with pytest.raises(SystemExit):
            export.main([str(ckpt), "--out", str(out)])
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert export.main([str(ckpt), "--weights", "model", "--out", str(out)]) == 0
    assert not (out / "post_train.json").exists() and (out / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no temporary folder left


def test_a_run_with_several_emas_loads_its_first_and_any_other_by_name(tmp_path, capsys):
    """``train.ema_decays: [0.9999, 0.5]``: the trainer samples with the first, and the pipeline took the first file
    by name (``ema_0.5``), another average than the run's own samples; no other could be asked for. Now ``ema`` is
    the config's first and ``ema_<decay>`` picks any, through the API and ``mfvideo-export --weights``."""
    from safetensors.torch import load_file

    from mfvideo.cli import export, train
    from mfvideo.weights import CheckpointError, load_weights

    train.main([str(ROOT / "configs" / "tiny.yaml"), f"train.output_dir={tmp_path / 'run'}", "train.max_steps=3",
                "train.checkpoint_every=3", "train.ema_decays=[0.9999,0.5]", "train.ema_warmup=false"])
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000003"
    files = {d: load_file(ckpt / f"ema_{d}.safetensors") for d in ("0.9999", "0.5")}
    key = next(k for k in files["0.5"] if not torch.equal(files["0.5"][k], files["0.9999"][k]))  # they differ
    assert torch.equal(load_weights(ckpt, "ema")[key], files["0.9999"][key])
    assert torch.equal(load_weights(ckpt, "ema_0.5")[key], files["0.5"][key])
    assert torch.equal(MFVideoPipeline.from_pretrained(ckpt).transformer.state_dict()[key], files["0.9999"][key])
    assert export.main([str(ckpt), "--weights", "ema_0.5", "--out", str(tmp_path / "half")]) == 0
    assert torch.equal(MFVideoPipeline.from_pretrained(tmp_path / "half").transformer.state_dict()[key],
                       files["0.5"][key])
    with pytest.raises(CheckpointError, match=r"no ema_0.99 weights \(it holds ema_0.5, ema_0.9999\)"):
        MFVideoPipeline.from_pretrained(ckpt, weights="ema_0.99")
    with pytest.raises(ValueError, match="picks among a training checkpoint's weights; .* a pipeline folder"):
        MFVideoPipeline.from_pretrained(tmp_path / "half", weights="ema_0.5")  # it was ignored
    capsys.readouterr()
    with pytest.raises(SystemExit):
        export.main([str(ckpt), "--weights", "best", "--out", str(tmp_path / "x")])
    assert "'best': expected ema, ema_<decay>" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # the sampling commands take --weights too: the raw weights sample otherwise than the first EMA
    from mfvideo.cli import sample

    for w in ("ema", "model"):
        assert sample.main(["--checkpoint", str(ckpt), "--weights", w, "--classes", "1", "--num-frames", "1",
                            "--out", str(tmp_path / w)]) == 0
    a, b = (np.asarray(Image.open(next((tmp_path / w).glob("*.png")))) for w in ("ema", "model"))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_the_pipeline_s_init_signature_is_readable_by_older_diffusers():
    """diffusers 0.33's ``from_pretrained`` types each ``__init__`` parameter from its annotation object and drops
    those it cannot read; an annotation held as a string (``from __future__ import annotations``) was dropped, and
    loading any folder stopped with ``KeyError: 'id2label'`` (0.32 warned "cannot get type annotation" on each load).
    Every parameter is unannotated or annotated by an object."""
    params = inspect.signature(MFVideoPipeline.__init__).parameters
    assert {"transformer", "vae", "training_config", "id2label"} <= set(params)
    strings = [name for name, p in params.items() if isinstance(p.annotation, str)]
    assert not strings, f"annotations held as strings: {strings}"


def test_model_config_fields_are_the_constructor_arguments():
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - set(NOT_CONSTRUCTOR_KEYS)
    params = set(inspect.signature(STDiT.__init__).parameters) - {"self"}
    assert fields == params


def _imports(folder: Path) -> set[str]:
    """Every mfvideo module imported (absolutely or relatively) by the files under ``folder``."""
    found = set()
    for f in folder.rglob("*.py"):
        package = ["mfvideo", *f.relative_to(ROOT / "mfvideo").parent.parts]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return found


def test_training_and_pipeline_do_not_import_each_other():
    assert not any(m.startswith("mfvideo.pipeline") for m in _imports(ROOT / "mfvideo" / "train"))
    assert not any(m.startswith("mfvideo.train") for m in _imports(ROOT / "mfvideo" / "pipeline"))
    assert "mfvideo.weights" in _imports(ROOT / "mfvideo" / "pipeline")  # the shared loader, and it is found


@pytest.mark.parametrize("kind", ["identity", "image_vae", "wan"])
def test_codecs_work_where_they_are_moved_or_where_their_vae_already_is(kind):
    """A codec encodes onto and decodes on the device it was moved to (pixel space too, which has no weights of its
    own), and one wrapped around a VAE already on another device follows the VAE. The GPU showed both broken (latents
    on the CPU beside a CUDA model; Wan statistics on the CPU beside a CUDA VAE): the "meta" device stands in here."""
    from mfvideo.latents import IdentityCodec
    from mfvideo.latents.vae import ImageVAECodec, VideoVAECodec
    from tests.vae_configs import tiny_vae

    frames = np.zeros((1, 5, 16, 16, 3), dtype=np.uint8)
    if kind == "identity":
        codecs = [IdentityCodec(3).to("meta")]
    else:
        wrap = (lambda v: ImageVAECodec(v)) if kind == "image_vae" else (lambda v: VideoVAECodec(v, "wan"))
        codecs = [wrap(tiny_vae(kind)).to("meta"), wrap(tiny_vae(kind).to("meta"))]
    for codec in codecs:
        assert all(b.device.type == "meta" for b in codec.buffers())  # meta tensors mix with CPU ones: check apart
        z = codec.encode_frames(frames)
        assert z.device.type == "meta"
        assert codec.decode(z).device.type == "meta"
