#!/usr/bin/env bash
# Creates .venv (if missing) and installs fastinit with its test extra into it, as an editable
# install in setuptools' strict mode (see setup.cfg).
# torch: any release in the range of pyproject.toml works; when none is installed this takes the
# CPU build 2.13.0 (FASTINIT_TORCH overrides the requirement, e.g. FASTINIT_TORCH="torch==2.11.0").
# The C++ CPU module is always built; CUDA objects too when nvcc is found (FASTINIT_CUDA=0|1|auto).
# The install is skipped when the build inputs (csrc/, kernels/, setup.py, setup.cfg,
# pyproject.toml, the file names under src/, the build's environment variables) hash to the
# value stored in .venv at the last install; FASTINIT_REINSTALL=1 forces it. pip's output goes
# to .venv/fastinit-install.log and is shown only when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
STAMP=.venv/fastinit-build.sha256
LOG=.venv/fastinit-install.log

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
. .venv/bin/activate

build_hash() {
  {
    find csrc kernels setup.py setup.cfg pyproject.toml -type f ! -path '*/__pycache__/*' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    # Names only: a strict editable install links each file, so a new one needs a reinstall.
    find src -type f ! -path '*/__pycache__/*' ! -name '*.so' | LC_ALL=C sort
    echo "FASTINIT_CUDA=${FASTINIT_CUDA:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}" \
         "CUDA_HOME=${CUDA_HOME:-} CUDA_PATH=${CUDA_PATH:-} $(python -V 2>&1)"
  } | sha256sum | cut -d' ' -f1
}

HASH="$(build_hash)"
if [ "${FASTINIT_REINSTALL:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] \
   && python -c "import fastinit._C" 2>/dev/null; then
  echo "fastinit build is current (inputs unchanged since the last install); skipping pip install"
else
  rm -f "$STAMP"
  if ! python -c "import torch" 2>/dev/null; then
    echo "installing ${FASTINIT_TORCH:-torch==2.13.0} ..."
    python -m pip install --quiet "${FASTINIT_TORCH:-torch==2.13.0}" >"$LOG" 2>&1 \
      || { cat "$LOG"; exit 1; }
  fi
  echo "building and installing fastinit (pip install -e \".[test]\"; log in $LOG) ..."
  if ! python -m pip install --quiet -e ".[test]" >"$LOG" 2>&1; then
    cat "$LOG"
    echo "scripts/setup_env.sh: pip install failed; its output is above and in $LOG" >&2
    exit 1
  fi
  echo "$HASH" > "$STAMP"
fi
fastinit --version
