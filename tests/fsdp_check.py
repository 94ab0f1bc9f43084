"""Run under torchrun (2 processes, gloo): FSDP2 training of a tiny STDiT with the MeanFlow loss against one
process training on the combined batch (same weights, data, noise, (t, r)), in both JVP modes; then the checkpoint
round trip: the gathered state continued unsharded equals the sharded run continued.

``through``: "sharded" (the JVP through the sharded module, as the trainer does) or "stale" (the trap: the JVP
through a copy of the weights gathered once, as a naive 'unshard for the JVP' implementation would).
"""

import copy
import json
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, "tests")
from conftest import tiny_model  # noqa: E402
from mfvideo.method import MeanFlow  # noqa: E402
from mfvideo.train.sharding import (  # noqa: E402
    load_model_state, load_optimizer_state, model_state, optimizer_state, shard,
)

STEPS, MORE, PER_RANK = 3, 2, 4


def batch(step: int, world: int):
    """The global batch of a step: the same on every rank; rank k takes rows [k b, (k + 1) b)."""
    g = torch.Generator().manual_seed(1000 + step)
    B = PER_RANK * world
    x, noise = torch.randn(B, 3, 2, 8, 8, generator=g), torch.randn(B, 3, 2, 8, 8, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    t = torch.rand(B, generator=g) * 0.8 + 0.2
    r = torch.where(torch.arange(B) % 2 == 0, t * torch.rand(B, generator=g), t)  # half the rows need the JVP
    return x, noise, y, t, r


def train_steps(net, opt, mf, steps, rows, jvp_net=None):
    losses = []
    for step in steps:
        x, noise, y, t, r = (a[rows] for a in batch(step, dist.get_world_size()))
        loss, _ = mf.loss(net, x, y, t=t, r=r, noise=noise, jvp_net=jvp_net)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return losses


def check(mode: str, through: str) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    mf = MeanFlow(ratio_r_neq_t=0.5, jvp_mode=mode)
    torch.manual_seed(1)
    ref = tiny_model()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    sharded = copy.deepcopy(ref)
    stale = copy.deepcopy(ref) if through == "stale" else None
    shard(sharded)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    opt_sh = torch.optim.AdamW(sharded.parameters(), lr=1e-3)
    every = slice(None)
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    ref_losses = train_steps(ref, opt_ref, mf, range(STEPS), every)
    sh_losses = train_steps(sharded, opt_sh, mf, range(STEPS), mine, jvp_net=stale)
    for loss in sh_losses:  # the combined batch's loss is the mean of the ranks' losses
        dist.all_reduce(loss)
        loss /= world
    got = model_state(sharded)
    out = {
        "param_diff": max(float((got[k] - v).abs().max()) for k, v in ref.state_dict().items()),
        "param_scale": max(float(v.abs().max()) for v in ref.state_dict().values()),
        "loss_diff": max(abs(float(a - b)) for a, b in zip(sh_losses, ref_losses)),
    }
    # the checkpoint round trip: full state from the shards -> a plain model + optimizer -> MORE steps, against the
    # sharded run continuing
    state, opt_state = model_state(sharded), optimizer_state(sharded, opt_sh)
    plain = tiny_model()
    load_model_state(plain, state)
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    load_optimizer_state(plain, opt_plain, opt_state)
    train_steps(plain, opt_plain, mf, range(STEPS, STEPS + MORE), every)
    train_steps(sharded, opt_sh, mf, range(STEPS, STEPS + MORE), mine, jvp_net=stale)
    cont = model_state(sharded)
    out["resume_diff"] = max(float((cont[k] - v).abs().max()) for k, v in plain.state_dict().items())
    return out


def main(out_path, through="sharded"):
    dist.init_process_group("gloo")
    result = {"world": dist.get_world_size(), **{m: check(m, through) for m in ("detached", "fused")}}
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    from mfvideo.train.dist import exit_now, leave_process_group

    leave_process_group()  # both ranks done, the group destroyed, then no interpreter teardown (exit_now's note)
    exit_now(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
