"""Adversarial post-training of the one-step jump (``mfvideo-post-train``): sharp one-step frames.

A MeanFlow model's one-step jump x = z - u(z, 0, 1) is fitted by squared error, and where the network cannot hit
the flow map exactly it lands on a mean of what it could have drawn: blur. Its own two-step jump is sharper (on the
digits model 0.93 of real clips' edge energy per unit ink, the one-step jump 0.77), and a critic that tells real
clips from the model's tells blur, grain and glyphs that change between frames apart. Post-training fine-tunes the
one-step jump on every row kind the model was trained on (generation, extension, backward extension, in-betweening,
interpolation, one given frame: ``train.context_masks``) towards

    anchor = |x_1step(e) - x_2step_frozen(e)|^2 over the new frames    (the frozen model's own two-step jump, same e)
    adv    = softplus(-D(x_1step(e), y))                                (non-saturating GAN; given frames are real)
    loss   = anchor + w adv,  w = ratio |d anchor / dx| / |d adv / dx|  (the VQGAN rule, on the generated clip)

plus, with ``field_weight`` > 0, the rest of the field held where it was:

    field  = |u(z_t, t, r) - u_frozen(z_t, t, r)|^2 over the new frames  (the two-step sampler's (1, 1/2), (1/2, 0)
                                                                          on half the rows, any other t > r elsewhere)

and, with ``dmd_ratio`` > 0, distribution matching (DMD, Yin et al. 2024) of the one-step clips against the frozen
model's field:

    fake field   f: a copy of the model fitted online, by denoising, to the one-step clips (x_hat_f(x_t) ~ E[x | x_t])
    x_t          = (1 - t) x_1step + t e',  t ~ U(0.02, 0.98) on the new frames
    dmd          gradient on x_1step:  (x_hat_f(x_t) - x_hat_frozen(x_t)) / mean|x_1step - x_hat_frozen(x_t)|

(x_hat(x_t) = x_t - t u(x_t, t, t)): the difference of the two fields' scores, the gradient of the reverse KL from
the one-step clips' distribution to the frozen field's, which seeks the field's modes where the anchor's squared
error averages them (a fragment of two glyphs is a mean; a reverse KL gives it no mass). Weighted like the GAN term,
``dmd_ratio`` times the anchor's gradient norm, on the rows whose class the generator knows (the null-label branch's
field is the weak one).

with ``D`` a small 3-D convolutional critic (``mfvideo.models.critic``) trained on the same batches of real clips
(R1 penalty on them). ``ratio = 0`` trains the anchor alone (the control; the critic is not built). The anchor keeps
the jump where the model put it -- the class, the motion, what a given frame says -- and the critic takes away the
blur; the frozen copy's jump never moves. Without the field term the multi-step samplers drift (on the digits
model the two-step frames went grainy: speckle 0.024 -> 0.079, FD 79 -> 98), since only the one-step jump is
trained. The context reader (``model.context_reader``) was fitted on the frozen
network and is left as it is. The critic is training state only: the output is the same pipeline, sampled as before.

``ema_decay`` > 0 writes an exponential moving average of the weights over the run (updated after every step from
the weights the run started at) instead of the last step's; ``callback`` sees the running weights.

Given frames are clean at t = r = 0 (a model trained with ``method.context_noise`` is post-trained without it). A
model with the guidance scale as a condition (``method.cfg_scale_range``) draws a scale per row as its training did;
every call of a row, the student's and the frozen model's, runs at it.
Minutes on a CPU for the digits model (1.25 s per step at batch 32 with the field term; with DMD 3.5 s, an hour for
the bundled recipe's 1,000 steps); one process. A run stopped by a signal returns, beside the weights so far, the
state it goes on from (``stats["state"]``: the student's raw weights, the critic, the fake field, every optimiser,
the EMA, the generator, the history); ``post_train(..., resume=state)`` with the same source model, data and
settings continues it to the same weights, bit for bit, as a run never stopped (``mfvideo-post-train --resume``).
"""

from __future__ import annotations

import copy
import logging
import signal
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..method.masks import sample_context_masks
from ..method.meanflow import with_guidance
from ..method.samplers import meanflow_sample
from ..models.critic import ClipCritic
from .stop import StopSignals

log = logging.getLogger(__name__)


