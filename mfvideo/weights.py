"""Reading what training and ``save_pretrained`` write: the resolved config and the weights of a checkpoint folder.

Used by the trainer (resume, ``init_from``) and the pipeline alike, so neither imports the other. Every failure is a
``CheckpointError`` with one line that names the file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import Config, from_dict

DIFFUSERS_WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"  # save_pretrained's layout
log = logging.getLogger("mfvideo")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing files, another architecture. One line, no traceback."""


MARKER = "COMPLETE"  # written last into a checkpoint folder, before it is renamed into place
REQUIRED = ("config.yaml", "model.safetensors", "optimizer.pt", "trainer.pt", MARKER)


def is_valid(path: Path) -> bool:
    """A training checkpoint folder with every file written (a kill mid-save leaves no such folder)."""
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED)


def list_checkpoints(run_dir) -> list[Path]:
    """A training run's complete checkpoints (``<run>/checkpoints/step_XXXXXXXX``), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if re.fullmatch(r"step_\d{8}", p.name) and is_valid(p))


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


_announced: set[tuple[Path, str]] = set()


def resolve_checkpoint(path) -> Path:
    """A folder to load weights from: ``path`` itself, or for a training run's folder (``train.output_dir``: its
    ``checkpoints/`` and no weights of its own) its newest complete checkpoint, said in the log."""
    path = Path(path).expanduser()
    own = any((path / f).is_file() for f in ("model.safetensors", "model_index.json", DIFFUSERS_WEIGHTS))
    if (path / "checkpoints").is_dir() and not own:  # the run folder holds config.yaml and log.jsonl, no weights
        newest = latest_checkpoint(path)
        if newest is None:
            raise CheckpointError(f"{path}: a training run with no complete checkpoint yet (checkpoints/ holds none)")
        if (path, newest.name) not in _announced:  # once per run and checkpoint (config and weights both resolve)
            _announced.add((path, newest.name))
            log.warning("%s is a training run: loading its newest checkpoint, %s", path, newest.name)
        return newest
    return path


def saved_classes(path) -> list[str] | None:
    """The class names by id a weights folder records: a training checkpoint's ``classes.json``, a pipeline folder's
    ``id2label`` (None where it records none)."""
    import json

    path = resolve_checkpoint(path)
    try:
        if (path / "classes.json").is_file():
            return [str(c) for c in json.loads((path / "classes.json").read_text())]
        if (path / "model_index.json").is_file():
            labels = json.loads((path / "model_index.json").read_text()).get("id2label") or {}
            return [str(labels[k]) for k in sorted(labels, key=int)] or None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return None


def class_difference(then: list[str], now: list[str]) -> str | None:
    """Where two class lists by id first differ, in words (None where they are the same)."""
    then, now = [str(c) for c in then], [str(c) for c in now]
    if then == now:
        return None
    i = next(i for i in range(max(len(then), len(now))) if i >= min(len(then), len(now)) or then[i] != now[i])
    what = (f"id {i} was {then[i]!r}, is {now[i]!r}" if i < min(len(then), len(now))
            else f"id {i} {then[i]!r} is gone" if i < len(then) else f"id {i} {now[i]!r} is new")
    return f"{what}; {len(then)} classes then, {len(now)} now"


def load_config_from(path) -> Config:
    """The typed config of a checkpoint folder (its config.yaml, loaded safely and validated)."""
    import yaml

    path = resolve_checkpoint(path)
    f = path / "config.yaml"
    if not f.is_file():
        raise CheckpointError(f"{path}: no config.yaml (not a checkpoint folder)")
    try:
        data = yaml.safe_load(f.read_text())  # safe: a Python tag is refused, never run
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{f}: expected a mapping of config sections, got {type(data).__name__}")
    return from_dict(data, source=str(f))


def anchor_paths(cfg: Config, checkpoint) -> Config:
    """A training checkpoint's relative paths (``config.PATH_KEYS``: its VAE, data, init and teacher folders) read
    from the folder its run was launched from, where they are not found from here: the checkpoint lies at
    ``<launch folder>/<train.output_dir>/checkpoints/step_N``, so that folder is known without being stored. A
    checkpoint moved elsewhere, or paths that exist from here, are left as they are. Changes ``cfg`` in place."""
    from .config import PATH_KEYS

    out = Path(cfg.train.output_dir)
    run = Path(checkpoint).resolve().parent.parent  # <launch>/<output_dir>
    if out.is_absolute() or ".." in out.parts or run.parts[len(run.parts) - len(out.parts):] != out.parts:
        return cfg
    launch = Path(*run.parts[: len(run.parts) - len(out.parts)])
    if launch.resolve() == Path.cwd().resolve():
        return cfg
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if key in ("train.output_dir", "train.resume") or not isinstance(value, str) or Path(value).is_absolute():
            continue
        if not Path(value).exists() and (launch / value).exists():
            setattr(getattr(cfg, section), name, str(launch / value))
            log.info("%s=%s: read from the folder the run was launched from, %s", key, value, launch / value)
    return cfg


def load_weights(path, which: str = "ema") -> dict[str, torch.Tensor]:
    """The weights of a checkpoint folder: ``ema`` (the run's first ``train.ema_decays``, the one its samples were
    drawn with; falls back to the model), ``ema_<decay>`` (that average, e.g. ``ema_0.9999``) or ``model``."""
    path = resolve_checkpoint(path)
    if which.startswith("ema_"):
        f = path / f"{which}.safetensors"
        if not f.is_file():
            have = sorted(p.stem for p in path.glob("ema_*.safetensors"))
            raise CheckpointError(f"{path}: no {which} weights (it holds {', '.join(have) or 'no EMA'})")
        candidates = [f]
    elif which == "ema":
        candidates = [path / f"{p}.safetensors" for p in _primary_ema(path)] + sorted(path.glob("ema_*.safetensors"))
    elif which == "model":
        candidates = []
    else:
        raise ValueError(f"weights={which!r}: expected 'ema', 'ema_<decay>' (e.g. 'ema_0.9999') or 'model'")
    candidates += [path / "model.safetensors", path / DIFFUSERS_WEIGHTS]
    for c in candidates:
        if c.is_file():
            try:
                return load_file(c)
            except Exception as e:
                raise CheckpointError(f"{c}: unreadable weights ({str(e).splitlines()[0]})") from None
    raise CheckpointError(f"{path}: no weights (expected ema_*.safetensors, model.safetensors or {DIFFUSERS_WEIGHTS})")


def _primary_ema(path: Path) -> list[str]:
    """``ema_<decay>`` of the run's first EMA decay, as its config.yaml lists them (none if it does not say)."""
    import yaml

    try:
        decays = yaml.safe_load((path / "config.yaml").read_text())["train"]["ema_decays"]
        return [f"ema_{float(decays[0]):g}"]
    except Exception:  # no config, another layout: the files decide
        return []


