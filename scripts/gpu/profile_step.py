"""Where a bf16 MeanFlow training step's time goes on the GPU, against flow matching, for the B/2 cases of bench.py.

    python scripts/gpu/profile_step.py [--out profile_step.json]

Per case, in one run: step times (interleaved, bf16 autocast) of flow matching, the default MeanFlow step (detached
JVP, math attention under the JVP) and the same with the ``jvp_flash`` kernel, at the bench batch and 4x it (a step
bound by Python and kernel launches gains from a larger batch; one bound by the GPU's arithmetic does not); then a
torch.profiler trace of one MeanFlow step: GPU busy time vs wall time, kernels launched, and the top operators by
GPU time.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench import GPU_CASES, VARIANTS, make, sync, train_step  # noqa: E402

from mfvideo.method import MeanFlow  # noqa: E402

ARMS = {"flow matching": ("flow matching", "sdpa"), "meanflow": ("meanflow, detached JVP", "sdpa"),
        "meanflow, jvp_flash": ("meanflow, detached JVP", "jvp_flash")}


def step_times(case, device, scale, reps=5):
    net, x, y = make(case, device)
    x, y = x.repeat(scale, *([1] * (x.ndim - 1))), y.repeat(scale)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator(device).manual_seed(0)
    times = {a: [] for a in ARMS}
    for rep in range(reps + 2):
        for arm, (variant, backend) in ARMS.items():
            net.set_attn_backend(backend)
            sync(device)
            t0 = time.perf_counter()
            train_step(net, opt, MeanFlow(**VARIANTS[variant]), x, y, True, gen)
            sync(device)
            if rep >= 2:
                times[arm].append(time.perf_counter() - t0)
    med = {a: statistics.median(t) for a, t in times.items()}
    return {"batch": x.shape[0], "step_s": med, "ratio_vs_fm": {a: med[a] / med["flow matching"] for a in ARMS}}


def profile_one(case, device, variant):
    from torch.profiler import ProfilerActivity, profile

    net, x, y = make(case, device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator(device).manual_seed(0)
    mf = MeanFlow(**VARIANTS[variant])
    for _ in range(2):
        train_step(net, opt, mf, x, y, True, gen)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        train_step(net, opt, mf, x, y, True, gen)
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy = sum(e.device_time for e in kernels) / 1e6  # seconds, summed over kernels (they run one at a time here)
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    return {"wall_s": wall, "gpu_busy_s": busy, "gpu_busy_fraction": busy / wall, "kernels": len(kernels),
            "top_ops_by_gpu_time": [{"op": e.key, "calls": e.count, "gpu_ms": e.self_device_time_total / 1e3,
                                     "cpu_ms": e.cpu_time_total / 1e3} for e in top]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="profile_step.json")
    a = p.parse_args()
    device = torch.device("cuda")
    out = Path(a.out)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for case in GPU_CASES:
        res[case] = {}
        for scale in (1, 4):
            res[case][f"x{scale}"] = step_times(case, device, scale)
            print(case, res[case][f"x{scale}"], flush=True)
            out.write_text(json.dumps(res, indent=1))
        for variant in ("flow matching", "meanflow, detached JVP"):
            res[case][f"profile, {variant}"] = r = profile_one(case, device, variant)
            print(case, variant, {k: v for k, v in r.items() if k != "top_ops_by_gpu_time"}, flush=True)
            for op in r["top_ops_by_gpu_time"][:8]:
                print(f"   {op['gpu_ms']:8.2f} ms  x{op['calls']:<5} {op['op'][:90]}")
            out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
