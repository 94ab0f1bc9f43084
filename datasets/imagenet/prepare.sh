#!/usr/bin/env bash
# ImageNet 256 latents for the base mode, as the official MeanFlow preprocessing: SD-VAE posterior mean and std of
# each ADM centre crop and of its horizontal flip.
#   IMAGENET=/data/imagenet (holding train/<wnid>/*.JPEG)  VAE=pretrained/sd-vae-ft-mse (a local diffusers folder)
# ImageNet 512 through DC-AE instead: CONFIG=configs/imagenet512_dcae_b1.yaml
#   VAE=pretrained/dc-ae-f32c32-sana-1.1-diffusers OUT=data/imagenet512_dcae (the config's data.root)
set -euo pipefail
IMAGENET=${IMAGENET:?set IMAGENET to the folder holding train/}
CONFIG=${CONFIG:-configs/imagenet_b2.yaml}
VAE=${VAE:-pretrained/sd-vae-ft-mse}
OUT=${OUT:-data/imagenet_latents}
# Multi-GPU: prefix with `accelerate launch --num_processes 8`.
# The class names (--classes tench) from ILSVRC's LOC_synset_mapping.txt where it lies beside train/.
NAMES=()
[ -f "$IMAGENET/LOC_synset_mapping.txt" ] && NAMES=(data.class_names="$IMAGENET/LOC_synset_mapping.txt")
mfvideo-cache-latents "$CONFIG" --out "$OUT" \
  data.kind=image_folder data.root="$IMAGENET" data.split=train latents.path="$VAE" ${NAMES[@]+"${NAMES[@]}"}