def load_into(model: torch.nn.Module, state: dict, source: str, allow_missing_temporal: bool = False) -> list[str]:
    """Strict load with a clear error listing mismatched keys; returns the keys left at their init.

    With ``allow_missing_temporal`` (video from image, or a video model gaining a context embedder), the
    zero-started parts -- temporal and clip sub-layers, the context embedder and reference, the refiner, the copy
    path, the guidance-scale embedder -- may be missing and keep their init.
    """
    allowed = check_keys(model, state, source, allow_missing_temporal)
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
    return allowed


def _zero_started(key: str) -> bool:
    """Parts a video model may gain from a checkpoint without them: they start at zero and change nothing."""
    return ("temporal" in key or ".clip." in key or key.startswith("context_embedder.")
            or key.startswith("reference_embedder.") or key.startswith("refiner.") or key.startswith("copier.")
            or key.startswith("g_embedder."))


def check_keys(model: torch.nn.Module, state: dict, source: str, allow_missing_temporal: bool = False) -> list[str]:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys; returns the allowed missing ones."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    allowed = [k for k in missing if allow_missing_temporal and _zero_started(k)]
    missing = [k for k in missing if k not in allowed]
    if missing or unexpected or shape:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{name}: {', '.join(keys[:5])}{more}")
        raise CheckpointError(f"{source}: weights of another architecture; " + "; ".join(parts))
    return allowed
