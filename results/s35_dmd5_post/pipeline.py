from mfvideo.pipeline import MFVideoPipeline  # noqa: F401
