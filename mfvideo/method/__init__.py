"""The MeanFlow method: loss, (t, r) sampling, training-time guidance, context masks, samplers, and reading a
clip's class off the model.

Imports torch and nothing else of mfvideo; works with any callable ``net(z, t, r, y=None)``.
"""

from .classify import class_errors, infer_class
from .masks import KINDS as MASK_KINDS
from .masks import context_mask, sample_context_masks
from .meanflow import NULL_CLASS, MeanFlow
from .samplers import SAMPLERS, consistency_sample, euler_sample, meanflow_sample, sample, time_grid

__all__ = [
    "MASK_KINDS", "NULL_CLASS", "SAMPLERS", "MeanFlow",
    "class_errors", "consistency_sample", "context_mask", "euler_sample", "infer_class", "meanflow_sample", "sample",
    "sample_context_masks", "time_grid",
]
