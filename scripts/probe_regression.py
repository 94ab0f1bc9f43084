"""Can this network copy a moving glyph at all, given the cleanest signal there is? Fine-tunes a model on one task
only -- 4 given frames, the next 4 frames from pure noise in one call (t = 1, r = 0), null label -- by plain
squared error against the true frames (x-prediction: x_hat = z - t u), the regression E[x_new | context] that a
1-NFE extension of a deterministic continuation should equal. No MeanFlow target, no JVP, no other row kinds.

If glyph match climbs towards a true continuation's 1.0, the network can copy and the MeanFlow objective is what
does not teach it; if it levels off near the redraw (~0.86-0.90), the limit is the network's. Scored every
``--eval-every`` steps on held-out clips with the probe_copy.py jump (glyph match and sharpness by distance, class
kept, trajectory error). Not a training recipe: it trains nothing but this one jump.

    python scripts/probe_regression.py [--checkpoint DIR] [--steps 1000] [--lr 3e-4] [--n 200]
                                       [--out results/s23_regression_probe.json] [--save DIR]
"""

import argparse
import json
import time

import numpy as np
import torch
import yaml

from mfvideo.builders import build_model
from mfvideo.config import from_dict, to_dict
from mfvideo.eval.digits import DigitSuite, centroids, glyph_match, real_clips, sharpness
from mfvideo.method.meanflow import catching_copies
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.train.loop import param_groups
from mfvideo.weights import load_into

GIVEN, NEW = 4, 4


