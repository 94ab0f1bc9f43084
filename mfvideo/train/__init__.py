"""Training: the loop, checkpoints and resume, EMA, distribution (DDP / FSDP), the post-training's adversarial
parts, and stopping cleanly. Modules are imported where used (``mfvideo.train.loop``, ...), so that the pipeline and
the sampling commands never import the training stack."""
