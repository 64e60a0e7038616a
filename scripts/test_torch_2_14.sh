#!/usr/bin/env bash
# The second test environment: the whole suite on torch 2.14.1, with torchvision 0.29.1 and
# timm 1.0.31 (PyPI's torchvision needs a CUDA build of torch, so the timm and torchvision
# client tests run here; the main environment's CPU torch 2.13.0 skips them, saying why).
# Creates .venv-torch2.14 (about 5.5 GB) when missing; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-torch2.14
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" "timm==1.0.31"
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
