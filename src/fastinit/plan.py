"""Tensors -> fill descriptors. One `Fill` per tensor; the backends receive lists of them.

Validation happens here, for every tensor of a call, before any backend writes anything.
"""
from __future__ import annotations

import itertools
import math
import numbers
import struct
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch._subclasses.fake_tensor import is_fake
from torch._subclasses.functional_tensor import FunctionalTensor

from .contract import DTYPE_CODES, Distribution, check_seed, negated_params
from .errors import InitValueError, UnsafeTargetError, UnsupportedDtypeError
from .sharding import (check_placements, dim_pieces, global_indices, indexed_mirrors, is_dtensor,
                       local_tensor)

from .contract_numbers import DESCRIPTOR_FORMAT, DESCRIPTOR_SIZE, MAX_DIMS, NUM_PARAMS

OVERLAP_MESSAGE = (
    "unsupported operation: more than one element of the written-to tensor refers to a single "
    "memory location. Please clone() the tensor before performing the operation."
)


@dataclass(frozen=True)
class Layout:
    """Where a descriptor's elements lie and which contract indices they receive.

    Local element (i_0, ..., i_{n-1}) of the row-major order over `sizes` lies at memory
    offset ``offset + sum(i_d * strides[d])`` (in elements, from the tensor's data pointer) and
    receives contract index ``first_index + sum(i_d * global_strides[d])`` (first_index is the
    fill's). A contiguous tensor, or a shard that is one run of the global order, is the single
    dim (numel,) with stride 1 and global stride 1: the backends' fast path.
    """

    sizes: tuple
    strides: tuple
    global_strides: tuple
    offset: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)

    def is_contiguous(self) -> bool:
        return len(self.sizes) == 1 and self.strides[0] == 1 and self.global_strides[0] == 1


def collapse(sizes, strides, global_strides) -> tuple[tuple, tuple, tuple]:
    """Drop size-1 dims and merge neighbours whose memory and global steps both nest; a
    tensor of one element is the single dim (1,)."""
    dims = [(n, s, g) for n, s, g in zip(sizes, strides, global_strides) if n != 1]
    merged: list[tuple[int, int, int]] = []
    for n, s, g in dims:
        if merged:
            pn, ps, pg = merged[-1]
            if ps == n * s and pg == n * g:
                merged[-1] = (pn * n, s, g)
                continue
        merged.append((n, s, g))
    if not merged:
        merged = [(1, 1, 1)]
    return tuple(m[0] for m in merged), tuple(m[1] for m in merged), tuple(m[2] for m in merged)


def _row_major_strides(shape) -> list[int]:
    return [math.prod(shape[d + 1:]) for d in range(len(shape))]


def _split_leading(layout: Layout, first_index: int) -> list[tuple[Layout, int]]:
    """A layout of more than MAX_DIMS dims as one layout per index of its leading dims."""
    extra = len(layout.sizes) - MAX_DIMS
    if extra <= 0:
        return [(layout, first_index)]
    out = []
    for pos in itertools.product(*(range(n) for n in layout.sizes[:extra])):
        out.append((Layout(layout.sizes[extra:], layout.strides[extra:],
                           layout.global_strides[extra:],
                           layout.offset + sum(i * s for i, s in zip(pos, layout.strides))),
                    first_index + sum(i * g for i, g in zip(pos, layout.global_strides))))
    return out


def index_layouts(local: torch.Tensor, shape, indices, first_index: int = 0
                  ) -> list[tuple[Layout, int]]:
    """(layout, first index) of each descriptor that covers `local`, the part of a tensor of
    global `shape` whose element (i_0, i_1, ...) is global element
    (indices[0][i_0], indices[1][i_1], ...) (contract index first_index + its row-major
    position). One, unless it has more than MAX_DIMS dims that do not merge, or its indices
    along a dim are runs of uneven length or spacing."""
    global_steps = _row_major_strides(tuple(shape))
    out = []
    for combo in itertools.product(*(dim_pieces(i) for i in indices)):
        sizes, strides, gsteps = [], [], []
        offset, first = 0, first_index
        for (local_start, global_start, subdims), stride, gstep in zip(
                combo, local.stride(), global_steps):
            offset += local_start * stride
            first += global_start * gstep
            for n, local_step, global_step in subdims:
                sizes.append(n)
                strides.append(local_step * stride)
                gsteps.append(global_step * gstep)
        layout = Layout(*collapse(sizes, strides, gsteps), offset)
        out.extend(_split_leading(layout, first))
    return out


