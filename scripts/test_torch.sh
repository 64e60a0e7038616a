#!/usr/bin/env bash
# The suite on another torch: scripts/test_torch.sh VERSION [pytest args].
# Creates .venv-torchX.Y when missing and installs torch==VERSION, fastinit (editable, with
# its test extras) and, per version:
#   2.14.1  torchvision 0.29.1 and timm 1.0.31 (PyPI's torchvision needs a CUDA build of torch,
#           so the timm and torchvision client tests run here; the main environment's CPU torch
#           2.13.0 skips them, saying why);
#   2.11.0  Triton 3.6.0, the release that torch pins (the oldest Triton fastinit's compiled
#           kernels support; its interpreter is not, so the interpreter tests skip, saying why);
#   others  the Triton that torch asks for.
# Arguments after VERSION go to pytest (default: the whole suite).
# This machine's pip constraints (/etc/xdg/pip/constraints.txt) cap torch at 2.14.1: the
# installs here run with PIP_CONSTRAINT=/dev/null so that 2.11.0 and 2.15.0 can be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:?usage: scripts/test_torch.sh VERSION [pytest args]}"
shift
VENV=".venv-torch${VERSION%.*}"  # .venv-torch2.14 for 2.14.1
case "$VERSION" in
  2.14.1) EXTRA=("torchvision==0.29.1" "timm==1.0.31") ;;
  2.11.0) EXTRA=("triton==3.6.0") ;;
  *) EXTRA=() ;;
esac
export PIP_CONSTRAINT=/dev/null
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==$VERSION" "${EXTRA[@]}"
# The test extras without their Triton requirement (torch pins its own Triton above), then
# fastinit itself without dependencies, so nothing replaces that torch or Triton.
"$VENV/bin/python" -m pip install --quiet numpy "pytest>=7" "scipy>=1.9" "hypothesis>=6" \
  "pytest-benchmark>=4" "transformers>=4.40" "matplotlib>=3.5" "pybind11>=2.10" "setuptools>=77,<82"
FASTINIT_CUDA="${FASTINIT_CUDA:-0}" "$VENV/bin/python" -m pip install --quiet --no-deps \
  --no-build-isolation -e .
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
