"""Backend selection and dispatch.

Each backend is a module here with ``NAME``, ``IMPORT_ERROR`` (None, or why it cannot run),
``supports(device)`` and ``run(fills)``. ``auto`` picks, per device: CPU tensors -> ``cpu`` (the
C++ fill), else ``reference``; CUDA tensors -> ``cuda`` when its module loads, else ``triton``
when Triton imports, else ``reference``; any other device -> ``reference``. A backend named
explicitly (``set_backend`` or FASTINIT_BACKEND) that cannot run raises its original error
instead of falling back.
"""
from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from typing import Sequence

import torch

from ..errors import BackendUnavailableError, InitValueError
from ..plan import Fill, contiguous_fills
from ..sharding import local_tensor

BACKENDS = ("cpu", "cuda", "triton", "reference")
AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}

_selected = "auto"
_last_run: dict[str, str] = {}


def _module(name: str):
    """The backend module; imported on first use (Triton's import is slow)."""
    return importlib.import_module(f"{__name__}.{name}")


def _unavailable_reason(name: str) -> str | None:
    error = _module(name).IMPORT_ERROR
    return None if error is None else f"{type(error).__name__}: {error}"


def set_backend(name: str) -> None:
    """Select the backend for every later call: "auto", "cpu", "cuda", "triton" or "reference".

    ``auto`` (the default) picks per device: the C++ backend for CPU tensors, CUDA C++ (else
    Triton) for CUDA tensors, the NumPy reference elsewhere. Every backend gives the same values.

    Args:
        name: the backend's name, case-insensitive.

    Raises:
        ValueError: `name` is not one of the names above.
        BackendUnavailableError: the named backend cannot run here (the original import error
            is chained).

    Examples:
        >>> fastinit.set_backend("reference")
        >>> fastinit.get_backend()
        'reference'
        >>> fastinit.set_backend("auto")
    """
    global _selected
    name = str(name).strip().lower()
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name != "auto":
        module = _module(name)
        if module.IMPORT_ERROR is not None:
            raise BackendUnavailableError(
                f"backend {name!r} cannot run here: {_unavailable_reason(name)}"
            ) from module.IMPORT_ERROR
    _selected = name


def get_backend() -> str:
    """The name of the selected backend.

    Returns:
        "auto", "cpu", "cuda", "triton" or "reference", as given to :func:`set_backend` (or the
        FASTINIT_BACKEND environment variable).
    """
    return _selected


def backend_info() -> dict:
    """What is available, what is selected, and which backend last ran on each device type.

    Returns:
        A dict: ``selected`` (:func:`get_backend`), ``available`` (backend names that can run
        here), ``unavailable`` (name -> why not), ``cpu_simd`` (the instruction set the C++
        backend picked, e.g. "avx512 (x86-64-v4)") and ``last_run`` (device type -> the backend
        that filled its last tensors).
    """
    reasons = {name: _unavailable_reason(name) for name in BACKENDS}
    cpu = _module("cpu")
    return {
        "selected": _selected,
        "available": [name for name, why in reasons.items() if why is None],
        "unavailable": {name: why for name, why in reasons.items() if why is not None},
        "cpu_simd": cpu.simd_level() if cpu.IMPORT_ERROR is None else None,
        "last_run": dict(_last_run),
    }


def backend_for(device: torch.device):
    """The backend module that fills tensors on `device` under the current selection."""
    if _selected == "auto":
        for name in AUTO_ORDER.get(device.type, ("reference",)):
            module = _module(name)
            if module.IMPORT_ERROR is None and module.supports(device):
                return module
        return _module("reference")
    module = _module(_selected)
    if not module.supports(device):
        raise BackendUnavailableError(f"backend {_selected!r} cannot fill tensors on {device}")
    return module


def execute(fills: Sequence[Fill]) -> None:
    """Run validated fills: one backend call per (device, dtype) group, then copy-backs."""
    if not torch.is_inference_mode_enabled():
        for f in fills:
            if local_tensor(f.tensor).is_inference():
                raise InitValueError(
                    "Inplace update to inference tensor outside InferenceMode is not allowed: "
                    f"a tensor of shape {tuple(f.tensor.shape)} was created under "
                    "torch.inference_mode(); initialise it inside inference_mode or clone it")
    targets, copy_back = contiguous_fills(fills)
    groups: "OrderedDict[tuple, list[Fill]]" = OrderedDict()
    for f in targets:
        groups.setdefault((f.tensor.device, f.tensor.dtype), []).append(f)
    # Every group's backend is resolved before any of them writes.
    runs = [(backend_for(device), device, group) for (device, _), group in groups.items()]
    with torch.no_grad():
        for backend, device, group in runs:
            backend.run(group)
            _last_run[device.type] = backend.NAME
        for target, scratch in copy_back:
            target.copy_(scratch)
        for f in fills:
            if f.tensor.numel():
                torch.autograd.graph.increment_version(local_tensor(f.tensor))


_env_backend = os.environ.get("FASTINIT_BACKEND", "").strip()
if _env_backend:
    set_backend(_env_backend)