@dataclass
class PostTrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-5  # the model's AdamW lr (constant)
    critic_lr: float = 2e-4
    ratio: float = 0.5  # the GAN gradient's norm on the generated clip over the anchor's; 0: the anchor alone
    r1: float = 0.1  # R1 penalty on real clips, gamma / 2 |dD/dx|^2 per clip
    critic_width: int = 32
    anchor_steps: int = 2  # the frozen model's jump the one-step jump is drawn to (network calls)
    field_weight: float = 1.0  # hold u(z, t, r) at every other (t, r) where it was (0: off)
    clips: int = 20000  # training clips held in memory (latents), at most: a smaller split whole
    seed: int = 0
    ema_decay: float = 0.0  # the output: an exponential moving average of the weights over the run (0: the last weights)
    dmd_ratio: float = 0.0  # the DMD term's gradient norm on the generated clip over the anchor's (0: off)
    dmd_lr: float = 2e-4  # the fake field's AdamW lr

    def __post_init__(self):
        for name in ("steps", "batch_size", "critic_width", "anchor_steps", "clips"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"post-training {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "critic_lr", "dmd_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"post-training {name} must be > 0, got {getattr(self, name)}")
        for name in ("ratio", "r1", "field_weight", "dmd_ratio"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"post-training {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"post-training ema_decay must lie in [0, 1), got {self.ema_decay}")


def one_step_jump(model, x: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, y=None) -> torch.Tensor:
    """The 1-NFE sampler's jump, differentiable: new frames z = e at t = 1, given frames (``mask`` (B, T)) clean at
    t = r = 0, x_hat = z - t u(z, t, 0); the given frames come back as given. x, noise (B, C, T, H, W)."""
    m = mask[:, None, :, None, None]  # (B, 1, T, 1, 1)
    t = 1.0 - mask.to(x.dtype)  # (B, T)
    z = torch.where(m, x, noise)
    return torch.where(m, x, z - t[:, None, :, None, None] * model(z, t, torch.zeros_like(t), y=y))


def new_frames_mse(diff: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of diff^2 over the elements ``w`` (B, 1, T, 1, 1; 0 / 1) selects: the new frames (of chosen rows)."""
    return (diff * w).pow(2).sum() / (w.sum() * diff[0, :, 0].numel()).clamp_min(1)


FIELD_TIMES = ((1.0, 0.5), (0.5, 0.0))  # the two-step sampler's (t, r)


def field_times(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r) per row (B,) for the field term: half the rows at the two-step sampler's, the others t ~ U(0, 1),
    r = t U(0, 1) (a quarter with r = t, the Euler sampler's field); never the one-step jump (1, 0) itself."""
    fixed = torch.tensor(FIELD_TIMES)[torch.randint(0, len(FIELD_TIMES), (batch,), generator=generator)]
    t = torch.rand(batch, generator=generator).clamp(1e-3, 0.999)
    r = torch.where(torch.rand(batch, generator=generator) < 0.25, t, t * torch.rand(batch, generator=generator))
    pick = torch.rand(batch, generator=generator) < 0.5
    return torch.where(pick, fixed[:, 0], t), torch.where(pick, fixed[:, 1], r)


def field_loss(model, frozen, x: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, y, t: torch.Tensor,
               r: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of u(z_t, t, r) to the frozen model's over the new frames; z_t = (1 - t) x + t e on
    the new frames, the given frames clean at t = r = 0. x, noise (B, C, T, H, W); mask (B, T); t, r (B,)."""
    new = (~mask).to(x.dtype)  # (B, T)
    z, tt = noised(x, noise, mask, t)
    rr = r[:, None] * new  # (B, T): per-frame times
    with torch.no_grad():
        target = frozen(z, tt, rr, y=y)
    return new_frames_mse(model(z, tt, rr, y=y) - target, new[:, None, :, None, None])


DMD_TIMES = (0.02, 0.98)  # the range of t at which the two fields are compared


def denoised(model, z: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
    """x_hat = z - t u(z, t, t): the field's estimate of the clean clip at per-frame times t (B, T); z (B, C, T, H, W)."""
    return z - t[:, None, :, None, None] * model(z, t, t, y=y)


def noised(x: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, t: torch.Tensor):
    """z_t = (1 - t) x + t e on the new frames, the given frames (``mask`` (B, T)) clean at t = 0; returns z and the
    per-frame times (B, T). x, noise (B, C, T, H, W); t (B,)."""
    tt = t[:, None] * (~mask).to(x.dtype)  # (B, T)
    tb = tt[:, None, :, None, None]
    return (1 - tb) * x + tb * noise, tt


def fake_field_loss(fake, x: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, y, t: torch.Tensor) -> torch.Tensor:
    """The fake field's denoising loss on (detached) generated clips x: mean |x_hat_f(z_t) - x|^2 over the new frames."""
    z, tt = noised(x, noise, mask, t)
    return new_frames_mse(denoised(fake, z, tt, y) - x, (~mask).to(x.dtype)[:, None, :, None, None])


def dmd_loss(frozen, fake, x: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, y, t: torch.Tensor,
             rows: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient on the generated clip x (B, C, T, H, W) is DMD's, (x_hat_f - x_hat_frozen) / row norm
    over the new frames of the chosen ``rows`` (B,) bool, divided by their element count (zero elsewhere)."""
    with torch.no_grad():
        z, tt = noised(x, noise, mask, t)
        real, mine = denoised(frozen, z, tt, y), denoised(fake, z, tt, y)
        w = ((~mask) & rows[:, None]).to(x.dtype)[:, None, :, None, None]  # (B, 1, T, 1, 1)
        count = (w.sum((1, 2, 3, 4)) * x[0, :, 0].numel()).clamp_min(1)  # (B,)
        norm = ((x - real).abs() * w).sum((1, 2, 3, 4)) / count  # (B,) DMD's per-row normaliser
        grad = (mine - real) * w / norm.clamp_min(1e-6)[:, None, None, None, None]
        target = x - grad
    return 0.5 * new_frames_mse(x - target, w)


def critic_labels(labels: torch.Tensor, dropped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The class the critic judges each row by: the one its generator could know, given as the label or shown by
    given frames (``mask`` (B, T)); -1 (no class) for a generation row whose label was dropped. Judging such a row
    as "a real c" would ask the generator for a class it was never told (a blend of classes). labels, dropped (B,)."""
    return torch.where(dropped & ~mask.any(1), -1, labels)


def critic_loss(critic, real: torch.Tensor, fake: torch.Tensor, y=None, r1: float = 0.0):
    """The non-saturating critic loss on real and (detached) generated clips, plus gamma / 2 |dD/dreal|^2 per clip
    (mean over patches); returns (loss, D(real) mean, D(fake) mean)."""
    real = real.detach().requires_grad_(r1 > 0)
    d_real, d_fake = critic(real, y), critic(fake.detach(), y)  # (B, patches)
    loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if r1 > 0:
        grad, = torch.autograd.grad(d_real.mean(1).sum(), real, create_graph=True)  # (B, C, T, H, W)
        loss = loss + r1 / 2 * grad.pow(2).flatten(1).sum(1).mean()
    return loss, d_real.detach().mean(), d_fake.detach().mean()


def balanced_weight(anchor: torch.Tensor, adv: torch.Tensor, fake: torch.Tensor, ratio: float,
                    max_weight: float = 1e4) -> torch.Tensor:
    """w such that |d(w adv)/d fake| = ratio |d anchor / d fake| (detached, at most ``max_weight``)."""
    g_anchor, = torch.autograd.grad(anchor, fake, retain_graph=True)
    g_adv, = torch.autograd.grad(adv, fake, retain_graph=True)
    return (ratio * g_anchor.norm() / g_adv.norm().clamp_min(1e-12)).clamp(max=max_weight).detach()


RESUMABLE = ("batch_size", "lr", "critic_lr", "ratio", "r1", "critic_width", "anchor_steps", "field_weight", "clips",
             "seed", "ema_decay", "dmd_ratio", "dmd_lr")  # the settings a resumed run must share (``steps`` may grow)


def check_resumable(state: dict, cfg: PostTrainConfig) -> None:
    """A stopped run's ``state`` goes on under ``cfg`` only with the same settings and steps left to run."""
    before = state["config"]
    changed = [f"{k} {before[k]} -> {getattr(cfg, k)}" for k in RESUMABLE if before[k] != getattr(cfg, k)]
    if changed:
        raise ValueError(f"the stopped post-training ran with other settings ({'; '.join(changed)}): resume it with "
                         "its own, or start a new run in another folder")
    if state["step"] >= cfg.steps:
        raise ValueError(f"the stopped post-training has run {state['step']} steps already; --steps {cfg.steps} "
                         "leaves none to run")


def post_train(pipe, cfg: PostTrainConfig, clips: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               log_every: int = 50, callback=None, resume: dict | None = None) -> dict:
    """Post-train ``pipe.transformer`` in place (left in eval mode). ``clips`` (N, C, T, H, W) latents and ``labels``
    (N,) default to the first ``cfg.clips`` of the model's training data (``cfg.data``). ``callback(step)`` is called
    every ``log_every`` steps (evaluation). ``resume``: a stopped run's ``stats["state"]``, ``pipe`` being its source
    model (the frozen anchor), not its output. Returns the run's statistics; stopped by a signal, with ``"state"``."""
    from .reader import load_clips

    mcfg = pipe.cfg
    model = pipe.transformer
    device = next(model.parameters()).device
    if clips is None:
        clips, labels = load_clips(mcfg.data, pipe.codec, "train", cfg.clips, allow_unlabelled=True)
    clips = clips.to(device)
    conditional = bool(mcfg.model.num_classes)
    labels = (labels if labels is not None else torch.full((clips.shape[0],), -1)).long().to(device)
    if conditional and bool((labels < 0).any()):
        raise ValueError("a class-conditional model's post-training needs labelled clips")
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    trained = [q for name, q in model.named_parameters() if not name.startswith("class_reader.")]
    for name, q in model.named_parameters():
        q.requires_grad_(not name.startswith("class_reader."))
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    ema = [q.detach().clone() for q in trained] if cfg.ema_decay > 0 else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        critic = ClipCritic(clips.shape[1], mcfg.model.num_classes, cfg.critic_width, clips.shape[2]).to(device)
    opt_d = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, betas=(0.0, 0.99), weight_decay=0.0)
    fake = opt_f = None
    if cfg.dmd_ratio > 0:  # the fake field: the frozen model's copy, fitted to the one-step clips as they move
        fake = copy.deepcopy(teacher)
        for name, q in fake.named_parameters():
            q.requires_grad_(not name.startswith("class_reader."))
        fitted = [q for q in fake.parameters() if q.requires_grad]
        opt_f = torch.optim.AdamW(fitted, lr=cfg.dmd_lr, betas=(0.9, 0.99), weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    masks, method = dict(mcfg.train.context_masks), mcfg.method
    drop_ctx = method.class_dropout if method.context_class_dropout is None else method.context_class_dropout
    history, start, stopped_by, done, before = [], time.time(), None, 0, 0.0
    parts = {"model": model, "opt": opt, "critic": critic, "opt_d": opt_d, "fake": fake, "opt_f": opt_f}
    if resume is not None:
        check_resumable(resume, cfg)
        for name, part in parts.items():
            if part is not None:
                part.load_state_dict(resume[name])
        if ema is not None:
            with torch.no_grad():
                for e, saved in zip(ema, resume["ema"]):
                    e.copy_(saved)
        g.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history, done, before = list(resume["history"]), int(resume["step"]), float(resume["seconds"])
        log.info("post-training goes on from step %d of %d", done, cfg.steps)
    model.train()
    # SIGTERM (a scheduler, `timeout`), SIGUSR1, a first Ctrl-C: the step under way finishes and the weights so far
    # are the result, their step count in the statistics, and the state a resumed run goes on from
    with StopSignals(keeps="the weights so far and the state to resume from") as signals:
        for step in range(done + 1, cfg.steps + 1):
            idx = torch.randint(0, clips.shape[0], (cfg.batch_size,), generator=g)
            x, c = clips[idx], labels[idx.to(device)]
            noise = pipe.method.noise(x.shape, generator=g).to(device, x.dtype)
            mask = sample_context_masks(x.shape[0], x.shape[2], masks, mcfg.train.max_context_frames,
                                        generator=g).to(device)  # (B, T)
            p_drop = torch.where(mask.any(1), drop_ctx, method.class_dropout)  # (B,): context rows at their own rate
            drop = torch.rand(x.shape[0], generator=g).to(device) < p_drop
            y = torch.where(drop, -1, c) if conditional else None  # the null label as the model was trained with it
            judge = critic_labels(c, drop, mask) if conditional else None
            w = method.sample_scales(x.shape[0], generator=g)  # (B,) guidance scales, or None (guidance folded in)
            student, frozen = (with_guidance(m, None if w is None else w.to(device)) for m in (model, teacher))
            gen = one_step_jump(student, x, noise, mask, y)  # (B, C, T, H, W)
            with torch.no_grad():
                target = meanflow_sample(frozen, noise, y=y, steps=cfg.anchor_steps, context=x, context_mask=mask)
            new = (~mask)[:, None, :, None, None].to(x.dtype)  # (B, 1, T, 1, 1)
            anchor = new_frames_mse(gen - target, new)
            stats = {"anchor": float(anchor.detach())}
            loss = anchor
            if cfg.ratio > 0:
                critic.requires_grad_(True)
                loss_d, d_real, d_fake = critic_loss(critic, x, gen, judge, cfg.r1)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                critic.requires_grad_(False)
                adv = F.softplus(-critic(gen, judge)).mean()
                weight = balanced_weight(anchor, adv, gen, cfg.ratio)
                loss = loss + weight * adv
                stats.update(adv=float(adv.detach()), weight=float(weight), d_real=float(d_real), d_fake=float(d_fake))
            if fake is not None:
                lo, hi = DMD_TIMES
                t_f, t_g = (lo + (hi - lo) * torch.rand(x.shape[0], generator=g).to(device, x.dtype) for _ in range(2))
                e_f, e_g = (pipe.method.noise(x.shape, generator=g).to(device, x.dtype) for _ in range(2))
                mine = with_guidance(fake, None if w is None else w.to(device))
                loss_f = fake_field_loss(mine, gen.detach(), e_f, mask, y, t_f)
                opt_f.zero_grad(set_to_none=True)
                loss_f.backward()
                opt_f.step()
                known = judge >= 0 if conditional else torch.ones(x.shape[0], dtype=torch.bool, device=device)
                dmd = dmd_loss(frozen, mine, gen, e_g, mask, y, t_g, known)
                weight_dmd = (balanced_weight(anchor, dmd, gen, cfg.dmd_ratio) if bool(known.any())
                              else dmd.new_zeros(()))
                loss = loss + weight_dmd * dmd
                stats.update(fake_field=float(loss_f.detach()), dmd=float(dmd.detach()), dmd_weight=float(weight_dmd))
            if cfg.field_weight > 0:
                t, r = (a.to(device, x.dtype) for a in field_times(x.shape[0], g))
                field = field_loss(student, frozen, x, noise, mask, y, t, r)
                loss = loss + cfg.field_weight * field
                stats["field"] = float(field.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            if ema is not None:
                with torch.no_grad():
                    for e, q in zip(ema, trained):
                        e.lerp_(q, 1.0 - cfg.ema_decay)
            history.append(stats)
            if step % log_every == 0 or step == cfg.steps:
                recent = history[-log_every:]
                mean = {k: sum(h[k] for h in recent) / len(recent) for k in recent[-1]}
                log.info("post-training step %d/%d (%.0f s): %s", step, cfg.steps, before + time.time() - start,
                         ", ".join(f"{k} {v:.4g}" for k, v in mean.items()))
                if callback is not None:
                    model.eval()
                    callback(step)
                    model.train()
            if signals.received:
                stopped_by = signal.Signals(signals.received).name
                break
    seconds = round(before + time.time() - start, 1)
    state = None
    if stopped_by is not None:  # what a resumed run needs, taken before the EMA replaces the raw weights
        state = {name: copy.deepcopy(part.state_dict()) for name, part in parts.items() if part is not None}
        state.update(config=asdict(cfg), step=len(history), seconds=seconds, history=history,
                     ema=None if ema is None else [e.clone() for e in ema], generator=g.get_state(),
                     torch_rng=torch.get_rng_state())
    if ema is not None:
        with torch.no_grad():
            for q, e in zip(trained, ema):
                q.copy_(e)
    model.eval().requires_grad_(True)
    last = history[-min(len(history), log_every):]
    stats = {"config": asdict(cfg), "seconds": seconds, "steps": len(history), "stopped_by": stopped_by,
             "final": {k: sum(h[k] for h in last) / len(last) for k in last[-1]}}
    return stats if state is None else {**stats, "state": state}
