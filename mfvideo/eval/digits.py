"""The moving-digits quality suite: a small digit classifier and clip metrics that run on a CPU in minutes.

Metrics on uint8 clips (N, T, H, W, 3):
- ``fd``: Fréchet distance of clip features (the classifier's penultimate layer, averaged over frames) to real
  held-out clips;
- ``class_accuracy``: the majority frame prediction equals the requested class (class-conditional samples);
- ``identity``: the share of frames whose prediction equals the clip's majority (a digit keeps its identity);
- ``jerk``: mean |second difference| of the ink centroid per frame, in pixels (motion smoothness; real clips have
  ~0 except at bounces);
- extension: ``identity_kept`` (continuation class = context class) and ``trajectory_error`` (centroid distance to
  the true continuation, pixels), with the static baseline (repeat the last context frame) for scale;
- ``glyph_match``: whether a new frame still shows the *same handwriting* as the context (not only the same class):
  the cosine similarity of its ink to the last context frame's, at the best integer shift. A moving digit is one
  glyph translated, so a true continuation scores 1; a blurred or redrawn digit scores less.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.moving_digits import render_clip
from ..frames import grey, to_uint8, unit_to_uint8
from .frechet import frechet_distance_features

ASSET = Path(__file__).resolve().parents[1] / "assets" / "digit_classifier.safetensors"


class DigitClassifier(nn.Module):
    """16x16 grey frames in [0, 1] -> 10 logits; ``features`` is the 128-d penultimate layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _frames(split: str, n: int, seed: int, resolution: int = 16, digit_size: int = 8):
    """n single frames at random positions with labels, from one split's handwriting."""
    xs, ys = [], []
    for i in range(n):
        clip = render_clip(i, split, num_frames=1, resolution=resolution, digit_size=digit_size, seed=seed)
        xs.append(clip.frames[0])
        ys.append(clip.label)
    return torch.from_numpy(np.stack(xs))[:, None], torch.tensor(ys)


def train_classifier(steps: int = 1500, seed: int = 0) -> tuple[DigitClassifier, float]:
    """Train deterministically on the train split; returns the model and its held-out (test split) accuracy."""
    torch.manual_seed(seed)
    x, y = _frames("train", 20000, seed=seed + 100)
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), heldout_accuracy(net)


@torch.no_grad()
def heldout_accuracy(net: DigitClassifier, n: int = 2000) -> float:
    x, y = _frames("test", n, seed=12345)
    return float((net(x).argmax(1) == y).float().mean())


def load_classifier(path: Path = ASSET) -> DigitClassifier:
    """The shipped classifier, or a deterministic retrain (saved next to it) when the file is missing."""
    from safetensors.torch import load_file, save_file

    net = DigitClassifier()
    if path.is_file():
        net.load_state_dict(load_file(path))
        return net.eval()
    net, _ = train_classifier()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(net.state_dict(), path)
    except OSError:
        pass
    return net


def _grey(clips: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, T, 1, H, W) in [0, 1]."""
    return torch.from_numpy(grey(to_uint8(clips)))[:, :, None]


def centroids(clips: np.ndarray) -> np.ndarray:
    """Ink centroid (row, col) per frame: (N, T, 2) pixels."""
    x = _grey(clips)[:, :, 0].numpy()  # (N, T, H, W)
    h, w = x.shape[-2:]
    mass = x.sum(axis=(2, 3)) + 1e-6
    rows = (x.sum(axis=3) * np.arange(h)).sum(axis=2) / mass
    cols = (x.sum(axis=2) * np.arange(w)).sum(axis=2) / mass
    return np.stack([rows, cols], axis=-1)


def speckle(clips: np.ndarray, level: float = 60 / 255) -> float:
    """Isolated ink per frame: the mean count of pixels brighter than ``level`` whose 8 neighbours are all darker
    (the grain a one-step sample leaves around its strokes; a real clip has none)."""
    on = _grey(clips)[:, :, 0].numpy() > level  # (N, T, H, W)
    pad = np.pad(on, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = on.shape[-2:]
    lit = sum(pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].astype(int)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
    return float((on & (lit == 0)).sum(axis=(2, 3)).mean())


FAINT = 0.7  # a clip whose peak ink is below this is a faint ghost of its digit (every one of 1,000 real clips: > 0.77)


def peak_ink(clips: np.ndarray) -> np.ndarray:
    """How bright a clip's strokes are: the mean over its frames of each frame's 10 brightest pixels. uint8
    (N, T, H, W, 3) -> (N,) in [0, 1]; real clips 0.77-1 (mean 0.95), a faint or faded glyph below ``FAINT``."""
    g = _grey(clips)[:, :, 0].flatten(2)  # (N, T, H W)
    return g.topk(10, dim=2).values.mean(dim=(1, 2)).numpy()


def glyph_match(reference: np.ndarray, frames: np.ndarray, max_shift: int = 8) -> np.ndarray:
    """Cosine similarity of each frame's ink to the reference frame's, maximised over integer shifts of up to
    ``max_shift`` pixels (zero padded, no wrap-around). reference: uint8 (N, H, W, 3); frames: uint8
    (N, m, H, W, 3) -> (N, m) in [0, 1]: 1 where a frame is the reference glyph translated."""
    ref = grey(to_uint8(reference)).astype(np.float64)  # (N, H, W)
    x = grey(to_uint8(frames)).astype(np.float64)  # (N, m, H, W)
    h, w = ref.shape[-2:]
    s = max_shift
    pad = np.pad(ref, ((0, 0), (s, s), (s, s)))
    x_norm = np.sqrt((x**2).sum(axis=(2, 3))) + 1e-8  # (N, m)
    best = np.zeros(x.shape[:2])
    for dy in range(2 * s + 1):
        for dx in range(2 * s + 1):
            shifted = pad[:, dy : dy + h, dx : dx + w]  # (N, H, W): the reference moved by (dy - s, dx - s)
            norm = np.sqrt((shifted**2).sum(axis=(1, 2))) + 1e-8  # (N,)
            cos = np.einsum("nhw,nmhw->nm", shifted, x) / (norm[:, None] * x_norm)
            best = np.maximum(best, cos)
    return best


def sharpness(reference: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Edge energy per unit ink, relative to the reference frame's: sum |grad g|^2 / sum g^2 of each frame over the
    reference's (g the grey frame; differences between neighbouring pixels). reference: uint8 (N, H, W, 3); frames:
    uint8 (N, m, H, W, 3) -> (N, m). A sharp glyph, the reference's or another one, scores ~1 (the true next frames
    1.00, another writer's digit 1.02); blur lowers it (a Gaussian blur of the true frames by 0.5 / 0.8 / 1.2 px:
    0.65 / 0.33 / 0.20). ``glyph_match`` cannot tell blur from handwriting (the 0.8 px blur scores 0.92 there, above
    another writer's 0.85): read the two together."""

    return edge_energy(frames) / (edge_energy(reference)[:, None] + 1e-8)


