"""Generation and video extension: the 1-NFE pipeline, mp4 in and out."""

from ..io import save_video
from .pipeline import BUNDLED, MFVideoPipeline, PipelineOutput

__all__ = ["BUNDLED", "MFVideoPipeline", "PipelineOutput", "save_video"]
