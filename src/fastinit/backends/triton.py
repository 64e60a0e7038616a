"""The `triton` backend: the fused Triton fill of fastinit.kernels (src/fastinit/kernels/).

One launch per (device, dtype) group for the whole list of tensors (one kernel per variant
present: distribution and contiguous or strided path). Here fills become the kernels' packed
descriptor rows (``descriptor_rows``). Runs on CUDA devices, and
on the CPU only under TRITON_INTERPRET=1 (Triton's interpreter, which is how CI tests it).
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from ..plan import Fill, has_real_storage, pack_descriptors
from . import check_not_capturing, natively_packed, overlap_order

NAME = "triton"

try:
    import triton  # noqa: F401  (the ImportError is what a user who asked for Triton needs)

    from ..kernels import fill as _fill
    from ..kernels import launch_table as _launch_table
    from ..kernels.contract_numbers import DESC_BASE_OFFSET
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


def descriptor_rows(fills: Sequence[Fill]) -> np.ndarray:
    """The int64 descriptor rows (n, DESC_WORDS) of `fills`: each fill's packed descriptor with
    its data word replaced by the element offset of the fill's local element 0 from its own
    tensor's first element (the layout's offset). The rows hold no address, so they can be
    built for tensors that have none yet (a compiler's); ``triton_fill`` rebases them on the
    launch's first tensor."""
    packed = natively_packed(fills)
    if packed is not None:  # whole tensors: their element 0 is the descriptor's data
        desc = np.frombuffer(packed, dtype=np.int64).reshape(len(fills), -1).copy()
        desc[:, DESC_BASE_OFFSET.value] = 0
        return desc
    desc = np.frombuffer(pack_descriptors(fills), dtype=np.int64).reshape(len(fills), -1).copy()
    addresses = desc[:, DESC_BASE_OFFSET.value]  # packed: data_ptr + offset * element size
    desc[:, DESC_BASE_OFFSET.value] = [(int(a) - f.tensor.data_ptr()) // f.tensor.element_size()
                                       for a, f in zip(addresses, fills)]
    return desc


def check_fills(fills: Sequence[Fill]) -> np.ndarray:
    """Refuse fills one launch cannot take, before anything is written; return their
    descriptor rows.

    Args:
        fills: the non-empty fills of one launch, in order.

    Returns:
        ``descriptor_rows(fills)``.

    Raises:
        TypeError: a dtype the kernels do not write.
        ValueError: a bad descriptor (``check_table``), naming its index and field, or a
          tensor without memory (fake, functional, meta).
    """
    dtype = fills[0].tensor.dtype
    if dtype not in _fill.OUT_DTYPES:
        raise TypeError(f"the Triton fill writes {list(_fill.OUT_DTYPES)}, got {dtype}")
    desc = descriptor_rows(fills)
    targets = [f.tensor for f in fills]
    without_memory = [i for i, t in enumerate(targets) if not has_real_storage(t)]
    if without_memory:  # they must not reach the op, whose dispatch would take them for tracing
        _launch_table.check_table(targets, desc.reshape(-1))
        raise ValueError(f"descriptor {without_memory[0]}: data: a tensor without memory "
                         f"(fake, functional or meta)")
    return desc


def fill(fills: Sequence[Fill], config=None) -> int:
    """Fill `fills` (one device, one dtype; empty tensors skipped) through the kernels' op.

    Returns:
        The number of kernel launches.

    Raises:
        TypeError, ValueError: as ``check_fills`` and the op's validation, before anything is
          written.
    """
    fills = [f for f in fills if f.tensor.numel()]
    if not fills:
        return 0
    config = _launch_table.DEFAULT_CONFIG if config is None else config
    targets = [f.tensor for f in fills]
    desc = check_fills(fills)
    order = overlap_order(_addressed(desc, targets), len(fills)) if len(fills) > 1 else None
    if order is None:
        return _fill.fill(targets, desc, config)
    # fills sharing memory: one launch per phase, in order on the stream
    return sum(_fill.fill([targets[i] for i in indices], desc[indices], config)
               for indices in order)


def _addressed(desc: np.ndarray, targets: Sequence[torch.Tensor]) -> bytes:
    """`desc`'s rows packed with addresses (each row's element offset from its own tensor made
    that element's address), as `overlap_order` reads them."""
    rows = desc.copy()
    rows[:, DESC_BASE_OFFSET.value] = (
        np.array([t.data_ptr() for t in targets], dtype=np.int64)
        + rows[:, DESC_BASE_OFFSET.value] * targets[0].element_size())
    return rows.tobytes()


def run(fills: Sequence[Fill], config=None) -> None:
    """Fill `fills` (one device, one dtype, any layouts): one launch for the list, through
    the op ``torch.ops.fastinit.triton_fill`` (src/fastinit/kernels/fill.py)."""
    fills = [f for f in fills if f.tensor.numel()]
    if not fills:
        return
    if fills[0].tensor.device.type == "cuda":
        check_not_capturing(
            "the triton backend stages its descriptor table in host memory (the cuda backend "
            "passes a call's table as the kernel's argument, which graph capture keeps)")
    if interpreting() and fills[0].tensor.device.type != "cpu":
        # The interpreter dereferences the kernel's pointers on the host: fill a host copy of
        # each tensor's storage, with the same strides, and copy the written elements back.
        # The op validates the copies; the targets themselves are checked here, first.
        _launch_table.check_table([f.tensor for f in fills], check_fills(fills).reshape(-1))
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
        fill(hosts, config)
        for target, host in pairs:
            target.copy_(host)
        return
    fill(fills, config)
