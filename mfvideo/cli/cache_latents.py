"""mfvideo-cache-latents CONFIG [key=value ...] --out DIR: encode a dataset once into sharded safetensors.

Resumable (finished shards are kept and skipped; a re-run with other settings into the same folder is refused, not
mixed in) and multi-process (``accelerate launch`` / torchrun: shard s is
encoded by rank s % world). Train on the result with ``data.kind=latent_cache data.root=DIR``.
"""

from __future__ import annotations

from . import ArgumentParser, check_output_dir, positive_int, user_errors


@user_errors
def main(argv=None):
    p = ArgumentParser(prog="mfvideo-cache-latents", description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--shard-size", type=positive_int, default=256)
    p.add_argument("--limit", type=positive_int, default=None, help="encode only the first N items")
    args = p.parse_intermixed_args(argv)  # key=value overrides before or after the options
    check_output_dir(args.out)

    import dataclasses

    from ..config import load_config
    from ..data import build_dataset
    from ..data.latent_cache import cache_dataset, write_manifest
    from ..latents import build_codec
    from ..train.dist import make_accelerator

    cfg = load_config(args.config, args.overrides)
    acc = make_accelerator()
    images = cfg.data.num_frames == 1
    data_cfg = dataclasses.replace(cfg.data, hflip=False)  # images: both views are stored
    dataset = build_dataset(data_cfg, split=cfg.data.split)
    codec = build_codec(cfg.latents, cfg.data.channels).to(acc.device)
    if images and not hasattr(codec, "encode_moments"):
        raise ValueError("image caches need latents.kind=image_vae or dc_ae (they store the posterior mean and std)")
    settings = {"data": _resolved(data_cfg, "root", "manifest", "class_names"),
                "latents": _resolved(cfg.latents, "path")}
    cache_dataset(dataset, codec, args.out, args.shard_size, images, acc.process_index, acc.num_processes,
                  acc.device, args.limit, progress=acc.is_main_process, settings=settings)
    acc.wait_for_everyone()
    if acc.is_main_process:
        n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        extra = {"config": cfg.data.__dict__, "classes": getattr(dataset, "classes", None) or None}  # names by id
        path = write_manifest(args.out, codec, n, args.shard_size, images, extra)
        print(f"cached {n} items in {path.parent}")
    from ..train.dist import exit_now, leave_process_group

    if leave_process_group():
        exit_now(0)
    return 0


def _resolved(section, *paths: str) -> dict:
    """A config section as the cache records it: its path settings absolute, so a re-run from another folder is
    the same cache."""
    import dataclasses
    import os

    d = dataclasses.asdict(section)
    return {k: os.path.abspath(v) if k in paths and v else v for k, v in d.items()}


if __name__ == "__main__":
    main()
