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
# One worker per core (IMSEG_TEST_WORKERS=0: in this process); the slowest tests are listed at the end.
exec "$IMSEG_PYTHON" -m pytest -n "${IMSEG_TEST_WORKERS:-auto}" --dist loadgroup --durations=15 "$@"
