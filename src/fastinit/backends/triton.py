"""The `triton` backend: the fused Triton fill of kernels/fill.py (installed as fastinit.kernels).

One launch per (device, dtype) group for the whole list of tensors. Runs on CUDA devices, and
on the CPU only under TRITON_INTERPRET=1 (Triton's interpreter, which is how CI tests it).
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import torch

from ..contract import DTYPE_CODES, Distribution
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


def check_fills(fills: Sequence[Fill]) -> None:
    """Refuse, before any launch, a fill the kernel would write through a bad address.

    The same checks as the C++ modules' descriptor validation (csrc/descriptor_check.h): a
    known distribution and dtype, and for a non-empty tensor a non-null data address aligned
    for its dtype.

    Args:
        fills: the fills of one launch, in order.

    Raises:
        ValueError: naming the index of the first bad fill and the bad field.
    """
    for index, f in enumerate(fills):
        where = f"descriptor {index}: "
        if f.dist not in set(Distribution):
            raise ValueError(f"{where}dist: unknown distribution code {f.dist!r}")
        t = f.tensor
        if t.dtype not in DTYPE_CODES:
            raise ValueError(f"{where}dtype: {t.dtype} is not one of {list(DTYPE_CODES)}")
        if not t.numel():
            continue
        address = t.data_ptr()
        if address == 0:
            raise ValueError(f"{where}data: null address for {t.numel()} elements "
                             f"(a tensor without storage)")
        if address % t.element_size():
            raise ValueError(f"{where}data: address {address} is not aligned to the "
                             f"{t.element_size()}-byte elements of its dtype")


def run(fills: Sequence[Fill], config=None) -> None:
    """Fill `fills` (one device, one dtype, any layouts): one launch for the list."""
    fills = [f for f in fills if f.tensor.numel()]
    if not fills:
        return
    check_fills(fills)
    if fills[0].tensor.device.type == "cuda":
        check_not_capturing(
            "the triton backend stages its descriptor table in host memory (the cuda backend "
            "passes a call's table as the kernel's argument, which graph capture keeps)")
    config = _fill.DEFAULT_CONFIG if config is None else config
    if interpreting() and fills[0].tensor.device.type != "cpu":
        # The interpreter dereferences the table's raw addresses on the host: fill a host copy
        # of each tensor's storage, with the same strides, and copy the written elements back.
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
