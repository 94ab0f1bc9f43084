#!/usr/bin/env bash
# SkyTimelapse: the released frame folders are turned into mp4 clips (one per folder), then cached.
#   SKY=/data/sky_timelapse/sky_train (folders of jpg frames, nested)  VAE=pretrained/Wan2.1-VAE (a local diffusers
#   folder)  bash datasets/skytimelapse/prepare.sh [key=value ...]   (extra config overrides for the cache)
set -euo pipefail
SKY=${SKY:?set SKY to the sky_train folder}
OUT=${OUT:-data/sky_videos}
VAE=${VAE:-pretrained/Wan2.1-VAE}
CACHE=${CACHE:-data/sky_wan_latents}
mkdir -p "$OUT"
FFMPEG=$(python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
find "$SKY" -mindepth 1 -type d | while read -r d; do
  # (find, not ls: a folder of folders has no jpg, and ls's failure ended the script under pipefail)
  # (-nostdin: ffmpeg reads its stdin, which is this loop's list of folders: 4.x ate it, first characters first)
  n=$(find "$d" -maxdepth 1 -name '*.jpg' | wc -l); [ "$n" -ge 17 ] || continue
  name=$(echo "${d#$SKY/}" | tr '/' '_')
  [ -f "$OUT/$name.mp4" ] && continue
  # written under a temporary name, then renamed: a kill mid-file leaves no partial mp4 for a re-run to skip
  "$FFMPEG" -nostdin -y -loglevel error -framerate 16 -pattern_type glob -i "$d/*.jpg" -c:v libx264 -pix_fmt yuv420p \
      -vf "scale=trunc(iw/2)*2:trunc(ih/2)*2" -f mp4 "$OUT/.$name.mp4.tmp" && mv "$OUT/.$name.mp4.tmp" "$OUT/$name.mp4"
done
mfvideo-cache-latents configs/skytimelapse_wan.yaml data.kind=video_folder data.root="$OUT" latents.path="$VAE" "$@" \
  --out "$CACHE"
