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
from . import check_not_capturing

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
    """Fill `fills` (one device, one dtype, any layouts): one launch for the list, through
    the op ``torch.ops.fastinit.triton_fill`` (kernels/fill.py)."""
    fills = [f for f in fills if f.tensor.numel()]
    if not fills:
        return
    if fills[0].tensor.device.type == "cuda":
        check_not_capturing(
            "the triton backend stages its descriptor table in host memory (the cuda backend "
            "passes a call's table as the kernel's argument, which graph capture keeps)")
    config = _fill.DEFAULT_CONFIG if config is None else config
    if interpreting() and fills[0].tensor.device.type != "cpu":
        # The interpreter dereferences the kernel's pointers on the host: fill a host copy of
        # each tensor's storage, with the same strides, and copy the written elements back.
        # The op validates the copies; the targets themselves are checked here, first.
        _fill.check_table([f.tensor for f in fills], _fill.check_fills(fills).reshape(-1))
        hosts, pairs = [], []
        for f in fills:
            storage = torch.empty(f.tensor.untyped_storage().nbytes() // f.tensor.element_size(),
                                  dtype=f.tensor.dtype)
            host = storage.as_strided(f.tensor.shape, f.tensor.stride(), f.tensor.storage_offset())
            hosts.append(replace(f, tensor=host))
            layout = f.resolved_layout()
            pairs.append(tuple(t.as_strided(layout.sizes, layout.strides,
                                            t.storage_offset() + layout.offset)
                               for t in (f.tensor, host)))
        _fill.fill(hosts, config)
        for target, host in pairs:
            target.copy_(host)
        return
    _fill.fill(fills, config)
