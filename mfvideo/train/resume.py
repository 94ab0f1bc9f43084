"""Resuming a run: which checkpoint, its state restored, and what this run's config changed since it was written.

A resumed run with the checkpoint's config repeats an uninterrupted run bit for bit. One whose config changed is a
different run, and says so: every setting that differs from the checkpoint's ``config.yaml`` is named in one line.
The optimizer's and the schedule's settings are this run's (``train.lr``, ``betas``, ``weight_decay``,
``max_steps``, ``warmup_steps``, ``lr_schedule``): ``torch.optim.Optimizer.load_state_dict`` would otherwise bring
back the checkpoint's lr, betas and weight decay and drop the new ones without a word. The network itself may not
change (a checkpoint of ``model.prediction=x`` resumed as ``u`` loads into the same shapes and trains something
else): that is a new run from it, ``model.init_from``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from ..builders import model_kwargs
from ..config import Config, ConfigError, to_dict, upgrade_saved
from ..weights import class_difference, saved_classes
from .checkpoint import CheckpointError, check_keys, latest_checkpoint, load_config_from, resolve_checkpoint
from .sharding import load_model_state, load_optimizer_state

UNCOMPARED = {"train.resume", "train.output_dir", "model.init_from"}  # where the run is, not what it trains
MODEL_FREE = {"attn_backend"}  # model settings that pick a kernel, not a network: free to change on resume
OPTIMIZER_KEYS = ("initial_lr", "betas", "weight_decay")  # a param group's settings taken from this run's config


def starts_fresh(cfg: Config) -> bool:
    return cfg.train.resume in (None, "", "none")


def resolve_resume(cfg: Config, run_dir: Path) -> Path | None:
    """The checkpoint this run continues, or None: ``auto`` takes the run folder's newest complete one."""
    if starts_fresh(cfg):
        return None
    if cfg.train.resume == "auto":
        return latest_checkpoint(run_dir)
    path = resolve_checkpoint(cfg.train.resume)  # a run's folder: its newest checkpoint
    if not (path / "trainer.pt").is_file():
        raise CheckpointError(f"train.resume={path}: not a training checkpoint (no trainer.pt)")
    return path


def _flat(d: dict) -> dict[str, Any]:
    """section.key -> value (a dict-valued setting such as ``train.context_masks`` stays one value)."""
    return {f"{s}.{k}": v for s, keys in d.items() if isinstance(keys, dict) for k, v in keys.items()}


def changed_settings(path: Path, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (checkpoint's value, this run's)}`` for every setting that differs from the checkpoint's config.yaml.

    Keys the checkpoint's release did not save are left out (their old behaviour is not known here). The network
    is compared by its constructor arguments, so a size preset and the same sizes spelled out are one network.
    """
    saved = load_config_from(path)  # validated: an unreadable or invalid config.yaml is a clear error here
    then = _flat(upgrade_saved(yaml.safe_load((path / "config.yaml").read_text())))
    now = _flat(to_dict(cfg))
    changed = {k: (then[k], v) for k, v in now.items()
               if k in then and k not in UNCOMPARED and not k.startswith("model.") and then[k] != v}
    before, after = model_kwargs(saved.model), model_kwargs(cfg.model)
    for k in sorted((before.keys() | after.keys()) - MODEL_FREE):
        if before.get(k) != after.get(k):
            changed[f"model.{k}"] = (before.get(k), after.get(k))
    return changed


def check_same_network(changed: dict[str, tuple[Any, Any]], path: Path) -> None:
    """A resumed run trains the checkpoint's network: a changed model setting is refused, naming the way to it."""
    model = [f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items() if k.startswith("model.")]
    if model:
        raise ConfigError(f"train.resume: {', '.join(model)} since {path}; a resumed run goes on with the "
                          f"checkpoint's network: drop the change, or start a new run from it with "
                          f"model.init_from={path} (and another train.output_dir)")


def check_same_data(path: Path, classes: list[str] | None, num_items: int, world: int, batch: int) -> list[str]:
    """A resumed run reads the data it was trained on. Its classes by id must be the checkpoint's: a class folder
    added, removed or renamed shifts the ids, and each label would go on training another class's embedding without a
    word (a run over ``blue_box, red_ball`` resumed as ``a_green_tri, blue_box`` did). Another number of items, or of
    processes (the global batch), is allowed and returned as lines to say: the order of the items from there on
    differs from an uninterrupted run's, and the global batch is another."""
    then = saved_classes(path)
    if classes and then and (what := class_difference(then, classes)):
        raise ConfigError(f"train.resume: the data's classes changed since {path} ({what}): its labels would train "
                          f"other classes. Restore the data's classes, or start a new run from it with "
                          f"model.init_from={path} (and another train.output_dir)")
    try:  # num_items and num_processes: written since session 52
        then = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception:  # missing or unreadable: restore() says so in one line
        then = {}
    then = then if isinstance(then, dict) else {}
    said = []
    if then.get("num_items") is not None and int(then["num_items"]) != num_items:
        said.append(f"the data holds {num_items} items, {int(then['num_items'])} when {path.name} was written: the "
                    "order of the items from here on differs from an uninterrupted run's")
    if then.get("num_processes") is not None and int(then["num_processes"]) != world:
        was = int(then["num_processes"])
        said.append(f"{world} process{'es' * (world > 1)}, {was} when {path.name} was written: the global batch is "
                    f"{batch * world} (was {batch * was}) and the order of the items from here on differs from an "
                    "uninterrupted run's")
    return said


def describe(changed: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())


def restore(path: Path, model, ema, optimizer, scheduler) -> int:
    """Load a checkpoint's model, EMA, optimizer, schedule and counters into this run's objects; returns its step.

    The optimizer's and the schedule's settings stay this run's config's (module docstring): the moments and the
    step count come from the checkpoint, the lr of the next step from this run's schedule at that step.
    """
    from safetensors.torch import load_file

    from .checkpoint import ema_filename

    def read(f: Path, loader):
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; cannot resume from {path}")
        try:
            return loader(f)
        except Exception as e:  # truncated or corrupt: a clear line, never a pickle traceback
            raise CheckpointError(f"{f}: unreadable ({str(e).strip().splitlines()[0][:160]}); "
                                  f"cannot resume from {path}") from None

    def pt(f):
        return torch.load(f, map_location="cpu", weights_only=True)

    weights = read(path / "model.safetensors", load_file)
    check_keys(model, weights, str(path))
    load_model_state(model, weights)  # full tensors into a plain or sharded model
    for d in ema.decays:
        f = path / ema_filename(d)
        if not f.is_file():
            have = ", ".join(sorted(p.stem.removeprefix("ema_") for p in path.glob("ema_*.safetensors"))) or "none"
            raise CheckpointError(f"{path}: no EMA weights for decay {d:g} (it holds {have}); a resumed run keeps its "
                                  "train.ema_decays")
        ema.load_state_dict(d, read(f, load_file))
    opt = read(path / "optimizer.pt", pt)
    state = read(path / "trainer.pt", pt)
    ours = [{k: g[k] for k in OPTIMIZER_KEYS} for g in optimizer.param_groups]  # this config's, before the load
    try:
        load_optimizer_state(model, optimizer, opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        ema.num_updates = int(state["ema_updates"])
        step = int(state["step"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: optimizer or trainer state of another run ({e}); cannot resume") from None
    for group, settings in zip(optimizer.param_groups, ours):
        group.update(settings)
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    lrs = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() (the log's lr) reports until the next scheduler step
    return step
