"""VAE codecs from diffusers: per-frame image autoencoders (AutoencoderKL, AutoencoderDC) and causal video VAEs.

Each codec owns its normalisation, read from the VAE's own config (never a constant typed elsewhere):
- AutoencoderKL (SD-VAE, SD3 / Flux VAEs): (z - shift_factor) * scaling_factor (0.18215 for SD-VAE ft-mse), per frame;
- AutoencoderDC (DC-AE, Sana's: 32x space, 32 channels; deterministic, no posterior): z * scaling_factor, per frame;
- AutoencoderKLWan: per-channel (z - latents_mean) / latents_std; T = 4k + 1, 8x space;
- AutoencoderKLCogVideoX, AutoencoderKLHunyuanVideo: z * scaling_factor; T = 4k + 1, 8x space;
- AutoencoderKLLTXVideo: per-channel (z - latents_mean) * scaling_factor / latents_std; T = 8k + 1, 32x space.
Causal video VAEs silently drop frames when T breaks their rule: ``check_frames`` refuses such clips.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from .base import Codec

VIDEO_VAES = {
    "wan": "AutoencoderKLWan",
    "cogvideox": "AutoencoderKLCogVideoX",
    "hunyuan": "AutoencoderKLHunyuanVideo",
    "ltx": "AutoencoderKLLTXVideo",
}


IMAGE_VAES = {"image_vae": "AutoencoderKL", "dc_ae": "AutoencoderDC"}  # per frame
KINDS = ("identity", *IMAGE_VAES, *VIDEO_VAES)  # latents.kind
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # latents.dtype


def _dtype(name: str) -> torch.dtype:
    return DTYPES[name]


class ImageVAECodec(Codec):
    """A 2-D autoencoder applied frame by frame: (B, 3, T, H, W) <-> (B, c, T, H/f, W/f). ``AutoencoderKL`` (a
    diagonal Gaussian posterior) or ``AutoencoderDC`` (deterministic: its latent is the mean, its std zero)."""

    def __init__(self, vae, sample_posterior: bool = False):
        super().__init__(next(vae.parameters()).device)  # a VAE already on the GPU: encode there
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.latent_channels = cfg.latent_channels
        blocks = cfg.get("block_out_channels") or cfg.get("encoder_block_out_channels")  # KL | DC
        self.spatial_factor = 2 ** (len(blocks) - 1)
        self.scale = float(cfg.scaling_factor)
        self.shift = float(cfg.get("shift_factor") or 0.0)
        self.sample_posterior = sample_posterior

    def _posterior(self, pixels):
        """The encoder's output per frame: a ``DiagonalGaussianDistribution`` (KL) or the latent itself (DC)."""
        out = self.vae.encode(rearrange(pixels, "b c t h w -> (b t) c h w").to(self.vae.dtype))
        dist = getattr(out, "latent_dist", None)
        return out.latent if dist is None else dist

    @torch.no_grad()
    def encode(self, pixels, generator=None):
        b = pixels.shape[0]
        dist = self._posterior(pixels)
        if isinstance(dist, torch.Tensor):  # deterministic
            z = dist
        else:
            z = dist.sample(generator) if self.sample_posterior else dist.mean
        z = (z.float() - self.shift) * self.scale
        return rearrange(z, "(b t) c h w -> b c t h w", b=b)

    @torch.no_grad()
    def encode_moments(self, pixels):
        """Unnormalised posterior mean and std per frame (the official MeanFlow cache stores both; a deterministic
        encoder's std is zero)."""
        b = pixels.shape[0]
        dist = self._posterior(pixels)
        mean, std = (dist, torch.zeros_like(dist)) if isinstance(dist, torch.Tensor) else (dist.mean, dist.std)
        return tuple(rearrange(m.float(), "(b t) c h w -> b c t h w", b=b) for m in (mean, std))

    def normalise(self, z):
        return (z - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents):
        b = latents.shape[0]
        z = rearrange(latents, "b c t h w -> (b t) c h w") / self.scale + self.shift
        x = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        return rearrange(x, "(b t) c h w -> b c t h w", b=b).clamp(-1, 1)


