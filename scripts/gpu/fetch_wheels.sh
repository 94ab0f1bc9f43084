#!/usr/bin/env bash
# Here (a machine with PyPI): the wheels the GPU machine lacks, for its Python 3.12 / x86-64, into .whl/ (ignored by
# git), pinned to the versions this repo's tests pass with. The GPU machine has torch 2.11, triton, accelerate, einops,
# imageio, safetensors, tqdm, regex, zipp (and Python 3.12 own importlib.metadata, which diffusers uses: the
# importlib_metadata backport 10.x needs lazy_importer, absent there), huggingface-hub 1.33 (diffusers needs >= 1.32: not carried; hub 2.x needs
# httpx2, which it lacks), scikit-learn, tensorboard.
#   bash scripts/gpu/fetch_wheels.sh           # what `run_all.sh all|check|bench|train` import (~10 MB)
#   bash scripts/gpu/fetch_wheels.sh --video   # + decord2 and imageio-ffmpeg (~95 MB: over a call's 64 MiB with
#                                              #   the repo; only for mp4 work there, carried on their own)
# A device call carries the working tree and the carried paths, 64 MiB together: the last line says whether it fits.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
pkgs=(diffusers==0.42.1 omegaconf==2.4.0 xformers==0.0.35 jvp_flash_attention==0.14.0)
[ "${1:-}" = "--video" ] && pkgs+=(decord2==3.4.0 imageio-ffmpeg==0.8.1)
for pkg in "${pkgs[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d .whl "$pkg" || echo "no wheel for $pkg (skipped)"
done
ls -la .whl
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "working tree $((tree / 1048576)) MiB + .whl $((whl / 1048576)) MiB = $(((tree + whl) / 1048576)) MiB of a call's 64 MiB"
