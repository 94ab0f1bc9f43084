"""Peak memory of generating short and long clips with ``mfvideo-sample``: clips past the window are encoded as their
windows come (``generate_stream`` into ``save_videos``), so memory should not grow with their length.

    python scripts/bench_sample_memory.py [--frames 100 2000] [--clips 16] [--size 128] [--out results/bench_sample_memory.json]

A freshly initialised x-predicting model of the tiny test config at ``--size`` px, RGB (its frames are flat grey: the
bench measures the frames held, not the network), saved once; then, in a fresh process per (length, way), either
``mfvideo-sample`` (streamed) or ``generate`` + ``save_video`` per clip (the whole clips held, as ``mfvideo-sample``
did before session 31), reading that process's peak RSS. The ffmpeg encoders are child processes, not counted (one
per clip while streaming, ~60 MB each at 256 px; one at a time when held). Prints a table and writes JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
import torch
t0 = time.perf_counter()
model, out, frames, clips, way = sys.argv[1:6]
if way == "streamed":
    from mfvideo.cli.sample import main
    main(["--checkpoint", model, "--num-clips", clips, "--num-frames", frames, "--out", out])
else:
    from mfvideo.io import save_video
    from mfvideo.pipeline import MFVideoPipeline
    pipe = MFVideoPipeline.from_pretrained(model)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames (the bundled model copies by default)
    video = pipe.generate(num_frames=int(frames), num_clips=int(clips), generator=torch.Generator().manual_seed(0),
                          output_type="uint8")
    for i, clip in enumerate(video.frames):
        save_video(clip, f"{out}/clip_{i:03d}.mp4", fps=pipe.fps)
print("RESULT", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[100, 2000])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default="results/bench_sample_memory.json")
    a = p.parse_args()
    import torch

    from mfvideo.builders import build_model
    from mfvideo.config import load_config
    from mfvideo.pipeline import MFVideoPipeline

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "tiny.yaml", [f"data.resolution={a.size}", "model.patch_size=16",
                                                      "model.prediction=x", "data.channels=3"])
    cfg.model.in_channels, cfg.model.num_classes = 3, 10
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        MFVideoPipeline(build_model(cfg.model), training_config=cfg).save_pretrained(Path(tmp) / "m")
        for n in a.frames:
            for way in ("streamed", "held"):
                out = Path(tmp) / f"{way}_{n}"
                out.mkdir()
                argv = [sys.executable, "-c", CHILD, str(Path(tmp) / "m"), str(out), str(n), str(a.clips), way]
                proc = subprocess.run(argv, capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
                if proc.returncode or not line:
                    raise SystemExit(f"{way} {n} frames failed: {proc.stderr.strip().splitlines()[-1:]}")
                kb, seconds = line[0].split()[1:]
                rows.append({"frames": n, "clips": a.clips, "way": way, "peak_rss_mb": round(int(kb) / 1024),
                             "seconds": round(float(seconds), 1)})
                r = rows[-1]
                print(f"{way:9s} {a.clips} clips x {n:5d} frames of {a.size} px: peak RSS {r['peak_rss_mb']:5d} MB, "
                      f"{r['seconds']} s", flush=True)
    Path(a.out).write_text(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(),
                                       "size": a.size, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
