"""Speckle (isolated ink per frame), background and ink level of 200 generated clips per model (1 and 2 calls):
results/s10_speckle.json. Run from the repository root after the session-10 arms (runs/s10_*)."""
import json, numpy as np, torch
from mfvideo.eval.digits import DigitSuite, speckle, real_clips
from mfvideo.pipeline import MFVideoPipeline
torch.set_num_threads(1)
suite = DigitSuite.load(); n = 200; labels = np.arange(n) % 10
real, _ = real_clips(n, "test", 8, 16, 8, 1.0, seed=1)
out = {"real held-out clips": {"speckle": speckle(real)}}
for name, path in [("bundled", None), ("A", "runs/s10_A/checkpoints/step_00001000"),
                   ("P", "runs/s10_P/checkpoints/step_00001000"), ("R", "runs/s10_R/checkpoints/step_00001000")]:
    pipe = MFVideoPipeline.from_pretrained(path)
    for steps in (1, 2):
        f = pipe.generate(class_labels=labels.tolist(), seed=0, steps=steps, output_type="uint8").frames
        g = f[..., 0].astype(float)
        out[f"{name}, {steps}-NFE"] = {"speckle": speckle(f), "background_mean": float(g[g < 60].mean()),
                                       "ink_mean": float(g[g >= 60].mean())}
        print(name, steps, out[f"{name}, {steps}-NFE"], flush=True)
json.dump(out, open("results/s10_speckle.json", "w"), indent=1)
