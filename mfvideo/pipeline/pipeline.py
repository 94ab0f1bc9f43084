"""The 1-NFE generation pipeline: generate, extend and condition on frames, from one checkpoint folder.

A checkpoint folder (what training writes, or ``save_pretrained``) holds ``config.yaml`` and weights; the
pipeline builds the STDiT, loads the EMA weights and builds the codec from the config. Frames are uint8
(B, T, H, W, 3). Every window costs one network evaluation (``steps=1``).

``sampler``: ``"meanflow"`` (k-NFE average-velocity steps, default for MeanFlow models) or ``"euler"`` (Euler steps of
the instantaneous velocity u(z, t, t); the default, with 50 steps, for a model trained as flow matching, i.e.
``method.ratio_r_neq_t = 0``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..builders import build_model
from ..config import Config, to_yaml
from ..latents import build_codec
from ..train.checkpoint import CheckpointError, load_config_from, load_into, load_weights
from .render import frames_to_pixels, latents_to_frames

log = logging.getLogger(__name__)
BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "moving_digits"
SAMPLERS = {"meanflow": 1, "euler": 50}  # sampler -> default number of network calls per window


@dataclass
class PipelineOutput:
    frames: np.ndarray  # uint8 (B, T, H, W, 3)
    fps: float


class MFVideoPipeline:
    """One-step clip generation and video extension with a MeanFlow STDiT."""

    def __init__(self, model, codec, config: Config, device="cpu"):
        self.model = model.eval().to(device)
        self.codec = codec.eval().to(device)
        self.config = config
        self.method = config.method  # a MeanFlow
        self.device = torch.device(device)

    # ----------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device="cpu", weights: str = "ema") -> "MFVideoPipeline":
        """Load a checkpoint folder (default: the bundled moving-digits model)."""
        path = Path(path) if path is not None else BUNDLED
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint folder")
        cfg = load_config_from(path)
        model = build_model(cfg.model)
        load_into(model, load_weights(path, which=weights), str(path))
        return cls(model, build_codec(cfg.latents, cfg.data.channels), cfg, device)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.yaml + model.safetensors (the weights in use), loadable by ``from_pretrained``."""
        from safetensors.torch import save_file

        from ..io import atomic_path

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, tmp)
        with atomic_path(path / "config.yaml") as tmp:
            tmp.write_text(to_yaml(self.config))
        return path

    # ----------------------------------------------------------------------------------------------------
    @property
    def window(self) -> int:
        """Frames per network call: the training clip length."""
        return self.config.data.num_frames

    @property
    def resolution(self) -> int:
        return self.config.data.resolution

    @property
    def fps(self) -> float:
        return self.config.sample.fps

    def check_labels(self, class_labels) -> torch.Tensor:
        """Class ids as a (B,) long tensor; an id outside 0..num_classes-1 (or -1, none) is a ValueError."""
        n = self.config.model.num_classes
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        if not n:
            raise ValueError("this model is unconditional: class_labels must be None")
        if labels.numel() == 0:
            raise ValueError("class_labels is empty: give at least one class id")
        bad = [int(c) for c in labels if not (0 <= int(c) < n or int(c) == -1)]
        if bad:
            raise ValueError(f"class id {bad[0]} out of range: this model has classes 0..{n - 1} (-1 = none)")
        return labels

    def _labels(self, class_labels, batch: int):
        if class_labels is None:
            n = self.config.model.num_classes
            return torch.full((batch,), -1, dtype=torch.long, device=self.device) if n else None
        return self.check_labels(class_labels).to(self.device)

    @staticmethod
    def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
        """The caller's CPU generator, else one seeded with ``seed`` (a random seed when both are None)."""
        if generator is not None:
            return generator
        return torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)

    def _latent_shape(self, frames: int):
        return self.codec.latent_shape((frames, self.resolution, self.resolution))

    def _noise(self, batch: int, frames: int, generator) -> torch.Tensor:
        return torch.randn((batch, *self._latent_shape(frames)), generator=generator).to(self.device)

    @property
    def default_sampler(self) -> str:
        """``"euler"`` for a model trained as flow matching (no r != t rows), else ``"meanflow"``."""
        return "euler" if self.method.ratio_r_neq_t == 0 else "meanflow"

    def resolve_sampler(self, sampler: str | None, steps: int | None) -> tuple[str, int]:
        """(sampler, network calls per window) with the defaults filled in; unknown names are an error."""
        sampler = sampler or self.default_sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        steps = SAMPLERS[sampler] if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return sampler, steps

    def _sample(self, noise, y, how: tuple[str, int], context=None, mask=None):
        sampler, steps = how
        fn = self.method.sample if sampler == "meanflow" else self.method.sample_euler
        return fn(self.model, noise, y=y, steps=steps, context=context, context_mask=mask)

    # ----------------------------------------------------------------------------------------------------
    @property
    def latent_window(self) -> int:
        """Latent frames per network call (a causal video VAE maps 4k+1 / 8k+1 pixel frames to k+1)."""
        return self.codec.latent_frames(self.window)

    def _pixel_frames(self, latent_frames: int) -> int:
        return self.codec.pixel_frames(latent_frames)

    @torch.no_grad()
    def generate(self, num_frames: int | None = None, class_labels=None, num_clips: int | None = None,
                 seed: int | None = None, steps: int | None = None, context_frames: int | None = None,
                 sampler: str | None = None, generator: torch.Generator | None = None) -> PipelineOutput:
        """Clips from noise: one network call for the first window, one per further window (sliding).

        ``class_labels``: one id per clip, or one id for ``num_clips`` clips. Noise comes from ``generator`` (a CPU
        ``torch.Generator``) or from ``seed``.
        """
        how = self.resolve_sampler(sampler, steps)
        num_frames = self.window if num_frames is None else int(num_frames)
        if num_frames < 1 or (num_clips is not None and int(num_clips) < 1):
            raise ValueError(f"num_frames and num_clips must be >= 1, got {num_frames} and {num_clips}")
        y = self._labels(class_labels, num_clips or 1)
        if y is not None and num_clips and y.shape[0] != num_clips:
            if y.shape[0] != 1:
                raise ValueError(f"{y.shape[0]} class labels for {num_clips} clips")
            y = y.expand(num_clips)
        batch = y.shape[0] if y is not None else (num_clips or 1)
        g = self._generator(seed, generator)
        f = self.codec.temporal_factor
        # a causal VAE decodes f k + 1 frames: the first window is the smallest such count covering num_frames
        first = min(num_frames, self.window) if f == 1 else self._pixel_frames(min(self.latent_window, -(-(num_frames - 1) // f) + 1))
        latents = self._sample(self._noise(batch, first, g), y, how)
        frames = latents_to_frames(self.codec, latents)[:, :num_frames]  # (B, first, H, W, 3)
        if num_frames > frames.shape[1]:
            k = self._context_latents(context_frames)
            return self._continue(frames, latents[:, :, -k:], num_frames - frames.shape[1], y, how, g)
        return PipelineOutput(frames, self.fps)

    @torch.no_grad()
    def extend(self, video, num_new_frames: int, context_frames: int | None = None, steps: int | None = None,
               class_labels=None, seed: int | None = None, sampler: str | None = None,
               generator: torch.Generator | None = None, include_input: bool = True) -> PipelineOutput:
        """The input clip followed by ``num_new_frames`` generated frames; its last frames are the context.

        ``context_frames`` counts pixel frames (default: half the window); with a causal video VAE it is rounded
        down to the VAE's 4k+1 (8k+1) rule. A video file is decoded frame by frame and resized on the fly, so memory
        does not grow with the input's resolution; with ``include_input=False`` only its last ``context_frames`` are
        decoded and the output holds the context and the new frames.
        """
        from .inputs import load_clip

        how = self.resolve_sampler(sampler, steps)
        k_lat = self._context_latents(context_frames)
        k_pix = self._pixel_frames(k_lat)
        frames = load_clip(video, self.resolution, last=None if include_input else k_pix)  # (B, T, r, r, 3) uint8
        if frames.shape[1] < k_pix:
            raise ValueError(f"the input has {frames.shape[1]} frames, fewer than the {k_pix} context frames requested")
        if num_new_frames < 1:
            raise ValueError(f"num_new_frames must be >= 1, got {num_new_frames}")
        y = self._labels(class_labels, frames.shape[0])
        if y is not None and y.shape[0] == 1 and frames.shape[0] > 1:
            y = y.expand(frames.shape[0])
        g = self._generator(seed, generator)
        ctx = self._encode(frames[:, frames.shape[1] - k_pix :])  # (B, C, k_lat, h, w)
        return self._continue(frames, ctx, num_new_frames, y, how, g)

    def _context_latents(self, k_pix: int | None) -> int:
        """Context pixel frames -> context latent frames, within [1, latent window - 1]."""
        f, w = self.codec.temporal_factor, self.latent_window
        k = max(1, w // 2) if k_pix is None else (int(k_pix) - 1) // f + 1
        if k_pix is not None and int(k_pix) < 1 or not 1 <= k < w:
            most = self._pixel_frames(w - 1)
            raise ValueError(f"context_frames must lie in [1, {most}] for a {self.window}-frame window, got {k_pix}")
        return k

    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        pixels = frames_to_pixels(frames, self.config.data.channels).to(self.device)
        return self.codec.encode(pixels)

    def _continue(self, frames, ctx, num_new, y, how, g) -> PipelineOutput:
        """Slide the window: ``ctx`` (B, C, k, h, w) latent frames are context, the rest new; one call per window.

        Only the current window's latents are kept; the output frames are appended as uint8. Per-frame codecs decode
        just the new latents; a causal VAE decodes the whole window and its last f x new frames are kept.
        """
        f, w, k = self.codec.temporal_factor, self.latent_window, ctx.shape[2]
        out, made = [frames], 0
        while made < num_new:
            new = w - k if f > 1 else min(w - k, num_new - made)
            noise = self._noise(ctx.shape[0], self._pixel_frames(k + new), g)  # (B, C, k + new, h, w)
            context = torch.cat([ctx, torch.zeros_like(noise[:, :, k:])], dim=2)
            mask = torch.zeros(ctx.shape[0], k + new, dtype=torch.bool, device=self.device)
            mask[:, :k] = True
            window = self._sample(noise, y, how, context=context, mask=mask)  # (B, C, k + new, h, w)
            if f == 1:
                pix = latents_to_frames(self.codec, window[:, :, k:])
            else:
                pix = latents_to_frames(self.codec, window)[:, -f * new :]
            out.append(pix[:, : num_new - made])
            made += pix.shape[1]
            ctx = window[:, :, -k:]
        return PipelineOutput(np.concatenate(out, axis=1), self.fps)

    @torch.no_grad()
    def condition(self, frames, frame_indices, num_frames: int | None = None, class_labels=None,
                  seed: int | None = None, steps: int | None = None, sampler: str | None = None,
                  generator: torch.Generator | None = None) -> PipelineOutput:
        """One window with given frames at ``frame_indices`` (e.g. first and last: interpolation)."""
        from .inputs import load_clip

        how = self.resolve_sampler(sampler, steps)
        if self.codec.temporal_factor != 1:
            raise NotImplementedError("conditioning on frames at arbitrary positions needs a per-frame codec "
                                      "(identity or image_vae): a causal VAE's latents mix several frames")
        num_frames = num_frames or self.window
        given = load_clip(frames, self.resolution)  # (B, K, H, W, 3)
        idx = [int(i) for i in frame_indices]
        if len(idx) != given.shape[1]:
            raise ValueError(f"{given.shape[1]} frames given for {len(idx)} frame indices")
        if any(not 0 <= i < num_frames for i in idx) or len(set(idx)) != len(idx):
            raise ValueError(f"frame indices must be distinct and lie in [0, {num_frames - 1}], got {idx}")
        y = self._labels(class_labels, given.shape[0])
        g = self._generator(seed, generator)
        noise = self._noise(given.shape[0], num_frames, g)
        context = torch.zeros_like(noise)
        context[:, :, idx] = self._encode(given)
        mask = torch.zeros(given.shape[0], num_frames, dtype=torch.bool, device=self.device)
        mask[:, idx] = True
        latents = self._sample(noise, y, how, context=context, mask=mask)
        frames_out = latents_to_frames(self.codec, latents)
        frames_out[:, idx] = given  # the given frames are returned exactly as given
        return PipelineOutput(frames_out, self.fps)
