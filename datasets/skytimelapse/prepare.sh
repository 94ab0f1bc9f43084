#!/usr/bin/env bash
# SkyTimelapse: the released frame folders are turned into mp4 clips (one per folder), then cached.
#   SKY=/data/sky_timelapse/sky_train (folders of jpg frames)
set -euo pipefail
SKY=${SKY:?set SKY to the sky_train folder}
OUT=${OUT:-data/sky_videos}
mkdir -p "$OUT"
FFMPEG=$(python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
find "$SKY" -mindepth 1 -type d | while read -r d; do
  n=$(ls "$d"/*.jpg 2>/dev/null | wc -l); [ "$n" -ge 17 ] || continue
  name=$(echo "${d#$SKY/}" | tr '/' '_')
  [ -f "$OUT/$name.mp4" ] || "$FFMPEG" -loglevel error -framerate 16 -pattern_type glob -i "$d/*.jpg" \
      -c:v libx264 -pix_fmt yuv420p -vf "scale=trunc(iw/2)*2:trunc(ih/2)*2" "$OUT/$name.mp4"
done
mfvideo-cache-latents configs/skytimelapse_wan.yaml --out data/sky_wan_latents data.kind=video_folder data.root="$OUT"
