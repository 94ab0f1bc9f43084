"""Checkpoints: one folder per step, written to a temporary folder and renamed, so a kill never corrupts one.

Layout of ``<run>/checkpoints/step_00001000/``::

    config.yaml                 the resolved config (sampling needs nothing else)
    model.safetensors           the trained weights
    ema_0.9999.safetensors      one file per EMA decay
    optimizer.pt, trainer.pt    optimizer / scheduler and trainer state (loaded with weights_only=True)
    COMPLETE                    written last, before the rename

The pipeline loads the same folder (config + EMA weights).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import Config, from_dict, to_yaml

MARKER = "COMPLETE"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing files, another architecture. One line, no traceback."""


def ema_filename(decay: float) -> str:
    return f"ema_{decay:g}.safetensors"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_checkpoint(
    run_dir, step: int, cfg: Config, model_state: dict, ema_states: dict, optimizer_state: dict, trainer_state: dict,
    keep_last: int = 3,
) -> Path:
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "config.yaml").write_text(to_yaml(cfg))
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
    for decay, state in ema_states.items():
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, tmp / ema_filename(decay))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(trainer_state, tmp / "trainer.pt")
    (tmp / MARKER).write_text(json.dumps({"step": step}))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)  # atomic: the folder appears complete or not at all
    prune(run_dir, keep_last)
    return final


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def is_valid(path: Path) -> bool:
    return path.is_dir() and (path / MARKER).is_file() and (path / "model.safetensors").is_file()


def list_checkpoints(run_dir) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step_") and not p.name.endswith(".tmp") and is_valid(p))


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune(run_dir, keep_last: int) -> None:
    found = list_checkpoints(run_dir)
    for old in found[: max(0, len(found) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)


def load_config_from(path) -> Config:
    import yaml

    path = Path(path)
    f = path / "config.yaml"
    if not f.is_file():
        raise CheckpointError(f"{path}: no config.yaml (not a checkpoint folder)")
    return from_dict(yaml.safe_load(f.read_text()), source=str(f))


def load_weights(path, which: str = "ema") -> dict[str, torch.Tensor]:
    """The weights of a checkpoint folder: ``ema`` (the first EMA file found; falls back to the model) or ``model``."""
    path = Path(path)
    candidates = sorted(path.glob("ema_*.safetensors")) if which == "ema" else []
    candidates.append(path / "model.safetensors")
    for c in candidates:
        if c.is_file():
            try:
                return load_file(c)
            except Exception as e:
                raise CheckpointError(f"{c}: unreadable weights ({str(e).splitlines()[0]})") from None
    raise CheckpointError(f"{path}: no weights (expected ema_*.safetensors or model.safetensors)")


def load_into(model: torch.nn.Module, state: dict, source: str, allow_missing_temporal: bool = False) -> list[str]:
    """Strict load with a clear error listing mismatched keys; returns the keys left at their init.

    With ``allow_missing_temporal`` (video from image), temporal keys may be missing and stay zero-initialised.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    allowed = [k for k in missing if allow_missing_temporal and "temporal" in k]
    missing = [k for k in missing if k not in allowed]
    if missing or unexpected or shape:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{name}: {', '.join(keys[:5])}{more}")
        raise CheckpointError(f"{source}: weights of another architecture; " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
    return allowed
