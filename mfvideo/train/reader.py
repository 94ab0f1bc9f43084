"""Fit a trained class-conditional model's context reader (``STDiT.context_reader``) with the network frozen.

The reader is a small MLP head over the context frames' tokens at the middle block (mean-pooled, or pooled by
learned attention queries: ``model.reader_pool``), exactly as the forward computes them for an unlabelled row (null
label, context frames at t = r = 0, the other frames at the window's time). Fitting it is a classifier on those
features: one no-grad pass of half the network over ``num_clips`` training clips under the masks and times the
samplers use (stored: a vector per clip for mean pooling, the context tokens for attention pooling), then minibatch
optimisation of the reader. Minutes on a CPU for the digits model; the generator's weights are not touched, so
generation with a label, and every row without context, are exactly the model's as before.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F

from ..frames import with_time
from ..method.masks import sample_context_masks
from ..method.meanflow import log_uniform_scales
from ..method.noise import prior_noise

log = logging.getLogger(__name__)

SAMPLER_TIMES = ((1.0, 0.0), (1.0, 0.5), (0.5, 0.0))  # (t, r) of 1-NFE and 2-NFE windows


def draw_times(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r) per row, (B,) each: half the rows at the samplers' own (t, r), the rest t ~ U(0, 1), r in [0, t]
    (a quarter of those with r = 0)."""
    fixed = torch.tensor(SAMPLER_TIMES)[torch.randint(0, len(SAMPLER_TIMES), (batch,), generator=generator)]
    t = torch.rand(batch, generator=generator).clamp_min(1e-3)
    r = t * torch.rand(batch, generator=generator) * (torch.rand(batch, generator=generator) > 0.25)
    pick = torch.rand(batch, generator=generator) < 0.5
    return torch.where(pick, fixed[:, 0], t), torch.where(pick, fixed[:, 1], r)


@torch.no_grad()
def reader_features(model, x: torch.Tensor, masks: dict, max_context: int | None, generator: torch.Generator,
                    frame_correlation: float = 0.0, scale_range=None) -> tuple[torch.Tensor, ...]:
    """The reader's input features (``ContextReader.features``) for clean latents x (B, C, T, H, W) under one drawn
    context mask and (t, r) per row: context frames clean at t = r = 0, the others noised to t with the model's noise
    prior; with ``scale_range`` (a model with the guidance scale as a condition: its ``method.cfg_scale_range``) at a
    guidance scale per row drawn as training drew it, so the reader reads at whatever scale sampling asks for.
    Attention pooling's tokens are packed: the context tokens first, cut after the most any row has."""
    B, _, T = x.shape[:3]
    ctx = sample_context_masks(B, T, masks, max_context, generator=generator).to(x.device)  # (B, T)
    t, r = (a.to(x.device, x.dtype) for a in draw_times(B, generator))
    gen = (~ctx).to(x.dtype)
    t_in, r_in = t[:, None] * gen, r[:, None] * gen  # (B, T)
    e = prior_noise(x.shape, frame_correlation, generator).to(x.device, x.dtype)
    tb = t_in[:, None, :, None, None]
    z = (1 - tb) * x + tb * e
    scaled = {}
    if scale_range is not None:
        scaled["guidance"] = log_uniform_scales(B, *scale_range, generator=generator).to(x.device)
    feats, _ = model.context_features(z, t_in, r_in, **scaled)
    if len(feats) == 2:  # tokens (B, L, D), keep (B, L): the context tokens first, in their order
        tokens, keep = feats
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, : int(keep.sum(dim=1).max())]  # (B, L')
        feats = (tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1])), keep.gather(1, order))
    return feats


