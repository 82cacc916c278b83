# shellcheck shell=bash
# Sourced by the scripts in this folder: picks the Python that runs imseg, creating .venv if needed.
# Sets IMSEG_PYTHON; a value already set (e.g. IMSEG_PYTHON=/opt/conda/bin/python) is used as it is.
# With IMSEG_NEED_TESTS=1 the test tools must be importable too.

imseg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

imseg_importable() {
    local modules="imseg, tensorflow, keras"
    [ "${IMSEG_NEED_TESTS:-0}" = 1 ] && modules="$modules, pytest, xdist"
    "$1" -c "import $modules" >/dev/null 2>&1
}

imseg_setup() {
    local venv="$imseg_root/.venv" stamp extra
    [ -n "${IMSEG_PYTHON:-}" ] && return 0
    # A change to the requirements or to this set-up redoes it.
    stamp=$(cat "$imseg_root/setup.cfg" "$imseg_root/pyproject.toml" "${BASH_SOURCE[0]}" | cksum | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.imseg-stamp" 2>/dev/null)" = "$stamp" ] \
        && imseg_importable "$venv/bin/python"; then
        export IMSEG_PYTHON="$venv/bin/python"
        return 0
    fi
    if [ ! -x "$venv/bin/python" ] && command -v python3 >/dev/null && imseg_importable python3; then
        export IMSEG_PYTHON=python3
        return 0
    fi
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        extra=gpu
    else
        extra=cpu
    fi
    [ "${IMSEG_NEED_TESTS:-0}" = 1 ] && extra="$extra,test"
    echo "imseg: setting up $venv (extras: $extra); this takes a few minutes once" >&2
    python3 -m venv "$venv" || { echo "imseg: python3 -m venv failed (install python3-venv)" >&2; return 1; }
    # pip's compile runs on one core; the environment is compiled below on all of them.
    "$venv/bin/python" -m pip install --quiet --no-compile --upgrade pip >&2 || return 1
    "$venv/bin/python" -m pip install --quiet --no-compile -e "${imseg_root}[${extra}]" >&2 || {
        echo "imseg: installing imseg into $venv failed (see pip's message above)" >&2
        return 1
    }
    if [ "${IMSEG_NEED_TESTS:-0}" = 1 ]; then
        # keras-hub without its tensorflow-text requirement, which would add a second TensorFlow (setup.cfg)
        "$venv/bin/python" -m pip install --quiet --no-compile --no-deps keras-hub==0.32.0 >&2 || return 1
    fi
    # Compiled now, once: where PYTHONDONTWRITEBYTECODE is set (as in many containers) Python never writes the
    # .pyc of a first import, and every imseg process spent ~5 s (a test suite, minutes) compiling TensorFlow.
    "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null \
        || echo "imseg: note: some files of $venv/lib did not compile; imseg works, each start is slower" >&2
    echo "$stamp" >"$venv/.imseg-stamp"
    export IMSEG_PYTHON="$venv/bin/python"
}

# imseg_run MODULE NAME [--gpus LIST] [--background] [arguments...]: run `python -m MODULE arguments`,
# with CUDA_VISIBLE_DEVICES=LIST for this run only, in the foreground or under nohup with a log file.
imseg_run() {
    local module=$1 name=$2 gpus="" background=0 log
    shift 2
    local args=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --gpus) [ $# -ge 2 ] || { echo "$name: error: --gpus needs a list, e.g. --gpus 0,1" >&2; return 2; }
                    gpus=$2; shift 2 ;;
            --gpus=*) gpus=${1#--gpus=}; shift ;;
            --background) background=1; shift ;;
            *) args+=("$1"); shift ;;
        esac
    done
    imseg_setup || return 1
    if [ -n "$gpus" ]; then
        export CUDA_VISIBLE_DEVICES="$gpus"
    fi
    if [ "$background" = 1 ]; then
        mkdir -p logs
        log="logs/$name-$(date +%Y%m%d-%H%M%S).log"
        nohup "$IMSEG_PYTHON" -u -m "$module" "${args[@]+"${args[@]}"}" >"$log" 2>&1 </dev/null &
        echo "$name: running in the background, PID $!, log $log"
        echo "$name: follow it with: tail -f $log"
        return 0
    fi
    "$IMSEG_PYTHON" -m "$module" "${args[@]+"${args[@]}"}"
}
