"""Benchmark: where MeanFlow's price goes, measured side by side in one run so machine noise cancels.

    python scripts/bench.py [--quick] [--out results/bench_cpu.json]

- training step time: MeanFlow (25 % r != t, JVP only on those rows) vs flow matching (ratio 0) vs MeanFlow with
  the JVP on every row, interleaved step by step on the same model, batch and precision; peak memory of each
  in a fresh process (CPU: peak RSS growth; CUDA: max_memory_allocated);
- sampling: 1-NFE vs a 50-step Euler flow-matching sampler of the same network, and the decoder's share of the
  1-NFE time (identity codec, and a full-size SD-VAE decoder with random weights);
- attention backends: forward with sdpa / math / xformers, and the JVP (which always takes a forward-AD-safe path);
- data: moving-digits rendering, latent-cache loading and mp4 decoding throughput vs what a training step consumes.
Writes JSON and prints a table (``--markdown`` prints the tables of docs/benchmark.md from an existing JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mfvideo.latents.vae import ImageVAECodec  # noqa: E402
from mfvideo.method import MeanFlow, euler_sample, meanflow_sample, sample_context_masks  # noqa: E402
from mfvideo.method.jvp_graph import GraphedJVP  # noqa: E402
from mfvideo.models import build_model  # noqa: E402
from mfvideo.pipeline.motion_copy import MotionCanvas, motion_copy_from_anchor  # noqa: E402

# name: (model kwargs, latent shape (C, T, H, W), batch)
CASES = {
    "moving-digits (2.6M, 8x16x16 px)": (dict(in_channels=1, hidden_size=128, depth=6, num_heads=4, patch_size=4, num_classes=10), (1, 8, 16, 16), 32),
    "video S-ish (16x16x16 latents)": (dict(in_channels=4, hidden_size=256, depth=8, num_heads=4, patch_size=2, num_classes=10), (4, 16, 16, 16), 4),
}
GPU_CASES = {
    "B/2 image (256 tokens)": (dict(in_channels=4, hidden_size=768, depth=12, num_heads=12, patch_size=2, num_classes=1000, temporal=False), (4, 32, 32), 64),
    "B/2 video (16x32x32 latents)": (dict(in_channels=16, hidden_size=768, depth=12, num_heads=12, patch_size=2, num_classes=101), (16, 16, 32, 32), 4),
}
# counted only (operators per call, bench_dispatch): the Wan recipes' model, whose QK-norm has a rule of its own
DISPATCH_CASES = {"B/2 video + QK-norm (the Wan recipes')": (dict(GPU_CASES["B/2 video (16x32x32 latents)"][0], qk_norm=True),
                                                          (16, 16, 32, 32), 4)}
VARIANTS = {"flow matching": dict(ratio_r_neq_t=0.0),
            "meanflow, fused JVP": dict(ratio_r_neq_t=0.25, jvp_mode="fused"),
            "meanflow, detached JVP": dict(ratio_r_neq_t=0.25, jvp_mode="detached"),
            "meanflow, JVP on all rows": dict(ratio_r_neq_t=0.25, jvp_mode="fused", skip_jvp_when_r_eq_t=False)}
# timing only: the JVP's tangent (method.tangent), the sample's v_g or the network's own v (iMF), without and with
# guidance folded in (the recipes' kappa 0.5, whose no-grad call makes the network's own v on nearly every row)
TANGENT_VARIANTS = {"unguided, iMF tangent": dict(ratio_r_neq_t=0.25, tangent="model"),
            "guided, sample tangent": dict(ratio_r_neq_t=0.25, cfg_kappa=0.5, class_dropout=0.1),
            "guided, iMF tangent": dict(ratio_r_neq_t=0.25, cfg_kappa=0.5, class_dropout=0.1, tangent="model")}
# timing only: the default (detached) with PyTorch's own forward-AD rule for Linear instead of ours
PYTORCH_RULE = "meanflow, detached JVP, PyTorch's Linear JVP rule"
# the model's JVP through dual tensors with our rule for Linear only, PyTorch's for the rest
# (``jvp_rules.pytorch_rules``: the JVP before session 48)
LINEAR_ONLY = "forward_ad, our Linear rule only"
# CUDA only: the default with its JVP replayed from CUDA graphs (train.cuda_graph_jvp)
GRAPHED = "meanflow, detached JVP, CUDA graph"


@contextlib.contextmanager
def pytorch_linear_rule(enabled: bool = True):
    """Route every mfvideo Linear through F.linear, so the JVP uses PyTorch's rule (x_t W^T + x W_t^T, W_t = 0)."""
    import mfvideo.models.linear as lin

    lean = lin.linear
    if enabled:
        lin.linear = lambda x, w, b=None: torch.nn.functional.linear(x, w, b)
    try:
        yield
    finally:
        lin.linear = lean


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


