#!/usr/bin/env bash
# Runs the SplattingOcc test suite in .venv (created if needed). Extra arguments go to pytest,
# e.g. `bash tools/run_tests.sh -k voxelizer -x`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source tools/setup_env.sh
echo "[tests] python -m pytest tests $*"
exec "$REPO/.venv/bin/python" -m pytest tests -ra --durations=15 "$@"
