"""Why does an extension redraw the given digit instead of moving it? Three checks of a model's glyph match (the new
frames' ink against the last given frame at the best shift; 1 for a true continuation), 4 given + 8 new frames,
null label, 200 clips:

- memorised glyphs: training-split clips (handwriting seen in training) against held-out ones;
- ambiguous motion: digits moving exactly one pixel per frame along an axis (the future is fully determined by the
  given frames) against 45-degree and random directions (rounded positions leave the next pixel step uncertain);
- where the glyph is lost: the true new frames noised to t0 and jumped to t = 0 in one call, with and without the
  given frames as context -- at t0 = 1 this is the 1-NFE extension, at small t0 the glyph is in the input itself;
- the glyph at the wrong place (session 19): the new frames start from the last given frame repeated (a static
  guess, what an SDEdit-style sampler would start from), noised to t0, one call to t = 0 with the context: does the
  network move a glyph it is handed, or redraw it? Glyph match, class kept and trajectory error.

    python scripts/probe_copy.py [--checkpoint DIR] [--n 200] [--checks memory motion noised static]
                                 [--out results/s17_copy_probe.json]
"""

import argparse
import json

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, centroids, glyph_match, real_clips
from mfvideo.pipeline import MFVideoPipeline


def extension_glyph(pipe, clips, steps: int) -> np.ndarray:
    new = pipe.extend(clips[:, :4], num_new_frames=8, context_frames=4, steps=steps, seed=0,
                      output_type="uint8").frames[:, 4:]  # (n, 8, H, W, 3)
    return glyph_match(clips[:, 3], new)  # (n, 8)


@torch.no_grad()
def denoised_glyph(pipe, clips, t0: float, with_context: bool, static: bool = False) -> np.ndarray:
    """Glyph match of the one-call jump t0 -> 0 of the true frames 4..7 noised to t0 (frames 0..3 given or noised
    alike); with ``static`` the frames noised are the last given frame repeated instead of the true ones. Returns the
    new frames' glyph match (n, 4) and the frames (n, 4, H, W, 3)."""
    net, codec = pipe.transformer, pipe.codec
    x = codec.encode_frames(clips[:, :8], pipe.cfg.data.channels)  # (n, C, 8, h, w)
    start = x[:, :, 3:4].expand_as(x) if static else x  # (n, C, 8, h, w): what the new frames are noised from
    noise = pipe._noise(x.shape[0], 8, torch.Generator().manual_seed(0))
    mask = torch.zeros(x.shape[0], 8, dtype=torch.bool)
    mask[:, :4] = with_context
    reading = None
    if with_context:  # what the pipeline reads off the given frames (summary, class), as in an extension
        reading, _ = pipe._read_given(noise, None, torch.where(mask[:, None, :, None, None], x, 0), mask)
    t = torch.where(mask, 0.0, t0)  # (n, 8): given frames clean at t = 0
    z = torch.where(mask[:, None, :, None, None], x, (1 - t0) * start + t0 * noise)
    out = z - t[:, None, :, None, None] * net(z, t, torch.zeros_like(t), y=None, reading=reading)
    new = np.asarray(codec.decode_frames(out[:, :, 4:]))  # (n, 4, H, W, 3)
    return glyph_match(clips[:, 3], new), new  # (n, 4)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--checks", nargs="+", default=["memory", "motion", "noised", "static"],
                   choices=["memory", "motion", "noised", "static"])
    p.add_argument("--out", default="results/s17_copy_probe.json")
    a = p.parse_args()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint)
    pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
    d = pipe.cfg.data
    clip_kw = dict(num_frames=12, resolution=d.resolution, digit_size=d.digit_size, speed=d.speed, seed=d.seed + 4)
    out = {}

    def report(name, g):
        out[name] = {"mean": float(g.mean()), "by_distance": np.round(g.mean(0), 3).tolist()}
        print(f"{name}: glyph match {g.mean():.3f} (by distance {', '.join(f'{v:.3f}' for v in g.mean(0))})",
              flush=True)

    for split in ("train", "test") if "memory" in a.checks else ():
        clips, _ = real_clips(a.n, split, **clip_kw)
        for steps in (1, 2):
            report(f"{split} split, {steps}-NFE", extension_glyph(pipe, clips, steps))
    directions = {"along an axis (1 px per frame)": lambda i: (i % 4) * np.pi / 2,
                  "45 degrees": lambda i: np.pi / 4 + (i % 4) * np.pi / 2}
    for name, angle in directions.items() if "motion" in a.checks else ():
        clips, _ = real_clips(a.n, "test", **clip_kw, angle=angle)
        for steps in (1, 2):
            report(f"{name}, {steps}-NFE", extension_glyph(pipe, clips, steps))
    clips, labels = real_clips(a.n, "test", **clip_kw)
    for with_context in (True, False) if "noised" in a.checks else ():
        for t0 in (0.2, 0.4, 0.6, 0.8, 1.0):
            ctx = "given frames as context" if with_context else "no context"
            report(f"true frames noised to t0={t0}, one call, {ctx}", denoised_glyph(pipe, clips, t0, with_context)[0])
    if "static" in a.checks:
        suite, true_path = DigitSuite.load(), centroids(clips[:, 4:8])  # (n, 4, 2)
        for t0 in (0.6, 0.7, 0.8, 0.9, 1.0):
            name = f"last given frame repeated, noised to t0={t0}, one call, given frames as context"
            g, new = denoised_glyph(pipe, clips, t0, True, static=True)
            report(name, g)
            out[name]["class_kept"] = float((suite.clip_class(new) == labels).mean())
            out[name]["trajectory_error"] = float(np.linalg.norm(centroids(new) - true_path, axis=-1).mean())
            print(f"  class kept {out[name]['class_kept']:.3f}, trajectory error {out[name]['trajectory_error']:.2f} px")
        still = np.repeat(clips[:, 3:4], 4, axis=1)
        out["static baseline trajectory_error"] = float(np.linalg.norm(centroids(still) - true_path, axis=-1).mean())
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