BF16_BATCH_SCALE = 4  # bf16 rows at 4x the case's batch (256 images, 16 clips): the small batch starves an H200


def make(case, device, dtype=torch.float32, scale: int = 1):
    kw, shape, batch = (CASES | GPU_CASES | DISPATCH_CASES)[case]
    batch *= scale
    torch.manual_seed(0)
    net = build_model(**kw).to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, kw["num_classes"], (batch,), device=device)
    return net, x, y


def train_step(net, opt, mf, x, y, amp, gen, jvp_net=None):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        ctx = None
        if x.ndim == 5:
            ctx = sample_context_masks(x.shape[0], x.shape[2], {"none": 1, "first": 1}, generator=torch.Generator().manual_seed(0)).to(x.device)
        loss, logs = mf.loss(net, x, y, context=ctx, generator=gen, jvp_net=jvp_net)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return logs


def timed(fn, min_run_time: float = 1.0) -> float:
    """Median seconds per call through torch.utils.benchmark (warm-up, CUDA synchronisation, adaptive repeats)."""
    from torch.utils import benchmark

    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def bench_steps(case, device, reps, amp=False, scale: int = 1):
    """Median step time of each variant, interleaved: A B C A B C ...

    Hand-written on purpose: the variants' ratios are what we report, and on a shared machine only interleaving them
    step by step cancels the load others put on it; torch.utils.benchmark times one statement after another.

    A variant that runs out of device memory (the fused modes keep the tangent's own autograd graph until the loss is
    formed: at 4x batch, B/2 with the JVP on every row needs more than an H200's 140 GB) is reported as None.
    """
    net, x, y = make(case, device, scale=scale)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    variants = VARIANTS | {PYTORCH_RULE: VARIANTS["meanflow, detached JVP"]} | TANGENT_VARIANTS
    graphed = GraphedJVP(net) if device.type == "cuda" else None
    if graphed is not None:
        variants[GRAPHED] = VARIANTS["meanflow, detached JVP"]
    times = {v: [] for v in variants}
    gen = torch.Generator(device).manual_seed(0)
    out_of_memory = set()
    for rep in range(reps + 2):
        for v, kw in variants.items():
            if v in out_of_memory:
                continue
            sync(device)
            t0 = time.perf_counter()
            try:
                with pytorch_linear_rule(v == PYTORCH_RULE):
                    train_step(net, opt, MeanFlow(**kw), x, y, amp, gen, jvp_net=graphed if v == GRAPHED else None)
            except torch.OutOfMemoryError:
                out_of_memory.add(v)
            if v in out_of_memory:  # outside the except: its traceback no longer holds the step's tensors
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                print(f"{case}: {v} ran out of memory at batch {x.shape[0]}", flush=True)
                continue
            sync(device)
            if rep >= 2:  # warm-up
                times[v].append(time.perf_counter() - t0)
    if graphed is not None and graphed.disabled:
        print(f"{case}: {GRAPHED}: {graphed.disabled}", flush=True)
    return {v: None if v in out_of_memory else statistics.median(t) for v, t in times.items()}


MEM_CHILD = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[4])
from scripts.bench import make, train_step, VARIANTS
from mfvideo.method import MeanFlow
device = torch.device(sys.argv[3])
net, x, y = make(sys.argv[1], device)
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
for p in net.parameters():  # optimizer state exists before the baseline, without running any forward pass
    p.grad = torch.zeros_like(p)
opt.step(); opt.zero_grad(set_to_none=True)
gen = torch.Generator(device).manual_seed(0)
mf = MeanFlow(**VARIANTS[sys.argv[2]])
saved, seen = [0], set()
def pack(t):  # unique storages saved for backward, parameters excluded
    if not isinstance(t, torch.nn.Parameter):
        try:
            key = t.untyped_storage().data_ptr()
        except Exception:
            key = id(t)
        if key not in seen:
            seen.add(key)
            saved[0] += t.numel() * t.element_size()
    return t
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for i in range(3):
    saved[0] = 0; seen.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(net, opt, mf, x, y, False, gen)
