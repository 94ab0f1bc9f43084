"""MeanFlow (Geng et al., 2025): one-step generation by regressing the average velocity.

Conventions (the whole library follows them):
- Time: t = 1 is noise, t = 0 is data. z_t = (1 - t) x + t e, and the conditional velocity is v = e - x.
- The network is ``u = net(z, t, r, y=None)``: the average velocity over [r, t], r <= t, of a latent z of any
  rank >= 3 with batch first (images (B, C, H, W), videos (B, C, T, H, W)). t and r are (B,), or (B, T) per frame.
  The network embeds t and h = t - r; the method only ever passes (t, r).
- MeanFlow identity (Eq. 6): u = v - (t - r) du/dt with du/dt = v . d_z u + d_t u, the JVP of ``net`` along the
  tangent (v, 0, 1) for (z, r, t). Target: u_tgt = sg(v_g - clip(t - r, 0, 1) du/dt).
- Per-sample loss = sum of squared error over all non-batch dims; adaptive weight loss / sg((loss + eps)^p).
- Flow matching is this object with ``ratio_r_neq_t = 0``: every row has r = t and the target is v_g.
- Sampling is a plain function of the network (``samplers.py``), not a method of this object.
- Frame conditioning (video extension): a context mask m (B, T) marks clean frames. They replace the noisy
  ones in place, carry per-frame times t (1 - m) = r (1 - m) = 0, their tangent is 0 (z does not move with t
  there) and the loss counts only generated frames. With ``context_noise`` they sit at a small level s instead
  (t = r = s on those frames), still with no tangent.

This module imports torch and its siblings ``jvp``, ``noise`` and ``samplers`` (plain functions of torch): ``net`` is any callable.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import List, Optional

import torch

from .jvp import forward_jvp, uncompiled
from .jvp_graph import GraphedJVP
from .noise import prior_noise
from .samplers import meanflow_sample  # the pipeline's 1-NFE window, for self-made context


NULL_CLASS = -1  # label of the unconditional (dropped) class
COPY_LOSS_ROWS = ("all", "jump")
TANGENTS = ("sample", "model")  # the JVP's z-tangent: the sample's v_g, or the network's own v (iMF)
TIME_DISTS = ("logit_normal", "uniform")  # how (t, r) are drawn


def bcast(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Right-pad a (B,) or (B, T) tensor with singleton dims to broadcast against x (B, C, [T,] ...)."""
    dtype = torch.bool if a.dtype == torch.bool else x.dtype  # a mask stays a mask (torch.where needs bool)
    if a.ndim == 2:  # per-frame (B, T) against (B, C, T, H, W)
        return a[:, None, :, None, None].to(dtype)
    return a.view(a.shape[0], *([1] * (x.ndim - 1))).to(dtype)


