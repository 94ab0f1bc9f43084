"""Bad input through the real command-line entry points: one ``error:`` line, exit status 2, no traceback, no partial
output, inputs untouched. Plus the failure paths that must keep what was there before (full disk, killed prune)."""

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mfvideo.cli import extend as extend_cli
from mfvideo.cli import interpolate as interpolate_cli
from mfvideo.cli import sample as sample_cli
from mfvideo.cli import train as train_cli
from mfvideo.cli import cache_latents as cache_cli
from mfvideo.cli import post_train as post_cli
from mfvideo.cli import export as export_cli
from mfvideo.data.video_io import VideoError, fps_mode, iter_frames, probe, read_frames
from mfvideo.io import OutputError, VideoWriter, save_video, save_videos
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.train.checkpoint import clean_partial, latest_checkpoint, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with a real 8-frame mp4, a finished tiny training run and a few broken checkpoint folders."""
    w = tmp_path_factory.mktemp("work")
    frames = (np.random.default_rng(0).random((8, 16, 16, 3)) * 255).astype(np.uint8)
    save_video(frames, w / "in.mp4", fps=8)
    save_video(frames[:2], w / "short.mp4", fps=8)
    save_video(frames, w / "clip_1.mp4", fps=8)  # what `--out clip.mp4 --num-clips 2` would name its second output
    (w / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (w / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (w / "a_file").write_text("not a folder")
    (w / "outdir").mkdir()
    (w / "wan_vae").mkdir()  # a Wan VAE's folder (its config; the kind is checked before any weight is read)
    (w / "wan_vae" / "config.json").write_text('{"_class_name": "AutoencoderKLWan", "z_dim": 16}')
    (w / "names.txt").write_text("n01440764 tench, Tinca tinca\n")  # ImageNet's names: none of the digits' classes
    run = w / "run"
    train_cli.main([TINY, f"train.output_dir={run}", "train.max_steps=4", "train.checkpoint_every=2"])
    ckpt = latest_checkpoint(run)
    for name, text in {"ck_list": "- 1\n- 2\n", "ck_badyaml": "model: [unclosed\n",
                       "ck_pytag": "model: !!python/object/apply:os.system ['touch pwned']\n",
                       "ck_badvalue": (ckpt / "config.yaml").read_text().replace("patch_size: 4", "patch_size: 0")}.items():
        (w / name).mkdir()
        (w / name / "config.yaml").write_text(text)
        (w / name / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    (w / "ck_noweights").mkdir()
    (w / "ck_noweights" / "config.yaml").write_text((ckpt / "config.yaml").read_text())
    other = w / "ck_other"  # another architecture: the tiny config's weights under a deeper model's config
    other.mkdir()
    (other / "config.yaml").write_text((ckpt / "config.yaml").read_text().replace("depth: 2", "depth: 3"))
    (other / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    return w


def E(*a):
    return ["extend", "{w}/in.mp4", "--num-new-frames", "4", "--out", "{w}/new.mp4", *a]


def I(*a):
    return ["interp", "{w}/in.mp4", "{w}/short.mp4", "--out", "{w}/new.mp4", *a]


def S(*a):
    return ["sample", "--out", "{w}/samples", *a]


def T(*a):
    return ["train", TINY, "train.output_dir={w}/newrun", "train.max_steps=2", *a]


def P(*a):
    return ["post", "--out", "{w}/post", *a]


CASES = {
    # extend: outputs
    "extend onto its own input": ["extend", "{w}/in.mp4", "--num-new-frames", "4", "--out", "{w}/in.mp4"],
    "extend onto its input by another path": ["extend", "{w}/in.mp4", "--num-new-frames", "4", "--out", "{w}/../{wn}/in.mp4"],
    "extend output is a folder": ["extend", "{w}/in.mp4", "--num-new-frames", "4", "--out", "{w}/outdir"],
    "extend output parent is a file": ["extend", "{w}/in.mp4", "--num-new-frames", "4", "--out", "{w}/a_file/x.mp4"],
    # extend: numbers and devices
    "extend fps 0": E("--fps", "0"), "extend fps -1": E("--fps", "-1"), "extend fps inf": E("--fps", "inf"),
    "extend fps nan": E("--fps", "nan"), "extend num-new-frames 0": ["extend", "{w}/in.mp4", "--num-new-frames", "0",
                                                                     "--out", "{w}/new.mp4"],
    "extend num-clips 0": E("--num-clips", "0"), "interp num-clips 0": I("--num-clips", "0"),
    "extend output of no video suffix": ["extend", "{w}/in.mp4", "--num-new-frames", "4", "--out", "{w}/new.avi"],
    "interp output without suffix": ["interp", "{w}/in.mp4", "{w}/short.mp4", "--out", "{w}/new"],
    "sample format not a video's": S("--format", "avi"),
    "extend numbered output is the input": ["extend", "{w}/clip_1.mp4", "--num-new-frames", "4", "--num-clips", "2",
                                            "--out", "{w}/clip.mp4"],
    "extend context 0": E("--context-frames", "0"), "extend context too long": E("--context-frames", "99"),
    "extend class out of range": E("--class", "10"), "extend class and infer-class": E("--class", "3", "--infer-class"),
    "extend unknown class name": E("--class", "seven"), "extend steps 0": E("--steps", "0"),
    "extend context-noise 1": E("--context-noise", "1"), "extend context-noise nan": E("--context-noise", "nan"),
    "extend device bogus": E("--device", "bogus"), "extend device cuda:7": E("--device", "cuda:7"),
    "extend motion-copy -1": E("--motion-copy", "-1"), "extend motion-copy-tol nan": E("--motion-copy-tol", "nan"),
    # extend: inputs
    "extend missing input": ["extend", "{w}/missing.mp4", "--num-new-frames", "4", "--out", "{w}/new.mp4"],
    "extend corrupt input": ["extend", "{w}/corrupt.mp4", "--num-new-frames", "4", "--out", "{w}/new.mp4"],
    "extend corrupt image": ["extend", "{w}/corrupt.png", "--num-new-frames", "4", "--out", "{w}/new.mp4"],
    "extend input shorter than its context": ["extend", "{w}/short.mp4", "--num-new-frames", "4", "--context-frames", "4",
                                              "--out", "{w}/new.mp4"],
    "extend input is a folder": ["extend", "{w}/outdir", "--num-new-frames", "4", "--out", "{w}/new.mp4"],
    # checkpoints
    "checkpoint config is a list": E("--checkpoint", "{w}/ck_list"),
    "checkpoint config is invalid YAML": E("--checkpoint", "{w}/ck_badyaml"),
    "checkpoint config has a Python tag": E("--checkpoint", "{w}/ck_pytag"),
    "checkpoint config has a bad value": E("--checkpoint", "{w}/ck_badvalue"),
    "checkpoint without weights": E("--checkpoint", "{w}/ck_noweights"),
    "checkpoint of another architecture": E("--checkpoint", "{w}/ck_other"),
    "checkpoint folder missing": E("--checkpoint", "{w}/nowhere"),
    # interpolate
    "interpolate leaves no frame between": I("--num-frames", "2"),
    "interpolate end shorter than its context": ["interp", "{w}/in.mp4", "{w}/short.mp4", "--context-frames", "3",
                                                 "--out", "{w}/new.mp4"],
    "interpolate onto its end input": ["interp", "{w}/in.mp4", "{w}/short.mp4", "--out", "{w}/short.mp4"],
    "interpolate corrupt start": ["interp", "{w}/corrupt.mp4", "{w}/in.mp4", "--out", "{w}/new.mp4"],
    "interpolate missing end": ["interp", "{w}/in.mp4", "{w}/missing.png", "--out", "{w}/new.mp4"],
    "interpolate class and infer-class": I("--class", "3", "--infer-class"),
    # sample
    "sample num-frames 0": S("--num-frames", "0"), "sample num-frames -1": S("--num-frames", "-1"),
    "sample num-clips 0": S("--num-clips", "0"), "sample num-clips -1": S("--num-clips", "-1"),
    "sample classes without ids": S("--classes"), "sample classes disagree": S("--classes", "1", "2", "--num-clips", "3"),
    "sample class out of range": S("--classes", "11"), "sample unknown class name": S("--classes", "3", "seven"), "sample fps 0": S("--fps", "0"),
    "sample motion-copy 1.5": S("--motion-copy", "1.5"),
    "sample guidance-scale on a model with guidance folded in": S("--guidance-scale", "2"),
    "sample guidance-scale 0": S("--guidance-scale", "0"),
    "extend guidance-scale on a model with guidance folded in": E("--guidance-scale", "2"),
    "sample grid of a billion clips": S("--num-clips", "1000000000", "--grid"),
    "sample a billion clips": S("--num-clips", "1000000000"),
    "sample out is a file": ["sample", "--out", "{w}/a_file"], "sample device cuda": S("--device", "cuda"),
    "sample dtype float16": S("--dtype", "float16"), "extend dtype bogus": E("--dtype", "half"),
    # train
    "train patch_size 0": T("model.patch_size=0"), "train ema decay 1.5": T("train.ema_decays=[1.5]"),
    "train negative mask weight": T("train.context_masks.first=-1"), "train max_steps 0": T("train.max_steps=0"),
    "train max_steps -5": T("train.max_steps=-5"), "train log_every 0": T("train.log_every=0"),
    "train keep_last 0": T("train.keep_last=0"), "train context_noise 1": T("method.context_noise=1.0"),
    "train guidance scales without the network's input": T("method.cfg_scale_range=[1,4]"),
    "train sample context_noise -0.1": T("sample.context_noise=-0.1"),
    "train clip_attention on joint": T("model.attention=joint", "model.clip_attention=true"),
    "train context_reference on images": T("data.num_frames=1", "model.context_reference=true"), "train unknown key": T("train.learning_rate=1"),
    "train misspelt tracker": T("train.trackers=[tensorbaord]"),
    "train unknown latents dtype": T("latents.dtype=float8"),
    "train a resolution the patch does not divide": T("data.resolution=15"),
    "train a temporal patch the frames do not fill": T("model.temporal_patch_size=3"),
    "train guidance weight nan": T("method.cfg_omega=nan"), "train time_std 0": T("method.time_std=0"),
    "train one-step rows sharded": T("train.distributed=fsdp", "method.split_consistency=0.25"),
    "train mapping without spaces": T("train.context_masks={{none:1.0}}"),
    "train unknown moving-digits split": T("data.split=val"),
    "train a VAE of another kind": T("data.channels=3", "latents.kind=image_vae", "latents.path={w}/wan_vae"),
    "train fewer classes than the data": T("model.num_classes=5"),
    "train output dir is a file": ["train", TINY, "train.output_dir={w}/a_file", "train.max_steps=2"],
    "train afresh over an earlier run's checkpoints": ["train", TINY, "train.output_dir={w}/run", "train.max_steps=8"],
    "train config missing": ["train", "{w}/missing.yaml"],
    "train an image folder as clips": T("data.kind=image_folder", "data.root={w}/outdir"),
    "train grey pixels through a VAE": T("latents.kind=image_vae"), "train 2 pixel channels": T("data.channels=2"),
    "train class names file missing": T("data.class_names={w}/missing.txt"),
    "train class names of other data": T("data.class_names={w}/names.txt"),
    "export class names file missing": ["export", "{w}/run", "--out", "{w}/exported", "--class-names", "{w}/nope.txt"],
    "export class names of other data": ["export", "{w}/run", "--out", "{w}/exported", "--class-names", "{w}/names.txt"],
    "train resumed as another network": ["train", TINY, "train.output_dir={w}/run", "train.max_steps=8",
                                         "train.resume=auto", "model.prediction=x"],
    # cache
    "cache shard-size 0": ["cache", TINY, "--out", "{w}/cache", "--shard-size", "0"],
    "cache shard-size -1": ["cache", TINY, "--out", "{w}/cache", "--shard-size", "-1"],
    "cache limit -1": ["cache", TINY, "--out", "{w}/cache", "--limit", "-1"],
    "cache out is a file": ["cache", TINY, "--out", "{w}/a_file"],
    # post-train
    "post-train steps 0": P("--steps", "0"), "post-train ratio -1": P("--ratio", "-1"), "post-train lr nan": P("--lr", "nan"),
    "post-train ema decay 1": P("--ema-decay", "1"),
    "post-train out is a file": ["post", "--out", "{w}/a_file"],
    "post-train out is a non-pipeline folder": ["post", "{w}/ck_other", "--out", "{w}"],
    "post-train checkpoint of another architecture": P("{w}/ck_other"),
    "post-train checkpoint folder missing": P("{w}/nowhere"),
}
MAINS = {"extend": extend_cli.main, "interp": interpolate_cli.main, "sample": sample_cli.main, "train": train_cli.main, "cache": cache_cli.main,
         "post": post_cli.main, "export": export_cli.main}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, work, capsys, monkeypatch):
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cmd, *args = [a.format(w=work, wn=work.name) for a in CASES[case]]
    monkeypatch.chdir(work)  # a relative path the code might write to lands here and is caught below
    before = snapshot(work)
    with pytest.raises(SystemExit) as exit_info:
        MAINS[cmd](args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert snapshot(work) == before  # no partial output, every input byte-identical
    assert not (work / "pwned").exists()


@pytest.mark.parametrize("cmd, args, says", [
    ("sample", ["--frames", "24", "--out", "{w}/s"], "unrecognized arguments: --frames (did you mean --num-frames?)"),
    ("sample", ["--clases", "3", "--out", "{w}/s"], "unrecognized arguments: --clases (did you mean --classes?)"),
    ("extend", ["{w}/in.mp4", "--new-frames", "3", "--out", "{w}/new.mp4"],
     "unrecognized arguments: --new-frames (did you mean --num-new-frames?)"),
    ("train", [TINY, "--dryrun"], "unrecognized arguments: --dryrun (did you mean --dry-run?)"),
    ("sample", ["--zzz=1", "--out", "{w}/s"], "unrecognized arguments: --zzz=1"),
])
def test_an_option_is_spelt_in_full_and_a_misspelt_one_names_the_one_meant(cmd, args, says, work, capsys):
    """No prefixes (argparse's default would read ``--frames 24`` as ``--frames-per-window 24``), and an unknown
    option is named first, with the nearest known one (before argparse's "required: --num-new-frames")."""
    before = snapshot(work)
    with pytest.raises(SystemExit) as exit_info:
        MAINS[cmd]([a.format(w=work) for a in args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert exit_info.value.code == 2 and err == [f"error: mfvideo-{cmd}: {says}"], err
    assert snapshot(work) == before


@pytest.mark.parametrize("source, says", [("in.mp4", "input file"), ("corrupt.mp4", "corrupt.mp4: unreadable")])
def test_console_scripts_print_one_line_not_a_traceback(work, source, says):
    """The same in a fresh process, file descriptor 2 included (a decoder's native library must not add lines)."""
    proc = subprocess.run([sys.executable, "-m", "mfvideo.cli.extend", str(work / source), "--num-new-frames", "4",
                           "--out", str(work / "in.mp4")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert says in proc.stderr


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
def test_read_only_output_folder(work, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(SystemExit) as e:
        extend_cli.main([str(work / "in.mp4"), "--num-new-frames", "2", "--out", str(ro / "x.mp4")])
    assert e.value.code == 2 and "not writable" in capsys.readouterr().err


def test_sample_one_class_many_clips(work, tmp_path):
    assert sample_cli.main(["--classes", "3", "--num-clips", "4", "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"clip_{i:03d}_class3.mp4" for i in range(4)]


def test_finished_run_rerun_is_a_no_op(work, capsys):
    before = snapshot(work / "run")
    assert train_cli.main([TINY, f"train.output_dir={work / 'run'}", "train.max_steps=4", "train.resume=auto"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert train_cli.main([TINY, f"train.output_dir={work / 'run'}", "train.max_steps=2", "train.resume=auto"]) == 0
    assert {k: v for k, v in snapshot(work / "run").items() if k.startswith("checkpoints")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints")}


def test_truncated_optimizer_state_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    train_cli.main([TINY, f"train.output_dir={run}", "train.max_steps=2", "train.checkpoint_every=2"])
    opt = latest_checkpoint(run) / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])
    with pytest.raises(SystemExit) as e:
        train_cli.main([TINY, f"train.output_dir={run}", "train.max_steps=4", "train.resume=auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: ") and "optimizer.pt: unreadable" in err[-1]


def _limited(cmd: list[str], max_bytes: int) -> subprocess.CompletedProcess:
    """Run ``cmd`` with files capped at ``max_bytes`` (a full disk, as the process sees it: writes fail EFBIG)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, preexec_fn=cap)


def test_full_disk_while_writing_video_keeps_the_previous_file(work, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous output")
    proc = _limited([sys.executable, "-m", "mfvideo.cli.extend", str(work / "in.mp4"), "--num-new-frames", "8",
                     "--out", str(out)], 64)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert out.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left


def test_written_files_are_as_readable_as_any_new_file(work, tmp_path):
    """Files written through a private temporary (videos, images, pipeline folders, checkpoints, latent shards) get
    the mode an ordinary new file gets under the umask, not the temporary's 0600 (a colleague on a shared machine, a
    web server); a file replaced keeps its own mode."""
    from mfvideo.io import save_image

    ref = tmp_path / "ref.txt"
    ref.write_text("an ordinary new file")
    want = ref.stat().st_mode & 0o777
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    written = [save_video(frames, tmp_path / "a.mp4"), save_image(frames[0], tmp_path / "a.png")]
    MFVideoPipeline.from_pretrained(latest_checkpoint(work / "run")).save_pretrained(tmp_path / "pipe")
    written += [p for p in (tmp_path / "pipe").rglob("*") if p.is_file()]
    written += [p for p in latest_checkpoint(work / "run").iterdir() if p.suffix in (".safetensors", ".yaml")]
    assert cache_cli.main([TINY, "data.num_clips=4", "--out", str(tmp_path / "cache")]) == 0
    written += list((tmp_path / "cache").glob("shard_*.safetensors"))
    assert len(written) >= 10 and {str(p): oct(p.stat().st_mode & 0o777) for p in written} == {
        str(p): oct(want) for p in written}
    os.chmod(tmp_path / "a.mp4", 0o640)
    save_video(frames, tmp_path / "a.mp4")  # replaced: its mode stays
    assert tmp_path.joinpath("a.mp4").stat().st_mode & 0o777 == 0o640


def test_a_streamed_video_is_the_whole_one_and_a_failing_stream_writes_nothing(tmp_path):
    """``save_video`` of chunks as they come: the same file as the frames at once; an error of the chunks' source
    propagates as it is and a chunk of another size is refused, both leaving the previous file and no temporary."""
    frames = (np.random.default_rng(0).random((12, 16, 16, 3)) * 255).astype(np.uint8)
    save_video(frames, tmp_path / "whole.mp4")
    save_video((frames[i : i + 5] for i in range(0, 12, 5)), tmp_path / "streamed.mp4")
    assert (tmp_path / "streamed.mp4").read_bytes() == (tmp_path / "whole.mp4").read_bytes()
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous output")

    def failing():
        yield frames[:4]
        raise RuntimeError("the model failed at window 2")

    with pytest.raises(RuntimeError, match="the model failed at window 2"):
        save_video(failing(), out)
    with pytest.raises(ValueError, match="the first's frame size 16x16, got 8x8"):
        save_video(iter([frames[:4], frames[:4, :8, :8]]), out)
    assert out.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "streamed.mp4", "whole.mp4"]


def test_streamed_clips_are_the_whole_ones_and_a_failing_stream_writes_none(tmp_path):
    """``save_videos``: a stream of batched chunks (B, n, H, W, 3) written as B files, each the same file as its clip's
    frames at once; an error of the source after some chunks, or a chunk of another batch size, leaves every previous
    file as it was and no temporary."""
    clips = (np.random.default_rng(1).random((3, 10, 16, 16, 3)) * 255).astype(np.uint8)
    paths = [tmp_path / f"c{b}.mp4" for b in range(3)]
    save_videos((clips[:, i : i + 4] for i in range(0, 10, 4)), paths, fps=5)
    for b, path in enumerate(paths):
        save_video(clips[b], tmp_path / "whole.mp4", fps=5)
        assert path.read_bytes() == (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "batch").mkdir()
    whole = [tmp_path / "batch" / f"w{b}.mp4" for b in range(3)]
    for batch in (clips, torch.from_numpy(clips)):  # a whole batch, as a pipeline's ``frames``: one chunk
        save_videos(batch, whole, fps=5)  # it was read as a stream of 3 chunks of 10 "clips"
        assert [p.read_bytes() for p in whole] == [p.read_bytes() for p in paths]
    shutil.rmtree(tmp_path / "batch")
    for b, path in enumerate(paths):
        path.write_bytes(b"previous %d" % b)

    def failing():
        yield clips[:, :4]
        yield clips[:, 4:8]
        raise RuntimeError("the model failed at window 3")

    with pytest.raises(RuntimeError, match="the model failed at window 3"):
        save_videos(failing(), paths)
    with pytest.raises(ValueError, match="a chunk of 2 clips for 3 files"):
        save_videos(iter([clips[:, :4], clips[:2, 4:]]), paths)
    assert [p.read_bytes() for p in paths] == [b"previous %d" % b for b in range(3)]
    with pytest.raises(RuntimeError, match="stop"):  # the writer itself: a block left by an error writes nothing
        with VideoWriter(paths[0]) as writer:
            writer.write(clips[0])
            raise RuntimeError("stop")
    with pytest.raises(OutputError, match="an earlier error stopped it"):
        writer.write(clips[0])
    assert paths[0].read_bytes() == b"previous 0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0.mp4", "c1.mp4", "c2.mp4", "whole.mp4"]


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    train_cli.main([TINY, f"train.output_dir={run}", "train.max_steps=2", "train.checkpoint_every=2"])
    kept = snapshot(latest_checkpoint(run))
    proc = _limited([sys.executable, "-m", "mfvideo.cli.train", TINY, f"train.output_dir={run}", "train.max_steps=4",
                     "train.checkpoint_every=2", "train.resume=auto"], 20_000)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write checkpoint") and "step_00000002 is kept" in last, proc.stderr
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000002"]  # no temporary folder left
    assert snapshot(latest_checkpoint(run)) == kept


def test_a_kill_while_pruning_never_leaves_a_listed_half_checkpoint(tmp_path):
    """Pruning renames a folder out of the listing before deleting it; a folder deleted halfway (the old way) or a
    leftover .trash / .tmp folder is never taken for a checkpoint, and the next run removes the leftovers."""
    run = tmp_path / "run"
    train_cli.main([TINY, f"train.output_dir={run}", "train.max_steps=4", "train.checkpoint_every=2",
                    "train.keep_last=5"])
    first, second = list_checkpoints(run)
    (first / "optimizer.pt").unlink()  # as a kill in the middle of rmtree would leave it
    assert list_checkpoints(run) == [second]
    second.rename(second.with_name(second.name + ".trash"))
    assert list_checkpoints(run) == [] and latest_checkpoint(run) is None
    removed = clean_partial(run)
    assert [p.name for p in removed] == ["step_00000004.trash"]


def test_float_frames_outside_unit_range_are_refused():
    pipe = MFVideoPipeline.from_pretrained()
    clip = np.random.default_rng(0).random((4, 16, 16, 3)) * 255  # a float array of 0..255 values
    with pytest.raises(ValueError, match=r"float video must lie in \[0, 1\]"):
        pipe.extend(clip, 2)
    out = pipe.extend(clip.astype(np.uint8), 2, seed=0)  # the same values as uint8 are fine
    assert out.frames.shape[1] == 6


def test_contact_sheets_magnify_small_frames_pixel_for_pixel():
    """``grid``: small frames are magnified by the least whole factor that brings their short side to 48 px (16 x 12
    frames by 4: each pixel a 4 x 4 block, values unchanged; the demo's 16 x 16 frames by 3), 2-pixel white gutters
    between them; frames 48 pixels or larger, or an explicit ``scale=1``, are copied as they are."""
    from mfvideo.io import grid

    v = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 12, 3), dtype=np.uint8)  # (B, T, H, W, 3)
    sheet = grid(v)  # short side 12 -> factor 4
    assert sheet.shape == (2 + 2 * (64 + 2), 2 + 3 * (48 + 2), 3)
    for i, j in ((0, 0), (1, 2)):
        top, left = 2 + i * 66, 2 + j * 50
        block = sheet[top : top + 64, left : left + 48]
        assert np.array_equal(block[::4, ::4], v[i, j]) and np.array_equal(block, v[i, j].repeat(4, 0).repeat(4, 1))
        assert (sheet[top - 2 : top, left : left + 48] == 255).all()  # the gutter above
    plain = grid(v, scale=1)
    assert plain.shape == (2 + 2 * 18, 2 + 3 * 14, 3) and np.array_equal(plain[2:18, 2:14], v[0, 0])
    big = np.zeros((1, 2, 48, 64, 3), np.uint8)
    assert grid(big).shape == (2 + 50, 2 + 2 * 66, 3)


def test_the_frame_rate_mode_option_fits_the_ffmpeg_at_hand(monkeypatch):
    """``-fps_mode`` (ffmpeg 5.1 on) is refused by older ffmpegs (imageio-ffmpeg 0.5.0's 4.2.2, a system's through
    IMAGEIO_FFMPEG_EXE): every read of an mp4 stopped with "Option not found" there; they take ``-vsync``."""
    import imageio_ffmpeg

    from mfvideo.data import video_io

    for version, option in (("4.2.2-static", "-vsync"), ("5.0.1", "-vsync"), ("5.1.2-0+deb12u1", "-fps_mode"),
                            ("n9.0.2-17-g2a571b6068-20260930", "-fps_mode"), ("N-113000-gabcdef", "-fps_mode")):
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_version", lambda v=version: v)
        video_io._ffmpeg_before_5_1.cache_clear()
        assert fps_mode() == [option, "passthrough"] and fps_mode("vfr") == [option, "vfr"], version
    video_io._ffmpeg_before_5_1.cache_clear()


def _ffmpeg_frames(path: Path) -> np.ndarray:
    """Every frame the stream holds, decoded by imageio-ffmpeg without any frame-rate conversion: the reference."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), output_params=fps_mode("passthrough"))
    meta = next(gen)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen])


def _write_vfr(path: Path, frames: np.ndarray, durations: list[float], codec: list[str], fmt: list[str] = ()):
    """A variable-frame-rate video: each frame shown for its own duration (ffmpeg's concat demuxer)."""
    import imageio.v2 as imageio
    import imageio_ffmpeg

    lines = []
    for i, (f, d) in enumerate(zip(frames, durations)):
        imageio.imwrite(path.parent / f"f{i:03d}.png", f)
        lines += [f"file '{path.parent / f'f{i:03d}.png'}'", f"duration {d}"]
    (path.parent / "list.txt").write_text("\n".join(lines + [lines[-2]]) + "\n")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i",
           str(path.parent / "list.txt"), *fps_mode("vfr"), *codec, *fmt]
    if fmt:  # to a pipe: no duration in the header, as a browser's live recording
        with open(path, "wb") as fh:
            subprocess.run(cmd + ["pipe:1"], check=True, stdout=fh)
    else:
        subprocess.run(cmd + [str(path)], check=True)


def test_an_audio_only_file_says_it_has_no_video_stream(tmp_path, capsys):
    """An .mp4 holding sound alone (a voice memo, an exported soundtrack): one line that says so, from either decoder
    and from the command line, not ffmpeg's "Error opening output files"."""
    import imageio_ffmpeg

    sound = tmp_path / "memo.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", "-c:a", "aac", str(sound)], check=True)
    for backend in ("auto", "imageio"):  # auto: decord where installed
        with pytest.raises(VideoError, match="memo.mp4: has no video stream"):
            read_frames(sound, [0], backend)
    with pytest.raises(SystemExit):
        extend_cli.main([str(sound), "--num-new-frames", "4", "--out", str(tmp_path / "out.mp4")])
    assert capsys.readouterr().err.endswith("memo.mp4: has no video stream (an audio-only file?)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memo.mp4"]


@pytest.mark.parametrize("backend", ["decord", "imageio"])
def test_a_phone_video_stored_rotated_reads_upright_and_quietly(backend, tmp_path, caplog):
    """A portrait phone video is stored as landscape frames with a display rotation: both decoders give the frames
    upright, as players show them (the stored frames turned a quarter counter-clockwise for a rotation of 90), in
    every read path, and imageio-ffmpeg's notice that the sizes differ is not passed on."""
    pytest.importorskip("decord") if backend == "decord" else None
    import imageio_ffmpeg

    frames = (np.random.default_rng(2).random((6, 32, 48, 3)) * 255).astype(np.uint8)
    flat = tmp_path / "flat.mp4"
    _write_vfr(flat, frames, [0.125] * 6, ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0"])
    phone = tmp_path / "phone.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    if "-fps_mode" in fps_mode():  # ffmpeg 5.1 and later: a display matrix, 90 degrees counter-clockwise
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-display_rotation:v", "90", "-i", str(flat), "-c", "copy"]
    else:  # older ones (imageio-ffmpeg 0.5's 4.2) through the rotate tag, which the readers turn the same way
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-i", str(flat), "-c", "copy", "-metadata:s:v:0", "rotate=90"]
    subprocess.run(cmd + [str(phone)], check=True)
    want = np.rot90(read_frames(flat, range(7), backend), k=1, axes=(1, 2))  # (7, 48, 32, 3)
    with caplog.at_level("WARNING"):
        info = probe(phone, backend)
        got = read_frames(phone, range(7), backend)
        streamed = np.concatenate(list(iter_frames(phone, backend, chunk=4)))
    assert (info.height, info.width) == (48, 32) and info.num_frames == 7
    assert np.array_equal(got, want) and np.array_equal(streamed, want)
    assert caplog.records == [], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("kind", ["vfr_mp4", "live_webm", "odd_size"])
@pytest.mark.parametrize("backend", ["decord", "imageio"])
def test_vfr_live_webm_and_odd_sizes_decode_to_ffmpegs_pixels(kind, backend, tmp_path):
    pytest.importorskip("decord") if backend == "decord" else None
    rng = np.random.default_rng(1)
    h, w = (33, 47) if kind == "odd_size" else (32, 48)
    frames = (rng.random((12, h, w, 3)) * 255).astype(np.uint8)
    path = tmp_path / ("v.webm" if kind == "live_webm" else "v.mp4")
    durations = [0.3 if i % 4 == 0 else 0.04 for i in range(12)]  # uneven timestamps
    if kind == "vfr_mp4":
        _write_vfr(path, frames, durations, ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0"])
    elif kind == "live_webm":
        _write_vfr(path, frames, durations, ["-c:v", "libvpx-vp9", "-lossless", "1"], ["-f", "webm"])
    else:
        _write_vfr(path, frames, [0.1] * 12, ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0"])
    ref = _ffmpeg_frames(path)
    assert len(ref) == 13  # 12 frames + the concat demuxer's repeated last one; no frame-rate resampling
    assert probe(path, backend).num_frames == len(ref)
    got = read_frames(path, range(len(ref)), backend)
    streamed = np.concatenate(list(iter_frames(path, backend, chunk=5)))
    assert got.shape == ref.shape and np.abs(got.astype(int) - ref).max() <= 2
    assert np.array_equal(streamed, got)
    tail = read_frames(path, [len(ref) - 2, len(ref) - 1], backend)  # the context of an extension: the true last frames
    assert np.abs(tail.astype(int) - ref[-2:]).max() <= 2


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """`timeout`, `kill` or a scheduler end a long `mfvideo-extend` with SIGTERM, whose default action stopped the
    process where it stood: the hidden temporary mp4 it was writing stayed behind (359 KB after 10 s). SIGTERM now
    unwinds as Ctrl-C does: "terminated", exit 143, and the folder holds only what it held before."""
    import signal
    import time

    src = tmp_path / "src.mp4"
    save_video(np.zeros((8, 16, 16, 3), np.uint8), src, fps=6)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "mfvideo.cli.extend", str(src), "--num-new-frames", "1000000",
                             "--out", str(tmp_path / "long.mp4")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    start = time.monotonic()
    while not any(p.name.startswith(".long.mp4") for p in tmp_path.iterdir()):  # writing has begun
        assert proc.poll() is None and time.monotonic() - start < 120, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.replace("\r", "\n").splitlines()[-1] == "terminated", err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_url_is_named_as_a_url_not_a_missing_file(tmp_path, capsys):
    """diffusers' loaders fetch URLs, so users paste them; nothing is downloaded here. It was "https:/host/...: no
    such file" (the path's "//" folded); now the URL as given and what to do, from the API and the commands."""
    url = "https://example.com/clip.mp4"
    with pytest.raises(VideoError, match=r"^https://example.com/clip.mp4: a URL; nothing is downloaded here"):
        MFVideoPipeline.from_pretrained().extend(url, 4)
    for main, args in ((extend_cli.main, [url, "--num-new-frames", "4"]), (interpolate_cli.main, [url, url])):
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--out", str(tmp_path / "out.mp4")])
        assert exit_.value.code == 2 and "a URL; nothing is downloaded here: fetch the file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["post_train", "fit_reader", "export"])
def test_a_one_process_stage_launched_as_several_says_so_and_writes_nothing(module, tmp_path, capsys, monkeypatch):
    """mfvideo-post-train, -fit-reader and -export are not distributed: under ``torchrun --nproc_per_node 2`` each
    process ran the whole stage and wrote the same folder (twice the compute, and two renames of one folder). A
    launch of several processes (RANK and WORLD_SIZE, as torchrun and accelerate launch set them) is refused before
    any work."""
    import importlib

    main = importlib.import_module(f"mfvideo.cli.{module}").main
    args = [str(ROOT / "mfvideo" / "assets" / "moving_digits")] if module == "export" else []
    monkeypatch.setenv("WORLD_SIZE", "2")  # exported alone (a job script's, for a later torchrun): not a launch
    monkeypatch.delenv("RANK", raising=False)
    from mfvideo.train.dist import launched_processes

    assert launched_processes() == 1
    monkeypatch.setenv("RANK", "1")  # as torchrun and accelerate launch start each process
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err == (f"error: this command runs in one process and was launched as 2 (torchrun / "
                                         f"accelerate launch), each of which would write {tmp_path / 'out'}: run it "
                                         "as a plain command"), err
    assert list(tmp_path.iterdir()) == []