if device.type == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"peak_bytes": peak, "saved_bytes": saved[0]}))
"""


def bench_memory(case, device, variants=tuple(VARIANTS)):
    out = {}
    for v in variants:
        proc = subprocess.run([sys.executable, "-c", MEM_CHILD, case, v, str(device), str(ROOT)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        out[v] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@torch.no_grad()
def bench_sampling(device, reps):
    """1-NFE vs 50 Euler steps for the moving-digits model, and the SD-VAE decoder's share of 1-NFE at 256 px."""
    case = "moving-digits (2.6M, 8x16x16 px)"
    net, x, y = make(case, device)
    net.eval()
    noise = torch.randn_like(x[:8])
    res = {}
    def copied():  # an extension's copy at R = 4: 7 new frames after the first, one MotionCanvas chain
        out = meanflow_sample(net, noise, y[:8])
        canvas = MotionCanvas(out[:, :, 0])
        return [canvas.step(out[:, :, t], radius=4, tol=0.4) for t in range(1, out.shape[2])]

    def anchored():  # generation's copy: the anchor found among the 8 frames, then copied outwards from it
        return motion_copy_from_anchor(meanflow_sample(net, noise, y[:8]), radius=4, tol=0.4)

    for name, fn in {"1-NFE": lambda: meanflow_sample(net, noise, y[:8]),
                     "1-NFE + motion copy (R = 4)": copied,
                     "1-NFE + anchored motion copy (R = 4)": anchored,
                     "2-NFE": lambda: meanflow_sample(net, noise, y[:8], steps=2),
                     "Euler 50": lambda: euler_sample(net, noise, y[:8], steps=50)}.items():
        res[name] = timed(fn, min_run_time=0.1 * reps)
    # B/2 image model + full-size SD-VAE decoder (random weights, real architecture) at 256x256
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4).to(device).eval()
    codec = ImageVAECodec(vae)  # the SD-VAE's normalisation, read from its config
    b2 = build_model(**GPU_CASES["B/2 image (256 tokens)"][0]).to(device).eval()
    z = torch.randn(1, 4, 32, 32, device=device)
    t_net, t_dec = [], []
    for rep in range(max(2, reps // 2) + 1):
        sync(device)
        t0 = time.perf_counter()
        lat = meanflow_sample(b2, z, torch.zeros(1, dtype=torch.long, device=device))
        sync(device)
        t1 = time.perf_counter()
        codec.decode(lat[:, :, None])  # (1, 4, 1, 32, 32) latents -> pixels
        sync(device)
        if rep:
            t_net.append(t1 - t0)
            t_dec.append(time.perf_counter() - t1)
    res["B/2 1-NFE 256px: network"] = statistics.median(t_net)
    res["B/2 1-NFE 256px: SD-VAE decode"] = statistics.median(t_dec)
    return res


def bench_attention(device, reps):
    from torch.func import jvp

    from mfvideo.models.attention import jvp_flash_available, xformers_available

    net, x, y = make("moving-digits (2.6M, 8x16x16 px)", device)
    t = torch.rand(x.shape[0], device=device)
    res = {}
    backends = ["sdpa", "math"] + (["xformers"] if xformers_available() else []) + (["jvp_flash"] if jvp_flash_available() else [])
    for b in backends:
        net.set_attn_backend(b)
        forward = torch.no_grad()(lambda: net(x, t, t * 0.5, y))
        tangent = lambda: jvp(lambda z_, t_: net(z_, t_, t_ * 0.5, y), (x, t), (x, torch.ones_like(t)))  # noqa: E731
        res[b] = {"forward": timed(forward, 0.1 * reps), "jvp": timed(tangent, 0.1 * reps)}
    return res


def bench_jvp_api(case, device, reps, amp=False):
    """The model's JVP along (v, 1, 0) (no grad, the detached mode's call) through torch.func.jvp vs dual tensors
    (``mfvideo.method.jvp.forward_jvp``, what the loss uses), interleaved; and the forward alone for scale."""
    from torch.func import jvp

    from mfvideo.method.jvp import forward_jvp
    from mfvideo.models.jvp_rules import pytorch_rules

    net, x, y = make(case, device)
    t = torch.rand(x.shape[0], device=device)
    r = t * 0.5
    fn = lambda z_, t_, r_: net(z_, t_, r_, y=y)  # noqa: E731
    calls = {"forward": lambda: fn(x, t, r),
             "torch.func.jvp": lambda: jvp(fn, (x, t, r), (x, torch.ones_like(t), torch.zeros_like(r))),
             "forward_ad (ours)": lambda: forward_jvp(fn, (x, t, r), (x, torch.ones_like(t), None)),
             LINEAR_ONLY: lambda: _with(pytorch_rules(), forward_jvp, fn, (x, t, r), (x, torch.ones_like(t), None))}
    times = {k: [] for k in calls}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for rep in range(2 * reps + 2):
            for k, call in calls.items():
                sync(device)
                t0 = time.perf_counter()
                call()
                sync(device)
                if rep >= 2:
                    times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_compile(case, device, reps):
    """Training step with the model under torch.compile (the JVP runs through the eager module) vs eager."""
    net, x, y = make(case, device)
    compiled = torch.compile(net)
    opt = torch.optim.AdamW(net.parameters(), lr=0.0)  # lr 0: every step sees the same weights
    res = {}
    for v in ("flow matching", "meanflow, detached JVP"):
        mf = MeanFlow(**VARIANTS[v])
        losses, t0 = {}, time.perf_counter()
        losses["compiled"] = train_step(compiled, opt, mf, x, y, False, torch.Generator(device).manual_seed(1), jvp_net=net)
        first = time.perf_counter() - t0
        losses["eager"] = train_step(net, opt, mf, x, y, False, torch.Generator(device).manual_seed(1))
        times = {"eager": [], "compiled": []}
        for rep in range(reps + 1):
            for k, m in (("eager", net), ("compiled", compiled)):
                sync(device)
                t0 = time.perf_counter()
                train_step(m, opt, mf, x, y, False, torch.Generator(device).manual_seed(rep), jvp_net=net)
                sync(device)
                if rep:
                    times[k].append(time.perf_counter() - t0)
        a, b = (float(losses[k]["loss_unweighted"]) for k in ("eager", "compiled"))
        res[v] = {"eager": statistics.median(times["eager"]), "compiled": statistics.median(times["compiled"]),
                  "first_compiled_step": first, "loss_rel_diff": abs(a - b) / abs(a)}
    return res


SECTIONS = ("steps", "throughput", "jvp_api", "dispatch", "sampling", "attention", "attention_long", "clip_latency",
            "compile", "data")
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM datasheets)


def step_flops(case, device, variant, scale: int = 1) -> float:
    """FLOPs of one training step (forward, JVP where the variant runs it, backward) as torch's FlopCounterMode counts
    them at dispatch (matmuls, convolutions, attention); the optimizer's elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    net, x, y = make(case, device, scale=scale)
    opt = torch.optim.AdamW(net.parameters(), lr=0.0)
    with FlopCounterMode(display=False) as counter:
        train_step(net, opt, MeanFlow(**VARIANTS[variant]), x, y, False, torch.Generator(device).manual_seed(0))
    return float(counter.get_total_flops())


def bench_throughput(res, device, peak_tflops):
    """Samples/s and model FLOP utilisation of the bf16 steps: counted FLOPs / step time / the chip's bf16 peak."""
    out = {}
    scale = res.get("bf16_batch_scale", 1)
    for case, times in res["steps_bf16"].items():
        batch = (CASES | GPU_CASES)[case][2] * scale
        out[case] = {}
        for v in ("flow matching", "meanflow, detached JVP", GRAPHED):
            if not times.get(v):
                continue
            # the graphed step does the detached step's work (its padding rows are not counted)
            flops = step_flops(case, device, "meanflow, detached JVP" if v == GRAPHED else v, scale)
            achieved = flops / times[v] / 1e12
            out[case][v] = {"samples_per_s": batch / times[v], "tflop_per_step": flops / 1e12,
                            "achieved_tflops": achieved, "mfu": achieved / peak_tflops if peak_tflops else None}
    return out


def bench_long_attention(device, reps, length: int, heads: int = 12, head_dim: int = 64, batch: int = 2):
    """Attention alone at a long sequence (a B/2 video clip's tokens): forward, and forward + JVP tangent, per backend,
    with the peak memory of the JVP call on CUDA (bf16 there, fp32 on the CPU)."""
    from torch.func import jvp

    from mfvideo.models.attention import attention, jvp_flash_available, xformers_available

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device).manual_seed(0)
    q, k, v, dq, dk, dv = (torch.randn(batch, heads, length, head_dim, device=device, dtype=dtype, generator=gen)
                           for _ in range(6))
    backends = ["math", "sdpa"] + (["xformers"] if xformers_available() else []) + (["jvp_flash"] if jvp_flash_available() else [])
    out = {"tokens": length, "heads": heads, "head_dim": head_dim, "batch": batch, "dtype": str(dtype)}
    ref = jvp(lambda a, b, c: attention(a, b, c, "math"), (q, k, v), (dq, dk, dv))
    for b in backends:
        fwd = torch.no_grad()(lambda: attention(q, k, v, b))
        tangent = lambda: jvp(lambda a, b_, c: attention(a, b_, c, b), (q, k, v), (dq, dk, dv))  # noqa: E731
        row = {"forward": timed(fwd, 0.1 * reps), "forward_and_jvp": timed(tangent, 0.1 * reps)}
        got = tangent()
        row["tangent_rel_err_vs_math"] = float((got[1].float() - ref[1].float()).norm() / ref[1].float().norm())
        if device.type == "cuda":
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
            tangent()
            torch.cuda.synchronize()
            row["jvp_peak_bytes"] = torch.cuda.max_memory_allocated() - base
        out[b] = row
    return out


