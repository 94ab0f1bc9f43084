"""Generation only, fast: frame identity, class accuracy and per-frame accuracy of 200 clips (1 and 2 calls) of each
checkpoint.   python scripts/probe_generation.py DIR[,DIR...] [threads]   (DIR "bundled": the bundled model)"""
import sys, numpy as np, torch
from mfvideo.eval.digits import DigitSuite, real_clips
from mfvideo.eval.report import evaluate_context
from mfvideo.pipeline import MFVideoPipeline
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
suite = DigitSuite.load(); n = 200; labels = np.arange(n) % 10
for path in sys.argv[1].split(","):
    pipe = MFVideoPipeline.from_pretrained(None if path == "bundled" else path)
    for steps in (1, 2):
        f = pipe.generate(class_labels=labels.tolist(), seed=0, steps=steps, output_type="uint8").frames
        preds, _ = suite.predict(f); maj = suite.majority(preds)
        print(f"{path[-40:]:40s} {steps}-NFE ident {(preds == maj[:, None]).mean():.3f} cls {(maj == labels).mean():.3f} acc/frame {np.round((preds == labels[:, None]).mean(0), 2)}", flush=True)
