"""The MeanFlow tangent du/dt of a B/2 model in bf16 autocast against fp32, on the GPU.

    python scripts/gpu/tangent_error.py [--out tangent_error.json]

py-meanflow turns autocast off around the JVP; mfvideo runs it under autocast. This measures what that costs:
relative error of u and du/dt (bf16 vs fp32, same weights and inputs), for the B/2 image and a B/2 video model.
"""

import argparse
import json
from pathlib import Path

import torch
from torch.func import jvp

from mfvideo.models import build_model

CASES = {
    "B/2 image (256 tokens)": (dict(in_channels=4, num_classes=1000, temporal=False), (4, 32, 32)),
    "B/2 video (16x32x32 latents, joint)": (dict(in_channels=16, num_classes=101, attention="joint"), (16, 16, 32, 32)),
    "B/2 video (16x32x32 latents, factorised)": (dict(in_channels=16, num_classes=101), (16, 16, 32, 32)),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="tangent_error.json")
    a = p.parse_args()
    torch.manual_seed(0)
    res = {}
    for name, (kw, shape) in CASES.items():
        net = build_model("STDiT-B/2", **kw).cuda().eval()
        for prm in net.parameters():  # a trained-like network: no zero gates
            prm.data.add_(torch.randn_like(prm) * 0.02)
        b = 2 if len(shape) == 4 else 8
        z = torch.randn(b, *shape, device="cuda")
        v = torch.randn_like(z)
        t = torch.rand(b, device="cuda") * 0.5 + 0.5
        r = t * torch.rand(b, device="cuda")
        y = torch.randint(0, kw["num_classes"], (b,), device="cuda")
        f = lambda z_, t_, r_: net(z_, t_, r_, y=y)  # noqa: E731
        with torch.no_grad():
            u32, d32 = jvp(f, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                u16, d16 = jvp(f, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
        rel = lambda a_, b_: float((a_.float() - b_).norm() / b_.norm())  # noqa: E731
        res[name] = {"u_rel_err": rel(u16, u32), "dudt_rel_err": rel(d16, d32)}
        print(name, res[name], flush=True)
        torch.cuda.empty_cache()
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