def bench_dispatch(case, device):
    """Operators per bf16 call (forward, the model's JVP, a flow-matching and a default MeanFlow training step:
    loss and backward) with our forward-AD rules (Linear's and ``jvp_rules``'), with ours for Linear only (mfvideo
    before session 48) and with PyTorch's. On a GPU in bf16 the step is host-bound: each operator is a kernel launch.
    The counts do not depend on the batch or the grid, so they are taken at batch 2 on a small grid."""
    from mfvideo.method.jvp import forward_jvp
    from mfvideo.models.jvp_rules import OperatorCount, pytorch_rules

    net, x, y = make(case, device)
    x, y = x[:2], y[:2]
    x = x[:, :, : min(x.shape[2], 4), :8, :8] if x.ndim == 5 else x[:, :, :8, :8]
    t, r = torch.tensor([0.8, 0.6], device=device), torch.tensor([0.2, 0.6], device=device)
    calls = {
        "forward": lambda: net(x, t, r, y=y),
        "JVP": lambda: forward_jvp(lambda z_, t_, r_: net(z_, t_, r_, y=y), (x, t, r),
                                   (torch.randn_like(x), torch.ones_like(t), None), module=net),
    }
    out = {}
    for rules, ctx in (("ours", contextlib.nullcontext), ("ours for Linear only", pytorch_rules),
                       ("PyTorch's", lambda: _both(pytorch_rules(), pytorch_linear_rule()))):
        row = {}
        for name, call in calls.items():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), ctx():
                call()  # autocast's weight cache filled, as in training
                with OperatorCount() as c:
                    call()
            row[name] = c.total
        for name, variant in (("FM step", "flow matching"), ("MeanFlow step", "meanflow, detached JVP")):
            mf, gen = MeanFlow(**VARIANTS[variant]), torch.Generator().manual_seed(0)
            ctx_mask = None
            if x.ndim == 5:
                ctx_mask = sample_context_masks(2, x.shape[2], {"none": 1, "first": 1},
                                                generator=torch.Generator().manual_seed(0)).to(device)
            with ctx(), OperatorCount() as c:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss, _ = mf.loss(net, x, y, context=ctx_mask, generator=gen)
                loss.backward()
            net.zero_grad(set_to_none=True)
            row[name] = c.total
        out[rules] = row
    return out


