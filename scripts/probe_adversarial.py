"""Does an adversarial term cure the one-step blur? Fine-tunes a model's 1-NFE jump (every row kind of its
training: generation, extension, backward extension, in-betweening, interpolation, one given frame) towards a frozen
copy's own **two-step** jump on the same noise (its sharpest frames: 0.93 of real clips' edge energy against the
one-step 0.77), plus a non-saturating GAN term from a small 3-D convolutional critic that sees whole clips (given
frames real, new frames the model's) against real clips, class-projected, R1 on the real clips. The GAN term's
weight is set each step so that its gradient on the generated frames is ``--adv`` times the anchor's (the VQGAN
rule). ``--adv 0`` is the control: the same steps, the anchor alone.

Scored every ``--eval-every`` steps: generation (class accuracy, frame identity, speckle, sharpness vs real clips,
glyph consistency) and the 1-NFE extension jump (glyph match, sharpness, class kept, trajectory error).
Not a training recipe yet: a probe that decides whether one is worth building.

    python scripts/probe_adversarial.py [--checkpoint DIR] [--steps 1000] [--adv 0.5] [--out F] [--save DIR]
"""

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfvideo.eval.digits import DigitSuite, real_clips
from mfvideo.method.masks import sample_context_masks
from mfvideo.method.samplers import meanflow_sample
from mfvideo.pipeline import MFVideoPipeline

from probe_regression import score


class ClipCritic(nn.Module):
    """Patch logits over (frame, row, column) of a clip, with a class projection: (B, C, T, H, W), (B,) -> (B, n)."""

    def __init__(self, channels: int, classes: int, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv3d(channels, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(w, 2 * w, (3, 4, 4), stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2),  # H, W / 2
            nn.Conv3d(2 * w, 4 * w, (4, 4, 4), stride=2, padding=1), nn.LeakyReLU(0.2),  # T, H, W / 2
            nn.Conv3d(4 * w, 4 * w, 3, padding=1), nn.LeakyReLU(0.2))
        self.out = nn.Conv3d(4 * w, 1, 1)
        self.embed = nn.Embedding(classes, 4 * w)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x)  # (B, 4w, T', H', W')
        logits = self.out(h)[:, 0] + torch.einsum("bcthw,bc->bthw", h, self.embed(y)) / h.shape[1] ** 0.5
        return logits.flatten(1)  # (B, T' H' W')


def one_step(net, x, noise, mask, y):
    """The 1-NFE jump with grad: x_hat = z - net(z, t = 1, r = 0) on new frames, the given frames clean at 0."""
    m = mask[:, None, :, None, None]
    t = 1.0 - mask.to(x.dtype)  # (B, T)
    z = torch.where(m, x, noise)
    return torch.where(m, x, z - t[:, None, :, None, None] * net(z, t, torch.zeros_like(t), y=y))


