"""Metric networks from local TorchScript files: Inception (FID) and I3D (FVD). No torchvision, no download.

The files distributed by clean-fid / StyleGAN (``inception-2015-12-05.pt``) and StyleGAN-V (``i3d_torchscript.pt``)
take keyword flags; the protocol (input range, flags, resolution) is explicit here and recorded with the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

PROTOCOLS = {
    # FID: frames as (N, 3, H, W) floats in [0, 255]; the network resizes to 299 itself.
    "inception": dict(input_range=(0.0, 255.0), kwargs={"return_features": True}, resolution=None),
    # FVD: clips as (N, 3, T, 224, 224) floats in [-1, 1] (StyleGAN-V's protocol: 16 frames, 2048 clips).
    "i3d": dict(input_range=(-1.0, 1.0), kwargs={"rescale": False, "resize": False, "return_features": True}, resolution=224),
}


@dataclass
class FeatureNetwork:
    path: str
    kind: str = "inception"
    device: str = "cpu"
    batch_size: int = 32
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in PROTOCOLS:
            raise ValueError(f"unknown metric network kind {self.kind!r}; known: {list(PROTOCOLS)}")
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"metric network {self.path} not found (a TorchScript file you downloaded)")
        try:
            self.net = torch.jit.load(self.path, map_location=self.device).eval()  # TorchScript: no pickle of code
        except RuntimeError as e:  # a state dict, a cut download, another file: torch's own words, one line
            raise ValueError(f"metric network {self.path}: not a TorchScript file "
                             f"({str(e).strip().splitlines()[0].split('. ')[0]})") from None
        self.protocol = {**PROTOCOLS[self.kind]}
        self.protocol["kwargs"] = {**self.protocol["kwargs"], **self.kwargs}

    def _prepare(self, clips: np.ndarray) -> torch.Tensor:
        lo, hi = self.protocol["input_range"]
        x = torch.as_tensor(clips).float().to(self.device) / 255.0 * (hi - lo) + lo  # (N, T, H, W, 3)
        if self.kind == "inception":
            return rearrange(x, "n t h w c -> (n t) c h w")
        x = rearrange(x, "n t h w c -> (n t) c h w")
        r = self.protocol["resolution"]
        if r and x.shape[-1] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False).clamp(lo, hi)  # no rounding overshoot
        return rearrange(x, "(n t) c h w -> n c t h w", n=clips.shape[0])

    @torch.no_grad()
    def features(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (N, T, H, W, 3) -> features: per frame for Inception (N*T, D), per clip for I3D (N, D)."""
        out = []
        for i in range(0, len(clips), self.batch_size):
            out.append(self.net(self._prepare(clips[i : i + self.batch_size]), **self.protocol["kwargs"]).float().cpu())
        return torch.cat(out).numpy().astype(np.float64)
