"""The `cuda` backend: the CUDA C++ kernels of csrc/cuda (module ``fastinit._cuda``).

One fused launch per (device, dtype) on the current stream. Up to ARG_TABLE_CAPACITY tensors
(the usual case) travel by value as the kernel's argument (``_cuda.launch_by_value``): no host
staging, no copy, and the launch can be captured in a CUDA graph. More tensors: their
descriptors and a block -> (tensor, chunk) map are packed on the host (``_cuda.build_table``),
staged in pinned memory, copied to a uint8 tensor on the device with a non-blocking copy on the
current stream, and the kernel is launched on that same stream. The device table is released
as soon as the launch is queued: torch's caching allocator hands its memory out again only to
work queued after the kernel on that stream, so it is never reused under the kernel, and
nothing here synchronises with the device. That staging cannot be captured in a CUDA graph, and
raises there instead.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

import torch

from ..plan import Fill, pack_descriptors
from . import check_not_capturing, overlap_order

NAME = "cuda"


def _load():
    """(module, None) when the module loads and its runtime sees a device, else (None, why)."""
    try:
        from .. import _cuda
    except ImportError as exc:  # not built (no nvcc, FASTINIT_CUDA=0) or cannot load
        built = glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), "_cuda.*"))
        why = ImportError(
            f"fastinit._cuda failed to load: {exc}" if built else
            f"fastinit._cuda was not built (no nvcc at install time, or FASTINIT_CUDA=0; "
            f"reinstall with FASTINIT_CUDA=1 to require it): {exc}"
        )
        why.__cause__ = exc
        return None, why
    if torch.version.hip is not None:
        return None, ImportError(
            f"fastinit._cuda is built for NVIDIA CUDA; this torch is a ROCm build "
            f"(HIP {torch.version.hip})"
        )
    problem = _cuda.runtime_problem()
    if problem:
        return None, ImportError(f"fastinit._cuda cannot use a GPU here: {problem}")
    return _cuda, None


_cuda, IMPORT_ERROR = _load()
# Tensors of one dtype whose descriptors one launch takes by value (none without the module).
ARG_TABLE_CAPACITY = _cuda.ARG_TABLE_CAPACITY if _cuda is not None else 0
_device_ok: dict[int, bool] = {}


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def supports(device) -> bool:
    """CUDA devices whose architecture the built kernels cover."""
    if device.type != "cuda" or _cuda is None:
        return False
    index = _index(device)
    if index not in _device_ok:
        _device_ok[index] = not _cuda.device_problem(index)
    return _device_ok[index]


def device_problem(device) -> str | None:
    """Why the kernels cannot run on `device`, or None."""
    if _cuda is None:
        return f"{type(IMPORT_ERROR).__name__}: {IMPORT_ERROR}"
    return _cuda.device_problem(_index(torch.device(device))) or None


def run(fills: Sequence[Fill]) -> None:
    groups: dict[tuple, list[Fill]] = {}
    for f in fills:
        if f.tensor.numel():
            groups.setdefault((f.tensor.device, f.tensor.dtype), []).append(f)
    for (device, _), group in groups.items():
        _launch(_index(device), group)


def _launch(index: int, fills: Sequence[Fill]) -> None:
    num_sms = torch.cuda.get_device_properties(index).multi_processor_count
    packed = pack_descriptors(fills)
    order = overlap_order(packed, len(fills))
    if order is not None:  # fills sharing memory: one launch per phase, in order on the stream
        for indices in order:
            _launch(index, [fills[i] for i in indices])
        return
    with torch.cuda.device(index):
        stream = torch.cuda.current_stream(index)
        if len(fills) <= ARG_TABLE_CAPACITY:
            _cuda.launch_by_value(packed, num_sms, stream.cuda_stream, index)
            return
        check_not_capturing(
            f"the cuda backend stages the descriptor table of {len(fills)} tensors of one dtype "
            f"in host memory (a launch takes at most {ARG_TABLE_CAPACITY} as its argument, "
            f"which graph capture keeps)")
        table, count, chunks, shift, dtype = _cuda.build_table(packed, num_sms)
        if chunks == 0:
            return
        staged = torch.frombuffer(table, dtype=torch.uint8).pin_memory()
        on_device = staged.to(torch.device("cuda", index), non_blocking=True)
        _cuda.launch(on_device.data_ptr(), count, chunks, shift, dtype, stream.cuda_stream, index)

