"""mfvideo: one-step image and video generation and video extension with MeanFlow."""

__version__ = "0.1.0"
