import os

import pytest
import torch

# Two threads, as CI's 2 cores have; a process started with OMP_NUM_THREADS (each rank of the 2-process checks that
# import this file: two ranks of two threads on 2 cores spin against each other, 2-3x slower) keeps its own.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


def rank_teardown_env(tmp_path) -> dict:
    """The environment of a 2-process run (one thread a rank) whose ranks (RANK set, not torchrun's own process)
    write "interpreter teardown" to stderr if they end through the interpreter's teardown, where gloo's threads can
    abort a finished rank (mfvideo.train.dist.exit_now): a sitecustomize on their path."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import atexit, os, sys\n"
        "if 'RANK' in os.environ:\n"
        "    atexit.register(lambda: sys.stderr.write(f'rank {os.environ[\"RANK\"]}: interpreter teardown\\n'))\n")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def tiny_model(**kw):
    from mfvideo.models import build_model

    cfg = dict(in_channels=3, hidden_size=32, depth=2, num_heads=2, patch_size=2, num_classes=10)
    cfg.update(kw)
    return build_model(**cfg)


def randomize(net, std=0.05, seed=0):
    """Give every weight (zero-initialised gates included) a random value so nothing is trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return net


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps a process-wide singleton: each test may train at its own precision (the process group stays)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    yield


@pytest.fixture
def make_model():
    return tiny_model