@dataclass
class MeanFlow:
    """The MeanFlow objective and samplers. Fields are the keys of the config section ``method``.

    ratio_r_neq_t: share of the batch with r != t (0 gives flow matching).
    time_mean, time_std: t, r ~ sigmoid(N(mean, std)), t = max, r = min.
    time_dist: ``logit_normal`` (the above, the paper's choice) or ``uniform`` (t, r ~ U(0, 1), t = max, r = min: the
        paper's ablation, Table 1d, FID 65.9 against 61.1 for logit-normal(-0.4, 1)); uniform has no mean or std.
    adaptive_p, adaptive_eps: adaptive loss weight 1 / sg((loss + eps)^p); p = 0 is the plain squared error.
    cfg_omega, cfg_kappa, cfg_t_start, cfg_t_end: training-time guidance
        v_g = omega v + (1 - omega - kappa) v_unc + kappa v_cond, applied for t in [t_start, t_end].
    cfg_scale_range: [w_min, w_max] makes the guidance scale a condition of the network, chosen at sampling with one
        call still (improved MeanFlow, iMF): every row draws a scale w log-uniform in the range, the network sees it
        (``guidance=w``, a model with ``model.guidance_embed``) and its target is guided at that scale,
        v_g = v + (1 - 1 / w) (v_cond - v_unc), with v_cond = net(z, t, t, y, w) and v_unc = net(z, t, t, null, 1):
        the kappa form above with kappa = 1 - 1 / w, whose fixed point is the scale-w guided field
        v_unc + w (E[v | y] - v_unc). Rows whose label was dropped keep their scale and regress v (the null branch
        learns to ignore it). Replaces cfg_omega / cfg_kappa (which must stay 1 / 0); None: off.
    class_dropout: probability of replacing a label with the null class (and v_g with v on that row).
    context_class_dropout: the same probability on rows that have context frames (None: ``class_dropout``). A user's
        video has no label, so extension runs with the null class: a high value here makes the model read what it
        continues from the context frames instead of from the label.
    context_label_guidance: rows with context frames whose label was dropped keep the guidance of their true label:
        the network sees the null label, its target v + (1 - omega - kappa) v_unc + kappa v_cond(y) holds the class
        direction, which it can only find in the context frames. Where the context determines the class (a clip's
        frames show its digit), v_cond = v_unc at the optimum and the term vanishes: it changes how fast the model
        learns to read the context, not what it converges to. Without guidance (omega = 1, kappa = 0) it does nothing.
    context_guidance: the share of rows with context frames whose guidance's unconditional velocity is the
        network's with neither label nor context (the context frames noised to the row's t like the rest, every frame
        at time t): v_g = omega v + (1 - omega - kappa) v(z_t | nothing) + kappa v(z | context, y). Otherwise the
        unconditional branch keeps the context, so once the model reads the context the guidance on those rows
        vanishes and unlabelled extension learns the unguided conditional. The regression learns the mean target, so
        a share lam gives the unconditional branch (1 - lam) v(context) + lam v(nothing) at no extra cost: guidance
        of strength lam towards what the context shows, as classifier-free guidance on the frames does in
        image-to-video models, folded into training so sampling stays one network call. Those rows stay guided even
        with their label dropped. Works for unconditional models too. Without guidance (omega = 1, kappa = 0) it
        does nothing. 0: off.
    context_time_mean: the logit-normal mean of (t, r) on rows with context frames (None: ``time_mean``). Only where
        the new frames are mostly noise does the context carry what they show, and the one-step jump starts at
        t = 1; the default mean puts ~20 % of rows above t = 0.7, a mean of 1.0 ~80 %.
    context_noise: the most noise on context frames (noise augmentation, as GameNGen and Diffusion Forcing do): half
        the rows with context keep it clean (a given video is used as it is), the other half's context frames sit at
        a level s ~ U(0, context_noise), z = (1 - s) x + s e, carried as their per-frame time t = r = s (still no
        tangent and no loss there). A long extension conditions every window on the model's
        own frames, whose small errors a model trained on clean context copies and compounds (digits fade window by
        window); the noise is meant to hide them. The pipeline noises its own frames to ``sample.context_noise`` when
        they become context. 0: clean context. Measured on the digits (docs/method.md): it slows the fade, it does not
        keep the digit.
    self_context: the share of rows whose context is a prefix of k >= 2 frames that continue the model's own frames
        instead of real ones: from the first j real frames (j uniform in [1, k - 1]) the network makes frames j..k-1
        in one step (no grad; the pipeline's 1-NFE extension, with the row's label as the network sees it), and those
        replace the real frames j..k-1 as context; the new frames' targets stay the real clip. From its second window
        on, a long extension conditions on the model's own frames, whose artefacts (dimmer ink, speckle, a glyph
        drifting) a model trained on real context only copies and compounds; these rows teach it to continue the
        clip behind such frames instead (as scheduled sampling and self-forcing do for autoregressive models). The
        made frames never saw the frames they are scored on. One more forward (no grad) of those rows. 0: off.
    split_consistency: the share of rows trained on the one-step jump the sampler takes (t = 1, r = 0 on the new
        frames) towards the two-step jump from the same noise and context, 1 -> 1/2 -> 0 (no grad), of the network
        itself or of a frozen ``teacher`` (``train.teacher``):
        the interval-splitting identity of the average velocity, (t - r) u(z_t, t, r) = (t - s) u(z_t, t, s) +
        (s - r) u(z_s, s, r), which MeanFlow's identity is the differential form of (the self-consistency of shortcut
        models and SplitMeanFlow). MeanFlow's target at (1, 0) is right only in expectation over the data behind
        z_1, so one-step samples regress towards a blurred mean; the two-step jump is a fixed function of the noise,
        so this target is sharp, and it carries the two-step sampler's better reading of the context (a later window
        frame, an interpolation's middle). The other rows keep the MeanFlow target and anchor it to the data. Those
        rows skip the JVP and the guidance calls: two no-grad forwards of them instead. Their adaptive weight is
        that of a MeanFlow row with the batch's mean MeanFlow loss, not their own: the one-step jump is already near
        the two-step one (a loss ~10x smaller), and weighted by its own loss the self-made target outweighed the
        data (on the digits the class was lost within 250 steps). 0: off.
    split_context: the share of the rows **with** context frames trained so (None: ``split_consistency``, which then
        holds for every row; set, ``split_consistency`` is the share of the rows without context). A context row's
        teacher is given the label its target is guided with (with ``context_label_guidance``: the true label even
        where the network sees the null one), so an unlabelled continuation is taught the labelled teacher's jump,
        which only the context frames can tell the network; a row without context keeps the label it shows the
        network (an unconditional row's target is the teacher's unconditional jump, not one class's).
    split_steps: the teacher's network calls for the target (default 2, the split above; k > 2 splits [0, 1] into
        k equal intervals, the same identity applied k - 1 times). A model's more-step jump is its better one (the
        bundled digits model: frame identity 0.83 / 0.94 / 0.97 at 1 / 2 / 4 calls), and a distilled student comes
        no nearer the data than its target.
    split_own_weight: weigh the one-step rows by their own loss (the adaptive weight of every other row) instead:
        they then pull as hard as the MeanFlow rows. Only for a frozen teacher (``train.teacher``), whose target
        does not move with the network.
    noise_frame_correlation: rho, the correlation between the frames' noise of a clip (``noise.prior_noise``: a
        share rho of every frame's noise is shared by the clip's frames, each element still N(0, 1)). Part of the
        model: the pipeline draws its noise the same way. 0: independent frames (images are unaffected).
    copy_loss: the weight of an auxiliary loss on a copy path's copy (``model.copy_radius``): on the rows with
        context frames, the copy of every new frame (its nearest context frame through the predicted kernels) is
        regressed on the true frame, with the adaptive weight of the main loss, beside the MeanFlow loss of the
        blended output. The kernels' gradient through the output is proportional to the copy gate, which a network
        trained by the main loss alone shuts before the kernels learn where to look (docs/experiments.md, sessions
        23-24); this loss teaches them where whatever the gate. It reads the copies of the forwards with grad (the
        MeanFlow rows' and the one-step rows'), so it needs ``jvp_mode='detached'``. 0: off.
    copy_loss_rows: which rows' copies ``copy_loss`` regresses: ``all`` (every row with context) or ``jump`` (the
        one-step rows only, ``split_consistency`` / ``split_context``: the sampler's jump from pure noise, where the
        displacement must be read off the context frames; at lower t a new frame's own noisy pixels tell it).
    tangent: the z-part of the JVP's tangent on rows with r != t. ``sample``: the row's guided conditional velocity
        v_g (the MeanFlow paper's (v, 0, 1)). ``model``: the network's own instantaneous velocity there,
        sg(net(z, t, t, y)) with the label the row shows the network (improved MeanFlow, iMF, Geng et al. 2025,
        through its boundary condition u(z, t, t) = v(z, t) rather than a second head): the loss
        |u + (t - r) sg(du/dt) - v_g|^2 is the same expression, but du/dt no longer follows the one sample's
        straight path e - x, whose spread over the e, x behind z_t multiplies through the Jacobian; it follows the
        marginal trajectory through z_t that the sampler takes, so the target is a function of z_t (and the
        sample's v_g) only. On a guided recipe the guidance's no-grad call has already made it on nearly every row
        (``own_velocity``); otherwise one more forward (no grad) of the r != t rows. 0 on context frames either way.
    skip_jvp_when_r_eq_t: rows with r = t need no JVP (their target is v_g); False runs it on every row.
    jvp_mode: "fused" -- one pass over the r != t rows whose primal carries the gradient (fewest FLOPs; the tangent's
        autograd graph is recorded during that pass); "detached" -- one forward with grad over the whole batch plus
        a no-grad JVP over the r != t rows (one more forward of those rows, no tangent graph: less memory).
    """

    ratio_r_neq_t: float = 0.25
    time_mean: float = -0.4
    time_std: float = 1.0
    time_dist: str = "logit_normal"
    adaptive_p: float = 1.0
    adaptive_eps: float = 0.01
    cfg_omega: float = 1.0
    cfg_kappa: float = 0.0
    cfg_t_start: float = 0.0
    cfg_t_end: float = 1.0
    cfg_scale_range: Optional[List[float]] = None
    class_dropout: float = 0.0
    context_class_dropout: Optional[float] = None
    context_label_guidance: bool = False
    context_guidance: float = 0.0
    context_time_mean: Optional[float] = None
    context_noise: float = 0.0
    self_context: float = 0.0
    split_consistency: float = 0.0
    split_context: Optional[float] = None
    split_steps: int = 2
    split_own_weight: bool = False
    noise_frame_correlation: float = 0.0
    copy_loss: float = 0.0
    copy_loss_rows: str = "all"
    tangent: str = "sample"
    skip_jvp_when_r_eq_t: bool = True
    jvp_mode: str = "detached"

    def __post_init__(self):
        for f in fields(self):  # nan passed every range check below and trained on nan losses, skipped step by step
            if isinstance(v := getattr(self, f.name), float) and not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v}")
        if self.time_std <= 0:
            raise ValueError(f"time_std must be > 0, got {self.time_std}")
        if self.adaptive_p < 0 or self.adaptive_eps < 0 or self.adaptive_p and not self.adaptive_eps:
            raise ValueError(f"adaptive_p must be >= 0 and adaptive_eps > 0 (the weight 1 / (loss + eps)^p), got "
                             f"{self.adaptive_p} and {self.adaptive_eps}")
        if not 0.0 <= self.cfg_t_start <= 1.0 or not 0.0 <= self.cfg_t_end <= 1.0:
            raise ValueError(f"cfg_t_start and cfg_t_end must lie in [0, 1], got {self.cfg_t_start} and "
                             f"{self.cfg_t_end}")
        if self.time_dist not in TIME_DISTS:
            raise ValueError(f"unknown time_dist {self.time_dist!r}; choose one of {TIME_DISTS}")
        if self.time_dist == "uniform" and self.context_time_mean is not None:
            raise ValueError("context_time_mean moves the logit-normal (t, r) of rows with context: it needs "
                             "time_dist='logit_normal'")
        if self.jvp_mode not in ("fused", "detached"):
            raise ValueError(f"jvp_mode must be fused or detached, got {self.jvp_mode!r}")
        if self.tangent not in TANGENTS:
            raise ValueError(f"unknown tangent {self.tangent!r}; choose one of {TANGENTS}")
        if not 0.0 <= self.ratio_r_neq_t <= 1.0:
            raise ValueError(f"ratio_r_neq_t must lie in [0, 1], got {self.ratio_r_neq_t}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1), got {self.class_dropout}")
        if self.context_class_dropout is not None and not 0.0 <= self.context_class_dropout <= 1.0:
            raise ValueError(f"context_class_dropout must lie in [0, 1], got {self.context_class_dropout}")
        if not 0.0 <= self.context_guidance <= 1.0:
            raise ValueError(f"context_guidance must lie in [0, 1], got {self.context_guidance}")
        if not 0.0 <= self.self_context <= 1.0:
            raise ValueError(f"self_context must lie in [0, 1], got {self.self_context}")
        if not 0.0 <= self.split_consistency <= 1.0:
            raise ValueError(f"split_consistency must lie in [0, 1], got {self.split_consistency}")
        if self.split_context is not None and not 0.0 <= self.split_context <= 1.0:
            raise ValueError(f"split_context must lie in [0, 1], got {self.split_context}")
        if self.split_steps < 2:
            raise ValueError(f"split_steps must be >= 2 (the one-step jump's target), got {self.split_steps}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"context_noise must lie in [0, 1), got {self.context_noise}")
        if not 0.0 <= self.noise_frame_correlation < 1.0:
            raise ValueError(f"noise_frame_correlation must lie in [0, 1), got {self.noise_frame_correlation}")
        if self.copy_loss < 0:
            raise ValueError(f"copy_loss must be >= 0, got {self.copy_loss}")
        if self.copy_loss_rows not in COPY_LOSS_ROWS:
            raise ValueError(f"unknown copy_loss_rows {self.copy_loss_rows!r}; choose one of {COPY_LOSS_ROWS}")
        if self.copy_loss and self.copy_loss_rows == "jump" and not self.splits:
            raise ValueError("copy_loss_rows='jump' regresses the copies of the one-step rows: it needs "
                             "split_consistency or split_context > 0")
        if self.copy_loss and self.jvp_mode != "detached":
            raise ValueError("copy_loss reads the copies of the forwards with grad: it needs jvp_mode='detached'")
        if self.cfg_scale_range is not None:
            lo_hi = list(self.cfg_scale_range)
            if len(lo_hi) != 2 or not all(isinstance(w, (int, float)) and math.isfinite(w) for w in lo_hi) \
                    or not 1.0 <= lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"cfg_scale_range must be two scales 1 <= w_min <= w_max, got {lo_hi}")
            if self.cfg_omega != 1.0 or self.cfg_kappa != 0.0:
                raise ValueError("cfg_scale_range makes the guidance scale a condition of the network: it replaces "
                                 f"cfg_omega / cfg_kappa, which must stay 1 / 0 (got {self.cfg_omega} / {self.cfg_kappa})")
            self.cfg_scale_range = [float(w) for w in lo_hi]
        if self.cfg_t_start > self.cfg_t_end:
            raise ValueError(f"cfg_t_start {self.cfg_t_start} > cfg_t_end {self.cfg_t_end}")

    # ----------------------------------------------------------------------------------------------------
    # (t, r) sampling
    def sample_t_r(self, batch: int, device=None, generator=None, mean: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit-normal (or uniform: ``time_dist``) t >= r, (B,) each; a fixed share (1 - ratio) of the rows gets
        r = t.

        ``mean``: a per-row logit-normal mean (B,) instead of ``time_mean``.
        """
        if self.time_dist == "uniform":
            s = torch.rand(2, batch, device=device, generator=generator)
        else:
            mean = self.time_mean if mean is None else mean
            s = torch.sigmoid(torch.randn(2, batch, device=device, generator=generator) * self.time_std + mean)
        t, r = s.max(dim=0).values, s.min(dim=0).values
        # floor(ratio * B) rows plus one more with the remainder's probability: unbiased at any batch size
        # (a plain round() gives 0 rows at batch 1, silently turning MeanFlow into flow matching).
        expected = self.ratio_r_neq_t * batch
        extra = torch.rand((), device=device, generator=generator) < expected - int(expected)
        num_neq = int(expected) + int(extra)
        neq = torch.zeros(batch, dtype=torch.bool, device=device)
        neq[torch.randperm(batch, device=device, generator=generator)[:num_neq]] = True
        return t, torch.where(neq, r, t)

    def noise(self, shape, device=None, dtype=None, generator=None) -> torch.Tensor:
        """The path's noise end e of ``shape`` (see ``noise_frame_correlation``)."""
        return prior_noise(shape, self.noise_frame_correlation, generator, device=device, dtype=dtype)

    # ----------------------------------------------------------------------------------------------------
    @property
    def splits(self) -> bool:
        """Whether any row is trained on the one-step jump (``split_consistency`` or ``split_context``)."""
        return self.split_consistency > 0 or (self.split_context or 0.0) > 0

    # ----------------------------------------------------------------------------------------------------
    # guidance folded into training
    @property
    def guided(self) -> bool:
        return self.cfg_omega != 1.0 or self.cfg_kappa != 0.0 or self.cfg_scale_range is not None

    def sample_scales(self, batch: int, device=None, generator=None) -> torch.Tensor | None:
        """Guidance scales (B,) log-uniform in ``cfg_scale_range`` (iMF's draw), or None when the scale is no
        condition."""
        if self.cfg_scale_range is None:
            return None
        return log_uniform_scales(batch, *self.cfg_scale_range, device=device, generator=generator)

    def guided_velocity(self, net, z, t, v, y, frame_t, z_unc=None, t_unc=None, branches: bool = False, w=None):
        """v_g = omega v + (1 - omega - kappa) v_unc + kappa v_cond inside the interval, else v (no grad).

        v_cond = net(z, frame_t, frame_t, y); v_unc = net(z_unc, t_unc, t_unc, null) with z_unc, t_unc defaulting
        to z, frame_t (``context_guidance`` passes the clip without its context). y None: an unconditional model,
        guided only when z_unc differs from z. ``w`` (B,): the rows' guidance scales (``cfg_scale_range``): omega =
        1, kappa = 1 - 1 / w, v_cond made at scale w and v_unc at 1. ``branches``: return (v_g, v_unc, v_cond), each
        branch None where this call did not make it.
        """
        if not self.guided or (y is None and z_unc is None):
            return (v, None, None) if branches else v
        z_unc = z if z_unc is None else z_unc
        t_unc = frame_t if t_unc is None else t_unc
        inside = (t >= self.cfg_t_start) & (t <= self.cfg_t_end)  # (B,)
        if w is None:
            omega = torch.where(inside, torch.full_like(t, self.cfg_omega), torch.ones_like(t))
            kappa = torch.where(inside, torch.full_like(t, self.cfg_kappa), torch.zeros_like(t))
        else:
            omega, kappa = torch.ones_like(t), torch.where(inside, 1 - 1 / w.to(t.dtype), torch.zeros_like(t))
        null = None if y is None else torch.full_like(y, NULL_CLASS)
        with torch.no_grad():  # instantaneous velocities (r = t); both in one batched call when kappa != 0
            if self.cfg_kappa != 0.0 or w is not None:
                tt = torch.cat([t_unc, frame_t])
                yy = None if y is None else torch.cat([null, y])
                ww = None if w is None else torch.cat([torch.ones_like(w), w])
                v_unc, v_cond = with_guidance(net, ww)(torch.cat([z_unc, z]), tt, tt, y=yy).chunk(2)
            else:
                v_unc, v_cond = net(z_unc, t_unc, t_unc, y=null), None
        omega, kappa = bcast(omega, v), bcast(kappa, v)
        v_g = omega * v + (1 - omega - kappa) * v_unc + (0.0 if v_cond is None else kappa * v_cond)
        return (v_g, v_unc, v_cond) if branches else v_g

    # ----------------------------------------------------------------------------------------------------
    def loss(
        self,
        net,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        t: torch.Tensor | None = None,
        r: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        jvp_net=None,
        teacher=None,
    ) -> tuple[torch.Tensor, dict]:
        """MeanFlow loss of ``net`` on a clean batch x (B, C, ...).

        t, r (B,) and noise override the random draws. context: (B, T) bool, True on clean context frames
        (5-D x only). ``jvp_net``: the same network to differentiate forward (default ``net``), e.g. the eager
        module when ``net`` is its ``torch.compile`` wrapper. ``teacher``: the network whose multi-step jump the
        ``split_consistency`` rows regress on (default ``net`` itself, no grad). Returns (the adaptively weighted
        batch mean, logs with ``loss_unweighted``).
        """
        B = x.shape[0]
        has_context = context.any(dim=1) if context is not None else None  # (B,)
        if t is None or r is None:
            mean = None
            if has_context is not None and self.context_time_mean is not None:
                mean = torch.where(has_context, self.context_time_mean, self.time_mean).to(x.device)  # (B,)
            t_draw, r_draw = self.sample_t_r(B, x.device, generator, mean)
            t = t_draw if t is None else t
            r = r_draw if r is None else r
        split = None  # (B,) bool: rows trained on the one-step jump towards the two-step one
        if self.splits:
            share = torch.full((B,), self.split_consistency, device=x.device)
            if has_context is not None and self.split_context is not None:
                share = torch.where(has_context, self.split_context, share)
            split = torch.rand(B, device=x.device, generator=generator) < share
            t, r = torch.where(split, 1.0, t), torch.where(split, 0.0, r)
            split = split if bool(split.any()) else None
        t, r = t.to(x.dtype), r.to(x.dtype)
        e = self.noise(x.shape, x.device, x.dtype, generator) if noise is None else noise

        # Per-frame times: context frames sit at t = r = 0 and do not move with t.
        if context is not None:
            if x.ndim != 5 or context.shape != (B, x.shape[2]):
                raise ValueError(f"context mask {tuple(context.shape)} does not match (B, T) of x {tuple(x.shape)}")
            gen = (~context).to(x.dtype)  # (B, T): 1 on generated frames
            t_in, r_in = t[:, None] * gen, r[:, None] * gen  # (B, T)
            if self.context_noise > 0:  # context frames at a fixed level s: t = r = s, independent of t
                s = torch.rand(B, device=x.device, dtype=x.dtype, generator=generator) * self.context_noise
                s = s * (torch.rand(B, device=x.device, generator=generator) < 0.5)  # half the rows stay clean
                s = s if split is None else s * ~split  # the two-step teacher sees clean context
                s_ctx = s[:, None] * (1 - gen)  # (B, T)
                t_in, r_in = t_in + s_ctx, r_in + s_ctx
            dt_tangent = gen  # d t_in / d t
        else:
            gen = None
            t_in, r_in, dt_tangent = t, r, torch.ones_like(t)

        # Class dropout to the null class; dropped rows regress the plain v.
        p_drop = torch.full((B,), self.class_dropout, device=x.device)
        if has_context is not None and self.context_class_dropout is not None:
            p_drop = torch.where(has_context, self.context_class_dropout, p_drop)
        y_guide = y  # the labels the target is guided with
        if y is not None and bool((p_drop > 0).any()):
            drop = torch.rand(B, device=x.device, generator=generator) < p_drop
            y = torch.where(drop, torch.full_like(y, NULL_CLASS), y)  # what the network sees
            if self.context_label_guidance and has_context is not None:
                drop = drop & ~has_context  # unlabelled context rows keep their true label's guidance
            else:
                y_guide = y
        else:
            drop = None
        w = self.sample_scales(B, x.device, generator)  # (B,) guidance scales the network sees, or None
        if self.self_context > 0 and context is not None:
            x = self.self_made_context(net, x, context, y, generator, w)  # context frames only; the targets stay real

        z = (1 - bcast(t_in, x)) * x + bcast(t_in, x) * e  # context frames: z = x
        v = e - x
        z_unc = t_unc = None
        if self.context_guidance > 0 and gen is not None:
            free = has_context & (torch.rand(B, device=x.device, generator=generator) < self.context_guidance)  # (B,)
            if drop is not None:
                drop = drop & ~free  # guided by the context at least
            t_unc = torch.where(free[:, None], t[:, None], t_in)  # (B, T): every frame at the row's time
            z_unc = (1 - bcast(t_unc, x)) * x + bcast(t_unc, x) * e  # context frames noised like the rest
        # The MeanFlow rows (all of them unless split_consistency): guided target, JVP.
        rows = None if split is None else (~split).nonzero().squeeze(1)
        called = []  # the rows of each forward with grad, in call order (for copy_loss)
        with catching_copies(net, self.copy_loss > 0 and has_context is not None) as caught:
            if rows is not None and rows.numel() == 0:  # every row is a one-step row
                u = u_tgt = z[:0]
            else:
                u, u_tgt = self.meanflow_rows(net, rows, z, t, v, y, y_guide, t_in, r_in, dt_tangent, gen, drop,
                                              z_unc, t_unc, jvp_net, w)
                called.append(torch.arange(B, device=x.device) if rows is None else rows)
            if split is not None:  # the one-step rows: u(z_1, 1, 0) towards the (teacher's) multi-step jump
                one = split.nonzero().squeeze(1)
                u_one = with_guidance(net, _take(w, one))(z[one], t_in[one], r_in[one], y=_take(y, one))
                called.append(one)

        if split is not None:
            y_teach = y  # what the network sees; context rows: the label their target is guided with
            if y is not None and has_context is not None:
                y_teach = torch.where(has_context, y_guide, y)
            tgt_one = self.split_target(with_guidance(net if teacher is None else teacher, _take(w, one)), e[one],
                                        x[one], _take(context, one), _take(y_teach, one))
            order = torch.argsort(torch.cat([rows, one]))  # back to the batch's row order
            u = torch.cat([u, u_one.to(u.dtype)])[order]
            u_tgt = torch.cat([u_tgt, tgt_one.to(u_tgt.dtype)])[order]
        neq = (t != r) if split is None else (t != r) & ~split  # (B,) MeanFlow rows with r != t

        err = (u - u_tgt) ** 2
        if gen is not None:
            err = err * bcast(gen, err)  # only generated frames count
        per_sample = err.sum(dim=list(range(1, x.ndim)))  # (B,)
        scale = per_sample.detach()
        if split is not None and not self.split_own_weight and bool((~split).any()):  # as a mean MeanFlow row
            scale = torch.where(split, scale[~split].mean(), scale)
        weight = (scale + self.adaptive_eps) ** self.adaptive_p
        loss = (per_sample / weight).mean()

        logs = {"loss_unweighted": per_sample.detach().mean(), "loss": loss.detach()}
        if caught is not None:
            loss, logs = self.add_copy_loss(loss, logs, caught, called, x, gen, jump=split is not None)
        fm = (t == r) if split is None else (t == r) & ~split  # (B,) rows with r = t
        if neq.any() and fm.any():
            logs["loss_mf"] = per_sample.detach()[neq].mean()  # rows with r != t
            logs["loss_fm"] = per_sample.detach()[fm].mean()  # rows with r = t
        if split is not None:
            logs["loss_split"] = per_sample.detach()[split].mean()  # one-step rows against the two-step jump
        return loss, logs

    # ----------------------------------------------------------------------------------------------------
    def add_copy_loss(self, loss, logs, caught, called, x, gen, jump: bool):
        """loss + copy_loss x the adaptively weighted squared error of the caught copies on the new frames of the
        rows with context (see ``copy_loss``); ``caught``: (copy, clean) per forward with grad, ``called``: each
        forward's rows of x; ``jump``: whether the last forward is the one-step rows'."""
        if len(caught) != len(called):
            raise RuntimeError(f"copy_loss: {len(called)} forwards with grad, {len(caught)} copies caught (does the "
                               f"network have a copy path, model.copy_radius?)")
        errs = []
        if self.copy_loss_rows == "jump":  # the one-step rows' forward only
            caught, called = ([caught[-1]], [called[-1]]) if jump else ([], [])
        for (copy, clean), idx in zip(caught, called):
            keep = clean.any(dim=1)  # (n,) rows with context: the copy path is on
            err = (copy - x[idx]) ** 2 * bcast(gen[idx], copy)  # (n, C, T, ...): new frames only
            errs.append(err.sum(dim=list(range(1, x.ndim)))[keep])
        per_row = torch.cat(errs)  # (rows with context,)
        if per_row.numel():
            weight = (per_row.detach() + self.adaptive_eps) ** self.adaptive_p
            loss = loss + self.copy_loss * (per_row / weight).sum() / x.shape[0]
            logs["loss_copy"] = per_row.detach().mean()
        return loss, logs

    # ----------------------------------------------------------------------------------------------------
    def meanflow_rows(self, net, rows, z, t, v, y, y_guide, t_in, r_in, dt_tangent, gen, drop, z_unc, t_unc,
                      jvp_net=None, w=None):
        """u (with grad) and the guided MeanFlow target of the batch's ``rows`` (None: all of them); ``w`` (B,): the
        guidance scales the network sees (``cfg_scale_range``), or None."""
        z, v, t_in, y, y_guide = _take(z, rows), _take(v, rows), _take(t_in, rows), _take(y, rows), _take(y_guide, rows)
        z_unc, t_unc, w = _take(z_unc, rows), _take(t_unc, rows), _take(w, rows)
        guide_net = jvp_net.forward_no_grad if isinstance(jvp_net, GraphedJVP) else net  # no grad either way
        v_g, v_unc, v_cond = self.guided_velocity(guide_net, z, _take(t, rows), v, y_guide, t_in, z_unc, t_unc,
                                                  branches=True, w=w)
        own = self.own_velocity(t_in, y, y_guide, t_unc, v_unc, v_cond, w) if self.tangent == "model" else None
        if drop is not None and v_g is not v:
            v_g = torch.where(bcast(_take(drop, rows), v), v, v_g)  # dropped rows regress the plain v
        if gen is not None:
            v_g = v_g * bcast(_take(gen, rows), v)  # the tangent (and target) on context frames is 0
        return self.predict_and_target(net, z, t_in, _take(r_in, rows), v_g, _take(dt_tangent, rows), y,
                                       jvp_net=jvp_net, own=own, w=w)

    @staticmethod
    def own_velocity(t_in, y, y_guide, t_unc, v_unc, v_cond, w=None):
        """The network's own velocity u(z, t_in, t_in, y) (the label y it sees) where the guidance's no-grad call
        already made it, as (velocity, (B,) bool rows that have it), or None: v_cond on rows whose guiding label is
        the one they show, v_unc on null-label rows whose unconditional branch kept their own times (not the
        ``context_guidance`` rows; the loss makes z_unc from t_unc with the same x and e, so equal times are an
        equal z) and, with guidance scales ``w`` (B,), their own scale (v_unc is made at scale 1). ``tangent='model'``
        then needs no forward of its own on a guided recipe."""
        if v_unc is None and v_cond is None:
            return None
        B = t_in.shape[0]
        have = torch.zeros(B, dtype=torch.bool, device=t_in.device)
        own = torch.zeros_like(v_unc if v_cond is None else v_cond)
        if v_cond is not None:  # an unconditional model's v_cond is its own velocity on every row
            have = torch.ones_like(have) if y is None else y == y_guide
            own = torch.where(bcast(have, own), v_cond, own)
        if v_unc is not None:
            same = torch.ones(B, dtype=torch.bool, device=t_in.device)
            if t_unc is not None:  # rows whose unconditional branch saw the clip without its context differ
                same = (t_unc == t_in).flatten(1).all(dim=1)
            unc = same & ~have & (torch.ones_like(same) if y is None else y == NULL_CLASS)
            if w is not None:  # v_unc was made at scale 1
                unc = unc & (w == 1)
            own = torch.where(bcast(unc, own), v_unc, own)
            have = have | unc
        return own, have

    # ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def split_target(self, net, e: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        """The target of one-step rows (see ``split_consistency``): u_tgt = e - x2 (n, C, ...), x2 the network's
        ``split_steps``-step jump (1 -> 1/2 -> 0 for two) from noise e, with the context frames of x where
        ``context`` (n, T) marks them (the pipeline's k-NFE window; no grad). On context frames the target is unused
        (the loss masks them)."""
        x2 = meanflow_sample(net, e, y, steps=self.split_steps, context=None if context is None else x,
                             context_mask=context)
        return e - x2.to(e.dtype)

    # ----------------------------------------------------------------------------------------------------
    def self_made_context(self, net, x: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                          generator: torch.Generator | None = None, w: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T, ...) with the context frames j..k-1 of a ``self_context`` share of the prefix-context rows
        replaced by the network's one-step continuation of their first j frames (see ``self_context``), at the rows'
        guidance scales ``w`` (B,) where the scale is a condition."""
        B, T = context.shape
        frame = torch.arange(T, device=x.device)
        k = context.sum(dim=1)  # (B,) context frames per row
        prefix = (context == (frame[None] < k[:, None])).all(dim=1) & (k >= 2)  # (B,)
        pick = prefix & (torch.rand(B, device=x.device, generator=generator) < self.self_context)
        idx = pick.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        k = k[idx]
        j = 1 + (torch.rand(idx.numel(), device=x.device, generator=generator) * (k - 1)).long().clamp_max(k - 2)
        given = frame[None] < j[:, None]  # (n, T): the real frames the rest is made from
        xs = x[idx]
        e = self.noise(xs.shape, x.device, x.dtype, generator)
        made = meanflow_sample(with_guidance(net, _take(w, idx)), e, _take(y, idx), steps=1, context=xs,
                               context_mask=given).to(x.dtype)  # no grad
        swap = ~given & (frame[None] < k[:, None])  # (n, T): frames j..k-1
        x = x.clone()
        x[idx] = torch.where(bcast(swap, xs), made, xs)
        return x

    # ----------------------------------------------------------------------------------------------------
    def predict_and_target(self, net, z, t, r, v_g, dt_tangent=None, y=None, jvp_net=None, own=None, w=None):
        """u = net(z, t, r) (with grad) and u_tgt = sg(v_g - clip(t - r, 0, 1) du/dt), du/dt the JVP along (v_g, 0, 1)
        (``tangent='model'``: along (sg(net(z, t, t)), 0, 1), zero on context frames as v_g is; ``own``: (velocity,
        rows that have it) from ``own_velocity``, the rest made here).

        t, r: (B,) or per-frame (B, T); dt_tangent: d t / d t per entry (ones by default, 0 on context frames).
        Rows with r = t everywhere have target v_g: they get a plain forward and no JVP. The JVP runs through
        ``jvp_net`` (default ``net``), which may be a ``GraphedJVP`` (CUDA-graph replay) in the detached mode.
        ``w`` (B,): the guidance scales every call of a row passes to the network (``cfg_scale_range``), or None.
        """
        jvp_net = uncompiled(net if jvp_net is None else jvp_net)  # a compiled graph drops the JVP's tangent
        B = z.shape[0]
        dt_tangent = torch.ones_like(t) if dt_tangent is None else dt_tangent
        h = (t - r).clamp(0.0, 1.0)  # (B,) | (B, T)
        neq = (h != 0).reshape(B, -1).any(dim=1)  # (B,)
        if self.skip_jvp_when_r_eq_t:
            idx_jvp, idx_fwd = neq.nonzero().squeeze(1), (~neq).nonzero().squeeze(1)
        else:
            idx_jvp, idx_fwd = torch.arange(B, device=z.device), torch.arange(0, device=z.device)
        u_tgt = v_g.detach().clone()
        jvp_fn = None
        if idx_jvp.numel():
            y_j, w_j = _take(y, idx_jvp), _take(w, idx_jvp)
            args = (z[idx_jvp], t[idx_jvp], r[idx_jvp])
            v_tan = v_g[idx_jvp]
            if self.tangent == "model":  # the network's own v(z, t) = u(z, t, t), where the sampler's path goes
                v_tan = torch.zeros_like(v_tan) if own is None else own[0][idx_jvp].to(v_g.dtype)
                miss = (torch.ones_like(idx_jvp, dtype=torch.bool) if own is None else ~own[1][idx_jvp]).nonzero()
                if miss.numel():  # rows the guidance's call did not make it for
                    miss = miss.squeeze(1)
                    no_grad_net = jvp_net.forward_no_grad if isinstance(jvp_net, GraphedJVP) else net
                    with torch.no_grad():
                        made = with_guidance(no_grad_net, _take(w_j, miss))(args[0][miss], args[1][miss],
                                                                             args[1][miss], y=_take(y_j, miss))
                    v_tan = v_tan.index_put((miss,), made.to(v_tan.dtype))
                v_tan = v_tan * bcast(dt_tangent[idx_jvp], v_tan)  # context frames do not move
            tangents = (v_tan, dt_tangent[idx_jvp], None)  # along (v, dt/dt, 0): r does not move
            if isinstance(jvp_net, GraphedJVP):  # replayed from CUDA graphs: the detached mode's JVP only
                if self.jvp_mode != "detached":
                    raise ValueError("a GraphedJVP runs the detached mode's JVP only (the fused mode's carries the "
                                     "gradient); use jvp_mode='detached'")
                if w_j is not None:
                    raise ValueError("a GraphedJVP takes no guidance scale (cfg_scale_range): run the JVP eagerly")
                jvp_fn = lambda: jvp_net.jvp(*args, y_j, *tangents[:2])  # noqa: E731
            else:
                g_net = with_guidance(jvp_net, w_j)
                jvp_fn = lambda: forward_jvp(lambda z_, t_, r_: g_net(z_, t_, r_, y=y_j), args,  # noqa: E731
                                             tangents, module=jvp_net)
        if self.jvp_mode == "detached":
            u = with_guidance(net, w)(z, t, r, y=y)  # one forward with grad over every row
            if jvp_fn is not None:
                with torch.no_grad():
                    _, dudt = jvp_fn()
        else:
            parts = []  # (rows, u of those rows); autocast decides their dtype, so u is made to match them
            if idx_fwd.numel():
                parts.append((idx_fwd, with_guidance(net, _take(w, idx_fwd))(z[idx_fwd], t[idx_fwd], r[idx_fwd],
                                                                             y=_take(y, idx_fwd))))
            if jvp_fn is not None:
                u_j, dudt = jvp_fn()  # one pass: the primal u_j carries the parameter gradient, the tangent is du/dt
                parts.append((idx_jvp, u_j))
            u = z.new_empty(z.shape, dtype=parts[0][1].dtype)
            for idx, part in parts:
                u = u.index_put((idx,), part.to(u.dtype))
        if jvp_fn is not None:
            target = v_g[idx_jvp] - bcast(h[idx_jvp], dudt) * dudt.detach()
            u_tgt = u_tgt.index_put((idx_jvp,), target.detach())
        return u, u_tgt


@contextmanager
def catching_copies(net, on: bool = True):
    """Inside the block, every module of ``net`` that offers its copy of the frames (an attribute ``caught``: the
    copy path, ``models.copy.KernelCopy``) appends (copy (B, C, T, ...), context (B, T)) of each forward with grad
    to one list, yielded; ``on=False`` (or a network without such a module) yields None."""
    modules = [m for m in net.modules() if hasattr(m, "caught")] if on and hasattr(net, "modules") else []
    if not modules:
        yield None
        return
    caught = []
    for m in modules:
        m.caught = caught
    try:
        yield caught
    finally:
        for m in modules:
            m.caught = None


def log_uniform_scales(batch: int, lo: float, hi: float, device=None, generator=None) -> torch.Tensor:
    """(B,) guidance scales log-uniform in [lo, hi]: iMF's draw (its power distribution at beta = 1)."""
    u = torch.rand(batch, device=device, generator=generator)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def with_guidance(net, w: torch.Tensor | None):
    """``net`` calling with ``guidance=w`` (the rows' guidance scales, ``cfg_scale_range``), or ``net`` itself when
    w is None: a network without the condition is called exactly as before."""
    return net if w is None else functools.partial(net, guidance=w)


def _take(a, idx):
    """a[idx], or a itself when idx is None (every row) or a is None."""
    return a if a is None or idx is None else a[idx]
