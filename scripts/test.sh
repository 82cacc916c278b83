#!/usr/bin/env bash
# Run the test suite, setting up .venv first if imseg is not importable. Extra arguments go to pytest.
set -euo pipefail
IMSEG_NEED_TESTS=1
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"
imseg_setup
cd "$imseg_root"
# Lint and format first: a style slip fails in seconds, before the suite runs.
"$IMSEG_PYTHON" -m ruff check --quiet . || { echo "imseg: ruff check failed (fix, or run: ruff check --fix .)" >&2; exit 1; }
"$IMSEG_PYTHON" -m ruff format --check --quiet . || { echo "imseg: files need ruff format (run: ruff format .)" >&2; exit 1; }
# One worker more than cores: a worker waiting on its test's subprocess leaves a core idle (2 cores: 1.68 cores
# busy with 2 workers, 1.83 with 3). IMSEG_TEST_WORKERS=0: in this process. The slowest tests are listed at the end.
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
exec "$IMSEG_PYTHON" -m pytest -n "${IMSEG_TEST_WORKERS:-$((cores + 1))}" --dist loadgroup --durations=15 "$@"