def _cat(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Concatenate feature tuples over the batch; token sets of different lengths are padded (not kept)."""
    if len(parts[0]) == 1:
        return (torch.cat([p[0] for p in parts]),)
    length = max(p[0].shape[1] for p in parts)
    tokens = torch.cat([F.pad(p[0], (0, 0, 0, length - p[0].shape[1])) for p in parts])  # (N, L, D)
    keep = torch.cat([F.pad(p[1], (0, length - p[1].shape[1])) for p in parts])  # (N, L), False on padding
    return tokens, keep


def fit_context_reader(model, clips, labels, masks: dict, max_context: int | None = None, val_clips=None,
                       val_labels=None, steps: int = 1500, lr: float = 3e-3, weight_decay: float = 1e-4,
                       batch_size: int = 1024, seed: int = 0, feature_batch: int = 500,
                       frame_correlation: float = 0.0, max_feature_gib: float = 16.0, scale_range=None) -> dict:
    """Fit ``model.class_reader`` (its head, and with attention pooling its queries, keys and values) to read
    ``labels`` (N,) off ``clips`` (N, C, T, H, W) latents.

    ``masks``: context-mask kinds -> weights (``train.context_masks``; "none" is dropped: a reader needs context).
    Each clip is seen under one drawn mask and (t, r); the reader is fitted by AdamW on the cross-entropy of
    ``batch_size`` features per step, the lr decaying to 0 on a cosine. Returns train (and, with ``val_*``, held-out) accuracy and loss. The network's
    other weights are not changed. ``frame_correlation``: the model's ``method.noise_frame_correlation``;
    ``scale_range``: its ``method.cfg_scale_range`` (the guidance scale as a condition), else None.
    ``max_feature_gib``: the most memory the stored features may take (attention pooling stores the context tokens:
    ~1 GiB for the digits model's 60,000 clips, hundreds for a B/2 video model's), checked after the first batch.
    """
    if model.class_reader is None:
        raise ValueError("this model has no context reader: build it with model.context_reader=true")
    masks = {k: w for k, w in masks.items() if k != "none" and w > 0}
    if not masks:
        raise ValueError("fitting a context reader needs context masks other than 'none'")
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()

    def features(xs):
        parts = []
        for i in range(0, xs.shape[0], feature_batch):
            parts.append(reader_features(model, xs[i : i + feature_batch], masks, max_context, g, frame_correlation,
                                         scale_range))
            if i == 0:  # attention pooling stores every context token: say so before memory runs out
                per_clip = sum(f[0].numel() * f.element_size() for f in parts[0])
                need = per_clip * xs.shape[0] / 2**30
                if need > max_feature_gib:
                    model.train(was_training)
                    raise ValueError(f"the reader's features of {xs.shape[0]} clips would take {need:.0f} GiB "
                                     f"(limit {max_feature_gib:g}): fit on fewer clips (--clips) or with "
                                     "mean pooling (--pool mean)")
        return _cat(parts)

    feats, y = features(clips), torch.as_tensor(labels).long().to(clips.device)
    reader = model.class_reader
    params = list(reader.parameters())
    requires = [q.requires_grad for q in params]
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, y.shape[0], (min(batch_size, y.shape[0]),), generator=g).to(y.device)
            loss = F.cross_entropy(reader.classify(*(f[idx] for f in feats)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            decay.step()
    for q, req in zip(params, requires):
        q.requires_grad_(req)
        q.grad = None

    def score(f, t):
        with torch.no_grad():
            logits = torch.cat([reader.classify(*(a[i : i + batch_size] for a in f))
                                for i in range(0, t.shape[0], batch_size)])
        return float((logits.argmax(1) == t).float().mean()), float(F.cross_entropy(logits, t))

    acc, loss = score(feats, y)
    stats = {"train_accuracy": acc, "train_loss": loss, "clips": int(y.shape[0])}
    if val_clips is not None:
        vy = torch.as_tensor(val_labels).long().to(val_clips.device)
        acc, loss = score(features(val_clips), vy)
        stats.update(val_accuracy=acc, val_loss=loss)
    model.train(was_training)
    log.info("context reader fitted: %s", stats)
    return stats


def load_clips(data_cfg, codec, split: str, n: int, start: int = 0, batch_size: int = 256,
               allow_unlabelled: bool = False):
    """At most n items of a split from ``start`` as latents (n, C, T, h, w) (images: T = 1) and their labels (n,;
    -1: none): a smaller split is taken whole (logged). Moving digits are drawn in random order and read from the
    first; a folder, which lists its files class by class, is read in a fixed shuffled order (the first n of a folder
    of 20 classes were two or three of its classes)."""
    from ..data import build_dataset, sample_order

    ds = build_dataset(dataclasses.replace(data_cfg, class_names=None), split=split)  # ids alone: no names read
    if start >= len(ds):
        raise ValueError(f"the {split} split has {len(ds)} clips; clips from {start} on were asked for")
    if len(ds) < start + n:
        log.warning("the %s split has %d clips: taking %d, not %d", split, len(ds), len(ds) - start, n)
        n = len(ds) - start
    order = sample_order(data_cfg, len(ds))
    xs, ys = [], []
    for i in range(start, start + n, batch_size):
        items = [ds[int(j)] for j in order[i : min(i + batch_size, start + n)]]
        x = with_time(torch.stack([it["x"] for it in items]))  # (B, C, T, H, W): images one frame each
        with torch.no_grad():
            xs.append(x if data_cfg.kind == "latent_cache" else codec.encode(x.to(codec_device(codec))).cpu())
        ys.append(torch.tensor([int(it["y"]) for it in items]))
    y = torch.cat(ys)
    if not allow_unlabelled and bool((y < 0).any()):
        raise ValueError(f"the {split} split has unlabelled clips: a context reader needs class labels")
    return torch.cat(xs), y


def codec_device(codec) -> torch.device:
    p = next(iter(codec.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def add_context_reader(pipe, num_clips: int = 60000, val_clips: int = 3000, seed: int = 0, pool: str | None = None,
                       **fit_kw) -> dict:
    """Give a pipeline's class-conditional video model a context reader fitted on its own training data
    (``cfg.data``, train split, at most ``num_clips``; held-out score on at most ``val_clips`` of the test split, where
    the data has one: ``has_split``), in place. Returns the fit's statistics.

    ``pool`` (``mean`` | ``attention``): the reader's pooling; a reader of another pooling is replaced by a new one.
    None: the model's reader as it is, or a new attention-pooled one (the better reader on the digits)."""
    from ..builders import build_model
    from ..config import NO_CONTEXT, trains_context
    from ..data import has_split

    cfg = pipe.cfg
    if not cfg.model.num_classes or not cfg.model.temporal:
        raise ValueError("a context reader needs a class-conditional video model "
                         f"(num_classes={cfg.model.num_classes}, temporal={cfg.model.temporal})")
    if not trains_context(cfg):
        raise ValueError(f"this model was {NO_CONTEXT}: it continues no clip, so a context reader would have nothing "
                         "to read")
    old = pipe.transformer
    if pool is None:
        pool = "attention" if old.class_reader is None else old.class_reader.pool
    if old.class_reader is None or old.class_reader.pool != pool:
        cfg.model.context_reader, cfg.model.reader_pool = True, pool
        model = build_model(cfg.model).to(next(old.parameters()).device)
        weights = {k: v for k, v in old.state_dict().items() if not k.startswith("class_reader.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or any(not k.startswith("class_reader.") for k in missing):
            raise ValueError(f"cannot add a context reader: unexpected {unexpected}, missing {missing}")
    else:
        model = old
    device = next(model.parameters()).device
    x, y = load_clips(cfg.data, pipe.codec, "train", num_clips)
    vx = vy = None
    if val_clips and not has_split(cfg.data, "test"):  # its "test" clips would be the training clips
        log.warning("no held-out score: the data (%s) has no test split apart from its training clips",
                    cfg.data.manifest or cfg.data.root or cfg.data.kind)
    elif val_clips:
        vx, vy = load_clips(cfg.data, pipe.codec, "test", val_clips)
        vx = vx.to(device)
    stats = fit_context_reader(model, x.to(device), y, dict(cfg.train.context_masks), cfg.train.max_context_frames,
                               vx, vy, seed=seed, frame_correlation=cfg.method.noise_frame_correlation,
                               scale_range=cfg.method.cfg_scale_range, **fit_kw)
    pipe.register_modules(transformer=model.eval())
    return stats
