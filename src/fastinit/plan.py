"""Tensors -> fill descriptors. One `Fill` per tensor; the backends receive lists of them.

Validation happens here, for every tensor of a call, before any backend writes anything.
"""
from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch._subclasses.fake_tensor import is_fake
from torch._subclasses.functional_tensor import FunctionalTensor

from .contract import DTYPE_CODES, Distribution, check_seed, negated_params
from .errors import InitValueError, UnsupportedDtypeError
from .sharding import check_placements, global_runs, is_dtensor, local_tensor

# struct FillDescriptor in csrc/fastinit/fill.h: data, numel, first_index, seed, stream,
# dist, dtype, param[8].
DESCRIPTOR_FORMAT = "<QqqQQii8d"
DESCRIPTOR_SIZE = struct.calcsize(DESCRIPTOR_FORMAT)
NUM_PARAMS = 8

OVERLAP_MESSAGE = (
    "unsupported operation: more than one element of the written-to tensor refers to a single "
    "memory location. Please clone() the tensor before performing the operation."
)


@dataclass(frozen=True)
class Fill:
    """One tensor to fill with a distribution, its host parameters, seed and stream."""

    tensor: torch.Tensor
    dist: Distribution
    params: tuple
    seed: int
    stream: int = 0
    first_index: int = 0

    def pack(self) -> bytes:
        params = list(self.params) + [0.0] * (NUM_PARAMS - len(self.params))
        return struct.pack(
            DESCRIPTOR_FORMAT,
            self.tensor.data_ptr(),
            self.tensor.numel(),
            self.first_index,
            self.seed,
            self.stream,
            int(self.dist),
            int(DTYPE_CODES[self.tensor.dtype]),
            *params,
        )


def pack_descriptors(fills: Sequence[Fill]) -> bytes:
    return b"".join(f.pack() for f in fills)


