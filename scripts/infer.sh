#!/usr/bin/env bash
# Predict with imseg-infer, setting up .venv first if imseg is not importable.
#
#   scripts/infer.sh [--gpus 0,1] [--background] [imseg-infer args...]
#
#   --gpus LIST     use only these GPUs (sets CUDA_VISIBLE_DEVICES for this run); with --images and several GPUs,
#                   one process per GPU, each taking its share of the scenes (--shard K/N) into the same --output
#   --background    run under nohup; the output goes to logs/imseg-infer-<time>.log, PID and log are printed
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"
gpus="" images=0 background=0 rest=()
for ((i = 1; i <= $#; i++)); do
    arg=${!i}
    case "$arg" in
        --gpus) j=$((i + 1)); gpus=${!j:-}; ;;
        --gpus=*) gpus=${arg#--gpus=} ;;
        --images) images=1 ;;
        --background) background=1 ;;
    esac
done
IFS=, read -r -a devices <<<"$gpus"
if [ "$images" = 0 ] || [ "${#devices[@]}" -lt 2 ]; then
    imseg_run imseg.infer imseg-infer "$@"
    exit $?
fi
# Several GPUs and a list of scenes: one process per GPU, shard k of n.
skip=0
for arg in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$arg" in
        --gpus) skip=1 ;;
        --gpus=*|--background) ;;
        *) rest+=("$arg") ;;
    esac
done
n=${#devices[@]} pids=()
for k in $(seq 1 "$n"); do
    flags=(--gpus "${devices[$((k - 1))]}")
    [ "$background" = 1 ] && flags+=(--background)
    imseg_run imseg.infer "imseg-infer-shard$k" "${flags[@]}" "${rest[@]}" --shard "$k/$n" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=$?
done
exit "$status"