def one_call(net, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The 1-NFE extension jump with the model's own reading inside the call: given frames clean at t = 0, new
    frames pure noise at t = 1. x, noise (B, C, 8, h, w) -> x_hat (B, C, 8, h, w)."""
    mask = torch.zeros(x.shape[0], x.shape[2], dtype=torch.bool)
    mask[:, :GIVEN] = True
    t = torch.where(mask, 0.0, 1.0)  # (B, T)
    z = torch.where(mask[:, None, :, None, None], x, noise)
    return z - t[:, None, :, None, None] * net(z, t, torch.zeros_like(t), y=None)


@torch.no_grad()
def score(pipe, clips, labels, suite) -> dict:
    net, codec = pipe.transformer, pipe.codec
    was = net.training
    net.eval()
    x = codec.encode_frames(clips, pipe.cfg.data.channels)  # (n, C, 8, h, w)
    noise = pipe._noise(x.shape[0], x.shape[2], torch.Generator().manual_seed(0))
    seen = {}  # a copy path's inputs (model.copy_radius): its copy and gate are scored too
    hook = net.copier.register_forward_pre_hook(lambda m, args: seen.update(args=args)) if net.copier else None
    new = np.asarray(codec.decode_frames(one_call(net, x, noise)[:, :, GIVEN:]))  # (n, 4, H, W, 3)
    g = glyph_match(clips[:, GIVEN - 1], new)  # (n, 4)
    sharp = sharpness(clips[:, GIVEN - 1], new)  # (n, 4): blur, which glyph match does not see
    out = {"glyph_match": float(g.mean()), "glyph_by_distance": np.round(g.mean(0), 3).tolist(),
           "sharpness": float(sharp.mean()), "sharpness_by_distance": np.round(sharp.mean(0), 3).tolist(),
           "class_kept": float((suite.clip_class(new) == labels).mean()),
           "trajectory_error": float(np.linalg.norm(centroids(new) - centroids(clips[:, GIVEN:]), axis=-1).mean())}
    if hook is not None:
        hook.remove()
        tokens, _, z, clean = seen["args"]
        copy, gate = net.copier.copy_and_gate(tokens, z, clean)  # (n, C, 8, h, w), (n, 1, 8, h, w)
        copied = np.asarray(codec.decode_frames(copy[:, :, GIVEN:]))  # (n, 4, H, W, 3)
        out["copy_glyph_by_distance"] = np.round(glyph_match(clips[:, GIVEN - 1], copied).mean(0), 3).tolist()
        out["copy_sharpness_by_distance"] = np.round(sharpness(clips[:, GIVEN - 1], copied).mean(0), 3).tolist()
        out["gate_by_distance"] = [round(float(gate[:, :, f].mean()), 3) for f in range(GIVEN, GIVEN + NEW)]
    net.train(was)
    return out


def evaluate(pipe, test, test_labels, axis, axis_labels, suite) -> dict:
    """The held-out clips as drawn, and the same clips moving one pixel per frame along an axis (the future then
    fully determined by the given frames, so the regression's target is one clip, not a mean of several)."""
    out = score(pipe, test, test_labels, suite)
    out["axis"] = score(pipe, axis, axis_labels, suite)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--scratch", nargs="*", default=None, metavar="KEY=VALUE",
                   help="a fresh network instead (the checkpoint's config with these model.* overrides, e.g. "
                        "model.patch_size=2), to ask which architecture can copy")
    p.add_argument("--add", nargs="*", default=None, metavar="KEY=VALUE",
                   help="the checkpoint's network with these model.* overrides that add zero-started parts (e.g. "
                        "model.refiner_channels=32): it starts as the checkpoint")
    p.add_argument("--lr-scale", nargs="*", default=[], metavar="PREFIX=FACTOR",
                   help="lr factors by parameter-name prefix, as train.lr_scale (e.g. refiner=10)")
    p.add_argument("--open-gate", type=float, default=None,
                   help="start an added copy path (model.copy_radius) with its gate at this value instead of closed: "
                        "its kernels' gradient is proportional to the gate")
    p.add_argument("--copy-loss", type=float, default=0.0,
                   help="also regress an added copy path's copy itself (weight), so its kernels learn where to look "
                        "whatever the gate")
    p.add_argument("--train-only", nargs="*", default=None, metavar="PREFIX",
                   help="train only the parameters whose names start with these prefixes (e.g. copier): the rest of "
                        "the network frozen, so the model's field is unchanged wherever the trained part is off")
    p.add_argument("--snap", action="store_true",
                   help="score a copy path snapped: each pixel's taps to one whole move, its gate to 0 or 1")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--train-clips", type=int, default=20000)
    p.add_argument("--n", type=int, default=200, help="held-out clips scored")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default="results/s23_regression_probe.json")
    p.add_argument("--save", default=None, help="write the fine-tuned pipeline here (save_pretrained), for sheets")
    a = p.parse_args()
    torch.manual_seed(0)
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    if a.scratch is not None or a.add is not None:
        d = to_dict(pipe.cfg)
        if a.scratch is not None:
            d["model"].update(init_from=None, context_reader=False)
        for item in a.scratch or a.add:  # model.key=value
            key, value = item.split("=", 1)
            d["model"][key.removeprefix("model.")] = yaml.safe_load(value)
        cfg = from_dict(d)
        net = build_model(cfg.model)
        if a.add is not None:
            load_into(net, pipe.transformer.state_dict(), "the checkpoint", allow_missing_temporal=True)
        if a.open_gate is not None:
            with torch.no_grad():
                net.copier.head.bias.view(-1, net.copier.maps)[:, -1] = a.open_gate
        pipe = MFVideoPipeline(net, pipe.vae, cfg, pipe.labels)
        print(f"network: {sum(q.numel() for q in pipe.transformer.parameters()):,} parameters", flush=True)
    d, net, codec = pipe.cfg.data, pipe.transformer, pipe.codec
    if a.snap:
        net.copier.snap = True
    kw = dict(num_frames=GIVEN + NEW, resolution=d.resolution, digit_size=d.digit_size, speed=d.speed)
    test, test_labels = real_clips(a.n, "test", **kw, seed=d.seed + 4)
    axis, axis_labels = real_clips(a.n, "test", **kw, seed=d.seed + 4, angle=lambda i: (i % 4) * np.pi / 2)
    train = codec.encode_frames(real_clips(a.train_clips, "train", **kw, seed=d.seed)[0], d.channels)  # (N, C, 8, h, w)
    suite = DigitSuite.load()
    net.train()
    if a.train_only is not None:
        for name, q in net.named_parameters():
            q.requires_grad_(any(name.startswith(k) for k in a.train_only))
        print(f"training {sum(q.numel() for q in net.parameters() if q.requires_grad):,} parameters", flush=True)
    scales = {k: float(v) for k, v in (item.split("=", 1) for item in a.lr_scale)}
    opt = torch.optim.AdamW(param_groups(net, a.lr, scales), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 50, 1.0) * (1 - s / max(a.steps, 1)))
    log = {"config": vars(a), "evals": {}}
    log["evals"][0] = evaluate(pipe, test, test_labels, axis, axis_labels, suite)
    print(0, log["evals"][0], flush=True)
    g, start, losses = torch.Generator().manual_seed(1), time.time(), []
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, train.shape[0], (a.batch_size,), generator=g)
        x = train[idx]
        noise = torch.randn(x.shape, generator=g)
        with catching_copies(net, a.copy_loss > 0) as caught:  # the copy path's copy, for --copy-loss
            err = (one_call(net, x, noise) - x)[:, :, GIVEN:]  # (B, C, 4, h, w): the new frames only
        loss = err.pow(2).sum(dim=(1, 2, 3, 4)).mean()
        if a.copy_loss:  # (one forward with grad: one copy)
            (copy, _), = caught
            loss = loss + a.copy_loss * (copy - x)[:, :, GIVEN:].pow(2).sum(dim=(1, 2, 3, 4)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for q in net.parameters() if q.requires_grad], 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % a.eval_every == 0 or step == a.steps:
            log["evals"][step] = evaluate(pipe, test, test_labels, axis, axis_labels, suite)
            log["evals"][step]["train_loss"] = float(np.mean(losses[-a.eval_every:]))
            print(step, f"{time.time() - start:.0f}s", log["evals"][step], flush=True)
    with open(a.out, "w") as f:
        json.dump(log, f, indent=1)
    if a.save:
        net.eval()
        pipe.save_pretrained(a.save)


if __name__ == "__main__":
    main()
