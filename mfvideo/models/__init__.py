"""Networks only: never imports the method or the data."""

from .attention import BACKENDS, Attention, attention, math_attention, xformers_available
from .registry import MODELS, SIZES, build_model, model_kwargs
from .stdit import STDiT

__all__ = [
    "BACKENDS", "MODELS", "SIZES", "Attention", "STDiT",
    "attention", "build_model", "math_attention", "model_kwargs", "xformers_available",
]
