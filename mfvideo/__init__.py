"""mfvideo: one-step image and video generation and video extension with MeanFlow."""

__version__ = "0.1.0"

# Resolved lazily, so ``import mfvideo.method`` stays free of diffusers. diffusers' pipeline loader looks a
# component's class up in its top-level library (``["mfvideo", "STDiT"]`` in model_index.json) and finds the load
# method through the base classes that library exposes.
_LAZY = {"STDiT": ("mfvideo.models", "STDiT"), "MFVideoPipeline": ("mfvideo.pipeline", "MFVideoPipeline"),
         "ModelMixin": ("diffusers", "ModelMixin")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mfvideo' has no attribute {name!r}")