class VideoVAECodec(Codec):
    """A causal video VAE from diffusers with its own frame rule and normalisation."""

    def __init__(self, vae, kind: str, sample_posterior: bool = False):
        super().__init__(next(vae.parameters()).device)  # a VAE already on the GPU: stats and encoding there
        if kind not in VIDEO_VAES:
            raise ValueError(f"unknown video VAE {kind!r}; known: {list(VIDEO_VAES)}")
        self.vae = vae.eval().requires_grad_(False)
        self.kind = kind
        self.sample_posterior = sample_posterior
        cfg = vae.config
        if kind == "wan":
            self.latent_channels = cfg.z_dim
            self.temporal_factor = 2 ** sum(cfg.temperal_downsample)
            # patch_size: Wan 2.2's VAE folds 2 x 2 pixels into channels; diffusers before 0.35 has no such key
            self.spatial_factor = 2 ** len(cfg.temperal_downsample) * (cfg.get("patch_size") or 1)
        elif kind == "cogvideox":
            self.latent_channels = cfg.latent_channels
            self.temporal_factor = int(cfg.temporal_compression_ratio)
            self.spatial_factor = 2 ** (len(cfg.block_out_channels) - 1)
        elif kind == "hunyuan":
            self.latent_channels = cfg.latent_channels
            self.temporal_factor = int(cfg.temporal_compression_ratio)
            self.spatial_factor = int(cfg.spatial_compression_ratio)
        else:  # ltx
            self.latent_channels = cfg.latent_channels
            scalings = sum(cfg.spatio_temporal_scaling)
            self.temporal_factor = cfg.patch_size_t * 2**scalings
            self.spatial_factor = cfg.patch_size * 2**scalings
        mean, std, scale = self._stats()
        self.register_buffer("mean", mean.view(1, -1, 1, 1, 1).to(self.device), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1, 1).to(self.device), persistent=False)
        self.scale = scale

    def _stats(self):
        cfg, c = self.vae.config, self.latent_channels
        zeros, ones = torch.zeros(c), torch.ones(c)
        if self.kind == "wan":
            return torch.tensor(cfg.latents_mean, dtype=torch.float32), torch.tensor(cfg.latents_std, dtype=torch.float32), 1.0
        if self.kind == "ltx":
            return self.vae.latents_mean.float().cpu(), self.vae.latents_std.float().cpu(), float(cfg.scaling_factor)
        return zeros, ones, float(cfg.scaling_factor)

    @torch.no_grad()
    def encode(self, pixels, generator=None):
        self.check_frames(pixels.shape[2])
        dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        z = (dist.sample(generator) if self.sample_posterior else dist.mode()).float()
        return self.normalise(z)

    def normalise(self, z):
        return (z - self.mean) * self.scale / self.std

    @torch.no_grad()
    def decode(self, latents):
        z = latents * self.std / self.scale + self.mean
        return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1)


def build_vae_codec(cfg) -> Codec:
    """A codec from a ``LatentsConfig``: ``path`` is a local diffusers VAE folder, or a pipeline folder holding one
    in ``vae/`` (never a hub id)."""
    import diffusers

    from ..config import ConfigError

    if not cfg.path:
        raise ConfigError(f"latents.kind={cfg.kind} needs latents.path, a local VAE folder")
    names = {**IMAGE_VAES, **VIDEO_VAES}
    if cfg.kind not in names:
        raise ConfigError(f"unknown latents.kind {cfg.kind!r}; known: identity, {', '.join(names)}")
    cls = getattr(diffusers, names[cfg.kind])
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise ConfigError(f"latents.path={cfg.path}: no such folder (a local diffusers VAE folder: a hub id is not "
                          f"fetched; download it first, e.g. huggingface-cli download <repo> --local-dir <folder>)")
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"  # a whole pipeline's folder (Wan, CogVideoX, SD...): its VAE
    held = _class_name(folder / "config.json")
    if held and held != names[cfg.kind]:  # diffusers' own error is a shape mismatch or a TypeError deep inside
        kinds = {v: k for k, v in names.items()}
        fix = (f"latents.kind={kinds[held]}" if held in kinds else
               "a VAE of a class mfvideo reads: " + ", ".join(f"{v} ({k})" for k, v in names.items()))
        raise ConfigError(f"latents.path={cfg.path} holds an {held}, not the {names[cfg.kind]} latents.kind="
                          f"{cfg.kind} reads: {fix}")
    try:
        vae = cls.from_pretrained(folder, torch_dtype=_dtype(cfg.dtype), local_files_only=True)
    except Exception as e:  # missing folder, wrong class, unreadable weights
        raise ConfigError(f"latents.path={cfg.path}: cannot load {names[cfg.kind]} ({str(e).splitlines()[0][:200]})") from None
    return codec_from_vae(cfg.kind, vae, cfg.sample_posterior)


def _class_name(config: Path) -> str | None:
    """The diffusers class a saved folder's ``config.json`` names (None where it names none or cannot be read: the
    load then says what is wrong)."""
    import json

    try:
        name = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def codec_from_vae(kind: str, vae, sample_posterior: bool = False) -> Codec:
    """Wrap an already loaded diffusers VAE (e.g. a pipeline's ``vae`` component) in the codec of ``kind``."""
    if kind in IMAGE_VAES:
        return ImageVAECodec(vae, sample_posterior)
    return VideoVAECodec(vae, kind, sample_posterior)
