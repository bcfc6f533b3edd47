#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs SplattingOcc into it.
# Sourced by tools/demo.sh and tools/run_tests.sh; safe to run again (it reinstalls only when
# setup.py changed). Settings (environment):
#   PYTHON            interpreter that creates the venv (default: python3; needs 3.10+)
#   SPLATTINGOCC_TORCH  pip spec for PyTorch (default: torch==2.13.0; for CUDA pick the build
#                     that matches your driver, e.g. "torch==2.13.0 --index-url <your index>")
#   SOCC_BUILD_GSPLAT 1 (default): where torch sees a CUDA device, build gsplat's CUDA extension
#                     here, once per machine (minutes the first time, under a lock; a clear error
#                     if it cannot be built); 0: skip (e.g. with a prebuilt gsplat)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${SPLATTINGOCC_TORCH:-torch==2.13.0}"

say() { echo "[setup] $*"; }
fail() { echo "[setup] ERROR: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || fail "'$PYTHON' not found: install Python 3.10+ or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || fail "$("$PYTHON" --version 2>&1) is too old: SplattingOcc needs Python 3.10+ (set PYTHON=...)"

if [ ! -x "$REPO/.venv/bin/python" ]; then
  say "creating virtual environment $REPO/.venv"
  "$PYTHON" -m venv "$REPO/.venv" || fail "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
VPY="$REPO/.venv/bin/python"
STAMP="$REPO/.venv/.splattingocc-install-stamp"
WANT="$(cat "$REPO/setup.py" | sha1sum | cut -d' ' -f1) $TORCH_SPEC"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  say "reusing .venv (dependencies up to date)"
else
  if ! "$VPY" -c 'import torch' 2>/dev/null; then
    say "installing PyTorch ($TORCH_SPEC)"
    # shellcheck disable=SC2086
    "$VPY" -m pip install --quiet $TORCH_SPEC || fail "pip could not install '$TORCH_SPEC'"
  fi
  say "installing SplattingOcc and its dependencies into .venv (pip install -e .)"
  "$VPY" -m pip install --quiet --upgrade pip setuptools wheel || fail "pip could not upgrade pip/setuptools"
  "$VPY" -m pip install --quiet --no-build-isolation -e "$REPO[test]" || fail "pip install -e . failed (see pip's message above)"
  echo "$WANT" > "$STAMP"
fi
export PATH="$REPO/.venv/bin:$PATH"
# gsplat 1.5.3 from the package index compiles its CUDA code on first use: here, once, not in
# every training process at once (splattingocc/rendering/gsplat_build.py)
if [ "${SOCC_BUILD_GSPLAT:-1}" = 1 ] \
   && "$VPY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  say "building gsplat's CUDA extension if needed (python -m splattingocc.rendering.gsplat_build)"
  PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$VPY" -m splattingocc.rendering.gsplat_build \
    || fail "gsplat's CUDA extension could not be built (message above); SOCC_BUILD_GSPLAT=0 skips this step (training with the gsplat renderer will then fail with the same message)"
fi
"$VPY" -c 'import splattingocc, torch, gsplat, mmengine; print("[setup] python", __import__("sys").version.split()[0], "| torch", torch.__version__, "| gsplat", gsplat.__version__, "| mmengine", mmengine.__version__, "| cuda", torch.cuda.is_available())'
