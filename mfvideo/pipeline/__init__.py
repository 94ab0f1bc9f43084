"""Generation and video extension: the 1-NFE pipeline (a diffusers DiffusionPipeline), mp4 in and out."""

from ..io import save_video
from .pipeline import BUNDLED, FrameStream, MFVideoPipeline, MFVideoPipelineOutput, PipelineOutput

__all__ = ["BUNDLED", "FrameStream", "MFVideoPipeline", "MFVideoPipelineOutput", "PipelineOutput", "save_video"]
