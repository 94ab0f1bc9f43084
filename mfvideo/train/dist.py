"""Accelerator construction: the same code on one CPU, many CPU processes (gloo), one GPU or many."""

from __future__ import annotations

import logging
import os
import sys

import torch

log = logging.getLogger("mfvideo.train")


def make_accelerator(**kwargs):
    """An ``accelerate.Accelerator``; CPU-only multi-process runs (torchrun, gloo) need ``cpu=True`` to be seen. Each
    call sets the process's accelerator anew (its processes, the process group, stay): accelerate keeps one per
    process, and a second run in a notebook at another precision stopped with "restart your runtime completely"."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not torch.cuda.is_available() and world > 1:
        kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)


def launcher_precision(configured: str) -> str:
    """The mixed precision to train in. ``accelerate launch --mixed_precision bf16`` (or an ``accelerate config`` file
    saying bf16) reaches the process as ACCELERATE_MIXED_PRECISION, which the Accelerator's own argument, the config's
    ``train.mixed_precision``, would override without a word: where the config leaves it at "no", the launcher's bf16
    is taken (and said). The launcher's fp16 or fp8 is refused as the config's fp16 is."""
    from ..config import ConfigError

    asked = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if asked in ("no", configured):
        return configured
    if asked == "bf16":
        log.warning("accelerate launch asks for mixed precision bf16 (ACCELERATE_MIXED_PRECISION): training in bf16 "
                    "(train.mixed_precision=bf16, as the run's config.yaml records)")
        return "bf16"
    raise ConfigError(f"accelerate launch asks for mixed precision {asked} (ACCELERATE_MIXED_PRECISION); MeanFlow "
                      "trains in no or bf16 (its JVP overflows in fp16): launch with --mixed_precision bf16 or no")


def refuse_launcher_sharding() -> None:
    """``accelerate launch --use_fsdp`` / ``--use_deepspeed`` / Megatron (or an ``accelerate config`` saying so) would
    have accelerate wrap the model its own way, around which MeanFlow's JVP is untested (our FSDP2 path is
    ``train.distributed=fsdp``): refused with what to do instead."""
    from ..config import ConfigError

    for flag, name in (("ACCELERATE_USE_FSDP", "--use_fsdp"), ("ACCELERATE_USE_DEEPSPEED", "--use_deepspeed"),
                       ("ACCELERATE_USE_MEGATRON_LM", "--use_megatron_lm")):
        if os.environ.get(flag, "").lower() in ("1", "true", "yes"):
            raise ConfigError(f"accelerate launch {name} ({flag}): mfvideo shards with its own FSDP2, whose JVP is "
                              "tested; launch with --multi_gpu and set train.distributed=fsdp")


def warn_one_cpu_process() -> None:
    """``accelerate launch --cpu --num_processes N`` starts one process (accelerate's simple launcher runs N only under
    ``mpirun``), which trains alone and says nothing; it leaves its marks (ACCELERATE_USE_CPU, and the MASTER_PORT it
    sets only when asked for several processes) without a WORLD_SIZE. Said at the run's start."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        log.warning(
            "accelerate launch --cpu with several processes starts one (accelerate's simple launcher): this run "
            "trains in one process; for N CPU processes use accelerate launch --multi_gpu --num_processes N, or "
            "torchrun --nproc_per_node N")


def launched_processes() -> int:
    """How many processes the launcher started this one among: torchrun and accelerate launch give each its RANK and
    the WORLD_SIZE; a WORLD_SIZE exported alone (a job script's, for a later torchrun) is not a launch."""
    return int(os.environ.get("WORLD_SIZE") or 1) if "RANK" in os.environ else 1


def leave_process_group() -> bool:
    """End a multi-process run's communication: every rank waits for the others, then the process group is
    destroyed. Returns whether this process is one of several (then end it with ``exit_now`` once its work is done),
    the group ended here or before: accelerate's ``end_training`` destroys it, and the trainer's processes had gone
    on to the interpreter's teardown, ``exit_now``'s abort, in 1 two-process run of ~20."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        return True
    return launched_processes() > 1


def exit_now(code: int = 0) -> None:
    """End this process of a multi-process run, its output flushed, without the interpreter's teardown: there a
    joinable C++ thread of the gloo backend can abort a rank whose work is all done and written ('terminate called
    without an active exception', exit -6: 1 run in ~20 of the 2-process CPU trainer, barrier and
    ``destroy_process_group`` notwithstanding), which torchrun reports as the run failing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
