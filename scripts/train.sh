#!/usr/bin/env bash
# Train with imseg-train, setting up .venv first if imseg is not importable.
#
#   scripts/train.sh [--gpus 0,1] [--background] [--demo] [imseg-train args...]
#
#   --gpus LIST     use only these GPUs (sets CUDA_VISIBLE_DEVICES for this run)
#   --background    run under nohup; the output goes to logs/imseg-train-<time>.log, PID and log are printed
#   --demo          train on a synthetic dataset written to ./demo_data
set -euo pipefail
program=imseg.train
name=imseg-train
gpus=""
background=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --gpus) [ $# -ge 2 ] || { echo "$name: error: --gpus needs a list, e.g. --gpus 0,1" >&2; exit 2; }
                gpus=$2; shift 2 ;;
        --gpus=*) gpus=${1#--gpus=}; shift ;;
        --background) background=1; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"
imseg_setup
if [ -n "$gpus" ]; then
    export CUDA_VISIBLE_DEVICES="$gpus"
fi
if [ "$background" = 1 ]; then
    mkdir -p logs
    log="logs/$name-$(date +%Y%m%d-%H%M%S).log"
    nohup "$IMSEG_PYTHON" -u -m "$program" "${args[@]+"${args[@]}"}" >"$log" 2>&1 </dev/null &
    echo "$name: running in the background, PID $!, log $log"
    echo "$name: follow it with: tail -f $log"
    exit 0
fi
exec "$IMSEG_PYTHON" -m "$program" "${args[@]+"${args[@]}"}"
