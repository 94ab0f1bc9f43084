"""The repository itself: what a GPU round needs of it, and a README whose pointers and examples hold."""

import shutil
import subprocess
import sys
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
    ns = {"keyframes": clips[1][[0, 7]], "clips": clips}
    code = "".join(blocks)
    assert all(long in code for long in shorter), "the streaming examples changed: update `shorter` to match"
    for long, short in shorter.items():
        code = code.replace(long, short)
    exec(compile(code, "README.md (Use it)", "exec"), ns)
    assert ns["out"].frames.shape == (4, 24, 16, 16, 3)  # generate: 4 clips of 24 frames
    assert ns["mid"].frames.shape == (1, 8, 16, 16, 3)  # condition: one window between two keyframes
    assert ns["ext"].frames.shape[1] == 1 + 15  # image to video: the image, then 15 new frames
    assert ns["alts"].frames.shape == (6, 12 + 8, 16, 16, 3)  # each of the 2 clips continued 3 times
    assert np.array_equal(ns["alts"].frames[3, :12], ns["alts"].frames[5, :12])  # the second clip, given frames kept
    assert (tmp_path / "my_model" / "model_index.json").is_file()
    for name, frames in (("three.mp4", 20), ("five.mp4", 20), ("longer.mp4", 24 + 12)):  # streamed to disk
        assert frame_count(str(tmp_path / name)) == frames, name


def _shell_commands(path: Path) -> list[list[str]]:
    """The commands of a shell script as token lists: continuation lines joined, comments dropped, the script's own
    variables expanded (``${VAR:-default}`` to its default, any other to ``x``), split at pipes, ``&&`` and
    ``;``, whatever precedes the program (``timeout $((budget / 3))``, ``nice``, a function) taken off."""
    import re
    import shlex

    text = re.sub(r"\\\n", " ", path.read_text())
    assigned = dict(re.findall(r"^\s*(\w+)=(\"[^\"]*\"|\$\{[^}]*\}|\S+)", text, re.M))
    assigned = {k: "x" if v.startswith("$(") else v for k, v in assigned.items()}  # command substitutions

    def expand(s: str, depth: int = 0) -> str:
        if depth > 5:
            return s
        s = re.sub(r"\$\{\w+:-([^{}]*)\}", lambda m: expand(m[1], depth + 1), s)
        s = re.sub(r"\$\{\w+:\?[^{}]*\}", "x", s)  # a required argument
        return re.sub(r"\$\{?(\w+)\}?", lambda m: expand(assigned.get(m[1], "x").strip('"'), depth + 1), s)

    commands = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\|\||&&|\||;", expand(line)):
            try:
                tokens = shlex.split(part)
            except ValueError:  # an unbalanced quote across a split: not a command we check
                continue
            starts = [i for i, t in enumerate(tokens) if t.startswith(("python", "mfvideo-"))]
            if starts:
                commands.append(tokens[starts[0]:])
    return commands


SHELL_SCRIPTS = sorted({*ROOT.glob("scripts/*.sh"), *ROOT.glob("scripts/gpu/*.sh"), *ROOT.glob("datasets/*/*.sh")})


def _entry_points() -> dict[str, str]:
    """setup.cfg's console scripts: ``mfvideo-post-train`` -> ``mfvideo.cli.post_train``."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.split(":")[0].strip() for name, target in (line.split("=") for line in lines)}


def _argparse_source(tokens: list[str]) -> tuple[str, list[Path]] | None:
    """Which program a command runs and the files its flags are defined in (a command's module and the CLI package's
    shared arguments), for ours; None for anyone else's."""
    module = None
    if tokens[:1] and tokens[0].startswith("mfvideo-"):
        module = _entry_points().get(tokens[0], f"<{tokens[0]}: not in setup.cfg>")
    elif len(tokens) >= 3 and tokens[0].startswith("python") and tokens[1] == "-m" and "mfvideo" in tokens[2]:
        module = tokens[2]
    elif len(tokens) >= 2 and tokens[0].startswith("python") and tokens[1].startswith("scripts/"):
        return tokens[1], [ROOT / tokens[1]]
    if module is None:
        return None
    return module, [ROOT / (module.replace(".", "/") + ".py"), ROOT / "mfvideo" / "cli" / "__init__.py"]


