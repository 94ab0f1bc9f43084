"""Accelerator construction: the same code on one CPU, many CPU processes (gloo), one GPU or many."""

from __future__ import annotations

import os

import torch


def make_accelerator(**kwargs):
    """An ``accelerate.Accelerator``; CPU-only multi-process runs (torchrun, gloo) need ``cpu=True`` to be seen."""
    from accelerate import Accelerator

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not torch.cuda.is_available() and world > 1:
        kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)
