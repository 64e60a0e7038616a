#!/usr/bin/env bash
# Builds fastinit._C (and fastinit._C_tensor, where torch is installed) with clang (Debian's
# clang package, installed when missing and this runs as root) into a temporary copy of the
# package and runs the contract, CPU determinism and tensor-call tests on that build. .venv
# keeps its own (gcc) build. Run after scripts/setup_env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang++ >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
  else
    echo "clang++ (Debian: apt-get install clang) is needed" >&2
    exit 1
  fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
CC=clang CXX=clang++ FASTINIT_CUDA=0 .venv/bin/python setup.py -q build_ext \
  --build-lib "$work/lib" --build-temp "$work/tmp" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log" >&2; exit 1; }
mkdir -p "$work/pkg"
cp -r src/fastinit "$work/pkg/"
rm -f "$work"/pkg/fastinit/*.so
cp "$work"/lib/fastinit/_C*.so "$work/pkg/fastinit/"
export PYTHONPATH="$work/pkg"
.venv/bin/python - "$work" <<'PY'
import sys
import fastinit
from fastinit import _C
assert _C.__file__.startswith(sys.argv[1]), _C.__file__
assert "clang" in _C.COMPILER.lower(), _C.COMPILER
print(f"fastinit._C built by {_C.COMPILER}; SIMD: {_C.simd_level()}")
from fastinit.backends import cpu  # fastinit._C_tensor, built by clang too when torch is here
if cpu.TENSOR_CALLS is not None:
    assert cpu.TENSOR_CALLS.__file__.startswith(sys.argv[1]), cpu.TENSOR_CALLS.__file__
    assert "clang" in cpu.TENSOR_CALLS.COMPILER.lower(), cpu.TENSOR_CALLS.COMPILER
print(f"fastinit._C_tensor: {cpu.TENSOR_CALLS_STATUS}")
PY
.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_contract.py tests/test_determinism.py \
  tests/test_tensor_calls.py