def test_the_shell_scripts_pass_only_flags_their_programs_define():
    """The recipe, measurement, dataset and GPU scripts run for hours, or once in a lease of 15 minutes: a flag renamed
    in a program and not in the script that calls it must fail here, not an hour in (or on the GPU)."""
    import re

    checked, unknown = 0, []
    for script in SHELL_SCRIPTS:
        for tokens in _shell_commands(script):
            found = _argparse_source(tokens)
            if found is None:
                continue
            program, sources = found
            assert all(s.is_file() for s in sources), f"{script.name} runs {program}, which the repository lacks"
            defined = set()
            for source in sources:
                defined |= set(re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", source.read_text()))
            for flag in (t.split("=", 1)[0] for t in tokens[1:] if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", t)):
                checked += 1
                if flag not in defined | {"--help"}:
                    unknown.append(f"{script.relative_to(ROOT)}: {program} {flag}")
    assert checked > 30, f"only {checked} flags found in {len(SHELL_SCRIPTS)} scripts: the parser missed the commands"
    assert not unknown, f"flags no program defines: {unknown}"


def test_the_shell_scripts_train_with_keys_the_config_schema_has():
    """The ``key=value`` overrides the scripts hand ``mfvideo-train`` and ``mfvideo-cache-latents`` (the recipe's
    distillation, the GPU lease's training with its ``$common`` settings, the dataset preparations) load through the
    typed config: a key renamed in the schema fails here."""
    from mfvideo.config import load_config

    runs = 0
    for script in SHELL_SCRIPTS:
        for tokens in _shell_commands(script):
            found = _argparse_source(tokens)
            if found is None or found[0] not in ("mfvideo.cli.train", "mfvideo.cli.cache_latents"):
                continue
            args = tokens[3:] if tokens[1] == "-m" else tokens[1:]
            config, overrides = args[0], [a for a in args[1:] if "=" in a and not a.startswith("-")]
            assert (ROOT / config).is_file(), f"{script.name} trains {config}, which the repository lacks"
            load_config(ROOT / config, overrides)  # a ConfigError names the key and the script's override
            runs += 1
    assert runs >= 5, f"found {runs} training and caching commands in the scripts: the parser missed some"


def test_the_wheel_holds_every_module_and_asset(tmp_path):
    """``pip install .`` (or from git) installs the wheel, not the tree: a package folder without ``__init__.py`` is
    left out of it by ``packages = find:`` (``mfvideo.train`` was, and every command of such an install stopped with
    "No module named 'mfvideo.train'" while the editable install worked), as is an asset the package data misses."""
    import sys
    import zipfile

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z", "--", "mfvideo", "setup.cfg", "pyproject.toml", "README.md"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    tracked = [n for n in names if n and (ROOT / n).is_file()]
    for name in tracked:  # the tracked tree alone, as a clone has it
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / "src" / name)
    build = "from setuptools.build_meta import build_wheel; print(build_wheel(%r))" % str(tmp_path / "dist")
    done = subprocess.run([sys.executable, "-c", build], cwd=tmp_path / "src", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    inside = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in tracked if n.startswith("mfvideo/") and n not in inside]
    assert not missing, f"the wheel lacks {len(missing)} of the package's files, e.g. {missing[:3]}"


def test_every_script_answers_help_without_running(monkeypatch, capsys):
    """``python scripts/X.py --help`` prints its usage and exits 0 for every script: a probe written without a
    parser ran its whole experiment on ``--help``, and one of them, replacing the network's forward with that of an
    earlier release, stopped with a TypeError. Run in this process (runpy), as the scripts' imports are shared."""
    import runpy

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # the probes import each other as scripts do
    monkeypatch.chdir(ROOT)
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    assert len(scripts) > 20
    for script in scripts:
        monkeypatch.setattr(sys, "argv", [str(script), "--help"])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(script), run_name="__main__")
        assert stop.value.code in (0, None), script.name
        assert capsys.readouterr().out.strip(), f"{script.name} --help printed nothing"


USER_SCRIPTS = [  # the scripts the docs hand users, each with a mistake a user makes and the line it gets
    ("evaluate_digits.py", ["--checkpoint", "{missing}"], "error: {missing}: no such checkpoint folder"),
    ("digit_sheets.py", ["--scale", "0"], "argument --scale: must be >= 1, got 0"),
    ("motion_copy_sheet.py", ["--n", "0", "--out", "x.png"], "argument --n: must be >= 1, got 0"),
    ("plot_loss.py", ["{missing}"], "error: {missing}: no such file (a run's folder holds log.jsonl)"),
    ("evaluate.py", ["--network", "{missing}", "--kind", "i3d"], "error: metric network {missing} not found"),
    # an --out that cannot be written is said before the run, not after it (evaluate_digits ran ~30 min first)
    ("evaluate_digits.py", ["--out", "{here}"], "error: --out {here} is a folder; give a file name in it"),
    ("evaluate_digits.py", ["--checkpoint", "{bundled}", "{missing}", "--n", "2", "--out", "x.json"],
     "error: {missing}: no such checkpoint folder"),  # the second, before the first runs
    ("motion_copy_sheet.py", ["--out", "{here}"], "error: --out {here} is a folder"),
    ("evaluate.py", ["--network", "x.pt", "--kind", "i3d", "--out", "{here}"], "error: --out {here} is a folder"),
]


def test_the_scripts_users_are_sent_to_answer_a_mistake_in_one_line(tmp_path, monkeypatch, capsys):
    """The evaluation and sheet scripts the docs name stopped on a user's mistake (a folder that is not a checkpoint,
    a run folder without a log, --n 0) with a traceback, exit status 1: they go through the console scripts' one-line
    errors (exit status 2) now. A cut last record of a log (a run killed mid-line) is skipped, the rest plotted."""
    import runpy

    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "nothing_here")
    for name, args, said in USER_SCRIPTS:
        script = str(ROOT / "scripts" / name)
        names = dict(missing=missing, here=tmp_path, bundled=ROOT / "mfvideo" / "assets" / "moving_digits")
        monkeypatch.setattr(sys, "argv", [script, *(a.format(**names) for a in args)])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(script, run_name="__main__")
        out, err = capsys.readouterr()
        err = err.strip()
        assert stop.value.code == 2 and said.format(**names) in err.splitlines()[-1], (name, err)
        assert "done" not in out and not (tmp_path / "x.json").exists(), name  # nothing ran, nothing written
        assert "Traceback" not in err, name
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text('{"step": 1, "loss_unweighted": 2.0}\n{"step": 2, "loss_unweighted": 1.5}\n{"step": 3, "lo')
    monkeypatch.setattr(sys, "argv", ["plot_loss.py", str(log.parent), "--out", str(tmp_path / "loss.png")])
    runpy.run_path(str(ROOT / "scripts" / "plot_loss.py"), run_name="__main__")
    assert "skipped" in capsys.readouterr().out and (tmp_path / "loss.png").stat().st_size > 1000
