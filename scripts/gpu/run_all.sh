#!/usr/bin/env bash
# On the GPU machine, in one call (device tool: carry .whl): install what is missing, then
#   1. the CUDA tests (backend vs fp32 math path: value, tangent, gradient; bf16) and the CPU suite's core files,
#   2. scripts/bench.py (B/2 image and video rows, bf16, xformers / jvp_flash under the JVP),
#   3. the bf16-vs-fp32 tangent error of a B/2 model (scripts/gpu/tangent_error.py),
#   4. a timed GPU training run of the moving-digits recipe (image stage, then video stage).
# Everything is packed into one file, $OUT/gpu_results.tgz (the device tool returns at most 8 files), or
# results/gpu_results.tgz when run by hand: logs, JSON and the GPU-trained model as a pipeline folder.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=/tmp/gpu_out; rm -rf "$out"; mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/env.txt"
timeout 900 python3 -m pytest -q -o addopts="" tests/test_model.py tests/test_method.py 2>&1 | tee "$out/pytest_cuda.txt"
timeout 1200 python3 scripts/bench.py --out "$out/bench_cuda.json" 2>&1 | tee "$out/bench.txt"
timeout 600 python3 scripts/gpu/tangent_error.py --out "$out/tangent_error.json" 2>&1 | tee "$out/tangent.txt"
budget=${TRAIN_SECONDS:-900}
timeout $((budget / 3)) python3 -m mfvideo.cli.train configs/moving_digits_image.yaml train.output_dir=/tmp/gpu_image \
  train.batch_size=512 train.mixed_precision=bf16 train.checkpoint_every=250 2>&1 | tail -3 | tee "$out/train_image.txt"
img=$(ls -d /tmp/gpu_image/checkpoints/step_* | tail -1)
timeout $((budget * 2 / 3)) python3 -m mfvideo.cli.train configs/moving_digits.yaml train.output_dir=/tmp/gpu_video \
  model.init_from="$img" train.batch_size=256 train.mixed_precision=bf16 train.checkpoint_every=250 2>&1 | tail -3 \
  | tee "$out/train_video.txt"
vid=$(ls -d /tmp/gpu_video/checkpoints/step_* | tail -1)
python3 -m mfvideo.cli.export "$vid" --out "$out/moving_digits_gpu" && cp /tmp/gpu_video/log.jsonl "$out/train_video_log.jsonl"
tar czf "${OUT:-results}/gpu_results.tgz" -C /tmp gpu_out && echo "packed ${OUT:-results}/gpu_results.tgz"
