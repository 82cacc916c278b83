#!/usr/bin/env bash
# Run the test suite, setting up .venv first if imseg is not importable. Extra arguments go to pytest.
set -euo pipefail
IMSEG_NEED_TESTS=1
# shellcheck source=scripts/_setup.sh
source "$(dirname "$0")/_setup.sh"
imseg_setup
cd "$imseg_root"
exec "$IMSEG_PYTHON" -m pytest "$@"
