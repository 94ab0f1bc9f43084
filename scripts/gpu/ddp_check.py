"""Two processes on one GPU: the MeanFlow step through DistributedDataParallel (the JVP inside the wrapped model)
gives each rank the gradient one process computes on the combined batch, per process-group backend.

NCCL refuses two ranks on one GPU ("Duplicate GPU detected", measured), so on a one-GPU machine its row records that
refusal (``--try-nccl`` tries anyway) and gloo, which all-reduces CUDA tensors too, carries the check; on a machine of
two or more GPUs NCCL runs.

    python scripts/gpu/ddp_check.py [--out ddp.json] [--device cuda|cpu]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import randomize, tiny_model  # noqa: E402
from mfvideo.method import MeanFlow  # noqa: E402

PER_RANK = 4


def batch(world, device):
    g = torch.Generator().manual_seed(0)
    B = PER_RANK * world
    x, noise = torch.randn(B, 3, 4, 8, 8, generator=g), torch.randn(B, 3, 4, 8, 8, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    t = torch.rand(B, generator=g) * 0.8 + 0.2
    r = torch.where(torch.arange(B) % 2 == 0, t * torch.rand(B, generator=g), t)  # half the rows need the JVP
    return [v.to(device) for v in (x, noise, y, t, r)]


def grads(net, mode, x, noise, y, t, r):
    loss, _ = MeanFlow(ratio_r_neq_t=0.5, jvp_mode=mode).loss(net, x, y, t=t, r=r, noise=noise)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters()])


def model(device):
    net = tiny_model()
    randomize(net)
    return net.to(device)


def worker(out_dir, device):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    backend = os.environ["MF_BACKEND"]
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = torch.device(f"cuda:{rank % torch.cuda.device_count()}") if device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    x, noise, y, t, r = batch(world, dev)
    sl = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    for mode in ("detached", "fused"):
        net = model(dev)
        ddp = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        _, g = grads(ddp, mode, x[sl], noise[sl], y[sl], t[sl], r[sl])  # the loss through the wrapped model
        torch.save(g.cpu(), Path(out_dir) / f"{mode}_rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def run(backend, device, world=2, timeout=90):
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MF_BACKEND": backend, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
               str(29600 + os.getpid() % 300), __file__, "--worker", tmp, "--device", device]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout} s"}
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "NCCL WARN" in ln or "Duplicate" in ln]
            return {"ok": False, "rc": proc.returncode, "error": " | ".join(lines[-4:])[-800:] or proc.stderr[-800:]}
        x, noise, y, t, r = batch(world, device)
        res = {"ok": True}
        for mode in ("detached", "fused"):
            ranks = [torch.load(Path(tmp) / f"{mode}_rank{i}.pt", weights_only=True) for i in range(world)]
            _, ref = grads(model(device), mode, x, noise, y, t, r)
            ref = ref.cpu()
            res[mode] = {"rank_diff": float((ranks[0] - ranks[1]).abs().max()),
                         "ref_diff": float((ranks[0] - ref).abs().max()), "ref_scale": float(ref.abs().max())}
            res[mode]["ok"] = res[mode]["rank_diff"] == 0.0 and res[mode]["ref_diff"] < 1e-5 * max(1.0, res[mode]["ref_scale"])
        return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="ddp.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--try-nccl", action="store_true", help="run NCCL on a one-GPU machine too (it refuses)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference and the ranks in true fp32
    torch.backends.cudnn.allow_tf32 = False
    res = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
           "gpus": torch.cuda.device_count() if a.device == "cuda" else 0}
    for backend in ("gloo", "nccl") if a.device == "cuda" else ("gloo",):
        if backend == "nccl" and res["gpus"] < 2 and not a.try_nccl:
            res[backend] = {"ok": None, "error": "not run: NCCL refuses two ranks on one GPU (measured on the H200, "
                            "NCCL 2.28.9: 'Duplicate GPU detected : rank 1 and rank 0 both on CUDA device')"}
        else:
            res[backend] = run(backend, a.device)
        print(backend, json.dumps(res[backend]), flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
