"""Probe: does the one-step generator keep a given hand if its noise is fitted to the given frames?

    python scripts/probe_invert.py [--checkpoint DIR] [--n 48] [--iters 300] [--lr 0.1] [--out results/s44_invert.json]

Extension by inversion (GAN inversion, on a one-step map): the noise e of a whole window, all of it at t = 1, is
fitted by Adam so that the clip x = e - u(e, 0, 1) starts with the given frames (mean squared error over them, the
read class as the label); the window's later frames are then what the generator draws after frames like the given
ones. Against the plain one-call extension (context frames clean at t = 0) and ``motion_copy=4``, on held-out clips
(4 given, 4 new), by glyph match to the last given frame, sharpness and digit accuracy of the new frames. Also: the
fitted noise's new frames handed to the plain extension call as its noise. Costs ``--iters`` forward and backward
passes per clip; a probe, not a sampler.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, glyph_match, real_clips, sharpness
from mfvideo.pipeline import MFVideoPipeline


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--out", default="results/s44_invert.json")
    a = p.parse_args()
    torch.manual_seed(0)
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    net, codec, d = pipe.transformer, pipe.codec, pipe.cfg.data
    net.requires_grad_(False)
    T, k, n = pipe.window, pipe.window // 2, a.n
    suite = DigitSuite.load()
    clips, labels = real_clips(n, "test", T, d.resolution, d.digit_size, d.speed, seed=d.seed + 4)

    def scores(new: np.ndarray) -> dict:  # new frames (n, m, H, W, 3) against the last given frame
        return {"glyph_match": float(glyph_match(clips[:, k - 1], new).mean()),
                "sharpness": float(sharpness(clips[:, k - 1], new).mean()),
                "accuracy": float((suite.predict(new)[0] == labels[:, None]).mean())}

    kw = dict(num_new_frames=T - k, context_frames=k, seed=0, output_type="uint8", include_input=False)
    plain = pipe.extend(clips[:, :k], motion_copy=0, **kw)
    rows = {"extension, one call (motion_copy=0)": scores(plain.frames[:, k:]),
            "extension, motion_copy=4": scores(pipe.extend(clips[:, :k], motion_copy=4, **kw).frames[:, k:])}
    y = torch.as_tensor(plain.class_labels)  # the class the reader read off the given frames
    ctx = codec.encode_frames(clips[:, :k], d.channels)  # (n, C, k, h, w)
    temp = pipe.resolve_temperature(None, ("meanflow", 1))
    e = (pipe._noise(n, T, torch.Generator().manual_seed(0)) * temp).requires_grad_(True)  # (n, C, T, h, w)
    opt = torch.optim.Adam([e], lr=a.lr)
    ones, zeros = torch.ones(n), torch.zeros(n)
    t0, trace = time.perf_counter(), []
    for i in range(a.iters):
        x = e - net(e, ones, zeros, y=y)  # the one-step clip from e
        loss = (x[:, :, :k] - ctx).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 50 == 0 or i == a.iters - 1:
            trace.append({"iter": i, "fit_mse": float(loss.detach()), "noise_std": float(e.detach().std())})
            print(trace[-1], f"{time.perf_counter() - t0:.0f} s", flush=True)
    with torch.no_grad():
        e = e.detach()
        gen = codec.decode_frames(e - net(e, ones, zeros, y=y))  # (n, T, H, W, 3)
        rows["inverted: the fitted window's given frames (the fit)"] = scores(gen[:, :k])
        rows["inverted: the fitted window's new frames"] = scores(gen[:, k:])
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, :k] = True
        context = torch.cat([ctx, torch.zeros_like(ctx)], dim=2)
        reading, _, y_net = pipe._read_labelled(e, None, context, mask)
        window = pipe._sample(e, y_net, ("meanflow", 1), context, mask, 0.0, reading)
        rows["extension, one call, from the fitted noise"] = scores(codec.decode_frames(window)[:, k:])
    for name, r in rows.items():
        print(f"{name:55s} glyph {r['glyph_match']:.3f}  sharp {r['sharpness']:.3f}  acc {r['accuracy']:.3f}")
    out = {"n": n, "iters": a.iters, "lr": a.lr, "seconds": time.perf_counter() - t0, "rows": rows, "trace": trace}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