# c10 ScalarType names, which torch's "... not implemented for '<name>'" errors use.
_SCALAR_TYPE_NAMES = {
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def check_float_dtype(tensor: torch.Tensor, fn_name: str, allow_complex: bool = False) -> None:
    """Raise UnsupportedDtypeError unless `tensor` has a dtype the contract fills (and, with
    `allow_complex`, complex64/128, filled through their real view)."""
    if tensor.dtype not in DTYPE_CODES and not (allow_complex and tensor.dtype in COMPLEX_DTYPES):
        scalar_name = _SCALAR_TYPE_NAMES.get(tensor.dtype, str(tensor.dtype).replace("torch.", ""))
        raise UnsupportedDtypeError(
            f"{fn_name}: not implemented for '{scalar_name}': cannot fill a tensor of dtype "
            f"{tensor.dtype}; fastinit's random initialisers support "
            f"{', '.join(str(d) for d in DTYPE_CODES)}"
            + (" and complex64/128 (real and imaginary parts)" if allow_complex else "")
        )


def has_real_storage(tensor: torch.Tensor) -> bool:
    """False for tensors nothing can be written to: meta, fake (FakeTensorMode, tracing) and
    functional tensors. A fill on them is a no-op that draws no seed."""
    tensor = local_tensor(tensor)
    with torch._C.DisableTorchFunction():  # a look at metadata, not an access to the memory
        return not (tensor.is_meta or is_fake(tensor) or torch._is_functional_tensor(tensor)
                    or isinstance(tensor, FunctionalTensor))


def check_storage(tensor: torch.Tensor) -> None:
    """Raise RuntimeError, with torch's words, unless `tensor`'s storage is allocated and holds
    its whole extent (storage_offset + sum((size - 1) * stride) + 1 elements)."""
    tensor = local_tensor(tensor)
    if tensor.numel() == 0:
        return
    with torch._C.DisableTorchFunction():  # a look at the storage, not an access to the memory
        storage = tensor.untyped_storage()
    if storage.data_ptr() == 0:
        raise InitValueError(
            "The tensor has a non-zero number of elements, but its data is not allocated yet: "
            f"tensor of shape {tuple(tensor.shape)} with a storage of {storage.nbytes()} bytes "
            "(freed, e.g. by FSDP); allocate it (untyped_storage().resize_) before initialising")
    extent = tensor.storage_offset() + 1 + sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    if extent * tensor.element_size() > storage.nbytes():
        raise InitValueError(
            f"sizes {list(tensor.shape)}, strides {list(tensor.stride())}, storage offset "
            f"{tensor.storage_offset()}, and itemsize {tensor.element_size()} requiring a storage "
            f"size of {extent * tensor.element_size()} are out of bounds for storage of size "
            f"{storage.nbytes()}")


def check_no_internal_overlap(tensor: torch.Tensor, fn_name: str) -> None:
    check_placements(tensor, fn_name)
    if torch._debug_has_internal_overlap(local_tensor(tensor)) == 1:
        raise InitValueError(
            f"{fn_name}: tensor of shape {tuple(tensor.shape)} with strides {tensor.stride()}: "
            + OVERLAP_MESSAGE
        )


def check_finite(fn_name: str, **values: float) -> None:
    """Raise TypeError for a value that is not a real number (a string, as torch's argument
    parser does), InitValueError for nan or inf."""
    for name, value in values.items():
        if not isinstance(value, (numbers.Real, torch.Tensor)):
            raise TypeError(f"{fn_name}(): argument '{name}' must be float, not "
                            f"{type(value).__name__}")
        try:
            value = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{fn_name}: {name} must be a real number, got {value!r}") from None
        if not math.isfinite(value):
            raise InitValueError(f"{fn_name}: {name} must be finite, got {name}={value}")


def check_same_device(tensors: Sequence[torch.Tensor], fn_name: str) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise InitValueError(
            f"{fn_name}: all tensors of one call must be on one device, got "
            f"{sorted(str(d) for d in devices)}"
        )


def make_fill(tensor, dist, params, seed, stream=0, first_index=0) -> Fill:
    """The Fill of `tensor`; a negative view becomes its plain view with negated parameters."""
    dist = Distribution(dist)
    params = [float(p) for p in params]
    with torch._C.DisableTorchFunction():  # fastinit's own view, not a user's access
        if tensor.is_neg():
            tensor, params = tensor._neg_view(), negated_params(dist, params)
    return Fill(tensor, dist, tuple(params), check_seed(seed), check_seed(stream),
                int(first_index))


def _local_fills(fills: Sequence[Fill]) -> list[Fill]:
    """A DTensor's fill becomes fills of its local shard at their global indices."""
    out = []
    for f in fills:
        if is_dtensor(f.tensor):
            out.extend(replace(f, tensor=piece, first_index=f.first_index + start)
                       for piece, start in global_runs(f.tensor))
        else:
            out.append(f)
    return out


def contiguous_fills(
    fills: Sequence[Fill],
) -> tuple[list[Fill], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Fills over contiguous memory, plus (target, scratch) pairs to copy back afterwards.

    A DTensor contributes the pieces of its local shard, each at its global indices.
    A non-contiguous target (channels_last, transposed, sliced) or a conjugate view is generated
    into a contiguous scratch tensor in logical order and then copied into the target, so it
    receives the values of its logical indices and is always written. A complex target is
    filled through its real view (torch.view_as_real): element j of that view is index j.
    """
    out: list[Fill] = []
    copy_back: list[tuple[torch.Tensor, torch.Tensor]] = []
    for f in _local_fills(fills):
        target = f.tensor
        if target.numel() == 0:
            continue
        with torch._C.DisableTorchFunction():  # fastinit's own scratch and views
            if not target.is_contiguous() or target.is_conj():
                scratch = torch.empty(target.shape, dtype=target.dtype, device=target.device)
                copy_back.append((target, scratch))
                target = scratch
            first_index = f.first_index
            if target.is_complex():  # complex element k is real-view elements 2k and 2k + 1
                target, first_index = torch.view_as_real(target), 2 * first_index
        out.append(replace(f, tensor=target, first_index=first_index))
    return out, copy_back
