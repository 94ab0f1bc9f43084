"""The repository itself: what a GPU round needs of it, and a README whose pointers and examples hold."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
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


def _readme_section(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_points_at_files_that_exist():
    """Every repository path the README names in backticks or as an image (docs, results, scripts, configs, tests)
    is there: the front door's pointers into docs/ must not go stale when a section moves."""
    import re

    text = (ROOT / "README.md").read_text()
    top = "(?:docs|results|scripts|configs|tests|mfvideo)/"
    named = set(re.findall(rf"\]\(({top}[^)\s]+)\)", text))  # images and links
    named |= {m for m in re.findall(rf"`({top}[\w./-]+)`", text) if "*" not in m}  # paths in backticks, no globs
    assert len(named) > 10 and any(n.startswith("docs/") for n in named), named
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert not missing, f"the README names {missing}, which the repository lacks"


def test_the_readme_use_it_examples_run_as_written(tmp_path, monkeypatch):
    """The Python blocks of the README's "Use it", run against the bundled model on real held-out clips saved as the
    files they name (clip.mp4, long.mp4, digit.png), with only the streaming examples' lengths shortened: an
    argument renamed or a method gone fails here before a user meets it."""
    import re

    import imageio.v3 as iio

    from mfvideo.eval.digits import real_clips
    from mfvideo.io import save_video
    from mfvideo.pipeline.inputs import frame_count

    blocks = re.findall(r"```python\n(.*?)```", _readme_section("Use it"), re.S)
    assert len(blocks) == 2, "the README's Use it holds two Python blocks"
    monkeypatch.chdir(tmp_path)
    clips, _ = real_clips(2, "test", 12)
    save_video(clips[0], "clip.mp4", fps=6.0)
    save_video(np.concatenate([clips[0], clips[1]]), "long.mp4", fps=6.0)
    iio.imwrite("digit.png", clips[1][0])
    shorter = {"num_new_frames=100_000": "num_new_frames=12", "num_frames=10_000": "num_frames=20"}
    ns = {"keyframes": clips[1][[0, 7]]}
    code = "".join(blocks)
    assert all(long in code for long in shorter), "the streaming examples changed: update `shorter` to match"
    for long, short in shorter.items():
        code = code.replace(long, short)
    exec(compile(code, "README.md (Use it)", "exec"), ns)
    assert ns["out"].frames.shape == (4, 24, 16, 16, 3)  # generate: 4 clips of 24 frames
    assert ns["mid"].frames.shape == (1, 8, 16, 16, 3)  # condition: one window between two keyframes
    assert ns["ext"].frames.shape[1] == 1 + 15  # image to video: the image, then 15 new frames
    assert (tmp_path / "my_model" / "model_index.json").is_file()
    for name, frames in (("three.mp4", 20), ("five.mp4", 20), ("longer.mp4", 24 + 12)):  # streamed to disk
        assert frame_count(str(tmp_path / name)) == frames, name
