"""Where a bf16 MeanFlow training step's time goes on the GPU, against flow matching, for the B/2 cases of bench.py.

    python scripts/gpu/profile_step.py [--out profile_step.json]

Per case, in one run: step times (interleaved, bf16 autocast) of flow matching, the default MeanFlow step (detached
JVP, math attention under the JVP) and the same with the ``jvp_flash`` kernel, at the bench batch and 4x it (a step
bound by Python and kernel launches gains from a larger batch; one bound by the GPU's arithmetic does not); then a
torch.profiler trace of one MeanFlow step: GPU busy time vs wall time, kernels launched, and the top operators by
GPU time. First, the detached mode's JVP call eager vs replayed from a CUDA graph (the host's share of its time).
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
    net, x, y = make(case, device, scale=scale)
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


def graphed_jvp(case, device, rows_fraction=0.25, reps=20):
    """The detached mode's JVP call (no grad, bf16 autocast, the r != t quarter of the bench batch) eager vs replayed
    from a CUDA graph: how much of its time is the host's. An error (e.g. a host sync inside the model) is reported."""
    from mfvideo.method.jvp import forward_jvp

    net, x, y = make(case, device)
    n = max(1, int(x.shape[0] * rows_fraction))
    x, y = x[:n].contiguous(), y[:n].contiguous()
    t = torch.rand(n, device=device)
    r, dt = t * 0.5, torch.ones_like(t)

    def call():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return forward_jvp(lambda z_, t_, r_: net(z_, t_, r_, y=y), (x, t, r), (x, dt, None))

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    res = {"rows": n, "eager_s": timed(call)}
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_u, static_du = call()
        eager_u, eager_du = call()
        graph.replay()
        torch.cuda.synchronize()
        res["graph_s"] = timed(graph.replay)
        res["graph_vs_eager"] = res["graph_s"] / res["eager_s"]
        res["graph_tangent_rel_diff"] = float((static_du.float() - eager_du.float()).norm() / eager_du.float().norm())
    except Exception as e:  # noqa: BLE001 -- reported, not raised: the answer is whether it can be captured
        res["graph_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="profile_step.json")
    a = p.parse_args()
    device = torch.device("cuda")
    out = Path(a.out)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for case in GPU_CASES:
        res[f"{case}, JVP call: eager vs CUDA graph"] = g = graphed_jvp(case, device)
        print(case, "JVP call eager vs CUDA graph", g, flush=True)
        out.write_text(json.dumps(res, indent=1))
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
