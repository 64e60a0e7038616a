#!/usr/bin/env bash
# Creates .venv (if missing) and installs fastinit with its test extra into it, as an editable
# install in setuptools' strict mode (see setup.cfg). One line per step, with the step's usual
# duration on a 2-core machine, and how long it took.
#
# torch: any release in the range of pyproject.toml works; when none is installed this takes the
# CPU build 2.13.0 (FASTINIT_TORCH overrides the requirement, e.g. FASTINIT_TORCH="torch==2.11.0").
# The C++ CPU module is always built. The CUDA module is built only when the installed torch has
# CUDA and nvcc is found; FASTINIT_CUDA=1 requires it (CI: a CUDA compile error fails the run),
# FASTINIT_CUDA=0 skips it. The build runs in .venv itself (pip's --no-build-isolation, with the
# build requirements of pyproject.toml installed first), so that it sees the installed torch and
# builds fastinit._C_tensor against it (setup.py: the entry points that take torch tensors).
# The install is skipped when the build inputs (csrc/, setup.py, setup.cfg,
# pyproject.toml, the file names under src/, the build's environment variables) hash to the
# value stored in .venv at the last install; FASTINIT_REINSTALL=1 forces it. pip's output goes
# to .venv/fastinit-install.log and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
STAMP=.venv/fastinit-build.sha256
LOG=.venv/fastinit-install.log
STEP_START=0

# step "what" "usual duration": starts a line; done_step ends it with the time taken.
step() {
  STEP_START=$SECONDS
  printf 'setup: %s (usually %s) ... ' "$1" "$2"
}
done_step() {
  echo "done in $((SECONDS - STEP_START)) s${1:+; $1}"
}
fail_step() {
  echo "FAILED"
  cat "$LOG" >&2
  echo "scripts/setup_env.sh: $1 failed; pip's output is above and in $LOG" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PYTHON" -V 2>&1)" "10 s"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  done_step
fi
. .venv/bin/activate

if ! python -c "import torch" 2>/dev/null; then
  step "installing ${FASTINIT_TORCH:-torch==2.13.0}" "1 min from a local wheel, 2-4 min downloaded"
  python -m pip install --quiet "${FASTINIT_TORCH:-torch==2.13.0}" >"$LOG" 2>&1 \
    || fail_step "installing torch"
  done_step
fi

# The CUDA module is of use only to a torch with CUDA: skip its nvcc compile otherwise.
TORCH_DESCRIPTION="$(python -c "import torch; print(torch.__version__, torch.version.cuda or '')" \
  2>/dev/null)"
if [ -z "${FASTINIT_CUDA:-}" ] || [ "${FASTINIT_CUDA}" = auto ]; then
  if [ -n "$(echo "$TORCH_DESCRIPTION" | cut -s -d' ' -f2)" ]; then
    export FASTINIT_CUDA=auto
    CUDA_NOTE="C++ CPU module, and the CUDA module if nvcc is found: torch ${TORCH_DESCRIPTION% *} has CUDA"
  else
    export FASTINIT_CUDA=0
    CUDA_NOTE="C++ CPU module; no CUDA module: torch ${TORCH_DESCRIPTION% *} has no CUDA"
  fi
elif [ "$FASTINIT_CUDA" = 0 ]; then
  CUDA_NOTE="C++ CPU module; no CUDA module: FASTINIT_CUDA=0"
else
  CUDA_NOTE="C++ CPU module and the CUDA module: FASTINIT_CUDA=$FASTINIT_CUDA"
fi

build_hash() {
  {
    find csrc setup.py setup.cfg pyproject.toml -type f ! -path '*/__pycache__/*' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    # Names only: a strict editable install links each file, so a new one needs a reinstall.
    find src -type f ! -path '*/__pycache__/*' ! -name '*.so' | LC_ALL=C sort
    # fastinit._C_tensor is built against the installed torch: another torch needs a rebuild
    echo "FASTINIT_CUDA=${FASTINIT_CUDA:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}" \
         "CUDA_HOME=${CUDA_HOME:-} CUDA_PATH=${CUDA_PATH:-} $(python -V 2>&1) torch $TORCH_DESCRIPTION"
  } | sha256sum | cut -d' ' -f1
}

# A distribution named `fastinit` (an install of this project from before its rename, or PyPI's
# unrelated package) provides the same import name and console script: remove it.
if python -m pip show fastinit >/dev/null 2>&1; then
  step "removing the installed distribution 'fastinit' (same import name as torch-fastinit)" "5 s"
  python -m pip uninstall --quiet --yes fastinit >"$LOG" 2>&1 || fail_step "pip uninstall fastinit"
  FASTINIT_REINSTALL=1
  done_step
fi

HASH="$(build_hash)"
if [ "${FASTINIT_REINSTALL:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] \
   && python -c "import fastinit._C" 2>/dev/null \
   && ! python -c "import fastinit; print(fastinit.backend_info()['tensor_calls'])" 2>/dev/null \
        | grep -q "built against"; then
  # (a fastinit._C_tensor built against another torch, by another environment sharing this
  # checkout's in-place build, is rebuilt)
  echo "setup: fastinit build is current (inputs unchanged since the last install); skipping pip"
else
  rm -f "$STAMP"
  if [ "$FASTINIT_CUDA" = 0 ]; then
    usual="1-2 min; the first time also the test extras, 1-3 min"
  else
    usual="5-8 min with nvcc; the first time also the test extras, 1-3 min"
  fi
  step "building fastinit ($CUDA_NOTE; fastinit._C_tensor against torch ${TORCH_DESCRIPTION% *}) and installing it with the test extras (pip install --no-build-isolation -e \".[test]\", log: $LOG)" "$usual"
  # pyproject.toml's [build-system] requires, into .venv: the build below does not isolate
  python -m pip install --quiet "setuptools>=77" wheel "pybind11>=2.10" >"$LOG" 2>&1 \
    || fail_step "installing the build requirements"
  python -m pip install --quiet --no-build-isolation -e ".[test]" >"$LOG" 2>&1 \
    || fail_step "pip install --no-build-isolation -e \".[test]\""
  echo "$HASH" > "$STAMP"
  done_step
fi
fastinit --version
