#!/usr/bin/env bash
# Train with imseg-train, setting up .venv first if imseg is not importable.
#
#   scripts/train.sh [--gpus 0,1] [--background] [--demo] [imseg-train args...]
#
#   --gpus LIST     use only these GPUs (sets CUDA_VISIBLE_DEVICES for this run)
#   --background    run under nohup; the output goes to logs/imseg-train-<time>.log, PID and log are printed
#   --demo          train on a synthetic dataset written to ./demo_data
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"
imseg_run imseg.train imseg-train "$@"
