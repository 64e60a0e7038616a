"""The `triton` backend: the fused Triton fill of kernels/fill.py (installed as fastinit.kernels).

One launch per (device, dtype) group for the whole list of tensors. Runs on CUDA devices, and
on the CPU only under TRITON_INTERPRET=1 (Triton's interpreter, which is how CI tests it).
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import torch

from ..plan import Fill

NAME = "triton"

try:
    import triton  # noqa: F401  (the ImportError is what a user who asked for Triton needs)

    from ..kernels import fill as _fill
except (ImportError, OSError, RuntimeError) as exc:  # no or a broken Triton (its shared
    # library or driver probe); kept to re-raise when this backend is asked for by name
    _fill = None
    IMPORT_ERROR: Exception | None = exc
else:
    IMPORT_ERROR = None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def supports(device) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpreting()


def run(fills: Sequence[Fill], config=None) -> None:
    """Fill `fills` (one device, one dtype, contiguous targets): one launch for the list."""
    fills = [f for f in fills if f.tensor.numel()]
    if not fills:
        return
    config = _fill.DEFAULT_CONFIG if config is None else config
    if interpreting() and fills[0].tensor.device.type != "cpu":
        # The interpreter dereferences the table's raw addresses on the host: generate into
        # host scratch tensors and copy them to the device.
        pairs = [(f.tensor, torch.empty(f.tensor.shape, dtype=f.tensor.dtype)) for f in fills]
        _fill.fill([replace(f, tensor=s) for f, (_, s) in zip(fills, pairs)], config)
        for target, scratch in pairs:
            target.copy_(scratch)
        return
    _fill.fill(fills, config)
