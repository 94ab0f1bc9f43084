#!/usr/bin/env bash
# Here (a machine with PyPI): the wheels the GPU machine lacks, for its Python 3.12 / x86-64, into .whl/ (ignored by
# git). The GPU machine has torch, triton, accelerate, einops, imageio, safetensors, tqdm, scikit-learn, tensorboard.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for pkg in diffusers omegaconf antlr4-python3-runtime==4.9.3 imageio-ffmpeg decord2 jvp_flash_attention \
           huggingface_hub regex importlib_metadata zipp; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d .whl "$pkg" || echo "no wheel for $pkg (skipped)"
done
ls -la .whl
