"""The training loop: accelerate for devices, DDP and bf16; EMA, checkpoints, logging and samples.

Reproducibility: every random draw of a step (noise, (t, r), dropout, context masks) comes from a generator seeded
by (seed, step, micro-step, rank), and the data order is a pure function of (seed, epoch), so a resumed run
repeats an uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..builders import build_model, resolve_model_config
from ..config import NO_CONTEXT, Config, ConfigError, sample_fps, to_dict, to_yaml, trains_context
from ..data import build_dataset
from ..frames import with_time
from ..latents import build_codec
from ..method import sample, sample_context_masks
from ..method.jvp_graph import GraphedJVP
from ..weights import class_difference, saved_classes
from .checkpoint import (
    CheckpointError, clean_partial, latest_checkpoint, load_config_from, load_into, load_weights, save_checkpoint,
)
from .ema import EMA
from .resume import (
    changed_settings, check_same_data, check_same_network, describe, resolve_resume, restore, starts_fresh,
)
from .sharding import full, model_state, optimizer_state, shard
from .stop import StopSignals, ignore_in_worker

log = logging.getLogger("mfvideo.train")


class TrainingError(RuntimeError):
    """A run that cannot go on (too many non-finite steps, an empty dataset): one line, non-zero exit."""


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed, a pure function of (seed, *keys). The shift is Python's: numpy 1.x refuses ``np.uint64 >> 1``
    (an int64 operand), which stopped every training run's first batch there."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]) >> 1


class ResumableBatchSampler(Sampler):
    """Per-rank batches from a global order that is a pure function of (seed, epoch), starting at any micro-step.

    Global micro-batch m covers positions [m G, (m + 1) G) of the concatenated epoch permutations, G = batch x world;
    rank k takes its slice [k b, (k + 1) b).
    """

    def __init__(self, size: int, batch_size: int, rank: int, world: int, seed: int, start: int = 0):
        if size < batch_size * world:
            raise TrainingError(f"dataset has {size} items, fewer than one global batch ({batch_size * world})")
        self.size, self.bs, self.rank, self.world, self.seed, self.start = size, batch_size, rank, world, seed, start
        self._perm_epoch, self._perm = None, None

    def _order(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(step_seed(self.seed, 7919, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.size, generator=g), epoch
        return self._perm

    def batch(self, m: int) -> list[int]:
        G = self.bs * self.world
        first = m * G + self.rank * self.bs
        out = []
        for pos in range(first, first + self.bs):
            epoch, i = divmod(pos, self.size)
            out.append(int(self._order(epoch)[i]))
        return out

    def __iter__(self):
        m = self.start
        while True:
            yield self.batch(m)
            m += 1

    def __len__(self):  # endless; DataLoader only needs it for len()
        return 2**62


def collate(items: list[dict]) -> dict:
    return {
        "x": torch.stack([it["x"] for it in items]),
        "y": torch.tensor([int(it["y"]) for it in items], dtype=torch.long),
        "index": torch.tensor([int(it.get("index", -1)) for it in items]),
    }


@dataclass
class Setup:
    """Everything a run needs, built once from the config (also used by --dry-run and the tests)."""

    cfg: Config
    dataset: object
    codec: object
    model: torch.nn.Module
    method: object


def build_setup(cfg: Config) -> Setup:
    """Dataset, codec, model and method from the config; fills in channels and classes."""
    try:
        dataset = build_dataset(cfg.data)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data: {e}") from None
    pixel_channels = cfg.data.channels
    codec = build_codec(cfg.latents, pixel_channels)
    if cfg.data.kind == "latent_cache":
        latent_channels = dataset.latent_channels
        _check_cache(cfg, dataset, codec)
    else:
        latent_channels = codec.latent_channels
    resolve_model_config(cfg, latent_channels, getattr(dataset, "num_classes", 0))
    model = build_model(cfg.model)
    check_patches(cfg, codec, model)
    if cfg.model.init_from:
        source_prediction = load_config_from(cfg.model.init_from).model.prediction
        if source_prediction != cfg.model.prediction:
            raise ConfigError(f"model.init_from={cfg.model.init_from} predicts {source_prediction!r}, this model "
                              f"{cfg.model.prediction!r} (model.prediction): its output layer would mean another field")
        state = load_weights(cfg.model.init_from, which="model")
        fresh = load_into(model, state, cfg.model.init_from, allow_missing_temporal=True)
        new = f": {', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''}" if fresh else ""
        log.warning("initialised from %s; %d tensors new to it, in parts that start as no change (temporal or clip "
                    "sub-layers, context embedder or reference, refiner, copy path)%s", cfg.model.init_from, len(fresh), new)
        then, now = saved_classes(cfg.model.init_from), getattr(dataset, "classes", None)
        if then and now and (what := class_difference(then, now)):  # fine-tuning on other classes: allowed, said
            log.warning("model.init_from=%s was trained on other classes than the data's (%s): each label's embedding "
                        "starts from the class that had its id there", cfg.model.init_from, what)
    return Setup(cfg, dataset, codec, model, cfg.method)


def check_patches(cfg: Config, codec, model) -> None:
    """The config's clips, encoded, must cut into whole patches: it was an error at the first step, after the run's
    folder was written."""
    try:
        _, t, h, w = codec.latent_shape((cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution))
    except ValueError as e:  # a VAE's spatial factor
        raise ConfigError(f"data.resolution={cfg.data.resolution}: {e} (latents.kind={cfg.latents.kind})") from None
    p, pt = model.config.patch_size, model.config.temporal_patch_size
    if t % pt or h % p or w % p:
        raise ConfigError(f"data.num_frames={cfg.data.num_frames}, data.resolution={cfg.data.resolution} make latents "
                          f"(T, h, w) = {(t, h, w)}, which the model's patch (T, h, w) = {(pt, p, p)} "
                          "(model.temporal_patch_size, model.patch_size) does not divide")


def _check_cache(cfg: Config, cache, codec) -> None:
    """A latent cache encoded for other clips than the config's would train a model that the pipeline then runs on
    the config's (another window, resolution, frame rate or codec): the cache's own settings (its manifest.json)
    and item shape must be the config's."""
    made = cache.manifest.get("config") or {}
    for key in ("num_frames", "resolution", "frame_stride", "target_fps"):
        if key in made and made[key] != getattr(cfg.data, key):
            raise ConfigError(f"data.{key}={getattr(cfg.data, key)!r}, but the latent cache {cfg.data.root} was "
                              f"encoded with {made[key]!r} (its manifest.json): set data.{key}={made[key]}")
    c, t, h, w = codec.latent_shape((cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution))
    expect = (c, h, w) if cache.images else (c, t, h, w)
    got = tuple(cache[0]["x"].shape)
    if got != expect:
        raise ConfigError(f"the latent cache {cfg.data.root} holds latents of shape {got}, the config's codec "
                          f"(latents.kind={cfg.latents.kind}) makes {expect} of its clips: cache and train with one "
                          "config")


