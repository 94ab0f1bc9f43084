import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import rank_teardown_env
from mfvideo.config import ConfigError, load_config
from mfvideo.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_into
from mfvideo.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def tiny_cfg(tmp_path, *overrides):
    return load_config(TINY, [f"train.output_dir={tmp_path}", *overrides])


def weights(ckpt):
    return {**load_file(ckpt / "model.safetensors"), **{f"ema.{k}": v for k, v in load_file(ckpt / "ema_0.99.safetensors").items()}}


def test_resume_is_bit_identical(tmp_path):
    straight = tiny_cfg(tmp_path / "a", "train.max_steps=8", "train.checkpoint_every=4", "train.log_every=1")
    train(straight)
    interrupted = tiny_cfg(tmp_path / "b", "train.max_steps=8", "train.checkpoint_every=4", "train.resume=auto",
                           "train.log_every=1")
    train(interrupted, max_steps=6)  # stop after 6 steps ...
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000006")  # ... as a kill before the step-6 save would
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_00000004"]
    train(interrupted)  # resumes from step 4
    # the log holds each step once, with the uninterrupted run's values (steps 5 and 6 are not left twice)
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in "ab"]
    assert [r["step"] for r in logs[1]] == list(range(1, 9))
    assert [r["loss_unweighted"] for r in logs[0]] == [r["loss_unweighted"] for r in logs[1]]
    a, b = weights(latest_checkpoint(tmp_path / "a")), weights(latest_checkpoint(tmp_path / "b"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and training did change the weights
    first = weights(list_checkpoints(tmp_path / "a")[0])
    assert any(not torch.equal(first[k], a[k]) for k in a)


def test_runs_one_after_another_in_one_process_each_at_its_own_precision(tmp_path):
    """A notebook's cells: a run, one in bf16, the first again. accelerate keeps one accelerator per process, and the
    second run stopped with "restart your runtime completely" before session 51; now each run sets its own, and the
    first run's rerun is bit-identical to it."""
    for name, extra in (("a", []), ("bf16", ["train.mixed_precision=bf16"]), ("again", [])):
        train(tiny_cfg(tmp_path / name, "train.max_steps=2", "train.checkpoint_every=2", "train.log_every=1", *extra))
    logs = {n: [json.loads(line)["loss_unweighted"] for line in (tmp_path / n / "log.jsonl").read_text().splitlines()]
            for n in ("a", "bf16", "again")}
    assert logs["again"] == logs["a"] != logs["bf16"]  # the bf16 run ran in bf16
    a, again = weights(latest_checkpoint(tmp_path / "a")), weights(latest_checkpoint(tmp_path / "again"))
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_a_fresh_start_never_overwrites_an_earlier_run(tmp_path):
    """Unset ``train.resume`` into a folder that holds checkpoints is refused before anything is written (it would
    overwrite them and interleave two runs in one log); a folder whose run died before its first checkpoint starts
    anew with a log of its own records only."""
    run = tmp_path / "run"
    train(tiny_cfg(run, "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"))
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with pytest.raises(ConfigError, match="step_00000004.*train.resume=auto"):
        train(tiny_cfg(run, "train.max_steps=6", "train.log_every=1"))
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    assert train(tiny_cfg(run, "train.max_steps=6", "train.resume=auto", "train.log_every=1"))
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == list(range(1, 7))
    died = tmp_path / "died"  # no checkpoint: nothing to continue, nothing to lose
    train(tiny_cfg(died, "train.max_steps=3", "train.checkpoint_every=0", "train.log_every=1"))
    train(tiny_cfg(died, "train.max_steps=2", "train.checkpoint_every=0", "train.log_every=1"))
    assert [json.loads(line)["step"] for line in (died / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_resumed_run_takes_its_own_optimizer_settings_and_names_what_changed(tmp_path, caplog):
    """Resuming with another lr, weight decay or length: the optimizer state's load used to bring back the
    checkpoint's lr, betas and weight decay (the new ones dropped without a word) while a longer max_steps stretched
    the schedule unannounced. Now the run's own settings hold from the first resumed step, and one line names every
    setting that differs from the checkpoint's."""
    run = tmp_path / "run"
    train(tiny_cfg(run, "train.max_steps=4", "train.checkpoint_every=4", "train.log_every=1",
                   "train.lr_schedule=linear"))
    caplog.set_level("WARNING", logger="mfvideo.train")
    train(tiny_cfg(run, "train.max_steps=8", "train.checkpoint_every=4", "train.log_every=1", "train.resume=auto",
                   "train.lr_schedule=linear", "train.lr=1e-3", "train.weight_decay=0.05", "train.betas=[0.8,0.9]"))
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}
    assert lrs[4] == 0.0  # the first run's linear schedule ended at zero
    for s in range(5, 9):  # the new schedule: 1e-3 decaying linearly over 8 steps (the scheduler steps after each)
        assert lrs[s] == pytest.approx(1e-3 * (8 - s) / 8, rel=1e-6), s
    groups = torch.load(run / "checkpoints" / "step_00000008" / "optimizer.pt", weights_only=True)
    groups = groups["optimizer"]["param_groups"]
    assert all(g["weight_decay"] == 0.05 and tuple(g["betas"]) == (0.8, 0.9) and g["initial_lr"] == 1e-3
               for g in groups)
    said = [r.getMessage() for r in caplog.records if "changed since" in r.getMessage()]
    assert len(said) == 1
    for part in ("train.max_steps 4 -> 8", "train.lr 0.003 -> 0.001", "train.weight_decay 0.0 -> 0.05",
                 "train.betas [0.9, 0.95] -> [0.8, 0.9]", "lr at step 4: 0.0005"):
        assert part in said[0], (part, said[0])
    # one more step, the attention kernel switched: a kernel, not a network, so free to change and not a change
    caplog.clear()
    train(tiny_cfg(run, "train.max_steps=9", "train.checkpoint_every=4", "train.log_every=1", "train.resume=auto",
                   "train.lr_schedule=linear", "train.lr=1e-3", "train.weight_decay=0.05", "train.betas=[0.8,0.9]",
                   "model.attn_backend=math"))
    said = [r.getMessage() for r in caplog.records if "changed since" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("changed since that checkpoint: train.max_steps 8 -> 9; lr"), said


def test_a_resumed_run_keeps_its_network(tmp_path):
    """A model setting that changes what the weights mean but not their shapes (x- against u-prediction) loaded into
    the same tensors and trained another network from the checkpoint: refused before anything is written, naming
    model.init_from, the way to a new run from those weights."""
    run = tmp_path / "run"
    train(tiny_cfg(run, "train.max_steps=2", "train.checkpoint_every=2"))
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with pytest.raises(ConfigError, match=r"model.prediction 'u' -> 'x' since .*step_00000002.*model.init_from="):
        train(tiny_cfg(run, "train.max_steps=4", "train.resume=auto", "model.prediction=x"))
    with pytest.raises(CheckpointError, match=r"no EMA weights for decay 0.5 \(it holds 0.99\); a resumed run keeps"):
        train(tiny_cfg(run, "train.max_steps=4", "train.resume=auto", "train.ema_decays=[0.5]"))
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


def test_a_resumed_run_refuses_data_whose_class_ids_moved_and_says_when_its_size_changed(tmp_path, caplog):
    """A class folder added, removed or renamed between runs shifts the ids: the resumed run trained each class
    under another's label without a word (``blue_box, red_ball`` resumed as ``a_green_tri, blue_box``). Refused
    before anything is written (a new run from it, model.init_from, is allowed and says so); another number of items
    (same classes) resumes and says so."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("blue_box", "red_ball"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(9):
            image = Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8))
            image.save(tmp_path / "imgs" / name / f"{i}.png")
    data = ["data.kind=image_folder", f"data.root={tmp_path / 'imgs'}", "data.num_frames=1", "data.channels=3",
            "train.batch_size=4", "train.context_masks={none: 1.0}", "train.checkpoint_every=2"]
    run = tmp_path / "run"
    train(tiny_cfg(run, *data, "train.max_steps=2"))
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    (tmp_path / "imgs" / "red_ball").rename(tmp_path / "imgs" / "a_green_tri")  # ids: a_green_tri 0, blue_box 1
    with pytest.raises(ConfigError, match=r"classes changed since .*step_00000002 \(id 0 was 'blue_box', is "
                                          r"'a_green_tri'; 2 classes then, 2 now\).*model.init_from="):
        train(tiny_cfg(run, *data, "train.max_steps=4", "train.resume=auto"))
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    with caplog.at_level("WARNING", logger="mfvideo.train"):  # a new run from it on these classes: allowed, said
        train(tiny_cfg(tmp_path / "tuned", *data, "train.max_steps=1", f"model.init_from={run}"))
    assert "was trained on other classes than the data's (id 0 was 'blue_box', is 'a_green_tri'" in caplog.text
    caplog.clear()
    (tmp_path / "imgs" / "a_green_tri").rename(tmp_path / "imgs" / "red_ball")
    (tmp_path / "imgs" / "red_ball" / "0.png").unlink()
    with caplog.at_level("WARNING", logger="mfvideo.train"):
        train(tiny_cfg(run, *data, "train.max_steps=4", "train.resume=auto"))
    assert "the data holds 17 items, 18 when step_00000002 was written" in caplog.text
    assert list_checkpoints(run)[-1].name == "step_00000004"


def test_a_second_run_into_a_live_run_s_folder_is_refused_and_a_run_leaves_no_lock(tmp_path, caplog):
    """The same command started twice (two terminals, a requeued job whose first attempt still runs): the second
    would delete the first's checkpoint in progress as a leftover and interleave their checkpoints and logs. It is
    refused, naming the live run's pid, while the first holds the folder; after a run ends (or fails to start) no lock
    file, and no folder a failed start made, is left; a lock file left by a killed run does not hold."""
    from mfvideo.train.lock import run_lock

    run = tmp_path / "run"
    with run_lock(run):  # a live run: this process holds the folder
        assert (run / ".lock").read_text() == str(os.getpid())
        other = subprocess.run([sys.executable, "-m", "mfvideo.cli.train", str(TINY), f"train.output_dir={run}",
                                "train.max_steps=2", "train.resume=auto"], capture_output=True, text=True, cwd=ROOT)
        assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-2000:]
        assert f"train.output_dir {run} is in use by another training run (pid {os.getpid()})" in other.stderr
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the second wrote nothing
    assert not run.exists()  # made by the lock, left empty: gone
    with pytest.raises(ValueError, match="does not exist"):  # fails to start, after taking the folder
        train(tiny_cfg(run, "train.max_steps=2", "data.kind=image_folder", "data.num_frames=1",
                       f"data.root={tmp_path / 'missing'}"))
    assert not run.exists()
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    with pytest.MonkeyPatch.context() as mp, caplog.at_level("WARNING", logger="mfvideo.train"):
        mp.setattr(fcntl, "flock", no_locks)  # an NFS mount without lockd: the run goes on, unguarded, and says so
        with run_lock(run):
            assert run.is_dir()
    assert "cannot lock .lock (No locks available)" in caplog.text and not run.exists()
    run.mkdir()
    (run / ".lock").write_text("12345")  # a killed run's file: not locked by anyone
    train(tiny_cfg(run, "train.max_steps=2", "train.checkpoint_every=2"))
    assert not (run / ".lock").exists() and list_checkpoints(run)[-1].name == "step_00000002"


def test_quick_loss_falls_and_log_written(tmp_path):
    train(tiny_cfg(tmp_path, "train.max_steps=60", "train.checkpoint_every=0", "train.log_every=5"))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 60 and {"loss", "loss_unweighted", "grad_norm", "lr", "samples_per_s"} <= records[-1].keys()
    first, last = records[0]["loss_unweighted"], (records[-1]["loss_unweighted"] + records[-2]["loss_unweighted"]) / 2
    assert last < 0.7 * first, (first, last)


def _records(run: Path) -> list[int]:
    path = run / "log.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.is_file() else []


def _signal_when_logged(proc, run: Path, send, steps: int = 2, timeout: float = 180.0) -> tuple[str, str]:
    """Wait until the run has logged ``steps`` steps, ``send()`` a signal, and collect its output (a hang fails and
    kills the process and its descendants)."""
    import time

    def tree(pid: int) -> list[int]:  # the process and its descendants (torchrun's workers are sessions of their own)
        try:
            children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            return [pid]
        return [pid] + [p for c in children for p in tree(c)]

    def fail(why: str):
        for pid in tree(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        raise AssertionError(f"{why}: {proc.communicate()[1][-3000:]}")

    start = time.monotonic()
    while len(_records(run)) < steps:
        if proc.poll() is not None or time.monotonic() - start > timeout:
            fail("the run ended or stalled before logging")
        time.sleep(0.05)
    send()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("the run did not stop")


def test_stop_signals_ask_once_and_a_second_ctrl_c_stops_at_once():
    """Real signals to this process: SIGTERM / SIGUSR1 / a first SIGINT are recorded (the first kept), a SIGINT right
    after the first is its echo (torchrun forwards the terminal's), a second one later raises KeyboardInterrupt there
    and then, and leaving the block restores the handlers it found."""
    import signal

    from mfvideo.train.stop import StopSignals

    import time

    from mfvideo.train.stop import ECHO_S

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: asks, as the others did
        os.kill(os.getpid(), signal.SIGINT)  # at once after it: torchrun passing the terminal's on, not a second one
        assert stop.received == signal.SIGUSR1
        time.sleep(ECHO_S + 0.05)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_sigterm_finishes_the_step_writes_its_checkpoint_and_resume_continues(tmp_path):
    """A real SIGTERM to a running mfvideo-train: the step under way ends, a checkpoint of that step is written
    (between the periodic ones), the process says so and exits 143 (128 + 15, as a shell reports the signal). The
    checkpoint equals an uninterrupted run's at that step, and train.resume=auto goes on from it, one record per step.
    The signal goes to the whole process group, as a scheduler's or a terminal's does: the data worker ignores it.
    Before, the signal killed the run and every step since the last periodic checkpoint was lost."""
    import signal

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mfvideo.cli.train", str(TINY), f"train.output_dir={run}", "train.max_steps=100000",
           "train.checkpoint_every=1000", "train.log_every=1", "train.num_workers=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)  # its own process group, data worker included, as a scheduler's
    out, err = _signal_when_logged(proc, run, lambda: os.killpg(proc.pid, signal.SIGTERM))
    assert proc.returncode == 143, err[-3000:]
    n = _records(run)[-1]
    assert [p.name for p in list_checkpoints(run)] == [f"step_{n:08d}"] and _records(run) == list(range(1, n + 1))
    assert f"stopped by SIGTERM at step {n} of 100000; checkpoint: " in out
    assert err.count("SIGTERM received") == 1, err[-3000:]  # the data worker leaves it to the trainer
    assert f"{run}: 0.07 M parameters, 4 x 16 x 16 clips of moving_digits (256), batch 16, cpu fp32; to step 100000; " \
           "checkpoints every 1000 steps (last 3 kept); log.jsonl" in err  # the plan, first
    straight = tmp_path / "straight"
    train(tiny_cfg(straight, f"train.max_steps={n}", "train.checkpoint_every=1000"), max_steps=n)  # same schedule
    a, b = weights(list_checkpoints(run)[0]), weights(latest_checkpoint(straight))
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = train(tiny_cfg(run, f"train.max_steps={n + 2}", "train.resume=auto", "train.log_every=1"))
    assert summary["steps"] == n + 2 and summary["stopped_by"] is None and _records(run) == list(range(1, n + 3))


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """2 processes (torchrun, gloo), SIGUSR1 (SLURM's warning signal) to rank 1 alone: both ranks stop after the same
    step, the checkpoint of that step is written, nothing hangs. Without the ranks agreeing, rank 1 would wait in the
    checkpoint's barrier while rank 0 waits in the next step's gradient all-reduce."""
    import signal

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29700 + os.getpid() % 200), "-m", "mfvideo.cli.train", str(TINY), f"train.output_dir={run}",
           "train.max_steps=100000", "train.checkpoint_every=1000", "train.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    def rank(r: int) -> int:  # the worker of rank r: a child of torchrun with RANK=r in its environment
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            if f"RANK={r}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
                return int(child)
        raise AssertionError(f"no rank {r} under torchrun")

    out, err = _signal_when_logged(proc, run, lambda: os.kill(rank(1), signal.SIGUSR1), timeout=90)
    n = _records(run)[-1]
    assert [p.name for p in list_checkpoints(run)] == [f"step_{n:08d}"], err[-3000:]
    assert out.count(f"stopped by SIGUSR1 at step {n} of 100000") == 1, (out, err[-3000:])


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    # A real SIGKILL in the middle of writing the second checkpoint (after its first weight file).
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import mfvideo.train.checkpoint as ck
from mfvideo.config import load_config
from mfvideo.train.loop import train
real, calls = ck.save_file, []
def killing_save(*a, **k):
    calls.append(1)
    real(*a, **k)
    if len(calls) == 3:  # checkpoint 1 wrote 2 files; die inside checkpoint 2
        os.kill(os.getpid(), signal.SIGKILL)
ck.save_file = killing_save
train(load_config({str(TINY)!r}, ["train.output_dir={tmp_path}", "train.max_steps=8", "train.checkpoint_every=4"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "step_00000008.tmp").exists()  # the half-written one
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004"]
    summary = train(tiny_cfg(tmp_path, "train.max_steps=8", "train.checkpoint_every=4", "train.resume=auto"))
    assert summary["steps"] == 8 and latest_checkpoint(tmp_path).name == "step_00000008"


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    from conftest import tiny_model

    small, big = tiny_model(), tiny_model(hidden_size=64, depth=3)
    with pytest.raises(CheckpointError, match=r"another architecture; unexpected: blocks.2.*shape mismatch: temporal_pos_gate \(64,\) vs \(32,\)"):
        load_into(small, big.state_dict(), "ckpt")
    image = tiny_model(temporal=False)
    with pytest.raises(CheckpointError, match="missing: temporal_pos_gate"):
        load_into(tiny_model(), image.state_dict(), "ckpt")
    fresh = load_into(tiny_model(), image.state_dict(), "ckpt", allow_missing_temporal=True)
    assert fresh and all("temporal" in k for k in fresh)


def test_a_training_run_folder_loads_as_its_newest_checkpoint(tmp_path, caplog):
    """What a user types after training: the run's folder (train.output_dir), not checkpoints/step_XXXXXXXX. The
    pipeline, mfvideo-sample, model.init_from and train.resume take it as its newest complete checkpoint, and say
    which (before:
    "no weights"); a run with no complete checkpoint yet is a one-line error."""
    from mfvideo.cli import sample as sample_cli
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.weights import CheckpointError as WeightsError

    run = tmp_path / "run"
    train(tiny_cfg(run, "train.max_steps=4", "train.checkpoint_every=2", "train.keep_last=2"))
    newest = latest_checkpoint(run)
    assert newest.name == "step_00000004"
    with caplog.at_level("WARNING"):
        a = MFVideoPipeline.from_pretrained(run).generate(num_clips=2, seed=0, output_type="uint8").frames
    assert "is a training run: loading its newest checkpoint, step_00000004" in caplog.text
    b = MFVideoPipeline.from_pretrained(newest).generate(num_clips=2, seed=0, output_type="uint8").frames
    assert np.array_equal(a, b)
    sample_cli.main(["--checkpoint", str(run), "--num-clips", "1", "--out", str(tmp_path / "s")])
    assert len(list((tmp_path / "s").glob("*.mp4"))) == 1
    from mfvideo.train.loop import build_setup

    s = build_setup(tiny_cfg(tmp_path / "next", f"model.init_from={run}"))
    assert all(torch.equal(v, load_file(newest / "model.safetensors")[k]) for k, v in s.model.state_dict().items())
    assert train(tiny_cfg(tmp_path / "branch", "train.max_steps=5", f"train.resume={run}"))["steps"] == 5
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(WeightsError, match="a training run with no complete checkpoint yet"):
        MFVideoPipeline.from_pretrained(tmp_path / "empty")


def test_a_checkpoint_finds_its_relative_vae_and_data_from_any_folder(tmp_path, monkeypatch):
    """A run launched with relative paths (``latents.path=vae``, ``data.root``) loads from any folder: the checkpoint
    lies at <launch>/<train.output_dir>/checkpoints/step_N, so its paths are read from <launch> where they are not
    found from here (before: "latents.path=vae: no such folder" anywhere but the launch folder). A checkpoint moved
    elsewhere keeps its paths as they are, and says so."""
    from vae_configs import tiny_vae

    from mfvideo.config import ConfigError
    from mfvideo.pipeline import MFVideoPipeline

    launch, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    launch.mkdir(), elsewhere.mkdir()
    tiny_vae("image_vae").save_pretrained(launch / "vae")
    monkeypatch.chdir(launch)
    cfg = load_config(TINY, ["train.output_dir=runs/x", "train.max_steps=2", "train.checkpoint_every=2",
                             "latents.kind=image_vae", "latents.path=vae", "data.resolution=32", "model.patch_size=2",
                             "model.in_channels=null", "data.channels=3"])
    train(cfg)
    here = MFVideoPipeline.from_pretrained("runs/x")
    assert here.cfg.latents.path == "vae"  # from the launch folder: as written
    frames = here.generate(num_clips=1, seed=0, output_type="uint8").frames
    monkeypatch.chdir(elsewhere)
    there = MFVideoPipeline.from_pretrained(launch / "runs" / "x")
    assert there.cfg.latents.path == str(launch / "vae")
    assert np.array_equal(there.generate(num_clips=1, seed=0, output_type="uint8").frames, frames)
    shutil.copytree(latest_checkpoint(launch / "runs" / "x"), elsewhere / "moved")
    with pytest.raises(ConfigError, match="latents.path=vae: no such folder"):
        MFVideoPipeline.from_pretrained(elsewhere / "moved")


def test_a_video_model_trained_without_context_frames_says_so(tmp_path, caplog):
    """``train.context_masks`` holding only "none" (the schema's default) trains a video model that never sees given
    frames: the run says so at its start, and its extension, interpolation and clips past the window say so once
    (before: silent frames that ignored the given ones); a model trained with context rows says nothing."""
    from mfvideo.pipeline import MFVideoPipeline

    no_context = [f"train.context_masks.{k}=0" for k in ("first", "last", "every", "random_frame")]
    with caplog.at_level("WARNING"):
        train(tiny_cfg(tmp_path / "none", "train.max_steps=2", "train.checkpoint_every=2", *no_context))
    assert "a video model trained without context frames" in caplog.text
    pipe = MFVideoPipeline.from_pretrained(tmp_path / "none")
    caplog.clear()
    with caplog.at_level("WARNING"):
        clip = pipe.generate(seed=0, output_type="uint8").frames  # one window from noise: what it learned
        assert "without context frames" not in caplog.text
        pipe.extend(clip, 4)
        pipe.condition(clip[:, [0, 3]], [0, 3])
        pipe.generate(num_frames=8, seed=0)
    assert caplog.text.count("without context frames") == 1  # once per pipeline
    assert "an extension of a model trained without context frames" in caplog.text
    fresh = MFVideoPipeline.from_pretrained(tmp_path / "none")
    caplog.clear()
    with caplog.at_level("WARNING"):
        fresh.generate(num_frames=8, seed=0)
    assert "clips past the window of a model trained without context frames" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(tiny_cfg(tmp_path / "with", "train.max_steps=2", "train.checkpoint_every=2"))
        MFVideoPipeline.from_pretrained(tmp_path / "with").extend(clip, 4)
    assert "without context frames" not in caplog.text


def test_video_model_initialised_from_image_checkpoint(tmp_path):
    train(tiny_cfg(tmp_path / "img", "data.num_frames=1", "train.max_steps=2", "train.checkpoint_every=2"))
    img_ckpt = latest_checkpoint(tmp_path / "img")
    from mfvideo.train.loop import build_setup

    s = build_setup(tiny_cfg(tmp_path / "vid", f"model.init_from={img_ckpt}"))
    img = load_file(img_ckpt / "model.safetensors")
    for k, v in s.model.state_dict().items():
        if k in img:
            assert torch.equal(v, img[k]), k
        else:
            assert "temporal" in k
    with pytest.raises(ConfigError, match=r"model.init_from=.* predicts 'u', this model 'x' \(model.prediction\)"):
        build_setup(tiny_cfg(tmp_path / "vidx", f"model.init_from={img_ckpt}", "model.prediction=x"))


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_dry_runs(config):
    proc = subprocess.run([sys.executable, "-m", "mfvideo.cli.train", str(ROOT / "configs" / config), "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-1500:]
    params = [line for line in proc.stdout.splitlines() if line.startswith("params: ")]
    assert params and int(params[0].split()[1]) > 0


def test_overrides_may_follow_the_options(capsys):
    """``mfvideo-train CONFIG --dry-run key=value``: an override after an option is read, not refused."""
    from mfvideo.cli import train

    train.main([str(ROOT / "configs" / "tiny.yaml"), "--dry-run", "model.depth=1", "train.max_steps=7"])
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "depth: 1" in out


def test_a_mapping_given_whole_is_the_whole_mapping_and_one_entry_sets_one(tmp_path):
    """``train.context_masks`` (and ``lr_scale``) given whole, in a YAML file or as ``key={...}``, is that mapping:
    OmegaConf's merge kept the schema's ``none: 1.0`` beside a file's ``{first: 1.0}``, training half the rows as
    generation, and an override could not take a kind out; ``key.entry=value`` still sets one entry."""
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  context_masks: {first: 1.0}\n  lr_scale: {reader: 3}\n")
    assert load_config(f).train.context_masks == {"first": 1.0}
    assert load_config(f).train.lr_scale == {"reader": 3.0}
    assert load_config(f, ["train.context_masks.last=0.5"]).train.context_masks == {"first": 1.0, "last": 0.5}
    assert load_config(f, ["train.context_masks={none: 1.0}"]).train.context_masks == {"none": 1.0}
    assert load_config(TINY, ["train.context_masks.first=0"]).train.context_masks == {
        "none": 1.0, "first": 0.0, "last": 0.5, "every": 0.5, "random_frame": 0.5}
    assert load_config(None).train.context_masks == {"none": 1.0}
    with pytest.raises(ConfigError, match="positive sum, got {}"):
        load_config(f, ["train.context_masks={}"])
    with pytest.raises(ConfigError, match="space after each colon"):  # YAML's key 'none:1.0': OmegaConf's riddle
        load_config(f, ["train.context_masks={none:1.0}"])


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_trains_real_steps(config, tmp_path):
    """Each recipe's own method, training and precision settings (guidance, class dropout, context masks, bf16, its
    latent codec kind) run real steps, a checkpoint and a sample; only the sizes and the data source shrink."""
    from vae_configs import tiny_vae

    base = load_config(ROOT / "configs" / config)
    small = [
        f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.batch_size=4", "train.grad_accum=1",
        "train.checkpoint_every=2", "train.sample_every=2", "train.num_workers=0", "train.trackers=[]",
        "train.resume=null", "model.size=null", "model.hidden_size=32", "model.depth=1", "model.num_heads=2",
        "model.patch_size=2", "model.in_channels=null", "data.kind=moving_digits", "data.root=null",
        "data.resolution=16", "data.digit_size=8", "data.num_clips=64", "data.channels=3",
    ]
    if base.model.num_classes not in (None, 0):
        small.append("model.num_classes=null")  # the digits' 10 classes
    if base.latents.kind != "identity":
        tiny_vae(base.latents.kind).save_pretrained(tmp_path / "vae")
        small.append(f"latents.path={tmp_path / 'vae'}")
    cfg = load_config(ROOT / "configs" / config, small)
    assert (cfg.method, cfg.train.context_masks, cfg.train.mixed_precision) == (
        base.method, base.train.context_masks, base.train.mixed_precision)
    summary = train(cfg)
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["last_loss"]))
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step_00000002"
    assert list((tmp_path / "run" / "samples").glob("step_00000002.*"))


def test_a_path_under_home_is_expanded_as_a_shell_would(tmp_path, monkeypatch):
    """``data.root: ~/videos`` (a YAML file, or an override the shell leaves alone) is the user's home folder."""
    import dataclasses

    from mfvideo.config import PATH_KEYS

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(TINY, ["data.root=~/videos", "train.output_dir=~/runs/x", "latents.path=~/vae"])
    assert (cfg.data.root, cfg.train.output_dir, cfg.latents.path) == (
        str(tmp_path / "videos"), str(tmp_path / "runs" / "x"), str(tmp_path / "vae"))
    assert load_config(TINY, ["train.resume=auto"]).train.resume == "auto"
    for key in PATH_KEYS:  # every key named is a field of the schema
        section, name = key.split(".")
        assert name in {f.name for f in dataclasses.fields(getattr(cfg, section))}, key


def test_unknown_key_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="train.learning_rate"):
        load_config(TINY, ["train.learning_rate=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden_size: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.hiden_size"):
        load_config(bad)
    proc = subprocess.run([sys.executable, "-m", "mfvideo.cli.train", str(TINY), "train.batch_size=many"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "train.batch_size" in proc.stderr
    with pytest.raises(ConfigError, match="fp16 is refused"):
        load_config(TINY, ["train.mixed_precision=fp16"])


def _torchrun(tmp_path, through):
    out = tmp_path / f"{through}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 400),
           str(ROOT / "tests" / "ddp_grad_check.py"), str(out), through]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_process_gradients_equal_across_ranks_and_to_single_process(tmp_path):
    res = _torchrun(tmp_path, "wrapped")
    assert res["world"] == 2 and res["distributed_type"].endswith("MULTI_CPU")
    for mode in ("detached", "fused"):  # one grad forward + no-grad JVP; or forward + JVP, two DDP calls
        assert res[mode]["rank_diff"] == 0.0, mode
        assert res[mode]["ref_diff"] < 1e-6 * max(1.0, res[mode]["ref_scale"]), mode
    trap = _torchrun(tmp_path, "module")  # a JVP through model.module skips the all-reduce: ranks drift
    assert trap["detached"]["rank_diff"] > 1e-4 and trap["fused"]["rank_diff"] > 1e-4


def _fsdp_check(tmp_path, through):
    out = tmp_path / f"fsdp_{through}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29100 + os.getpid() % 300), str(ROOT / "tests" / "fsdp_check.py"), str(out), through]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_fsdp_training_equals_one_process_on_the_combined_batch_and_its_state_resumes_unsharded(tmp_path):
    """2 processes, FSDP2 (gloo): 3 AdamW steps of the MeanFlow loss give the parameters (within 2e-5, weights up to
    ~0.45; float32 reduction order) and losses (1e-6) of one process on the combined batch, in both JVP modes; the
    gathered model + optimizer state continued unsharded for 2 more steps equals the sharded run continued (2e-5)."""
    res = _fsdp_check(tmp_path, "sharded")
    assert res["world"] == 2
    for mode in ("detached", "fused"):
        assert res[mode]["param_diff"] < 2e-5 and res[mode]["loss_diff"] < 1e-6, (mode, res[mode])
        assert res[mode]["resume_diff"] < 2e-5, (mode, res[mode])
    trap = _fsdp_check(tmp_path, "stale")  # the JVP through weights gathered once: the target goes stale
    assert trap["detached"]["param_diff"] > 2e-4 and trap["fused"]["param_diff"] > 2e-4, trap


def test_fsdp_run_through_the_trainer_writes_checkpoints_that_load_and_resume_on_one_process(tmp_path, caplog):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29400 + os.getpid() % 300), "-m", "mfvideo.cli.train", str(TINY), f"train.output_dir={run}",
           "train.distributed=fsdp", "train.max_steps=4", "train.checkpoint_every=2", "train.sample_every=2",
           "train.log_every=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process speaks: one summary, one record per step (the losses averaged over both: log_step)
    assert proc.stdout.count("trained to step 4") == 1 and proc.stdout.count("checkpoint: ") == 1, proc.stdout
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert f"{records[0]['loss_unweighted']:.4g} -> {records[-1]['loss_unweighted']:.4g}" in proc.stdout
    assert (run / "samples" / "step_00000004.png").is_file()
    two = list_checkpoints(run)
    assert [p.name for p in two] == ["step_00000002", "step_00000004"]
    from mfvideo.pipeline import MFVideoPipeline

    frames = MFVideoPipeline.from_pretrained(two[-1]).generate(num_clips=2, seed=0, output_type="uint8").frames
    assert frames.shape == (2, 4, 16, 16, 3) and frames.std() > 0
    one = tmp_path / "one"  # the 2-process checkpoint at step 2, continued by one unsharded process
    (one / "checkpoints").mkdir(parents=True)
    shutil.copytree(two[0], one / "checkpoints" / two[0].name)
    with caplog.at_level("WARNING", logger="mfvideo.train"):
        summary = train(tiny_cfg(one, "train.max_steps=4", "train.checkpoint_every=2", "train.resume=auto"))
    assert summary["steps"] == 4
    assert "1 process, 2 when step_00000002 was written: the global batch is 16 (was 32)" in caplog.text
    a, b = weights(two[-1]), weights(latest_checkpoint(one))
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def test_fsdp_ranks_whose_draws_differ_in_network_calls_and_loss_parts_train_on(tmp_path):
    """2 processes, FSDP2, batches of 2: a rank's draws decide how many calls the loss makes (a self-made context
    only where a row has a prefix context, a JVP only where a row has r != t) and which parts it logs (loss_mf
    without r != t rows). Freeing the weights after every call made each call a collective, and the log's one
    all-reduce took each rank's own keys: both hung (gloo). Now each block is gathered once a micro-step and the
    logged parts are the union, each averaged over the processes that had it.

    Each rank ends without the interpreter's teardown, where gloo's threads aborted 1 run in ~20 ('terminate called
    without an active exception', exit -6): accelerate's end_training had destroyed the group, and the command took
    that for a run of one process. A sitecustomize of this test's own says when a rank's interpreter tears down."""
    run = tmp_path / "run"
    env = rank_teardown_env(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29700 + os.getpid() % 200), "-m", "mfvideo.cli.train", str(TINY), f"train.output_dir={run}",
           "train.distributed=fsdp", "method.self_context=0.5", "train.batch_size=2", "train.max_steps=6",
           "train.log_every=1", "train.checkpoint_every=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "interpreter teardown" not in proc.stderr, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "loss_unweighted", "loss_mf", "loss_fm"} <= r.keys() for r in records), records


def test_non_finite_steps_are_skipped_then_stop_with_a_clear_error(tmp_path, monkeypatch):
    from mfvideo.method import MeanFlow
    from mfvideo.train.loop import TrainingError

    real = MeanFlow.loss
    calls = []

    def sometimes_nan(self, net, x, *a, **k):
        loss, logs = real(self, net, x, *a, **k)
        calls.append(1)
        if len(calls) > 4:  # healthy for 4 steps (one checkpoint), then NaN forever
            loss = loss * float("nan")
            logs = {**logs, "loss": loss.detach()}
        return loss, logs

    monkeypatch.setattr(MeanFlow, "loss", sometimes_nan)
    with pytest.raises(TrainingError, match=r"3 non-finite steps in a row at step 4; last good checkpoint: .*step_00000004"):
        train(tiny_cfg(tmp_path, "train.max_steps=10", "train.checkpoint_every=4", "train.max_nonfinite=3"))
    assert latest_checkpoint(tmp_path).name == "step_00000004"


def test_bf16_autocast_training_step_and_jvp_close_to_fp32(tmp_path):
    from conftest import randomize, tiny_model
    from mfvideo.method import MeanFlow

    net = randomize(tiny_model())
    z, v = torch.randn(4, 3, 2, 8, 8), torch.randn(4, 3, 2, 8, 8)
    t, r = torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.1, 0.2, 0.4, 0.0])
    _, ref = MeanFlow().predict_and_target(net, z, t, r, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, low = MeanFlow().predict_and_target(net, z, t, r, v)
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 2e-2, rel
    summary = train(tiny_cfg(tmp_path, "train.max_steps=3", "train.mixed_precision=bf16", "train.checkpoint_every=0"))
    assert summary["steps"] == 3 and summary["last_loss"] == summary["last_loss"]  # finite


def test_accelerate_launch_settings_are_heard_or_refused(tmp_path, monkeypatch):
    """`accelerate launch --mixed_precision bf16` (a real launch) trains in bf16 and records it in the run's config; the
    config's own "no" had overridden the launcher's request without a word. The launcher's fp16 is refused as the
    config's is; the config's bf16 stands under a launcher's "no" (its default). `--use_fsdp` (accelerate's own
    wrapping) is refused, naming train.distributed=fsdp. `--cpu --num_processes 2` runs one process: said."""
    run = tmp_path / "launched"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--dynamo_backend", "no", "--mixed_precision", "bf16", "-m", "mfvideo.cli.train", str(TINY),
           f"train.output_dir={run}", "train.max_steps=1", "train.checkpoint_every=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "training in bf16" in proc.stderr, proc.stderr[-3000:]
    assert load_config(run / "config.yaml").train.mixed_precision == "bf16"
    assert "starts one" not in proc.stderr
    # `--cpu --num_processes 2` starts one process (accelerate's simple launcher), which trains alone: said
    two = [*cmd[:5], "2", *cmd[6:]]
    two[two.index(f"train.output_dir={run}")] = f"train.output_dir={tmp_path / 'two'}"
    proc = subprocess.run(two, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accelerate launch --cpu with several processes starts one" in proc.stderr
    assert proc.stderr.count("M parameters") == 1 and "processes, cpu" not in proc.stderr  # one process did train
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    summary = train(tiny_cfg(tmp_path / "env", "train.max_steps=1", "train.checkpoint_every=0"))
    assert summary["mixed_precision"] == "bf16"
    # train.tf32 (default true, DiT's setting): CUDA's TF32 switches on for the steps, as they were after
    assert summary["tf32"] is True and (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert train(tiny_cfg(tmp_path / "fp32", "train.max_steps=1", "train.checkpoint_every=0", "train.tf32=false"))[
        "tf32"] is False
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    summary = train(tiny_cfg(tmp_path / "own", "train.max_steps=1", "train.checkpoint_every=0",
                             "train.mixed_precision=bf16"))
    assert summary["mixed_precision"] == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ConfigError, match=r"accelerate launch asks for mixed precision fp16 .*launch with "
                                          r"--mixed_precision bf16 or no"):
        train(tiny_cfg(tmp_path / "fp16", "train.max_steps=1"))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate's own wrapping: the JVP around it is untested
    with pytest.raises(ConfigError, match=r"accelerate launch --use_fsdp .*set train.distributed=fsdp"):
        train(tiny_cfg(tmp_path / "fsdp", "train.max_steps=1"))


def test_compiled_training_matches_eager(tmp_path, monkeypatch):
    """train.compile=true: the primal path is compiled, the JVP runs through the eager module; same losses. So does
    accelerate's own compile (`accelerate launch --dynamo_backend inductor`, or `accelerate config` saying so:
    ACCELERATE_DYNAMO_BACKEND), which wraps the prepared model: the JVP through it had no tangent and MeanFlow's target
    was flow matching's, silently (step 2's loss 1.4e-3 off)."""
    logs = {}
    for mode in ("false", "true", "accelerate"):
        out = tmp_path / mode
        if mode == "accelerate":
            from accelerate.state import AcceleratorState

            monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "INDUCTOR")  # read when accelerate's state is made anew
            AcceleratorState._reset_state(reset_partial_state=False)
        train(tiny_cfg(out, "train.max_steps=3", "train.checkpoint_every=0", "train.log_every=1",
                       f"train.compile={mode == 'true'}"))
        logs[mode] = [json.loads(line)["loss_unweighted"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(logs["true"]) == 3
    assert logs["true"] == pytest.approx(logs["false"], rel=1e-5)
    assert logs["accelerate"] == pytest.approx(logs["false"], rel=1e-5)


def test_cuda_graph_jvp_is_the_detached_unsharded_jvp_and_off_without_cuda(tmp_path, caplog, monkeypatch):
    """train.cuda_graph_jvp and train.compile_jvp: refused with the fused JVP or FSDP (one line naming both keys);
    without CUDA the graphs are off (said once) and trains as before; on CUDA the graphed run's losses equal the
    eager run's (bf16 rounding); compile_jvp runs the JVP compiled (its calls counted) with the eager run's losses."""
    from mfvideo.method import jvp_graph

    for key in ("cuda_graph_jvp", "compile_jvp"):
        with pytest.raises(ConfigError, match=f"train.{key}.*method.jvp_mode=detached"):
            tiny_cfg(tmp_path, f"train.{key}=true", "method.jvp_mode=fused")
        with pytest.raises(ConfigError, match="train.distributed=ddp"):
            tiny_cfg(tmp_path, f"train.{key}=true", "train.distributed=fsdp")
    compiled_calls = []
    real = jvp_graph.GraphedJVP._compiled_call
    monkeypatch.setattr(jvp_graph.GraphedJVP, "_compiled_call",
                        lambda self, kind, *a: compiled_calls.append(kind) or real(self, kind, *a))
    logs = {}
    for name, flags in {"eager": (), "graphed": ("train.cuda_graph_jvp=true",),
                        "compiled": ("train.compile_jvp=true",)}.items():
        out = tmp_path / name
        with caplog.at_level("WARNING"):
            train(tiny_cfg(out, "train.max_steps=3", "train.checkpoint_every=0", "train.log_every=1",
                           "train.mixed_precision=bf16", *flags))
        logs[name] = [json.loads(line)["loss_unweighted"] for line in (out / "log.jsonl").read_text().splitlines()]
    warned = any("train.cuda_graph_jvp: no CUDA device" in r.message for r in caplog.records)
    assert warned != torch.cuda.is_available()
    assert len(logs["graphed"]) == 3 and logs["graphed"] == pytest.approx(logs["eager"], rel=2e-2)
    assert "jvp" in compiled_calls and not any("off (" in r.message for r in caplog.records)  # compiled, not given up
    assert len(logs["compiled"]) == 3 and logs["compiled"] == pytest.approx(logs["eager"], rel=2e-2)


def test_split_consistency_teacher_is_the_frozen_given_model(tmp_path, monkeypatch):
    """train.teacher: the split_consistency targets come from that model's EMA weights, frozen, never from the
    network being trained; a teacher without the option, or of another kind, is a one-line error."""
    train(tiny_cfg(tmp_path / "teacher", "train.max_steps=3", "train.checkpoint_every=3"))
    ckpt = latest_checkpoint(tmp_path / "teacher")
    from mfvideo.method.meanflow import MeanFlow

    seen, real = [], MeanFlow.split_target

    def spy(self, net, *a, **k):
        seen.append(net)
        return real(self, net, *a, **k)

    monkeypatch.setattr(MeanFlow, "split_target", spy)
    train(tiny_cfg(tmp_path / "student", "train.max_steps=2", "train.checkpoint_every=0",
                   "method.split_consistency=0.5", f"train.teacher={ckpt}"))
    assert len(seen) == 2 and seen[0] is seen[1]
    teacher = seen[0]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    ema = load_file(ckpt / "ema_0.99.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in teacher.state_dict().items())
    seen.clear()
    train(tiny_cfg(tmp_path / "self", "train.max_steps=1", "train.checkpoint_every=0", "method.split_consistency=0.5"))
    assert len(seen) == 1 and seen[0].training  # no teacher: the network itself

    with pytest.raises(ConfigError, match="train.teacher is only used by method.split_consistency"):
        tiny_cfg(tmp_path / "x", f"train.teacher={ckpt}")
    with pytest.raises(ConfigError, match="method.split_own_weight needs a frozen train.teacher"):
        tiny_cfg(tmp_path / "x", "method.split_consistency=0.5", "method.split_own_weight=true")
    train(tiny_cfg(tmp_path / "img", "data.num_frames=1", "train.max_steps=1", "train.checkpoint_every=1"))
    with pytest.raises(CheckpointError, match=r"train.teacher=.*: temporal False does not match the model's True"):
        train(tiny_cfg(tmp_path / "y", "train.max_steps=1", "method.split_consistency=0.5",
                       f"train.teacher={latest_checkpoint(tmp_path / 'img')}"))


def test_lr_scale_gives_parameter_groups_their_own_pace_through_the_trainer(tmp_path):
    from conftest import tiny_model
    from mfvideo.train.loop import param_groups

    model = tiny_model(depth=2, context_reference=True)
    groups = param_groups(model, 1e-3, {"reference_embedder": 30, "blocks.0": 2, "blocks.0.attn": 5})
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        want = 30 if name.startswith("reference_embedder") else 5 if name.startswith("blocks.0.attn") else (
            2 if name.startswith("blocks.0") else 1)
        assert lr[id(p)] == pytest.approx(1e-3 * want), name
    with pytest.raises(ConfigError, match="no parameter name starts with 'blocks.9'"):
        param_groups(model, 1e-3, {"blocks.9": 2})
    # Through the trainer: the output layer at a billionth of the lr stays where it started (zero).
    for run, extra in (("plain", []), ("frozen", ["train.lr_scale.final_layer.linear=1e-9"])):
        train(tiny_cfg(tmp_path / run, "train.max_steps=2", "train.checkpoint_every=2", *extra))
    plain, slow = (load_file(latest_checkpoint(tmp_path / r) / "model.safetensors") for r in ("plain", "frozen"))
    assert plain["final_layer.linear.weight"].abs().max() > 1e-3
    assert slow["final_layer.linear.weight"].abs().max() < 1e-9
