"""Codecs between pixels and latents: identity, a per-frame image VAE, and diffusers' video VAEs."""

from .base import Codec, IdentityCodec


def build_codec(cfg, pixel_channels: int = 3) -> Codec:
    """A codec from a ``LatentsConfig`` (kind, local path)."""
    if cfg.kind == "identity":
        return IdentityCodec(pixel_channels)
    from .vae import build_vae_codec

    return build_vae_codec(cfg)


__all__ = ["Codec", "IdentityCodec", "build_codec"]