def param_groups(model: torch.nn.Module, lr: float, lr_scale: dict[str, float]) -> list[dict]:
    """The optimizer's parameter groups: one per lr factor of ``train.lr_scale`` (the longest matching name prefix;
    1 where none matches), in the model's parameter order within each group."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unused = [k for k in lr_scale if not any(n.startswith(k) for n, _ in named)]
    if unused:
        raise ConfigError(f"train.lr_scale: no parameter name starts with {unused[0]!r}")
    groups: dict[float, list] = {}
    for n, p in named:
        match = max((k for k in lr_scale if n.startswith(k)), key=len, default=None)
        groups.setdefault(1.0 if match is None else float(lr_scale[match]), []).append(p)
    return [{"params": ps, "lr": lr * f} for f, ps in groups.items()]


def load_teacher(path: str, model: torch.nn.Module, device) -> torch.nn.Module:
    """The frozen network of ``train.teacher`` (a pipeline or checkpoint folder, EMA weights), checked against the
    model being trained: same latent channels, classes and clip/image kind."""
    teacher = build_model(load_config_from(path).model)
    load_into(teacher, load_weights(path, which="ema"), path)
    for key in ("in_channels", "num_classes", "temporal"):
        if getattr(teacher.config, key) != getattr(model.config, key):
            raise CheckpointError(f"train.teacher={path}: {key} {getattr(teacher.config, key)} does not match the "
                                  f"model's {getattr(model.config, key)}")
    return teacher.to(device).eval().requires_grad_(False)


def train(cfg: Config, max_steps: int | None = None) -> dict:
    """Run (or resume) training; returns a summary. ``max_steps`` stops early without changing the schedule. One run
    per ``train.output_dir`` at a time (``train/lock.py``)."""
    from .lock import run_lock

    with run_lock(Path(cfg.train.output_dir), main=int(os.environ.get("RANK", "0")) == 0):
        return _train(cfg, max_steps)


def _train(cfg: Config, max_steps: int | None) -> dict:
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .dist import launcher_precision, make_accelerator, refuse_launcher_sharding, warn_one_cpu_process

    refuse_launcher_sharding()
    warn_one_cpu_process()
    if (precision := launcher_precision(cfg.train.mixed_precision)) != cfg.train.mixed_precision:
        cfg = replace(cfg, train=replace(cfg.train, mixed_precision=precision))
    tc = cfg.train
    run_dir = Path(tc.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"train.output_dir {run_dir} is a file, not a folder")
    earlier = latest_checkpoint(run_dir)
    if starts_fresh(cfg) and earlier is not None:  # a fresh start here would overwrite that run
        raise ConfigError(f"train.output_dir {run_dir} holds an earlier run's checkpoints (up to {earlier.name}): "
                          "train.resume=auto continues it, another train.output_dir starts anew")
    trackers = _available_trackers(tc.trackers)
    accelerator = make_accelerator(mixed_precision=tc.mixed_precision, log_with=trackers or None,
                                   project_dir=str(run_dir))
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device

    torch.manual_seed(tc.seed)  # the initial weights (the same on every rank)
    s = build_setup(cfg)
    codec = s.codec.to(device)
    model = s.model.to(device)
    if tc.activation_checkpointing:
        model.enable_gradient_checkpointing()
    sharded = tc.distributed == "fsdp" and world > 1
    if tc.distributed == "fsdp" and world == 1:
        log.warning("train.distributed=fsdp with one process: nothing to shard, training unsharded")
    if sharded:
        shard(model, tc.mixed_precision)  # before the optimizer and EMA: they hold this rank's shards only
    teacher = load_teacher(tc.teacher, s.model, device) if tc.teacher else None
    ema = EMA(model, tc.ema_decays, warmup=tc.ema_warmup)
    optimizer = torch.optim.AdamW(param_groups(model, tc.lr, tc.lr_scale), lr=tc.lr, betas=tuple(tc.betas),
                                  weight_decay=tc.weight_decay)
    from diffusers.optimization import get_scheduler

    schedule = "constant_with_warmup" if tc.lr_schedule == "constant" and tc.warmup_steps else tc.lr_schedule
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.max_steps)

    step = 0
    if accelerator.is_main_process:
        for p in clean_partial(run_dir):
            log.warning("removed %s, left by an interrupted checkpoint save or prune", p)
    resume_from = resolve_resume(cfg, run_dir)
    if resume_from is not None:
        changed = changed_settings(resume_from, cfg)
        data_changed = check_same_data(resume_from, getattr(s.dataset, "classes", None), len(s.dataset), world,
                                       tc.batch_size * tc.grad_accum)
        check_same_network(changed, resume_from)
        step = restore(resume_from, model, ema, optimizer, scheduler)
        if accelerator.is_main_process:
            log.warning("resumed from %s at step %d", resume_from, step)
            for line in data_changed:
                log.warning(line)
            if changed:  # a different run from here on: said, never silent (train/resume.py)
                log.warning("changed since that checkpoint: %s; lr at step %d: %.4g", describe(changed), step,
                            scheduler.get_last_lr()[0])
    if accelerator.is_main_process:  # a fresh start drops the records of a run killed before its first checkpoint
        _trim_log(run_dir / "log.jsonl", step)

    if not sharded:  # FSDP2 needs no wrapper: fully_shard's hooks gather weights and reduce-scatter gradients
        model, optimizer = accelerator.prepare(model, optimizer)
    net = model  # call the wrapped model, never model.module: DDP must see the forward to all-reduce gradients
    jvp_net = model  # forward-mode AD runs eagerly: compiled graphs do not carry our JVP rules
    if tc.compile:
        net = torch.compile(model)
    # The detached JVP has no gradient for DDP to reduce: the unwrapped module is captured and / or compiled.
    cuda = accelerator.device.type == "cuda"
    if tc.cuda_graph_jvp and not cuda:
        log.warning("train.cuda_graph_jvp: no CUDA device here (%s); the JVP runs %s", accelerator.device,
                    "compiled" if tc.compile_jvp else "eagerly")
    if (tc.cuda_graph_jvp and cuda) or tc.compile_jvp:
        jvp_net = GraphedJVP(accelerator.unwrap_model(model), capture=tc.cuda_graph_jvp and cuda,
                             compile=tc.compile_jvp)

    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        if getattr(s.dataset, "classes", None):
            (run_dir / "classes.json").write_text(json.dumps(s.dataset.classes, indent=1))
    if trackers:  # the resolved config as the run's hyper-parameters
        accelerator.init_trackers(run_dir.name or "mfvideo", config=flat_config(cfg))

    sampler = ResumableBatchSampler(len(s.dataset), tc.batch_size, rank, world, tc.seed, start=step * tc.grad_accum)
    loader = DataLoader(s.dataset, batch_sampler=sampler, num_workers=tc.num_workers, collate_fn=collate,
                        persistent_workers=tc.num_workers > 0, worker_init_fn=ignore_in_worker)
    run = Run(cfg, accelerator, s.method, model, net, jvp_net, codec, ema, optimizer, scheduler, run_dir,
              use_masks=trains_context(cfg),
              trackers=bool(trackers), sharded=sharded, teacher=teacher)
    stop_at = tc.max_steps if max_steps is None else min(tc.max_steps, max_steps)
    if accelerator.is_main_process:
        log.info("%s", plan(cfg, s, accelerator, step, stop_at))
        if cfg.data.num_frames > 1 and not trains_context(cfg):
            log.warning("a video model %s will not continue a clip, interpolate or slide past its window: add "
                        "context rows, e.g. train.context_masks.first=0.4 (docs/training.md)", NO_CONTEXT)
    summary = {"first_loss": None, "last_loss": None, "steps": step, "stopped_by": None}
    bar = tqdm(total=stop_at, initial=step, disable=not accelerator.is_main_process, desc="train", dynamic_ncols=True)
    # SIGTERM, SIGUSR1, a first Ctrl-C: this step, a checkpoint, the end (train/stop.py). The bar is closed before any
    # error line, so that it stands on a line of its own.
    with StopSignals() as signals, contextlib.closing(bar), logging_redirect_tqdm(), tf32(tc.tf32):
        summary["tf32"] = torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        batches, nonfinite, t_last, seen = iter(loader), 0, time.perf_counter(), 0
        while step < stop_at:
            model.train()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}  # a loss part a micro-batch may lack (loss_mf without r != t rows)
            for micro in range(tc.grad_accum):
                for k, v in micro_step(run, _next(batches), step, micro).items():
                    sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
                seen += tc.batch_size * world
            logs = {k: sums[k] / counts[k] for k in sums}  # each the mean over the micro-batches that had it
            grad_norm = optimizer_step(run, logs["loss"])
            if grad_norm is None:  # non-finite: skipped
                nonfinite += 1
                log.warning("step %d: non-finite loss or gradient (%d in a row); step skipped", step, nonfinite)
                if nonfinite >= tc.max_nonfinite:
                    raise TrainingError(f"{nonfinite} non-finite steps in a row at step {step}; "
                                        f"last good checkpoint: {latest_checkpoint(run_dir)}")
                continue
            nonfinite, step = 0, step + 1
            bar.update(1)
            summary["steps"] = step
            if step % tc.log_every == 0 or step == stop_at:
                now = time.perf_counter()
                record = log_step(run, step, sums, counts, grad_norm, seen / (now - t_last))
                summary["first_loss"] = summary["first_loss"] or record["loss_unweighted"]  # logged: every process's
                summary["last_loss"] = record["loss_unweighted"]
                bar.set_postfix(loss=f"{record['loss_unweighted']:.3g}", gn=f"{grad_norm:.2g}")
                t_last, seen = now, 0
            stop = signals.agreed(accelerator)  # every rank the same answer, after the same step
            if tc.checkpoint_every and (step % tc.checkpoint_every == 0 or step == stop_at or stop):
                _save(accelerator, run_dir, step, cfg, model, ema, optimizer, scheduler,
                      getattr(s.dataset, "classes", None), len(s.dataset))
            if stop:
                summary["stopped_by"] = signal.Signals(stop).name
                break
            if tc.sample_every and step % tc.sample_every == 0:
                weights = ema.state_dict(ema.decays[0])  # every rank: gathering a sharded EMA is a collective
                if accelerator.is_main_process:
                    _write_samples(cfg, weights, codec, run_dir, step, device)
    accelerator.wait_for_everyone()  # no rank ends the group (end_training destroys it) while another still uses it
    accelerator.end_training()
    summary["main_process"] = accelerator.is_main_process
    summary["mixed_precision"] = accelerator.mixed_precision
    summary["model"] = accelerator.unwrap_model(model)
    summary["ema"] = ema
    return summary


def plan(cfg: Config, s, accelerator, step: int, stop_at: int) -> str:
    """One line on what is about to run and where it goes (``mfvideo-train`` prints it first)."""
    tc, d = cfg.train, cfg.data
    params = sum(p.numel() for p in s.model.parameters())  # the module itself, before any wrapper
    side = f"{d.resolution} x {d.resolution}"
    shape = side if d.num_frames == 1 else f"{d.num_frames} x {side}"
    world = accelerator.num_processes
    batch = f"batch {tc.batch_size}" + (f" x {world} processes" if world > 1 else "") + (
        f" x {tc.grad_accum} accumulated" if tc.grad_accum > 1 else "")
    keep = f"checkpoints every {tc.checkpoint_every} steps (last {tc.keep_last} kept)" if tc.checkpoint_every else \
        "no checkpoints (train.checkpoint_every=0)"
    start = f"from step {step} " if step else ""
    return (f"{tc.output_dir}: {params / 1e6:.2f} M parameters, {shape} {'clips' if d.num_frames > 1 else 'images'} "
            f"of {d.kind} ({len(s.dataset):,}), {batch}, {accelerator.device.type} "
            f"{'bf16' if accelerator.mixed_precision == 'bf16' else 'fp32'}; {start}to step {stop_at}; {keep}; "
            f"log.jsonl")


@contextlib.contextmanager
def tf32(allowed: bool):
    """CUDA's TF32 switches for float32 matmuls and convolutions set for the block, restored after it (a library call
    leaves the process as it found it). summary["tf32"] records what the steps ran with."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _next(batches):
    """The next batch; an error raised inside a data worker keeps its own message (not "Caught ... in worker")."""
    try:
        return next(batches)
    except Exception as e:
        text = str(e)
        if "DataLoader worker" not in text:
            raise
        reason = [line for line in text.strip().splitlines() if line.strip()][-1]
        raise TrainingError(f"data: {reason.split(': ', 1)[-1]}") from None


