#!/usr/bin/env bash
# scripts/board.sh [RUN_DIR|DATA_PATH] [--port N]: TensorBoard on 127.0.0.1 for one run or every run of a dataset,
# with the ssh line that reaches it from a laptop. Sets up .venv like the other scripts.
set -euo pipefail
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"

target=. port=6006
while [ $# -gt 0 ]; do
    case "$1" in
        --port) [ $# -ge 2 ] || { echo "board.sh: error: --port needs a number, e.g. --port 6007" >&2; exit 2; }
                port=$2; shift 2 ;;
        --port=*) port=${1#--port=}; shift ;;
        -h|--help) echo "usage: scripts/board.sh [RUN_DIR|DATA_PATH] [--port N]"; exit 0 ;;
        -*) echo "board.sh: error: unknown option $1 (usage: scripts/board.sh [RUN_DIR|DATA_PATH] [--port N])" >&2
            exit 2 ;;
        *) target=$1; shift ;;
    esac
done
case "$port" in
    ''|*[!0-9]*) echo "board.sh: error: --port: expected a port number, got '$port'" >&2; exit 2 ;;
esac
if [ -d "$target/metrics" ]; then
    logdir=$target/metrics                  # one run: out/<name>
elif [ -d "$target/im_seg/out" ]; then
    logdir=$target/im_seg/out               # every run of a dataset
elif [ -d "$target" ] && [ -n "$(find "$target" -maxdepth 4 -name 'events.out.tfevents.*' -print -quit)" ]; then
    logdir=$target                          # a folder of runs (e.g. --output-dir)
else
    echo "board.sh: error: $target: no run here (give a run folder out/<name>, a dataset root, or a folder of runs)" >&2
    exit 2
fi
imseg_setup
echo "board.sh: TensorBoard for $logdir on http://127.0.0.1:$port"
echo "board.sh: from your laptop: ssh -N -L $port:127.0.0.1:$port $(id -un)@$(hostname -f 2>/dev/null || hostname)"
echo "board.sh: then open http://localhost:$port"
exec "$IMSEG_PYTHON" -m tensorboard.main --logdir "$logdir" --host 127.0.0.1 --port "$port"
