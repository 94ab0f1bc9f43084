"""The repository itself: what a GPU round needs of it."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE_CALL_LIMIT = 64 * 2**20  # a device call carries the working tree and the carried wheels, 64 MiB together
GPU_WHEELS = 10 * 2**20  # what scripts/gpu/fetch_wheels.sh fetches for run_all.sh (9.3 MiB at its pinned versions)


def test_the_working_tree_leaves_room_for_the_gpu_wheels():
    """A tree too large to travel would turn the first GPU lease in months into an error: big files (checkpoints)
    belong in git history or runs/, not in the tree (docs/experiments.md says how to restore the old ones)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    sizes = {n.decode(): (ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file()}
    total = sum(sizes.values())
    largest = ", ".join(f"{n} ({s / 2**20:.1f} MiB)" for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    assert total + GPU_WHEELS <= DEVICE_CALL_LIMIT, f"tracked files {total / 2**20:.1f} MiB; largest: {largest}"