@dataclass
class Run:
    """What the step functions of one training run share."""

    cfg: Config
    accelerator: object
    method: object
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped on several processes)
    net: object  # what the loss calls: the model, or its torch.compile wrapper
    jvp_net: object  # what the JVP runs through: always the eager (wrapped) model
    codec: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    scheduler: object
    run_dir: Path
    use_masks: bool
    trackers: bool
    sharded: bool = False  # FSDP2: no wrapper, gradient sync switched on the module itself
    teacher: object = None  # train.teacher: the frozen network of the split_consistency targets


def micro_step(run: Run, batch: dict, step: int, micro: int) -> dict[str, float]:
    """Forward, loss and backward of one micro-batch; every random draw from (seed, step, micro, rank)."""
    cfg, acc = run.cfg, run.accelerator
    tc, device, rank = cfg.train, acc.device, acc.process_index
    gen = torch.Generator(device).manual_seed(step_seed(tc.seed, step, micro, rank))
    with torch.no_grad():
        x = batch["x"].to(device)
        if cfg.data.kind != "latent_cache":
            x = run.codec.encode(with_time(x), generator=gen)
            x = x[:, :, 0] if cfg.data.num_frames == 1 else x
    y = batch["y"].to(device) if cfg.model.num_classes else None
    ctx = None
    if run.use_masks:
        cpu_gen = torch.Generator().manual_seed(step_seed(tc.seed, step, micro, rank, 1))
        ctx = sample_context_masks(x.shape[0], x.shape[2], tc.context_masks, tc.max_context_frames,
                                   device=device, generator=cpu_gen)
    last = micro == tc.grad_accum - 1  # gradients are synchronised on the last micro-step only
    if run.sharded:
        run.model.set_requires_gradient_sync(last)
    with acc.no_sync(run.model) if not (last or run.sharded) else contextlib.nullcontext():
        with acc.autocast():
            loss, logs = run.method.loss(run.net, x, y, context=ctx, generator=gen, jvp_net=run.jvp_net,
                                         teacher=run.teacher)
        acc.backward(loss / tc.grad_accum)  # outside autocast: the backward runs in the forward's own dtypes
    return {k: float(v) for k, v in logs.items()}


