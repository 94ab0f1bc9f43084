"""FID / FVD of a checkpoint against real clips, with local TorchScript metric networks.

    python scripts/evaluate.py --checkpoint DIR --network i3d_torchscript.pt --kind i3d \
        --num-clips 2048 --num-frames 16 --out results/fvd.json          # FVD16 (StyleGAN-V protocol)
    python scripts/evaluate.py --checkpoint DIR --network inception-2015-12-05.pt --kind inception --num-clips 50000

Real clips come from the checkpoint's data config (``--real-split``, default test); their statistics are cached
under ``--cache``. Sampling is resumable (per-batch feature files under ``--work``) and splits across processes
(``torchrun --nproc_per_node N scripts/evaluate.py ...``).
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from mfvideo.frames import pixels_to_uint8

from mfvideo.cli import user_errors


@user_errors
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--network", required=True, help="TorchScript metric network file")
    p.add_argument("--kind", choices=["inception", "i3d"], required=True)
    p.add_argument("--num-clips", type=int, default=2048)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--real-split", default="test")
    p.add_argument("--steps", type=int, default=None, help="per window (default: 1 for MeanFlow, 50 for Euler)")
    p.add_argument("--sampler", choices=["meanflow", "euler"], default=None,
                   help="default: euler for a model trained as flow matching (ratio_r_neq_t=0), else meanflow")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/eval")
    p.add_argument("--cache", default="runs/eval/stats")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    from mfvideo.data import build_dataset, sample_order
    from mfvideo.eval.frechet import cached_stats, feature_stats, frechet_distance
    from mfvideo.eval.networks import FeatureNetwork
    from mfvideo.eval.sampling import sample_features
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.train.dist import make_accelerator

    acc = make_accelerator()
    pipe = MFVideoPipeline.from_pretrained(a.checkpoint, device=acc.device)
    sampler, steps = pipe.resolve_sampler(a.sampler, a.steps)
    net = FeatureNetwork(a.network, a.kind, device=str(acc.device))
    protocol = dict(kind=a.kind, network=Path(a.network).name, clips=a.num_clips, frames=a.num_frames,
                    resolution=pipe.resolution, split=a.real_split, sampler=sampler, steps=steps,
                    data=dataclasses.asdict(pipe.cfg.data),
                    real_order="sample_order")  # a folder's real clips: a shuffled sample, not its first classes
    work = Path(a.work) / f"{Path(a.checkpoint or 'bundled').name}_{a.kind}_{sampler}{steps}"
    run = dict(num_frames=a.num_frames, batch_size=a.batch_size, steps=steps, seed=a.seed, sampler=sampler)
    fake = sample_features(pipe, net.features, work, a.num_clips, **run, rank=acc.process_index,
                           world=acc.num_processes, progress=acc.is_main_process)
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return 0
    fake = sample_features(pipe, net.features, work, a.num_clips, **run, progress=False)

    def real_features():
        data = dataclasses.replace(pipe.cfg.data, num_frames=a.num_frames, split=a.real_split)
        ds = build_dataset(data)
        order, n = sample_order(data, len(ds)), min(a.num_clips, len(ds))
        feats = []
        for i in range(0, n, a.batch_size):
            x = torch.stack([ds[int(j)]["x"] for j in order[i : min(i + a.batch_size, n)]])  # (B, C, T, H, W)
            feats.append(net.features(pixels_to_uint8(x)))  # (B, T, H, W, 3) uint8
        return np.concatenate(feats)

    mu_r, s_r = cached_stats(json.dumps(protocol, sort_keys=True, default=str), a.cache, real_features)
    score = frechet_distance(*feature_stats(fake), mu_r, s_r)
    name = "FVD" if a.kind == "i3d" else "FID"
    result = {name: score, "protocol": protocol, "num_generated": int(len(fake))}
    print(f"{name}{a.num_frames if a.kind == 'i3d' else ''} = {score:.2f} ({len(fake)} generated features)")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    main()
