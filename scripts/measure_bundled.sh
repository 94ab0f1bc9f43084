#!/usr/bin/env bash
# Every measurement the README and docs report for the bundled moving-digits model, for any pipeline or checkpoint
# folder (the bundled one by default), with the same noise as the published figures:
#   bash scripts/measure_bundled.sh [CHECKPOINT] [PREFIX]
# writes PREFIX_{bundled_settings,long_generation,long_generation_first2,unlabelled_generation,context_length,
# short_clips,bundled_read_label}.json (PREFIX defaults to results/measured) and the sample sheets under PREFIX_sheets/.
# About 30 min on 2 CPU cores. Where each figure is reported: docs/bundled_model.md and docs/usage.md.
set -euo pipefail
CKPT=${1:-mfvideo/assets/moving_digits}
OUT=${2:-results/measured}
mkdir -p "$(dirname "$OUT")"
step() { echo "== $(date +%H:%M:%S) $*" >&2; "$@"; }
step python scripts/evaluate_digits.py --checkpoint "bundled=$CKPT" --steps 1 2 --frames-per-window 4 1 \
  --motion-copy 0 4 --n 200 --long-frames 64 --out "${OUT}_bundled_settings.json"
step python scripts/probe_long_generation.py --checkpoint "$CKPT" --out "${OUT}_long_generation.json"
step python scripts/probe_long_generation.py --checkpoint "$CKPT" --first-window-steps 2 --held-labelled \
  --out "${OUT}_long_generation_first2.json"
step python scripts/probe_unlabelled_generation.py --checkpoint "$CKPT" --out "${OUT}_unlabelled_generation.json"
step python scripts/probe_context_length.py --checkpoint "$CKPT" --out "${OUT}_context_length.json"
step python scripts/probe_short_clips.py --checkpoint "$CKPT" --out "${OUT}_short_clips.json"
step python scripts/evaluate_digits.py --checkpoint "bundled=$CKPT" --steps 1 --n 200 --long-frames 64 --read-label \
  --out "${OUT}_bundled_read_label.json"
step python scripts/digit_sheets.py --checkpoint "$CKPT" --out "${OUT}_sheets"
echo "done: ${OUT}_*.json" >&2
