"""Probe: clips of fewer frames than the model's window, drawn from noise. Since session 30 ``generate`` draws the full
window and cuts it; the other arm draws noise of only the frames asked for (the model's temporal layers then see a
shorter clip than any they were trained on). n clips per length, labels cycling 0..9, the same seed; per-frame class
accuracy, speckle and sharpness (edge energy per unit ink over as many real frames').

    python scripts/probe_short_clips.py [--checkpoint DIR] [--n 400] [--out results/s30_short_clips.json]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mfvideo.eval.digits import DigitSuite, edge_energy, real_clips, speckle
from mfvideo.pipeline import MFVideoPipeline


def scores(suite, frames, labels, real) -> dict:
    preds, _ = suite.predict(frames)
    return {"frame_accuracy": round(float((preds == labels[:, None]).mean()), 4),
            "speckle": round(float(speckle(frames)), 4),
            "sharpness": round(float(edge_energy(frames).mean() / edge_energy(real).mean()), 4)}


@torch.no_grad()
def drawn_alone(pipe, labels, frames: int, seed: int) -> np.ndarray:
    """The other arm: noise of ``frames`` frames only, one call at the model's default temperature, decoded (uint8)."""
    g = torch.Generator().manual_seed(seed)
    how = pipe.resolve_sampler(None, None)
    noise = pipe._noise(len(labels), frames, g, pipe.resolve_temperature(None, how))
    latents = pipe._sample(noise, torch.as_tensor(labels, device=pipe.device), how)
    return pipe.codec.decode_frames(latents)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="pipeline or checkpoint folder (default: the bundled model)")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--out", default="results/s30_short_clips.json")
    a = p.parse_args()
    pipe, suite = MFVideoPipeline.from_pretrained(a.checkpoint), DigitSuite.load()
    pipe.cfg.sample.motion_copy = 0  # the network's own frames (the bundled model copies by default)
    d = pipe.cfg.data
    labels = np.arange(a.n) % pipe.cfg.model.num_classes
    real, _ = real_clips(a.n, "test", d.num_frames, d.resolution, d.digit_size, d.speed, seed=d.seed + 1)
    rows = {}
    for T in a.lengths:
        for arm in ("cut from the full window (generate)", "drawn alone"):
            if arm == "drawn alone":
                frames = drawn_alone(pipe, labels, T, seed=0)
            else:
                frames = pipe.generate(num_frames=T, class_labels=labels.tolist(), seed=0, output_type="uint8").frames
            rows[f"{T} frames, {arm}"] = scores(suite, frames, labels, real[:, :T])
            print(f"{T} frames, {arm}", rows[f"{T} frames, {arm}"], flush=True)
    full = pipe.generate(class_labels=labels.tolist(), seed=0, output_type="uint8").frames
    rows[f"{pipe.window} frames (the window)"] = scores(suite, full, labels, real)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
