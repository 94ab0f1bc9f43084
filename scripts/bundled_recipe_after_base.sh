#!/usr/bin/env bash
# The bundled model's recipe after its base training (docs/bundled_model.md, stages 3-6), from any stage-2 checkpoint:
#   bash scripts/bundled_recipe_after_base.sh BASE_CHECKPOINT OUT_PREFIX
# writes OUT_PREFIX{P,_reader,_post,_dmd,_final}: the one-step distillation towards the frozen base's two-step jump,
# the context reader, adversarial post-training, distribution matching at --dmd-ratio 3 (the bundled setting), then
# the last stage exported with the bundled folder's one-step sampling temperature (0.65).
# About 1 h 50 min on 2 CPU cores (3 h on a slower pair). Stopped (SIGTERM, Ctrl-C) and run again, it goes on where it
# stopped: a complete stage is not run again, the distillation resumes from its last checkpoint, a post-training
# stopped by a signal from its saved state (mfvideo-post-train --resume), each to the weights an unstopped run makes.
# Judge OUT_PREFIX_final against the bundled model with scripts/probe_generation.py, scripts/evaluate_digits.py and
# scripts/digit_sheets.py, then scripts/measure_bundled.sh, before bundling it.
set -euo pipefail
X=${1:?a stage-2 checkpoint (runs/x/checkpoints/step_00008000)}
OUT=${2:?an output prefix (runs/x)}

if [ ! -f "${OUT}_reader/model_index.json" ]; then  # the reader's folder is written whole or not at all
  mfvideo-train configs/moving_digits.yaml model.init_from="$X" train.teacher="$X" method.split_consistency=0.25 \
    method.cfg_kappa=0.6667 train.lr=1e-4 train.warmup_steps=50 train.lr_schedule=linear train.max_steps=1000 \
    train.context_masks.first=0.3 train.context_masks.ends=0.1 train.sample_every=0 train.output_dir="${OUT}P" \
    train.resume=auto
  mfvideo-fit-reader "${OUT}P/checkpoints/step_00001000" --out "${OUT}_reader"
fi
# --resume: a stage stopped by a signal goes on from its state, a complete one is left as it is, else it starts
mfvideo-post-train "${OUT}_reader" --out "${OUT}_post" --steps 1000 --resume
mfvideo-post-train "${OUT}_post" --out "${OUT}_dmd" --steps 1000 --dmd-ratio 3 --resume
mfvideo-export "${OUT}_dmd" --out "${OUT}_final" sample.one_step_temperature=0.65 sample.motion_copy=4  # its sampling defaults
echo "done: ${OUT}_final"
