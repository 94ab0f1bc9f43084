#!/usr/bin/env bash
# The bundled model's recipe after its base training (docs/bundled_model.md, stages 3-6), from any stage-2 checkpoint:
#   bash scripts/bundled_recipe_after_base.sh BASE_CHECKPOINT OUT_PREFIX
# writes OUT_PREFIX{P,_reader,_post,_dmd}: the one-step distillation towards the frozen base's two-step jump, the
# context reader, adversarial post-training, then distribution matching at --dmd-ratio 3 (the bundled setting).
# About 1 h 50 min on 2 CPU cores. Judge OUT_PREFIX_dmd against the bundled model with scripts/probe_generation.py,
# scripts/evaluate_digits.py and scripts/digit_sheets.py before bundling it.
set -euo pipefail
X=${1:?a stage-2 checkpoint (runs/x/checkpoints/step_00008000)}
OUT=${2:?an output prefix (runs/x)}
mfvideo-train configs/moving_digits.yaml model.init_from="$X" train.teacher="$X" method.split_consistency=0.25 \
  method.cfg_kappa=0.6667 train.lr=1e-4 train.warmup_steps=50 train.lr_schedule=linear train.max_steps=1000 \
  train.context_masks.first=0.3 train.context_masks.ends=0.1 train.sample_every=0 train.output_dir="${OUT}P" \
  train.resume=auto
mfvideo-fit-reader "${OUT}P/checkpoints/step_00001000" --out "${OUT}_reader"
mfvideo-post-train "${OUT}_reader" --out "${OUT}_post" --steps 1000
mfvideo-post-train "${OUT}_post" --out "${OUT}_dmd" --steps 1000 --dmd-ratio 3
echo "done: ${OUT}_dmd"
