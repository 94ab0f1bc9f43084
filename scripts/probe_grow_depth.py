"""Probe: does more depth let one call make the two-step jump? A pipeline grown by zero-gated blocks.

New blocks go at the end of each half of the network (so the middle block, where the context summary and the class
reader look, keeps its input), initialised as the model's own new blocks are: adaLN-Zero gates at zero, so the grown
network computes exactly what the source did (checked here on random inputs) until post-training opens them.

    python scripts/probe_grow_depth.py mfvideo/assets/moving_digits --extra 1 --out runs/grown8
    mfvideo-post-train runs/grown8 --out runs/grown8_post --steps 1000
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("--extra", type=int, default=1, help="new blocks per half")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    pipe = MFVideoPipeline.from_pretrained(args.source)
    cfg = pipe.cfg
    grown, new_model_cfg = grow(pipe.transformer, cfg.model, args.extra)
    grown.eval()
    # the same function: random clips, per-frame times, labelled and null rows, context frames
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, cfg.model.in_channels, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution, generator=g)
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
    out.save_pretrained(args.out)
    print(f"wrote {args.out}: depth {cfg.model.depth} ({sum(p.numel() for p in grown.parameters()) / 1e6:.2f} M "
          f"parameters), max |difference| to the source {err:.1e}")


if __name__ == "__main__":
    main()
