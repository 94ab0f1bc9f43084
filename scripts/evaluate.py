"""FID / FVD of a checkpoint against real clips, with local TorchScript metric networks.

    python scripts/evaluate.py --checkpoint DIR --network i3d_torchscript.pt --kind i3d \
        --num-clips 2048 --num-frames 16 --out results/fvd.json          # FVD16 (StyleGAN-V protocol)
    python scripts/evaluate.py --checkpoint DIR --network inception-2015-12-05.pt --kind inception --num-clips 50000

    python scripts/evaluate.py --checkpoint DIR --network inception-2015-12-05.pt --kind inception --num-clips 50000 \
        --real-stats VIRTUAL_imagenet256_labeled.npz                    # ImageNet FID-50K against ADM's reference
    python scripts/evaluate.py --checkpoint DIR --network i3d_torchscript.pt --kind i3d --context-frames 4  # extensions

Real clips come from the checkpoint's data config, a latent cache's from the dataset it was encoded from
(``--real-split``, by default its test or val split where it has one, else its training split), or their statistics
from ``--real-stats`` (an ``.npz`` of mu and sigma); computed ones are cached under ``--cache``. An image model is
scored on single images (``--num-frames`` 1), a video model on 16-frame clips. Sampling is resumable (per-batch
feature files under ``--work``, in a folder of their own for each model and protocol) and splits across processes
(``torchrun --nproc_per_node N scripts/evaluate.py ...``).
"""

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from mfvideo.cli import check_output_path, user_errors


@user_errors
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--network", required=True, help="TorchScript metric network file")
    p.add_argument("--kind", choices=["inception", "i3d"], required=True)
    p.add_argument("--num-clips", type=int, default=2048)
    p.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: 16; 1 for an image model)")
    p.add_argument("--real-split", default=None, help="default: test or val where the data has it, else train")
    p.add_argument("--real-stats", default=None, help=".npz of the real clips' mu and sigma (e.g. ADM's reference)")
    p.add_argument("--context-frames", type=int, default=None,
                   help="score extensions (video prediction): real clips' first K frames continued with no label")
    p.add_argument("--steps", type=int, default=None, help="per window (default: 1 for MeanFlow, 50 for Euler)")
    p.add_argument("--sampler", choices=["meanflow", "euler"], default=None,
                   help="default: euler for a model trained as flow matching (ratio_r_neq_t=0), else meanflow")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/eval")
    p.add_argument("--cache", default="runs/eval/stats")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.out:
        check_output_path(a.out, "--out")  # before hours of sampling, not after

    from mfvideo.eval.frechet import cached_stats, feature_stats, frechet_distance
    from mfvideo.eval.networks import FeatureNetwork
    from mfvideo.eval.real import RealClips, load_stats, pixel_source, real_split
    from mfvideo.eval.sampling import sample_features
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.train.dist import make_accelerator

    acc = make_accelerator()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint, device=acc.device)
    sampler, steps = pipe.resolve_sampler(a.sampler, a.steps)
    image_model = pipe.window == 1
    frames = a.num_frames if a.num_frames is not None else 1 if image_model else 16
    if image_model and frames != 1:
        raise ValueError(f"--num-frames {frames}: this is an image model (1-frame windows); it is scored on images")
    if a.kind == "i3d" and frames < 2:
        raise ValueError("--kind i3d (FVD) scores clips; an image model's FID is --kind inception")
    k = a.context_frames
    if k is not None and image_model:
        raise ValueError("--context-frames: an image model continues nothing; it is scored on generated images")
    if k is not None and not 1 <= k < frames:
        raise ValueError(f"--context-frames {k}: the given frames of a {frames}-frame clip are 1 .. {frames - 1}")
    real_stats = load_stats(a.real_stats) if a.real_stats else None
    source = pixel_source(pipe.cfg.data) if real_stats is None or k else None  # extensions continue real clips
    split = real_split(source, a.real_split) if source else None
    contexts = RealClips(source, split, frames, a.num_clips, a.batch_size) if k else None
    if contexts is not None and contexts.n < a.num_clips:
        print(f"the {split} split has {contexts.n} clips: {contexts.n} extensions, not {a.num_clips}")
    clips = contexts.n if contexts is not None else a.num_clips
    net = FeatureNetwork(a.network, a.kind, device=str(acc.device))
    if real_stats is not None:  # statistics of another network are said before any clip is made, not after 50,000
        dim = net.features(np.zeros((1, frames, pipe.resolution, pipe.resolution, 3), np.uint8)).shape[-1]
        if dim != real_stats[0].size:
            raise ValueError(f"--real-stats {a.real_stats} holds {real_stats[0].size}-d statistics, the network's "
                             f"features are {dim}-d: statistics of another network")
    protocol = dict(kind=a.kind, network=Path(a.network).name, network_bytes=Path(a.network).stat().st_size,
                    clips=clips, frames=frames, resolution=pipe.resolution, split=split, sampler=sampler,
                    steps=steps, data=dataclasses.asdict(source) if source else None,
                    real_stats=str(a.real_stats) if real_stats else None,
                    real_order="sample_order")  # a folder's real clips: a shuffled sample, not its first classes
    run = dict(num_frames=frames, batch_size=a.batch_size, steps=steps, seed=a.seed, sampler=sampler, context_frames=k)
    # features of this model under this protocol only: another checkpoint of the same name, or other frames, a
    # reused folder had scored with the first one's features
    key = json.dumps([_fingerprint(pipe.transformer), run, protocol["network"], protocol["network_bytes"]], default=str)
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    work = Path(a.work) / f"{Path(a.checkpoint or 'bundled').name}_{a.kind}_{sampler}{steps}_{tag}"
    context = None if contexts is None else contexts.batch
    fake = sample_features(pipe, net.features, work, clips, **run, rank=acc.process_index, world=acc.num_processes,
                           progress=acc.is_main_process, context=context)
    from mfvideo.train.dist import exit_now, leave_process_group

    multi = leave_process_group()  # the last collective: the main process scores alone from here
    if not acc.is_main_process:
        exit_now(0)  # no interpreter teardown for a rank of several (its gloo threads can abort it: train/dist.py)
    fake = sample_features(pipe, net.features, work, clips, **run, progress=False, context=context)

    def real_features():
        real = contexts if contexts is not None else RealClips(source, split, frames, clips, a.batch_size)
        return np.concatenate([net.features(c) for c in real])  # extensions: the very clips they continued

    if real_stats is None:
        print(f"real clips: {source.root or source.kind}, split {split}")
        real_stats = cached_stats(json.dumps(protocol, sort_keys=True, default=str), a.cache, real_features)
    score = frechet_distance(*feature_stats(fake), *real_stats)
    name = ("FVD" if a.kind == "i3d" else "FID") + ("" if k is None else f" of extensions from {k} frames")
    result = {name: score, "protocol": {**protocol, "context_frames": k}, "num_generated": int(len(fake))}
    print(f"{name}{frames if a.kind == 'i3d' else ''} = {score:.2f} ({len(fake)} generated features)")
    if a.out:
        from mfvideo.io import atomic_path

        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(a.out) as tmp:  # a kill never leaves half a JSON file
            tmp.write_text(json.dumps(result, indent=1, default=str))
    if multi:
        exit_now(0)
    return 0


def _fingerprint(model) -> list:
    """What tells one set of weights from another, cheaply on any device: each tensor's name, shape and two sums."""
    with torch.no_grad():
        return [(k, list(v.shape), float(v.double().sum()), float(v.double().abs().sum()))
                for k, v in model.state_dict().items()]


if __name__ == "__main__":
    main()
