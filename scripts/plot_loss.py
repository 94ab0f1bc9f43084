"""Plot a run's loss curve from its log.jsonl: python scripts/plot_loss.py RUN_DIR_OR_LOG --out loss.png"""

import argparse
import json
from pathlib import Path

from mfvideo.cli import user_errors


@user_errors  # bad input: one line and exit status 2
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("--out", default="loss.png")
    a = p.parse_args(argv)
    path = Path(a.log)
    path = path / "log.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(2, "no such file (a run's folder holds log.jsonl)", str(path))
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a run killed mid-line leaves its last record cut: the rest still plot
                print(f"skipped {path}:{n}: not a JSON record")
    rows = [r for r in rows if isinstance(r, dict) and "step" in r]
    if not rows:
        raise ValueError(f"{path}: no step records to plot")

    try:
        import matplotlib
    except ImportError:
        raise SystemExit("error: plotting needs matplotlib (pip install matplotlib; the dev extra has it)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    steps = [r["step"] for r in rows]
    for key, label in (("loss_unweighted", "all rows"), ("loss_fm", "rows with r = t"), ("loss_mf", "rows with r != t")):
        if all(key in r for r in rows):
            ax.plot(steps, [r[key] for r in rows], label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("unweighted loss (sum over pixels)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
