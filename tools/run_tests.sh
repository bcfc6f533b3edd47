#!/usr/bin/env bash
# Runs the SplattingOcc test suite in .venv (created if needed). Extra arguments go to pytest,
# e.g. `bash tools/run_tests.sh -k voxelizer -x`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source tools/setup_env.sh
# The suite starts several processes at once (distributed and Slurm tests): OpenMP threads that
# sleep when idle instead of spinning keep them from starving each other. Training and benchmarks
# on an otherwise idle machine are faster with OpenMP's default (spinning; E3), so only the tests
# set this.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
echo "[tests] python -m pytest tests $*"
exec "$REPO/.venv/bin/python" -m pytest tests -ra --durations=15 "$@"