def optimizer_step(run: Run, loss: float) -> float | None:
    """Clip, step, EMA; the gradient norm, or None (gradients dropped) when the loss or the norm is not finite."""
    tc = run.cfg.train
    if run.sharded:  # DTensor gradients: the norm is over all shards
        grad_norm = float(full(torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.grad_clip or float("inf"))))
    else:
        grad_norm = float(run.accelerator.clip_grad_norm_(run.model.parameters(), tc.grad_clip or float("inf")))
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        run.optimizer.zero_grad(set_to_none=True)
        return None
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.ema.update(run.accelerator.unwrap_model(run.model))
    return grad_norm


def log_step(run: Run, step: int, sums: dict, counts: dict, grad_norm: float, samples_per_s: float) -> dict:
    """One record to log.jsonl (main process) and the trackers: each loss the mean over every micro-batch of every
    process that had it (``sums`` / ``counts``: this process's). Processes may hold different parts (a batch without
    r != t rows has no ``loss_mf``): their union is agreed first, as an all-reduce of mismatched lengths fails."""
    acc = run.accelerator
    if acc.num_processes > 1:  # at a log step only: the key lists, then one all-reduce of a few scalars
        from accelerate.utils import gather_object

        keys = sorted(set().union(*gather_object([tuple(sorted(sums))])))
        local = [sums.get(k, 0.0) for k in keys] + [float(counts.get(k, 0)) for k in keys]
        total = acc.reduce(torch.tensor(local, dtype=torch.float64, device=acc.device), "sum").tolist()
        sums, counts = dict(zip(keys, total[: len(keys)])), dict(zip(keys, total[len(keys) :]))
    logs = {k: sums[k] / counts[k] for k in sorted(sums) if counts[k]}
    record = {"step": step, **{k: round(v, 6) for k, v in logs.items()}, "grad_norm": round(grad_norm, 4),
              "lr": run.scheduler.get_last_lr()[0], "samples_per_s": round(samples_per_s, 2)}
    if run.accelerator.is_main_process:
        with open(run.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    if run.trackers:
        run.accelerator.log(record, step=step)
    return record


def _trim_log(path: Path, step: int) -> None:
    """Drop the records a resumed run is about to write again (logged after its checkpoint, before the stop), so
    log.jsonl holds one record per step, as an uninterrupted run's would. Rewritten atomically."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(path)


def _available_trackers(names: list[str]) -> list[str]:
    """The configured trackers whose packages are installed; the others are skipped with one warning each."""
    import importlib.util

    from ..config import TRACKERS

    found = []
    for name in names:
        if TRACKERS[name] is not None and importlib.util.find_spec(TRACKERS[name]) is None:
            log.warning("tracker %s is not installed; logging to log.jsonl without it", name)
        else:
            found.append(name)
    return found


def flat_config(cfg: Config) -> dict:
    """{"train.lr": 1e-4, ...}: scalars and strings only, as TensorBoard's hyper-parameter panel takes them."""
    out = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            ok = isinstance(value, (int, float, str, bool))
            out[f"{section}.{key}"] = value if ok else json.dumps(value)
    return out


def _save(accelerator, run_dir, step, cfg, model, ema, optimizer, scheduler, classes=None, num_items=None):
    """Full tensors by parameter name whatever the sharding (gathered on every rank), written by the main process."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    weights, emas = model_state(unwrapped), {d: ema.state_dict(d) for d in ema.decays}
    opt = optimizer_state(unwrapped, getattr(optimizer, "optimizer", optimizer))
    if accelerator.is_main_process:
        save_checkpoint(
            run_dir, step, cfg, weights, emas, {"optimizer": opt, "scheduler": scheduler.state_dict()},
            {"step": step, "ema_updates": ema.num_updates, "num_items": num_items,
             "num_processes": accelerator.num_processes}, keep_last=cfg.train.keep_last, classes=classes,
        )
    accelerator.wait_for_everyone()


@torch.no_grad()
def _write_samples(cfg, weights, codec, run_dir, step, device):
    """A short 1-NFE sample with the given (full, EMA) weights in a fresh unsharded model: mp4 for video, PNG grid."""
    from ..io import grid, save_image, save_video

    net = build_model(cfg.model).eval()
    net.load_state_dict(weights)
    net.to(device)
    n = min(cfg.sample.num_samples, 8)
    g = torch.Generator().manual_seed(cfg.sample.seed)
    shape = codec.latent_shape((cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution))
    noise = cfg.method.noise((n, *shape), generator=g).to(device)  # the prior the model trains on
    if cfg.sample.steps == 1:  # as the pipeline samples one-call windows
        noise = noise * cfg.sample.one_step_temperature
    y = torch.arange(n, device=device) % cfg.model.num_classes if cfg.model.num_classes else None
    frames = codec.decode_frames(sample(net, noise, steps=cfg.sample.steps, y=y))  # (n, T, H, W, 3) uint8
    out = Path(run_dir) / "samples"
    save_image(grid(frames), out / f"step_{step:08d}.png")
    if cfg.data.num_frames > 1:
        save_video(np.concatenate(list(frames), axis=2), out / f"step_{step:08d}.mp4", fps=sample_fps(cfg))