def _with(ctx, fn, *args):
    """fn(*args) inside the context manager ctx."""
    with ctx:
        return fn(*args)


@contextlib.contextmanager
def _both(a, b):
    with a, b:
        yield


@torch.no_grad()
def bench_clip_latency(device, reps, frames: int = 17, px: int = 256):
    """1-NFE latency of one clip with the UCF-101 recipe's model (STDiT-B/2 on Wan 2.1 VAE latents): the network call
    and the decode, timed apart; the real AutoencoderKLWan architecture with random weights (bf16 on CUDA)."""
    from diffusers import AutoencoderKLWan

    from mfvideo.latents.vae import VideoVAECodec

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    codec = VideoVAECodec(AutoencoderKLWan().to(device, dtype), "wan")
    c, t, h, w = codec.latent_shape((frames, px, px))
    net = build_model("STDiT-B/2", in_channels=c, num_classes=101, qk_norm=True).to(device).eval()
    z = torch.randn(1, c, t, h, w, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    t_net, t_dec = [], []
    for rep in range(max(2, reps // 2) + 1):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            lat = meanflow_sample(net, z, y)
        sync(device)
        t1 = time.perf_counter()
        codec.decode(lat.float())
        sync(device)
        if rep:
            t_net.append(t1 - t0)
            t_dec.append(time.perf_counter() - t1)
    return {"clip": f"{frames} frames, {px}x{px} px -> latents {c}x{t}x{h}x{w}", "network": statistics.median(t_net),
            "decode": statistics.median(t_dec)}


def bench_data(device):
    from mfvideo.data import MovingDigits
    from mfvideo.data.latent_cache import LatentCache, cache_dataset, write_manifest
    from mfvideo.data.videos import VideoFolder
    from mfvideo.io import save_video
    from mfvideo.latents import IdentityCodec

    res = {}
    ds = MovingDigits(num_frames=8, resolution=16, digit_size=8, speed=1.0, channels=1)
    t0 = time.perf_counter()
    for i in range(2000):
        ds[i]
    res["moving digits render (clips/s)"] = 2000 / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dataset(ds, IdentityCodec(1), tmp, shard_size=1024, limit=4096, progress=False)
        write_manifest(tmp, IdentityCodec(1), 4096, 1024, images=False)
        cache = LatentCache(tmp)
        cache[0]
        t0 = time.perf_counter()
        for i in range(4096):
            cache[i]
        res["latent cache load (clips/s)"] = 4096 / (time.perf_counter() - t0)
        vids = Path(tmp) / "videos"
        import numpy as np

        rng = np.random.default_rng(0)
        import importlib.util

        if importlib.util.find_spec("imageio_ffmpeg") is None:  # e.g. the GPU machine, which lacks the 68 MB wheel
            res["mp4 decoding"] = "skipped: imageio-ffmpeg not installed"
            return res
        for i in range(8):
            save_video(rng.integers(0, 255, (64, 240, 320, 3), dtype=np.uint8), vids / "c" / f"{i}.mp4", fps=25)
        for backend in ("decord", "imageio"):
            if backend == "decord" and importlib.util.find_spec("decord") is None:
                res["mp4 decoding, decord"] = "skipped: decord not installed"
                continue
            vf = VideoFolder.from_folder(vids, num_frames=16, resolution=128, frame_stride=2, backend=backend)
            t0 = time.perf_counter()
            for i in range(16):
                vf[i % 8]
            res[f"mp4 16-frame clips, 320x240 -> 128, {backend} (clips/s)"] = 16 / (time.perf_counter() - t0)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="fewer repetitions; peak memory of flow matching and the "
                   "default MeanFlow step only; torch.compile of one case")
    p.add_argument("--peak-tflops", type=float, default=None, help="the chip's dense bf16 peak for the FLOP "
                   "utilisation (default: from the device name, " + ", ".join(PEAK_BF16_TFLOPS) + ")")
    p.add_argument("--markdown", default=None, help="print the tables of this JSON (docs/benchmark.md) and exit")
    p.add_argument("--only", default=None, help="comma-separated sections to (re)measure into the existing --out JSON, "
                   "keeping the rest: " + ", ".join(SECTIONS))
    a = p.parse_args()
    if a.markdown:
        print(markdown(json.loads(Path(a.markdown).read_text())))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    reps = 3 if a.quick else 8
    cuda = device.type == "cuda"
    cases = list(CASES) + (list(GPU_CASES) if cuda else [])
    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None) if cuda else None
    res = {"device": name, "torch": torch.__version__, "peak_bf16_tflops": peak, "steps": {}, "memory": {}}
    out = Path(a.out or ROOT / "results" / f"bench_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(",")) if a.only else set(SECTIONS)
    if only - set(SECTIONS):
        raise SystemExit(f"bench.py: unknown section(s) {sorted(only - set(SECTIONS))}; choose from {', '.join(SECTIONS)}")
    if a.only and out.exists():
        res = json.loads(out.read_text()) | {"torch": torch.__version__}

    def save():  # after every section, atomically: a run stopped by a time limit keeps what it measured
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(out)

    mem_variants = ["flow matching", "meanflow, detached JVP"] if a.quick else list(VARIANTS)
    if "steps" in only:
        for case in cases:
            res["steps"][case] = bench_steps(case, device, reps)
            res["memory"][case] = bench_memory(case, device, mem_variants)
            print(case, res["steps"][case], res["memory"][case], flush=True)
            save()
    if cuda and "throughput" in only:
        res["bf16_batch_scale"] = BF16_BATCH_SCALE
        res["steps_bf16"] = {c: bench_steps(c, device, reps, amp=True, scale=BF16_BATCH_SCALE) for c in GPU_CASES}
        res["throughput_bf16"] = bench_throughput(res, device, peak)
        save()
    if "sampling" in only:
        res["sampling"] = bench_sampling(device, reps)
        save()
    if "attention" in only:
        res["attention"] = bench_attention(device, reps)
        save()
    if "attention_long" in only:
        res["attention_long"] = bench_long_attention(device, reps, length=2304 if cuda else 576)  # 9 x 16 x 16 tokens
        save()
    if cuda and "clip_latency" in only:
        res["clip_latency"] = bench_clip_latency(device, reps)
        save()
    if "jvp_api" in only:
        res["jvp_api"] = {c: bench_jvp_api(c, device, reps) for c in cases}
        if cuda:
            res["jvp_api"].update({f"{c}, bf16": bench_jvp_api(c, device, reps, amp=True) for c in GPU_CASES})
        save()
    if "dispatch" in only:
        res["dispatch"] = {c: bench_dispatch(c, device) for c in [*CASES, *GPU_CASES, *DISPATCH_CASES]}
        save()
    if "compile" in only:
        compile_cases = (["moving-digits (2.6M, 8x16x16 px)"] if not cuda else list(GPU_CASES)[:1] if a.quick else GPU_CASES)
        res["compile"] = {c: bench_compile(c, device, reps) for c in compile_cases}
        save()
    if "data" in only:
        res["data"] = bench_data(device)
        if "moving-digits (2.6M, 8x16x16 px)" in res["steps"]:
            consumed = CASES["moving-digits (2.6M, 8x16x16 px)"][2] / res["steps"]["moving-digits (2.6M, 8x16x16 px)"]["meanflow, detached JVP"]
            res["data"]["training consumes (clips/s, moving-digits MeanFlow step)"] = consumed
        save()
    print(markdown(res))
    print(f"\nwrote {out}")


def markdown(res) -> str:
    """The tables of a result JSON (docs/benchmark.md); sections a stopped run did not reach are left out."""
    steps = [*res["steps"].values(), *res.get("steps_bf16", {}).values()]
    names = [n for n in VARIANTS if any(n in s for s in steps)]  # an older run lacks the newer variants
    lines = [f"Device: {res['device']}, torch {res['torch']}. Ratios are against flow matching, same model and batch.", "",
             "| training step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for case, s in res["steps"].items():
        fm = s["flow matching"]
        lines.append(f"| {case}: time | " + " | ".join(f"{s[n] * 1e3:.0f} ms ({s[n] / fm:.2f}x)" for n in names) + " |")
        m = res["memory"].get(case, {})
        key = "saved_bytes" if res["device"].startswith("CPU") else "peak_bytes"
        if "flow matching" in m:
            base = m["flow matching"][key]
            label = "peak memory" if key == "peak_bytes" else "activations saved for backward"
            lines.append(f"| {case}: {label} | " + " | ".join(
                f"{m[n][key] / 2**20:.0f} MiB ({m[n][key] / base:.2f}x)" if n in m else "" for n in names) + " |")
    bscale = res.get("bf16_batch_scale", 1)
    for case, s in res.get("steps_bf16", {}).items():
        fm = s["flow matching"]
        lines.append(f"| {case}, bf16, batch {(CASES | GPU_CASES)[case][2] * bscale}: time | " + " | ".join(
            f"{s[n] * 1e3:.0f} ms ({s[n] / fm:.2f}x)" if s.get(n) else "out of memory" for n in names) + " |")
    if res.get("throughput_bf16"):
        lines += ["", "| bf16 step | samples/s | TFLOP per step (counted) | achieved TFLOP/s | FLOP utilisation |",
                  "|---|---|---|---|---|"]
        for case, c in res["throughput_bf16"].items():
            case = f"{case}, batch {(CASES | GPU_CASES)[case][2] * bscale}"
            for v, r in c.items():
                mfu = f"{r['mfu']:.0%} of {res['peak_bf16_tflops']:.0f}" if r["mfu"] is not None else "(peak unknown)"
                lines.append(f"| {case}, {v} | {r['samples_per_s']:,.0f} | {r['tflop_per_step']:.2f} | "
                             f"{r['achieved_tflops']:.0f} | {mfu} |")
    graph_rows = [(f"{case}" + (f", bf16, batch {(CASES | GPU_CASES)[case][2] * bscale}" if key == "steps_bf16" else ""), s)
                  for key in ("steps", "steps_bf16") for case, s in res.get(key, {}).items() if s.get(GRAPHED)]
    if graph_rows:
        lines += ["", "| step time, JVP replayed from CUDA graphs | detached JVP, eager | detached JVP, CUDA graph |",
                  "|---|---|---|"]
        for case, s in graph_rows:
            fm, eager, g = s["flow matching"], s["meanflow, detached JVP"], s[GRAPHED]
            lines.append(f"| {case} | {eager * 1e3:.0f} ms ({eager / fm:.2f}x FM) | {g * 1e3:.0f} ms ({g / fm:.2f}x FM) |")
    lines += ["", "| JVP rule for Linear (default detached JVP) | ours: x_t W^T | PyTorch's: x_t W^T + x 0^T |", "|---|---|---|"]
    for case, s in res["steps"].items():
        if PYTORCH_RULE in s:
            fm, ours, theirs = s["flow matching"], s["meanflow, detached JVP"], s[PYTORCH_RULE]
            lines.append(f"| {case}: step time | {ours * 1e3:.0f} ms ({ours / fm:.2f}x FM) | {theirs * 1e3:.0f} ms ({theirs / fm:.2f}x FM) |")
    tangent_rows = [(case, s) for case, s in res["steps"].items() if all(k in s for k in TANGENT_VARIANTS)]
    if tangent_rows:
        lines += ["", "| the JVP's tangent (detached JVP), step time | unguided: sample (default) | unguided: iMF | "
                  "guided (kappa 0.5): sample | guided: iMF |", "|---|---|---|---|---|"]
        for case, s in tangent_rows:
            fm = s["flow matching"]
            lines.append(f"| {case} | " + " | ".join(f"{s[k] * 1e3:.0f} ms ({s[k] / fm:.2f}x FM)" for k in (
                "meanflow, detached JVP", *TANGENT_VARIANTS)) + " |")
    if "dispatch" in res:
        lines += ["", "| operators per bf16 call (a GPU's kernel launches) | forward | JVP | FM step | MeanFlow step |",
                  "|---|---|---|---|---|"]
        for case, d in res["dispatch"].items():
            for rules, row in d.items():
                f, fm = row["forward"], row["FM step"]
                lines.append(f"| {case}, {rules} | {f} | {row['JVP']} ({row['JVP'] / f:.1f}x) | {fm} | "
                             f"{row['MeanFlow step']} ({row['MeanFlow step'] / fm:.2f}x) |")
    if "jvp_api" in res:
        lin = any(LINEAR_ONLY in j for j in res["jvp_api"].values())  # measured from session 48 on
        lines += ["", "| the model's JVP (no grad) | forward | torch.func.jvp | forward_ad (ours) | ours vs func |"
                  + (" forward_ad, our rule for Linear only (as before session 48) |" if lin else ""),
                  "|---|---|---|---|---|" + ("---|" if lin else "")]
        for case, j in res["jvp_api"].items():
            f, a, b = j["forward"], j["torch.func.jvp"], j["forward_ad (ours)"]
            lines.append(f"| {case} | {f * 1e3:.1f} ms | {a * 1e3:.1f} ms ({a / f:.1f}x fwd) | {b * 1e3:.1f} ms "
                         f"({b / f:.1f}x fwd) | {b / a:.2f}x |" + (
                             f" {j[LINEAR_ONLY] * 1e3:.1f} ms ({j[LINEAR_ONLY] / f:.1f}x fwd) |" if LINEAR_ONLY in j
                             else " |" if lin else ""))
    if "sampling" in res:
        s = res["sampling"]
        lines += ["", "| sampling (8 clips, moving digits) | time | vs 1-NFE |", "|---|---|---|"]
        for k in ("1-NFE", "1-NFE + motion copy (R = 4)", "1-NFE + anchored motion copy (R = 4)", "2-NFE", "Euler 50"):
            if k in s:  # (motion copy: measured from session 25 on; anchored, generation's: from session 45 on)
                lines.append(f"| {k} | {s[k] * 1e3:.1f} ms | {s[k] / s['1-NFE']:.2f}x |")
        net, dec = s["B/2 1-NFE 256px: network"], s["B/2 1-NFE 256px: SD-VAE decode"]
        lines.append(f"| B/2 1-NFE at 256 px: network / SD-VAE decode | {net * 1e3:.0f} / {dec * 1e3:.0f} ms | decode = {dec / (net + dec):.0%} of the total |")
    if "clip_latency" in res:
        c = res["clip_latency"]
        lines.append(f"| STDiT-B/2 1-NFE clip ({c['clip']}): network / Wan 2.1 decode | {c['network'] * 1e3:.0f} / "
                     f"{c['decode'] * 1e3:.0f} ms | decode = {c['decode'] / (c['network'] + c['decode']):.0%} of the total |")
    if "attention" in res:
        lines += ["", "| attention backend (moving-digits model, batch 32) | forward | JVP |", "|---|---|---|"]
        for b, v in res["attention"].items():
            lines.append(f"| {b} | {v['forward'] * 1e3:.0f} ms | {v['jvp'] * 1e3:.0f} ms |")
    if "attention_long" in res:
        a = res["attention_long"]
        lines += ["", f"| attention alone, {a['tokens']} tokens, {a['heads']} heads of {a['head_dim']}, batch {a['batch']}, "
                  f"{a['dtype'].split('.')[-1]} | forward | forward + JVP | JVP peak memory | tangent vs math |", "|---|---|---|---|---|"]
        for b, v in a.items():
            if isinstance(v, dict):
                mem = f"{v['jvp_peak_bytes'] / 2**20:.0f} MiB" if "jvp_peak_bytes" in v else ""
                lines.append(f"| {b} | {v['forward'] * 1e3:.2f} ms | {v['forward_and_jvp'] * 1e3:.2f} ms | {mem} | "
                             f"{v['tangent_rel_err_vs_math']:.1e} |")
    if "compile" in res:
        lines += ["", "| torch.compile (JVP through the eager module) | eager | compiled | first compiled step | loss rel. diff |",
                  "|---|---|---|---|---|"]
        for case, c in res["compile"].items():
            for v, r in c.items():
                lines.append(f"| {case}, {v} | {r['eager'] * 1e3:.0f} ms | {r['compiled'] * 1e3:.0f} ms ({r['compiled'] / r['eager']:.2f}x) "
                             f"| {r['first_compiled_step']:.0f} s | {r['loss_rel_diff']:.1e} |")
    if "data" in res:
        lines += ["", "| data | clips/s |", "|---|---|"]
        for k, v in res["data"].items():
            lines.append(f"| {k} | {v:,.0f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
