#!/usr/bin/env bash
# Predict with imseg-infer, setting up .venv first if imseg is not importable.
#
#   scripts/infer.sh [--gpus 0,1] [--background] [imseg-infer args...]
#
#   --gpus LIST     use only these GPUs (sets CUDA_VISIBLE_DEVICES for this run)
#   --background    run under nohup; the output goes to logs/imseg-infer-<time>.log, PID and log are printed
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"
imseg_run imseg.infer imseg-infer "$@"
