"""Checkpoints: one folder per step, written to a temporary folder and renamed, so a kill never corrupts one.

Layout of ``<run>/checkpoints/step_00001000/``::

    config.yaml                 the resolved config (sampling needs nothing else)
    classes.json                class names by id, when the data has them
    model.safetensors           the trained weights
    ema_0.9999.safetensors      one file per EMA decay
    optimizer.pt, trainer.pt    optimizer / scheduler and trainer state (loaded with weights_only=True)
    COMPLETE                    written last, before the rename

A failed write (full disk) removes the temporary folder and raises ``CheckpointError``: the previous checkpoint stays.
Old checkpoints are renamed out of the listing before they are deleted, so a kill while pruning never leaves one
listed without its optimizer state.

The pipeline loads the same folder (config + EMA weights).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..config import Config, to_yaml
from ..io import as_new_file
from ..weights import (  # noqa: F401 (re-exported)
    MARKER, CheckpointError, check_keys, is_valid, latest_checkpoint, list_checkpoints, load_config_from, load_into,
    load_weights, resolve_checkpoint,
)



def ema_filename(decay: float) -> str:
    return f"ema_{decay:g}.safetensors"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_checkpoint(
    run_dir, step: int, cfg: Config, model_state: dict, ema_states: dict, optimizer_state: dict, trainer_state: dict,
    keep_last: int = 3, classes: list[str] | None = None,
) -> Path:
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        if classes:
            (tmp / "classes.json").write_text(json.dumps(list(classes), indent=1))
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
        for decay, state in ema_states.items():
            save_file({k: v.contiguous().cpu() for k, v in state.items()}, tmp / ema_filename(decay))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(trainer_state, tmp / "trainer.pt")
        as_new_file(*tmp.glob("*.safetensors"))  # safetensors writes 0600
        (tmp / MARKER).write_text(json.dumps({"step": step}))
        _fsync_dir(tmp)
    except (OSError, RuntimeError, SafetensorError) as e:  # a full disk, a quota, a lost mount
        shutil.rmtree(tmp, ignore_errors=True)
        kept = latest_checkpoint(run_dir)
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
        raise CheckpointError(f"cannot write checkpoint {final}: {reason}; "
                              f"{'the previous checkpoint ' + str(kept) + ' is kept' if kept else 'no checkpoint kept'}") from None
    if final.exists():
        _remove(final)
    os.replace(tmp, final)  # atomic: the folder appears complete or not at all
    prune(run_dir, keep_last)
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint folder so that no kill leaves it half-deleted yet listed: rename it out of the listing
    first (atomic), then delete."""
    trash = path.with_name(path.name + ".trash")
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_partial(run_dir) -> list[Path]:
    """Remove what a killed save or prune left behind (``*.tmp``, ``*.trash``); returns the removed paths."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    leftovers = [p for p in root.iterdir() if p.is_dir() and p.name.endswith((".tmp", ".trash"))]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return leftovers


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())




def prune(run_dir, keep_last: int) -> None:
    found = list_checkpoints(run_dir)
    for old in found[: max(0, len(found) - max(1, keep_last))]:  # never the newest
        _remove(old)
