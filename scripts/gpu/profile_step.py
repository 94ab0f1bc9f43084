"""Where a bf16 MeanFlow training step's time goes on the GPU, against flow matching, for the B/2 cases of bench.py.

    python scripts/gpu/profile_step.py [--out profile_step.json] [--device cpu: a dry run of this script]

Per case, in one run: step times (interleaved, bf16 autocast) of flow matching, the default MeanFlow step (detached
JVP, math attention under the JVP) and the same with the ``jvp_flash`` kernel, at the bench batch and 4x it (a step
bound by Python and kernel launches gains from a larger batch; one bound by the GPU's arithmetic does not); then a
torch.profiler trace of one MeanFlow step: GPU busy time vs wall time, kernels launched, and the top operators by
GPU time. First, the detached mode's JVP call eager vs replayed from a CUDA graph (the host's share of its time) and
eager with PyTorch's forward-AD rules instead of ``jvp_rules``' (session 48; interleaved),
and with ``--compiled-jvp`` vs ``torch.compile`` of ``torch.func.jvp`` (kernels fused).
The moving-digits model (the bundled recipe's, the most host-bound) joins the JVP-call and step-time rows.
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
from mfvideo.method.jvp_graph import GraphedJVP  # noqa: E402

ARMS = {"flow matching": ("flow matching", "sdpa", False), "meanflow": ("meanflow, detached JVP", "sdpa", False),
        "meanflow, jvp_flash": ("meanflow, detached JVP", "jvp_flash", False),
        "meanflow, CUDA graph": ("meanflow, detached JVP", "sdpa", True)}


def step_times(case, device, scale, reps=5):
    net, x, y = make(case, device, scale=scale)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator(device).manual_seed(0)
    times = {a: [] for a in ARMS}
    graphed = GraphedJVP(net)
    for rep in range(reps + 2):
        for arm, (variant, backend, graph) in ARMS.items():
            net.set_attn_backend(backend)
            sync(device)
            t0 = time.perf_counter()
            train_step(net, opt, MeanFlow(**VARIANTS[variant]), x, y, True, gen, jvp_net=graphed if graph else None)
            sync(device)
            if rep >= 2:
                times[arm].append(time.perf_counter() - t0)
    med = {a: statistics.median(t) for a, t in times.items()}
    return {"batch": x.shape[0], "step_s": med, "ratio_vs_fm": {a: med[a] / med["flow matching"] for a in ARMS},
            "graph_error": graphed.disabled}


def profile_one(case, device, variant, graph=False):
    from torch.profiler import ProfilerActivity, profile

    net, x, y = make(case, device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator(device).manual_seed(0)
    mf = MeanFlow(**VARIANTS[variant])
    jvp_net = GraphedJVP(net) if graph else None
    for _ in range(4):  # the graphed arm captures its row counts' graphs in these
        train_step(net, opt, mf, x, y, True, gen, jvp_net=jvp_net)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        train_step(net, opt, mf, x, y, True, gen, jvp_net=jvp_net)
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    busy = sum(e.device_time for e in kernels) / 1e6  # seconds, summed over kernels (they run one at a time here)
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    return {"wall_s": wall, "gpu_busy_s": busy, "gpu_busy_fraction": busy / wall, "kernels": len(kernels),
            "top_ops_by_gpu_time": [{"op": e.key, "calls": e.count, "gpu_ms": e.self_device_time_total / 1e3,
                                     "cpu_ms": e.cpu_time_total / 1e3} for e in top]}


def graphed_jvp(case, device, rows_fraction=0.25, reps=20, compiled=False):
    """The detached mode's JVP call (no grad, bf16 autocast, the r != t quarter of the bench batch) eager vs
    ``GraphedJVP`` (replayed from a CUDA graph, input copies and output clones included): how much of its time is the
    host's. A capture that failed or disagreed is reported (``graph_error``). ``compiled``: also ``torch.compile`` of
    ``torch.func.jvp`` (compile time, call time, tangent error against the eager JVP): whether fusing the JVP's kernels
    is worth building into training."""
    from mfvideo.method.jvp import forward_jvp
    from mfvideo.method.jvp_graph import GraphedJVP
    from mfvideo.models.jvp_rules import pytorch_rules

    net, x, y = make(case, device)
    with torch.no_grad():  # off adaLN-Zero's exact zeros: the tangent errors below compare a non-zero output
        for prm in net.parameters():
            prm.add_(torch.randn_like(prm) * 0.02)
    n = max(1, int(x.shape[0] * rows_fraction))
    x, y = x[:n].contiguous(), y[:n].contiguous()
    t = torch.rand(n, device=device)
    r, dt = t * 0.5, torch.ones_like(t)
    graphed = GraphedJVP(net)

    def eager():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return forward_jvp(lambda z_, t_, r_: net(z_, t_, r_, y=y), (x, t, r), (x, dt, None))

    def replay():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return graphed.jvp(x, t, r, y, x, dt)

    def timed(fn, n=reps):
        for _ in range(3):
            fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / n

    def eager_pytorch_rules():  # PyTorch's forward-AD rules instead of jvp_rules' (the JVP before session 48)
        with pytorch_rules():
            return eager()

    ours, theirs = [], []
    for _ in range(3):  # interleaved: the two rule sets' ratio is what is reported
        ours.append(timed(eager, max(1, reps // 3)))
        theirs.append(timed(eager_pytorch_rules, max(1, reps // 3)))
    res = {"rows": n, "eager_s": min(ours), "graph_s": timed(replay), "eager_pytorch_rules_s": min(theirs)}
    res["graph_vs_eager"] = res["graph_s"] / res["eager_s"]
    res["eager_vs_pytorch_rules"] = res["eager_s"] / res["eager_pytorch_rules_s"]
    (_, a), (_, b) = replay(), eager()
    res["graph_tangent_rel_diff"] = float((a.float() - b.float()).norm() / b.float().norm())
    if compiled:  # train.compile_jvp's path: padded rows, torch.func.jvp compiled, attention on the math path
        compiled_net = GraphedJVP(net, capture=False, compile=True)

        def compiled_call():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return compiled_net.jvp(x, t, r, y, x, dt)

        try:
            t0 = time.perf_counter()
            _, c = compiled_call()
            sync(device)
            res["compiled_first_call_s"] = time.perf_counter() - t0  # compilation (and the eager check) included
            res["compiled_s"] = timed(compiled_call)
            res["compiled_vs_eager"] = res["compiled_s"] / res["eager_s"]
            res["compiled_tangent_rel_diff"] = float((c.float() - b.float()).norm() / b.float().norm())
            if compiled_net.disabled:
                res["compiled_error"] = compiled_net.disabled
        except Exception as e:  # noqa: BLE001 -- a measurement: report what failed
            res["compiled_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if graphed.disabled:
        res["graph_error"] = graphed.disabled
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="profile_step.json")
    p.add_argument("--device", default="cuda", help="cpu: a dry run (the moving-digits case only, few repeats)")
    p.add_argument("--compiled-jvp", choices=("none", "small", "all"), default="none",
                   help="also time torch.compile of torch.func.jvp: for the moving-digits case, or every case")
    a = p.parse_args()
    device = torch.device(a.device)
    out = Path(a.out)
    res = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__}
    small = "moving-digits (2.6M, 8x16x16 px)"
    cases = [small, *GPU_CASES] if device.type == "cuda" else [small]
    reps = 20 if device.type == "cuda" else 1
    for case in cases:
        comp = a.compiled_jvp == "all" or (a.compiled_jvp == "small" and case == small)
        res[f"{case}, JVP call: eager vs CUDA graph"] = g = graphed_jvp(case, device, reps=reps, compiled=comp)
        print(case, "JVP call eager vs CUDA graph", g, flush=True)
        out.write_text(json.dumps(res, indent=1))
    for case in cases:
        res[case] = {}
        for scale in (1, 4) if device.type == "cuda" else (1,):
            res[case][f"x{scale}"] = step_times(case, device, scale, reps=5 if device.type == "cuda" else 1)
            print(case, res[case][f"x{scale}"], flush=True)
            out.write_text(json.dumps(res, indent=1))
        if case == small and device.type == "cuda":
            continue  # profiles of the B/2 cases only
        for variant, graph in (("flow matching", False), ("meanflow, detached JVP", False),
                               ("meanflow, detached JVP", True)):
            name = f"profile, {variant}" + (", CUDA graph" if graph else "")
            res[case][name] = r = profile_one(case, device, variant, graph)
            print(case, name, {k: v for k, v in r.items() if k != "top_ops_by_gpu_time"}, flush=True)
            for op in r["top_ops_by_gpu_time"][:8]:
                print(f"   {op['gpu_ms']:8.2f} ms  x{op['calls']:<5} {op['op'][:90]}")
            out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
