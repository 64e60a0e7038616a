"""The `cpu` backend: the C++ fill of csrc/ (OpenMP threads, SIMD across Philox counters)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..plan import Fill, pack_descriptors

NAME = "cpu"

try:
    from .. import _C
except ImportError as exc:  # the build was skipped or failed; kept to re-raise on request
    _C = None
    IMPORT_ERROR: ImportError | None = exc
else:
    IMPORT_ERROR = None


def supports(device) -> bool:
    return device.type == "cpu"


def run(fills: Sequence[Fill]) -> None:
    """Fill `fills` on as many threads as ``torch.get_num_threads()`` gives the calling thread.

    The count is passed per call: OpenMP's own setting is per thread, so a worker thread's
    ``torch.set_num_threads`` would not otherwise reach the fill.
    """
    if fills:
        _C.fill(pack_descriptors(fills), torch.get_num_threads())


def simd_level() -> str:
    return _C.simd_level()
