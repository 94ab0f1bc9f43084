"""The user's path on the GPU, end to end: the bundled pipeline on CUDA against the CPU (generation, a 24-frame
clip past the window, extension of an unlabelled clip, forwards and backwards, a 24-frame fill between given
frames), MeanFlow's target through a torch.compile'd network, then a short bf16 training run on CUDA whose
checkpoint the pipeline loads and samples from.

    python scripts/gpu/smoke.py [--out smoke.json] [--train-steps 60]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mfvideo.pipeline import MFVideoPipeline  # noqa: E402


def frames(pipe, call, **kw):
    out = getattr(pipe, call)(generator=torch.Generator().manual_seed(0), **kw)
    return np.asarray(out.frames, dtype=np.float32)


def compiled_jvp(net, device) -> dict:
    """MeanFlow's target through ``torch.compile(net)`` against the eager network (the compiled graph drops dual
    tensors: the JVP runs through the module it wraps, session 40), in fp32 and under bf16 autocast."""
    from mfvideo.method import MeanFlow

    g = torch.Generator(device).manual_seed(0)
    z = torch.randn(8, net.config.in_channels, 8, 16, 16, device=device, generator=g)
    v = torch.randn(z.shape, device=device, generator=g)
    t = torch.rand(8, device=device, generator=g)
    r, y = t * torch.rand(8, device=device, generator=g), torch.arange(8, device=device) % 10
    res, compiled = {}, torch.compile(net)
    for name, ctx in (("fp32", torch.autocast(device, enabled=False)), ("bf16", torch.autocast(device, torch.bfloat16))):
        with ctx:
            _, eager = MeanFlow().predict_and_target(net, z, t, r, v, y=y)
            _, through = MeanFlow().predict_and_target(compiled, z, t, r, v, y=y)
        res[name] = {"rel_diff_vs_eager": float((through.float() - eager.float()).norm() / eager.float().norm()),
                     "du_dt_share_of_target": float((eager.float() - v).norm() / eager.float().norm())}
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="smoke.json")
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    a = p.parse_args()
    res = {"device": torch.cuda.get_device_name() if a.device == "cuda" else a.device}
    out = Path(a.out)
    cpu, gpu = (MFVideoPipeline.from_pretrained(None, device=d) for d in ("cpu", a.device))
    for pipe in (cpu, gpu):  # the network's frames: the bundled default's motion copy is a per-frame accept / reject
        pipe.cfg.sample.motion_copy = 0  # that would turn a rounding difference between the devices into a whole frame
    calls = {"generate 4 labelled": ("generate", dict(class_labels=[0, 3, 7, 9])),
             "generate 24 frames, 1 per window": ("generate", dict(class_labels=[2, 5], num_frames=24, frames_per_window=1)),
             "generate 2-NFE": ("generate", dict(class_labels=[1, 8], steps=2))}
    for name, (call, kw) in calls.items():
        t0 = time.perf_counter()
        g = frames(gpu, call, **kw)
        t_gpu = time.perf_counter() - t0
        c = frames(cpu, call, **kw)
        res[name] = {"max_abs_diff_vs_cpu": float(np.abs(g - c).max()), "mean_abs_diff": float(np.abs(g - c).mean()),
                     "gpu_s": t_gpu, "shape": list(g.shape)}
        print(name, res[name], flush=True)
    clip = frames(cpu, "generate", class_labels=[4, 6])[:, :4]  # (B, 4, H, W, 3): the context, labels withheld
    g = frames(gpu, "extend", video=clip, num_new_frames=12, infer_label=True)
    c = frames(cpu, "extend", video=clip, num_new_frames=12, infer_label=True)
    res["extend unlabelled 4 -> +12"] = {"max_abs_diff_vs_cpu": float(np.abs(g - c).max()),
                                         "mean_abs_diff": float(np.abs(g - c).mean()), "shape": list(g.shape)}
    print("extend", res["extend unlabelled 4 -> +12"], flush=True)
    for name, call, kw in [("extend backward 4 -> 12 before", "extend", dict(video=clip, num_new_frames=12, backward=True)),
                           ("condition 24 frames, 2 given each end", "condition",
                            dict(frames=np.concatenate([clip[:, :2], clip[:, 2:4]], 1), frame_indices=[0, 1, 22, 23],
                                 num_frames=24))]:
        g, c = frames(gpu, call, **kw), frames(cpu, call, **kw)
        res[name] = {"max_abs_diff_vs_cpu": float(np.abs(g - c).max()), "mean_abs_diff": float(np.abs(g - c).mean()),
                     "shape": list(g.shape)}
        print(name, res[name], flush=True)
    # diffusers' habits on the GPU: a generator on the device, one per clip, latents out and decoded, a bf16 pipeline
    dev_gen = [torch.Generator(a.device).manual_seed(s) for s in (0, 1)]
    lat = gpu.generate(num_frames=12, class_labels=[3, 5], generator=dev_gen, output_type="latent").frames
    again = gpu.generate(num_frames=12, class_labels=[5], generator=torch.Generator(a.device).manual_seed(1),
                         output_type="latent").frames
    res["device generators, latents"] = {"latent_device": str(lat.device), "clip_alone_max_diff": float(
        (lat[1] - again[0]).abs().max()), "decoded_vs_uint8": float(np.abs(gpu.decode_latents(lat, "uint8").astype(
            int) - gpu.generate(num_frames=12, class_labels=[3, 5], generator=[torch.Generator(a.device).manual_seed(
                s) for s in (0, 1)], output_type="uint8").frames.astype(int)).max())}
    half = MFVideoPipeline.from_pretrained(None, device=a.device, dtype=torch.bfloat16)
    h = frames(half, "generate", class_labels=[0, 3, 7, 9])
    res["bf16 pipeline vs fp32 cpu"] = {"mean_abs_diff": float(np.abs(h - frames(cpu, "generate", class_labels=[
        0, 3, 7, 9])).mean())}
    print("device generators", res["device generators, latents"], res["bf16 pipeline vs fp32 cpu"], flush=True)
    try:  # diffusers' xformers switch reaches our attention; without a working build it runs as sdpa
        half.enable_xformers_memory_efficient_attention()
        x = frames(half, "generate", class_labels=[0, 3, 7, 9])
        res["bf16 pipeline, enable_xformers vs sdpa"] = {"mean_abs_diff": float(np.abs(x - h).mean())}
    except ModuleNotFoundError as e:
        res["bf16 pipeline, enable_xformers vs sdpa"] = {"skipped": str(e)}
    print("xformers switch", res["bf16 pipeline, enable_xformers vs sdpa"], flush=True)
    res["jvp through torch.compile"] = compiled_jvp(gpu.transformer, a.device)
    print("jvp through torch.compile", res["jvp through torch.compile"], flush=True)
    out.write_text(json.dumps(res, indent=1))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mfvideo.cli.train", "configs/moving_digits.yaml",
                               f"train.output_dir={tmp}/run", f"train.max_steps={a.train_steps}", "train.batch_size=256",
                               "train.mixed_precision=bf16", f"train.checkpoint_every={a.train_steps}", "train.log_every=20"],
                              cwd=ROOT, capture_output=True, text=True)
        res["train"] = {"rc": proc.returncode, "seconds": time.perf_counter() - t0, "tail": proc.stdout[-1500:] + proc.stderr[-1500:]}
        ckpts = sorted(Path(tmp, "run", "checkpoints").glob("step_*"))
        if ckpts:
            log = [json.loads(line) for line in Path(tmp, "run", "log.jsonl").read_text().splitlines() if line.strip()]
            res["train"]["log"] = log[-3:]
            pipe = MFVideoPipeline.from_pretrained(ckpts[-1], device=a.device)
            f = frames(pipe, "generate", class_labels=[0, 1])
            res["train"]["sample_finite"] = bool(np.isfinite(f).all())
        print("train", {k: v for k, v in res["train"].items() if k != "tail"}, flush=True)
        print(res["train"]["tail"][-1200:])
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