def _global_indices(tensor: torch.Tensor) -> tuple[tuple, list]:
    """(global shape, the global index of each local position along each dim) of a tensor:
    a DTensor's local shard, or a plain tensor whole."""
    local = local_tensor(tensor)
    if not is_dtensor(tensor):
        return tuple(local.shape), [range(n) for n in local.shape]
    idx = global_indices(tensor)
    if tuple(local.shape) != tuple(len(i) for i in idx):
        raise InitValueError(
            f"local shard of shape {tuple(local.shape)} does not match the expected "
            f"{tuple(len(i) for i in idx)} for placements {tensor.placements}")
    return tuple(tensor.shape), idx


def tensor_layouts(tensor: torch.Tensor, first_index: int = 0) -> list[tuple[Layout, int]]:
    """index_layouts of a non-empty tensor: a DTensor's local shard at the global indices it
    holds, or a plain tensor whole."""
    shape, indices = _global_indices(tensor)
    return index_layouts(local_tensor(tensor), shape, indices, first_index)


@dataclass(frozen=True)
class Fill:
    """One tensor to fill with a distribution, its host parameters, seed and stream.

    `layout` None: the whole tensor (a plain tensor) from contract index `first_index`.
    """

    tensor: torch.Tensor
    dist: Distribution
    params: tuple
    seed: int
    stream: int = 0
    first_index: int = 0
    layout: Layout | None = None

    def resolved_layout(self) -> Layout:
        """The layout of the descriptor this fill packs: `layout`, or a plain tensor's own."""
        if self.layout is not None:
            return self.layout
        layouts = tensor_layouts(self.tensor)
        if len(layouts) != 1:
            raise InitValueError(
                f"a tensor of shape {tuple(self.tensor.shape)} and strides {self.tensor.stride()} "
                f"needs {len(layouts)} descriptors; plan it with descriptor_fills")
        return layouts[0][0]

    def pack(self) -> bytes:
        layout = self.resolved_layout()
        pad = MAX_DIMS - len(layout.sizes)
        params = list(self.params) + [0.0] * (NUM_PARAMS - len(self.params))
        return struct.pack(
            DESCRIPTOR_FORMAT,
            self.tensor.data_ptr() + layout.offset * self.tensor.element_size(),
            layout.numel,
            self.first_index,
            self.seed,
            self.stream,
            int(self.dist),
            int(DTYPE_CODES[self.tensor.dtype]),
            len(layout.sizes),
            0,  # padding
            *layout.sizes, *[1] * pad,
            *layout.strides, *[0] * pad,
            *layout.global_strides, *[0] * pad,
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


# The tensor classes whose memory is the tensor's own: no DTensor, fake or functional subclass.
PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def has_real_storage(tensor: torch.Tensor) -> bool:
    """False for tensors nothing can be written to: meta, fake (FakeTensorMode, tracing) and
    functional tensors. A fill on them is a no-op that draws no seed."""
    if type(tensor) in PLAIN_TENSOR_TYPES:  # no subclass: meta, or a functional wrapper
        with torch._C.DisableTorchFunction():
            return not (tensor.is_meta or torch._is_functional_tensor(tensor))
    tensor = local_tensor(tensor)
    with torch._C.DisableTorchFunction():  # a look at metadata, not an access to the memory
        return not (tensor.is_meta or is_fake(tensor) or torch._is_functional_tensor(tensor)
                    or isinstance(tensor, FunctionalTensor))


def check_storage(tensor: torch.Tensor) -> None:
    """Raise UnsafeTargetError (a RuntimeError), with torch's words, unless `tensor`'s storage is allocated and holds
    its whole extent (storage_offset + sum((size - 1) * stride) + 1 elements)."""
    if type(tensor) not in PLAIN_TENSOR_TYPES:
        tensor = local_tensor(tensor)
    with torch._C.DisableTorchFunction():  # a look at the storage, not an access to the memory
        if tensor.numel() == 0:
            return
        storage = tensor.untyped_storage()
        if tensor.is_contiguous() and storage.data_ptr() != 0 and \
                (tensor.storage_offset() + tensor.numel()) * tensor.element_size() <= storage.nbytes():
            return  # the common case: a dense tensor inside its storage
    if storage.data_ptr() == 0:
        raise UnsafeTargetError(
            "The tensor has a non-zero number of elements, but its data is not allocated yet: "
            f"tensor of shape {tuple(tensor.shape)} with a storage of {storage.nbytes()} bytes "
            "(freed, e.g. by FSDP); allocate it (untyped_storage().resize_) before initialising")
    extent = tensor.storage_offset() + 1 + sum(
        (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    if extent * tensor.element_size() > storage.nbytes():
        raise UnsafeTargetError(
            f"sizes {list(tensor.shape)}, strides {list(tensor.stride())}, storage offset "
            f"{tensor.storage_offset()}, and itemsize {tensor.element_size()} requiring a storage "
            f"size of {extent * tensor.element_size()} are out of bounds for storage of size "
            f"{storage.nbytes()}")


def check_no_internal_overlap(tensor: torch.Tensor, fn_name: str) -> None:
    check_placements(tensor, fn_name)
    local = local_tensor(tensor)
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        overlapping = torch._debug_has_internal_overlap(local) == 1
    if overlapping:
        raise UnsafeTargetError(
            f"{fn_name}: tensor of shape {tuple(tensor.shape)} with strides {tensor.stride()}: "
            + OVERLAP_MESSAGE
        )


def check_finite(fn_name: str, **values: float) -> None:
    """Raise TypeError for a value that is not a real number (a string, as torch's argument
    parser does), InitValueError for nan or inf."""
    for name, value in values.items():
        if type(value) is float:  # the common case, without the ABC checks below
            if not math.isfinite(value):
                raise InitValueError(f"{fn_name}: {name} must be finite, got {name}={value}")
            continue
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


def fill_params(dist, params) -> tuple[Distribution, list]:
    """A planner's (distribution, parameters) as a fill holds them: the Distribution, the
    parameters as floats, a uniform's [scale, shift] with no half-open limit (inf)."""
    if type(dist) is not Distribution:
        dist = Distribution(dist)
    params = [float(p) for p in params]
    if dist == Distribution.UNIFORM and len(params) == 2:  # [scale, shift]: no half-open limit
        params.append(math.inf)
    return dist, params


def make_fill(tensor, dist, params, seed, stream=0, first_index=0) -> Fill:
    """The Fill of `tensor`; a negative view becomes its plain view with negated parameters."""
    dist, params = fill_params(dist, params)
    with torch._C.DisableTorchFunction():  # fastinit's own view, not a user's access
        if tensor.is_neg():
            tensor, params = tensor._neg_view(), negated_params(dist, params)
    stream = 0 if type(stream) is int and stream == 0 else check_seed(stream)
    return Fill(tensor, dist, tuple(params), check_seed(seed), stream,
                first_index if type(first_index) is int else int(first_index))


def descriptor_fills(fills: Sequence[Fill]) -> list[Fill]:
    """The fills the backends run: one per descriptor, each over a plain (local) tensor with
    its layout and first contract index, written in place whatever its strides. A DTensor
    contributes its local shard at the global indices it holds; empty tensors none. A complex
    tensor is filled through its real view: complex element k is contract indices 2k (real
    part) and 2k + 1 (imaginary part); in a conjugate view the imaginary parts are written
    negated, so the view reads the values."""
    out: list[Fill] = []
    for f in fills:
        if f.tensor.numel() == 0:
            continue
        local = local_tensor(f.tensor)
        if local.numel() == 0:
            continue
        # the part of an indexed DTensor that this rank holds, then its mirrors (same values)
        for target in (local, *indexed_mirrors(f.tensor)):
            with torch._C.DisableTorchFunction():  # fastinit's own views
                if target.is_complex():
                    out.extend(_complex_fills(f, target))
                    continue
            shape, indices = _global_indices(f.tensor)
            out.extend(replace(f, tensor=target, first_index=first, layout=layout)
                       for layout, first in index_layouts(target, shape, indices, f.first_index))
    return out


def _complex_fills(f: Fill, local: torch.Tensor) -> list[Fill]:
    shape, indices = _global_indices(f.tensor)
    if not local.is_conj():
        real = torch.view_as_real(local)
        return [replace(f, tensor=real, first_index=first, layout=layout) for layout, first in
                index_layouts(real, (*shape, 2), [*indices, range(2)], 2 * f.first_index)]
    real = torch.view_as_real(local.conj())  # the memory as it is: the conjugates
    out = []
    for part, params in ((0, f.params), (1, tuple(negated_params(f.dist, list(f.params))))):
        view = real[..., part]
        for layout, first in index_layouts(view, shape, indices, 0):
            doubled = Layout(layout.sizes, layout.strides,
                             tuple(2 * g for g in layout.global_strides), layout.offset)
            out.append(replace(f, tensor=view, params=params, layout=doubled,
                               first_index=2 * (f.first_index + first) + part))
    return out
