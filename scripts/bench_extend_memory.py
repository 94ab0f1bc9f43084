"""Peak memory of extending a short and a long video: the input is streamed, so it should not grow with length.

    python scripts/bench_extend_memory.py [--frames 100 3000] [--size 640x360] [--out results/bench_extend_memory.json]

Writes each input mp4 once (moving shapes, H.264), then runs ``mfvideo-extend`` on it in a fresh process per
(length, decoder) and reads that process's peak RSS. Prints a table and writes JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys, time
from mfvideo.data import video_io
if sys.argv[3] == "imageio":
    video_io.decord_available = lambda: False
from mfvideo.cli.extend import main
t0 = time.perf_counter()
main([sys.argv[1], "--num-new-frames", "16", "--out", sys.argv[2]])
print("RESULT", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)
"""


def write_input(path: Path, frames: int, width: int, height: int) -> None:
    import imageio.v2 as imageio

    yy, xx = np.mgrid[0:height, 0:width]
    writer = imageio.get_writer(path, format="FFMPEG", fps=25, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=1, quality=6, ffmpeg_log_level="error")
    try:
        for i in range(frames):
            cx, cy = (i * 7) % width, (i * 3) % height
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (xx + i) % 256
            img[..., 1] = (yy * 2) % 256
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 6) ** 2] = 255
            writer.append_data(img)
    finally:
        writer.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[100, 3000])
    p.add_argument("--size", default="640x360")
    p.add_argument("--decoders", nargs="+", default=["decord", "imageio"])
    p.add_argument("--out", default="results/bench_extend_memory.json")
    a = p.parse_args()
    width, height = map(int, a.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.frames:
            src = Path(tmp) / f"in_{n}.mp4"
            write_input(src, n, width, height)
            for dec in a.decoders:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(Path(tmp) / f"out_{n}_{dec}.mp4"), dec],
                                      capture_output=True, text=True, env=env)
                if proc.returncode:
                    sys.exit(f"extend failed on {n} frames ({dec}): {proc.stderr.strip().splitlines()[-1]}")
                kb, seconds = proc.stdout.split("RESULT")[1].split()
                rows.append({"input_frames": n, "size": a.size, "decoder": dec, "peak_rss_mb": int(kb) / 1024,
                             "seconds": float(seconds)})
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows}
    for dec in a.decoders:
        mem = {r["input_frames"]: r["peak_rss_mb"] for r in rows if r["decoder"] == dec}
        lo, hi = min(a.frames), max(a.frames)
        result[f"growth_{dec}"] = mem[hi] / mem[lo] - 1
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print("| input | decoder | peak RSS | time |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['input_frames']} frames {r['size']} | {r['decoder']} | {r['peak_rss_mb']:.0f} MB | {r['seconds']:.1f} s |")
    for dec in a.decoders:
        print(f"{dec}: peak memory {result[f'growth_{dec}']:+.1%} from {min(a.frames)} to {max(a.frames)} frames")


if __name__ == "__main__":
    main()
