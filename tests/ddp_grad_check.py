"""Run under torchrun (2 processes, gloo): gradients after a MeanFlow step through the accelerate-prepared
model must be equal on both ranks and equal to the single-process gradient of the combined batch."""

import json
import sys

import torch

sys.path.insert(0, "tests")
from conftest import tiny_model  # noqa: E402
from mfvideo.method import MeanFlow  # noqa: E402
from mfvideo.train.dist import make_accelerator  # noqa: E402


def main(out_path, through="wrapped"):
    acc = make_accelerator()
    world = acc.num_processes
    g = torch.Generator().manual_seed(0)
    B = 4 * world
    x, noise = torch.randn(B, 3, 2, 8, 8, generator=g), torch.randn(B, 3, 2, 8, 8, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    t = torch.rand(B, generator=g) * 0.8 + 0.2
    r = torch.where(torch.arange(B) % 2 == 0, t * torch.rand(B, generator=g), t)  # half the rows need the JVP
    result = {"world": world, "distributed_type": str(acc.state.distributed_type)}
    for mode in ("detached", "fused"):
        result[mode] = check(acc, MeanFlow(ratio_r_neq_t=0.5, jvp_mode=mode), through, x, noise, y, t, r)
    if acc.is_main_process:
        with open(out_path, "w") as f:
            json.dump(result, f)


def check(acc, mf, through, x, noise, y, t, r):
    rank = acc.process_index

    torch.manual_seed(1)
    ref = tiny_model()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    model = tiny_model()
    model.load_state_dict(ref.state_dict())
    model = acc.prepare(model)

    sl = slice(rank * 4, rank * 4 + 4)
    net = model if through == "wrapped" else model.module  # .module: the trap, no all-reduce
    loss, _ = mf.loss(net, x[sl], y[sl], t=t[sl], r=r[sl], noise=noise[sl])
    acc.backward(loss)
    grad = torch.cat([p.grad.flatten() for p in acc.unwrap_model(model).parameters()])
    gathered = acc.gather(grad[None])  # (world, P)

    ref_loss, _ = mf.loss(ref, x, y, t=t, r=r, noise=noise)
    ref_loss.backward()
    ref_grad = torch.cat([p.grad.flatten() for p in ref.parameters()])
    return {
        "rank_diff": float((gathered[0] - gathered[1]).abs().max()),
        "ref_diff": float((gathered[0] - ref_grad).abs().max()),
        "ref_scale": float(ref_grad.abs().max()),
    }


if __name__ == "__main__":
    from mfvideo.train.dist import exit_now, leave_process_group

    main(*sys.argv[1:])
    if leave_process_group():
        exit_now(0)
