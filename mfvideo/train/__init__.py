"""Training: the loop, checkpoints and resume, EMA, distribution (DDP / FSDP), the post-training's adversarial
parts, stopping cleanly and one run per folder. Nothing is imported here: each module is imported where it is used
(``mfvideo.train.loop``, ...), and ``mfvideo.pipeline`` imports none of them."""