def edge_energy(frames: np.ndarray) -> np.ndarray:
    """sum |grad g|^2 / sum g^2 per frame (g the grey frame, differences between neighbouring pixels): uint8
    (..., H, W, 3) -> (...). Scale-free; blur lowers it, grain raises it (``sharpness``)."""
    g = grey(to_uint8(frames)).astype(np.float64)  # (..., H, W)
    edges = (np.diff(g, axis=-2) ** 2).sum(axis=(-2, -1)) + (np.diff(g, axis=-1) ** 2).sum(axis=(-2, -1))
    return edges / ((g**2).sum(axis=(-2, -1)) + 1e-8)


def glyph_consistency(clips: np.ndarray) -> float:
    """Does a clip keep one handwriting? Mean ``glyph_match`` of every frame against the clip's first: 1 for a glyph
    that only moves (every real clip), ~0.85 where each frame is the digit redrawn by another hand. clips: uint8
    (N, T, H, W, 3), T >= 2."""
    clips = np.asarray(clips)
    return float(glyph_match(clips[:, 0], clips[:, 1:]).mean())


@dataclass
class DigitSuite:
    classifier: DigitClassifier

    @classmethod
    def load(cls) -> "DigitSuite":
        return cls(load_classifier())

    @torch.no_grad()
    def predict(self, clips) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame class predictions (N, T) and clip features (N, 128)."""
        x = _grey(clips)
        n, t = x.shape[:2]
        flat = x.flatten(0, 1)
        feats = self.classifier.features(flat)
        preds = self.classifier.head(feats).argmax(1)
        return preds.view(n, t).numpy(), feats.view(n, t, -1).mean(1).numpy()

    @staticmethod
    def majority(preds: np.ndarray) -> np.ndarray:
        """Per-frame predictions (N, T) -> each clip's most frequent class (N,)."""
        return np.array([np.bincount(p, minlength=10).argmax() for p in preds])

    def clip_class(self, clips) -> np.ndarray:
        """The class read in most of each clip's frames: (N,)."""
        return self.majority(self.predict(clips)[0])

    def clip_metrics(self, clips, labels=None, real_clips=None) -> dict:
        preds, feats = self.predict(clips)
        majority = self.majority(preds)
        out = {"identity": float((preds == majority[:, None]).mean()), "speckle": speckle(clips),
               "jerk": float(np.abs(np.diff(centroids(clips), n=2, axis=1)).mean()),
               "glyph_consistency": glyph_consistency(clips), "faint": float((peak_ink(clips) < FAINT).mean())}
        if labels is not None:
            out["class_accuracy"] = float((majority == np.asarray(labels)).mean())
        if real_clips is not None:
            _, real_feats = self.predict(real_clips)
            out["fd"] = frechet_distance_features(feats, real_feats)
            out["sharpness"] = float(edge_energy(clips).mean() / edge_energy(real_clips).mean())  # blur < 1 < grain
        return out

    def extension_metrics(self, context, continuation, true_continuation) -> dict:
        """context (N, k, ...), generated and true continuations (N, m, ...), uint8."""
        ctx_class, gen_class = self.clip_class(context), self.clip_class(continuation)
        err = np.linalg.norm(centroids(continuation) - centroids(true_continuation), axis=-1).mean()
        static = np.repeat(np.asarray(context)[:, -1:], np.asarray(continuation).shape[1], axis=1)
        static_err = np.linalg.norm(centroids(static) - centroids(true_continuation), axis=-1).mean()
        return {"identity_kept": float((gen_class == ctx_class).mean()), "trajectory_error": float(err),
                "trajectory_error_static_baseline": float(static_err),
                "glyph_match": float(glyph_match(np.asarray(context)[:, -1], continuation).mean())}


def real_clips(n: int, split: str = "test", num_frames: int = 8, resolution: int = 16, digit_size: int = 8,
               speed: float = 1.0, seed: int = 1, angle=None) -> tuple[np.ndarray, np.ndarray]:
    """n real moving-digit clips as uint8 (N, T, H, W, 3) with labels; ``angle``: None (drawn), one direction of
    motion in radians, or a function of the clip index giving one."""
    clips, labels = [], []
    for i in range(n):
        a = angle(i) if callable(angle) else angle
        c = render_clip(i, split, num_frames, resolution, 1, digit_size, speed, seed, a)
        clips.append(to_uint8(unit_to_uint8(c.frames)))  # (T, H, W) grey in [0, 1] -> (T, H, W, 3)
        labels.append(c.label)
    return np.stack(clips), np.array(labels)
