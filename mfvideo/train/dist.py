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


def leave_process_group() -> None:
    """End a multi-process run cleanly: every rank waits for the others, then the process group is destroyed (a
    process that exits with it alive can abort in its threads' destructors: 'terminate called without an active
    exception', exit code -6, seen on the 2-process gloo CPU run). Nothing without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
