"""Probe: does more depth let one call make the two-step jump? A pipeline grown by zero-gated blocks.

New blocks go at the end of each half of the network (so the middle block, where the context summary and the class
reader look, keeps its input), initialised as the model's own new blocks are: adaLN-Zero gates at zero, so the grown
network computes exactly what the source did (checked here on random inputs) until post-training opens them.

    python scripts/probe_grow_depth.py mfvideo/assets/moving_digits --extra 1 --out runs/grown8
    mfvideo-post-train runs/grown8 --out runs/grown8_post --steps 1000

At the post-training's lr (5e-5) the new blocks stay nearly shut (their adaLN weights ~0.002 against ~0.04 for the
old blocks after 1,000 steps); ``--post-train-steps N --new-lr LR`` post-trains here with the new blocks' parameters
at their own lr (``mfvideo.train.adversarial.post_train``, its defaults otherwise):

    python scripts/probe_grow_depth.py mfvideo/assets/moving_digits --extra 1 --post-train-steps 1000 --new-lr 6e-4 \
        --out runs/grown8_fast
"""

from __future__ import annotations

import argparse
import copy

import torch

from mfvideo.builders import build_model
from mfvideo.config import to_dict
from mfvideo.pipeline import MFVideoPipeline


def grow(model, cfg_model, extra: int):
    """A copy of ``model`` with ``extra`` fresh zero-gated blocks appended to each half."""
    depth = cfg_model.depth
    if depth % 2:
        raise ValueError(f"depth {depth} is odd: no halves to grow evenly")
    new_cfg = copy.deepcopy(cfg_model)
    new_cfg.depth = depth + 2 * extra
    torch.manual_seed(0)
    grown = build_model(new_cfg)
    half = depth // 2
    where = list(range(half)) + list(range(half + extra, half + extra + half))  # old block i -> new index
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("blocks."):
            i, rest = key.split(".", 2)[1:]
            key = f"blocks.{where[int(i)]}.{rest}"
        state[key] = value
    missing, unexpected = grown.load_state_dict(state, strict=False)
    fresh = {k.split(".")[1] for k in missing}
    assert not unexpected and all(k.startswith("blocks.") for k in missing), (missing, unexpected)
    assert fresh == {str(i) for i in range(new_cfg.depth) if i not in where}, fresh
    return grown, new_cfg


def post_train_grown(pipe, extra: int, steps: int, new_lr: float | None, out: str) -> None:
    """``post_train`` with the new blocks' parameters (those ``grow`` added) in their own AdamW group at ``new_lr``."""
    import json
    import logging
    from pathlib import Path

    from mfvideo.train.adversarial import PostTrainConfig, post_train

    depth = pipe.cfg.model.depth
    half = (depth - 2 * extra) // 2
    new = {i for i in range(depth) if half <= i < half + extra or i >= depth - extra}
    fresh = {id(q) for name, q in pipe.transformer.named_parameters()
             if name.startswith("blocks.") and int(name.split(".")[1]) in new}
    adamw = torch.optim.AdamW

    def grouped(params, lr, **kw):  # the model's optimizer (the first built): the new blocks apart
        params = list(params)
        if new_lr is None or not any(id(q) in fresh for q in params):
            return adamw(params, lr=lr, **kw)
        return adamw([{"params": [q for q in params if id(q) not in fresh]},
                      {"params": [q for q in params if id(q) in fresh], "lr": new_lr}], lr=lr, **kw)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.optim.AdamW = grouped
    try:
        stats = post_train(pipe, PostTrainConfig(steps=steps), log_every=50)
    finally:
        torch.optim.AdamW = adamw
    stats["grown"] = {"extra_per_half": extra, "new_blocks": sorted(new), "new_lr": new_lr}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "post_train.json").write_text(json.dumps(stats, indent=1) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("--extra", type=int, default=1, help="new blocks per half")
    p.add_argument("--post-train-steps", type=int, default=0, help="post-train the grown model here (default: no)")
    p.add_argument("--new-lr", type=float, default=None, help="the new blocks' lr in that post-training")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    pipe = MFVideoPipeline.from_pretrained(args.source)
    cfg = pipe.cfg
    grown, new_model_cfg = grow(pipe.transformer, cfg.model, args.extra)
    grown.eval()
    # the same function: random clips, per-frame times, labelled and null rows, context frames
    g = torch.Generator().manual_seed(0)
    size = cfg.data.resolution
    z = torch.randn(4, cfg.model.in_channels, cfg.data.num_frames, size, size, generator=g)
    t = torch.ones(4, cfg.data.num_frames)
    t[:2, :4] = 0  # context frames
    r = torch.zeros(4, cfg.data.num_frames)
    y = torch.tensor([3, -1, 5, -1])
    with torch.no_grad():
        a, b = pipe.transformer(z, t, r, y), grown(z, t, r, y)
    err = (a - b).abs().max().item()
    assert err < 1e-5, err
    cfg.model.depth = new_model_cfg.depth
    out = MFVideoPipeline(grown, pipe.vae, training_config=to_dict(cfg), id2label=pipe.labels or None)
    if args.post_train_steps:
        post_train_grown(out, args.extra, args.post_train_steps, args.new_lr, args.out)
    out.save_pretrained(args.out)
    print(f"wrote {args.out}: depth {cfg.model.depth} ({sum(p.numel() for p in grown.parameters()) / 1e6:.2f} M "
          f"parameters), max |difference| to the source {err:.1e}")


if __name__ == "__main__":
    main()
