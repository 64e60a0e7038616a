#!/usr/bin/env bash
# Creates .venv (if missing) and installs fastinit with its test extra into it.
# torch: any release in the range of pyproject.toml works; when none is installed this takes the
# CPU build 2.13.0 (FASTINIT_TORCH overrides the requirement, e.g. FASTINIT_TORCH="torch==2.11.0").
# The C++ CPU module is always built; CUDA objects too when nvcc is found (FASTINIT_CUDA=0|1|auto).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet "${FASTINIT_TORCH:-torch==2.13.0}"
fi
python -m pip install --quiet -e ".[test]"
python -c "import fastinit; print('fastinit', fastinit.__version__, fastinit.backend_info())"
