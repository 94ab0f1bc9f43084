"""From a typed config to objects: the model kwargs and the model (``cfg.method`` is already a ``MeanFlow``)."""

from __future__ import annotations

import dataclasses
import inspect

from .config import Config, ConfigError, ModelConfig

NOT_CONSTRUCTOR_KEYS = ("size", "init_from")  # ModelConfig fields that are not STDiT arguments


def model_kwargs(m: ModelConfig) -> dict:
    """Plain STDiT kwargs: the registry size expanded, every field set in the config on top.

    The keys are ModelConfig's fields, which are STDiT's constructor arguments (a test holds them equal), so a
    new constructor argument is configurable without touching this function.
    """
    from .models import STDiT
    from .models import model_kwargs as size_kwargs

    kw = {}
    if m.size:
        try:
            kw = size_kwargs(m.size)
        except KeyError as e:
            raise ConfigError(f"model.size: {e.args[0]}") from None
    params = inspect.signature(STDiT.__init__).parameters
    for f in dataclasses.fields(m):
        if f.name in NOT_CONSTRUCTOR_KEYS:
            continue
        if f.name not in params:
            raise ConfigError(f"model.{f.name} is not an argument of STDiT")
        if getattr(m, f.name) is not None:
            kw[f.name] = getattr(m, f.name)
    missing = [k for k in ("hidden_size", "depth", "num_heads", "patch_size") if k not in kw]
    if missing:
        raise ConfigError(f"model: no size given and {', '.join('model.' + k for k in missing)} unset")
    if m.in_channels is None or m.num_classes is None:
        raise ConfigError("model.in_channels / model.num_classes unresolved (call resolve_model_config first)")
    return kw


def build_model(m: ModelConfig):
    from .models import STDiT

    return STDiT(**model_kwargs(m))


def resolve_model_config(cfg: Config, latent_channels: int, num_classes: int) -> None:
    """Fill what the data and codec decide (channels, classes), so the saved config is self-contained."""
    if cfg.model.in_channels is None:
        cfg.model.in_channels = latent_channels
    elif cfg.model.in_channels != latent_channels:
        raise ConfigError(f"model.in_channels={cfg.model.in_channels} but the latents have {latent_channels} channels")
    if cfg.model.num_classes is None:
        cfg.model.num_classes = num_classes
    elif 0 < cfg.model.num_classes < num_classes:  # the labels past it would be the null label's, or out of range
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has {num_classes} classes: set "
                          f"model.num_classes={num_classes}, or leave it unset to take the data's")
    if cfg.data.num_frames == 1 and cfg.model.temporal:
        cfg.model.temporal = False  # images: no temporal sub-layers