@torch.no_grad()
def evaluate(pipe, suite, real, test, test_labels, n: int) -> dict:
    net = pipe.transformer
    net.eval()
    labels = np.arange(n) % 10
    clips = np.asarray(pipe.generate(class_labels=labels.tolist(), seed=0, output_type="np").frames)
    gen = suite.clip_metrics(clips, labels, real)
    out = {k: round(float(v), 4) for k, v in gen.items()}
    out["extension"] = score(pipe, test, test_labels, suite)
    net.train()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--d-lr", type=float, default=2e-4)
    p.add_argument("--adv", type=float, default=0.5, help="GAN gradient / anchor gradient on the frames (0: off)")
    p.add_argument("--anchor", choices=["teacher2", "teacher1", "none"], default="teacher2",
                   help="what the jump is regressed to: the frozen copy's 2-step or 1-step jump, or nothing")
    p.add_argument("--r1", type=float, default=0.1)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--train-clips", type=int, default=20000)
    p.add_argument("--n", type=int, default=200, help="held-out clips scored")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default="results/s26_adversarial_probe.json")
    p.add_argument("--save", default=None)
    a = p.parse_args()
    torch.manual_seed(0)
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    cfg, net, codec = pipe.cfg, pipe.transformer, pipe.codec
    d = cfg.data
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    for name, q in net.named_parameters():  # the reader was fitted on the frozen network: keep it
        q.requires_grad_(not name.startswith("class_reader"))
    kw = dict(num_frames=d.num_frames, resolution=d.resolution, digit_size=d.digit_size, speed=d.speed)
    train_px, train_labels = real_clips(a.train_clips, "train", **kw, seed=d.seed)
    train = codec.encode_frames(train_px, d.channels)  # (N, C, T, h, w)
    train_labels = torch.as_tensor(train_labels, dtype=torch.long)
    real, _ = real_clips(a.n, "test", **kw, seed=d.seed + 5)
    test, test_labels = real_clips(a.n, "test", **kw, seed=d.seed + 4)
    suite = DigitSuite.load()
    critic = ClipCritic(d.channels, cfg.model.num_classes, a.width)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=a.lr, betas=(0.9, 0.95),
                            weight_decay=0.0)
    opt_d = torch.optim.AdamW(critic.parameters(), lr=a.d_lr, betas=(0.0, 0.99), weight_decay=0.0)
    probs = dict(cfg.train.context_masks)
    log = {"config": vars(a), "evals": {0: evaluate(pipe, suite, real, test, test_labels, a.n)}}
    print(0, log["evals"][0], flush=True)
    g, start, hist = torch.Generator().manual_seed(1), time.time(), []
    net.train()
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, train.shape[0], (a.batch_size,), generator=g)
        x, c = train[idx], train_labels[idx]
        noise = torch.randn(x.shape, generator=g)
        mask = sample_context_masks(x.shape[0], x.shape[2], probs, generator=g)  # (B, T)
        drop = mask.any(1) & (torch.rand(x.shape[0], generator=g) < cfg.method.context_class_dropout)
        y = torch.where(drop, -1, c)  # generation rows labelled, half the context rows unlabelled
        fake = one_step(net, x, noise, mask, y)  # (B, C, T, h, w)
        new = (~mask)[:, None, :, None, None].to(x.dtype)
        if a.anchor == "none":
            anchor = fake.new_zeros(())
        else:
            with torch.no_grad():
                target = meanflow_sample(teacher, noise, y=y, steps=2 if a.anchor == "teacher2" else 1,
                                         context=x, context_mask=mask)
            anchor = ((fake - target) * new).pow(2).sum() / new.sum().clamp_min(1) / x.shape[1]
        stats = {"anchor": float(anchor.detach())}
        if a.adv > 0:
            # critic step: fake (detached) against real, R1 on real
            real_x = x.detach().requires_grad_(a.r1 > 0)
            d_real, d_fake = critic(real_x, c), critic(fake.detach(), c)
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            if a.r1 > 0:
                grad, = torch.autograd.grad(d_real.mean(1).sum(), real_x, create_graph=True)  # per clip
                loss_d = loss_d + a.r1 / 2 * grad.pow(2).sum(dim=(1, 2, 3, 4)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            adv = F.softplus(-critic(fake, c)).mean()  # non-saturating
            if a.anchor == "none":
                loss, stats["weight"] = adv, 1.0
            else:
                g_anchor, = torch.autograd.grad(anchor, fake, retain_graph=True)
                g_adv, = torch.autograd.grad(adv, fake, retain_graph=True)
                weight = (a.adv * g_anchor.norm() / g_adv.norm().clamp_min(1e-8)).clamp(max=1e4).detach()
                loss, stats["weight"] = anchor + weight * adv, float(weight)
            stats.update(d_real=float(d_real.mean()), d_fake=float(d_fake.mean()), adv=float(adv))
        else:
            loss = anchor
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for q in net.parameters() if q.requires_grad], 1.0)
        opt.step()
        hist.append(stats)
        if step % 50 == 0:
            mean = {k: round(float(np.mean([h[k] for h in hist[-50:]])), 4) for k in hist[-1]}
            print(step, f"{time.time() - start:.0f}s", mean, flush=True)
        if step % a.eval_every == 0 or step == a.steps:
            log["evals"][step] = evaluate(pipe, suite, real, test, test_labels, a.n)
            print(step, log["evals"][step], flush=True)
            with open(a.out, "w") as f:
                json.dump(log, f, indent=1)
    if a.save:
        net.eval()
        pipe.save_pretrained(a.save)


if __name__ == "__main__":
    main()
