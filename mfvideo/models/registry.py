"""Named model sizes (DiT / MeanFlow): depth, width and heads, with patch sizes 2, 4 and 8."""

from __future__ import annotations

from .stdit import STDiT

# name: (depth, hidden_size, num_heads) -- DiT's table, plus MeanFlow's M.
SIZES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "M": (16, 1024, 16),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)
MODELS = {f"STDiT-{size}/{p}": (size, p) for size in SIZES for p in PATCHES}


def model_kwargs(name: str) -> dict:
    """Constructor kwargs of a named size, e.g. 'STDiT-B/2'."""
    if name not in MODELS:
        raise KeyError(f"unknown model size {name!r}; known: {', '.join(MODELS)}")
    size, patch = MODELS[name]
    depth, hidden, heads = SIZES[size]
    return dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch)


def build_model(name: str | None = None, **kwargs) -> STDiT:
    """A named size (kwargs override it) or a fully specified model from plain kwargs."""
    base = model_kwargs(name) if name else {}
    return STDiT(**{**base, **kwargs})
