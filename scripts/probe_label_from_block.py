"""Probe: null-label extension of the bundled model with the true label fed to blocks >= k only (null label before):
what a class read off the context inside the network at block k could reach (the context reader's design).

    python scripts/probe_label_from_block.py   # writes results/label_from_block.json (keys: k; 6 = null label only)

The forward below is the STDiT's of its time (session 13's bundled model: u-prediction, no context reader, blocks
without rotary positions), with the conditioning switched per block; the model's own context reader is not used (the
probe measures the generator). Its figures are in docs/method.md. The bundled model has since changed (pMF, the
reader, post-training): the probe runs on such a model only, a checkpoint given as its one argument, and refuses
another (it had stopped with a TypeError in the forward it replaces).
"""
import sys, types, json
import numpy as np, torch
from einops import rearrange
from mfvideo.pipeline import MFVideoPipeline
from mfvideo.eval.digits import DigitSuite, real_clips
from mfvideo.eval.report import _extension_scores
from mfvideo.models.embeddings import LabelEmbedder

if sys.argv[1:2] in (["-h"], ["--help"]):
    sys.exit(print(__doc__))
pipe = MFVideoPipeline.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else None)
m = pipe.cfg.model
if m.prediction != "u" or m.context_reader or m.clip_rope or m.attention != "factorised" or m.copy_radius:
    sys.exit("probe_label_from_block: written for a factorised u-prediction model without a context reader, rotary "
             "positions or copy path (session 13's bundled model); this one differs: give such a checkpoint")
pipe.cfg.sample.motion_copy = 0  # the network's own frames unless a row asks (the bundled model copies)
net = pipe.transformer
suite = DigitSuite.load()
cfg = pipe.cfg.data; T = pipe.window; k = T // 2; n = 200
clips, labels = real_clips(n, "test", k + T, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 4)
STATE = {}

def forward(self, z, t, r, y=None):
    B, _, TT, H, W = z.shape
    p = self.config.patch_size
    x = rearrange(self.x_embedder(z), "b d t h w -> b t (h w) d")
    pos_s, pos_t = self._positions(TT, H // p, W // p, x.device, x.dtype)
    x = x + pos_s + self.temporal_pos_gate * pos_t
    t = self._frame_times(torch.as_tensor(t), B, TT); r = self._frame_times(torch.as_tensor(r), B, TT)
    c0 = self.t_embedder(t) + self.h_embedder(t - r)
    null = torch.full((B,), LabelEmbedder.NULL)
    c_null = (c0 + self.y_embedder(null)[:, None])[:, :, None]
    c_true = (c0 + self.y_embedder(STATE["y"])[:, None])[:, :, None]
    clean = (t == r) & (t < t.amax(dim=1, keepdim=True))
    extra = 0
    for i, block in enumerate(self.blocks):
        if i == len(self.blocks) // 2:
            extra = self.context_embedder(x, clean)
        c = (c_true if i >= STATE["k"] else c_null) + extra
        x = block(x, c, pos_t)
    x = self.final_layer(x, (c_true if STATE["k"] < len(self.blocks) else c_null) + extra)
    return rearrange(x, "b t (h w) (ph pw c) -> b c t (h ph) (w pw)", h=H // p, w=W // p, ph=p, pw=p)

net.forward = types.MethodType(forward, net)
STATE["y"] = torch.as_tensor(labels)
res = {}
for kb in [0, 2, 3, 4, 6]:
    STATE["k"] = kb
    ext = pipe.extend(clips[:, :k], num_new_frames=T, context_frames=k, steps=1, seed=0, output_type="uint8").frames
    s = _extension_scores(suite, ext[:, k:], labels)
    res[kb] = s
    print(kb, s, flush=True)
json.dump(res, open("results/label_from_block.json", "w"), indent=1)
