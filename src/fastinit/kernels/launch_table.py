"""The host side of a Triton launch: how the work is cut (``LaunchConfig``, ``chunk_for``), the
table the kernels read (descriptor rows, then the block map grouped by kernel variant), and its
validation (``check_table``, ``check_groups``).

Everything here works on packed descriptor rows (int64, the FillDescriptor layout of
contract_numbers.py with the data word an element offset, see fill_kernels.py) and the tensors
they write; nothing here knows how the rows were made.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fastinit.contract import DTYPE_CODES, Distribution, elements_per_block

from .contract_numbers import *  # noqa: F403  (generated from fastinit.contract_numbers)


@dataclass(frozen=True)
class LaunchConfig:
    """How a fill is cut into programs.

    chunk: elements per program (a power of two, multiple of 4 * tile_blocks); None picks it
      per launch from the total size (``chunk_for``): big enough to amortise a program's setup,
      small enough to give every SM several programs.
    tile_blocks: Philox blocks per loop iteration of a program (4 * tile_blocks fp32-math
      elements); with num_warps = 4, one Philox call and 4 outputs per thread per iteration.
      scripts/gpu_static_report.py gives each variant's registers at this setting.
    num_warps: 4, a memory-bound fill needs occupancy, not a wide block.
    max_programs: programs per launch; a variant's programs are split over several launches
      above it. 2^31 - 1 is CUDA's grid.x limit; tests set it small to exercise the split.
    """

    chunk: int | None = None
    tile_blocks: int = 128
    num_warps: int = 4
    max_programs: int = 2**31 - 1
    min_chunk: int = TRITON_MIN_CHUNK_ELEMENTS  # noqa: F405
    max_chunk: int = MAX_CHUNK_ELEMENTS  # noqa: F405
    programs_per_sm: int = 8


DEFAULT_CONFIG = LaunchConfig()


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def chunk_for(total_elements: int, device: torch.device, config: LaunchConfig) -> int:
    """Elements per program: about programs_per_sm programs per SM, within [min, max] chunk."""
    if config.chunk is not None:
        chunk = config.chunk
    else:
        target = max(1, total_elements // (config.programs_per_sm * _sm_count(device)))
        chunk = 1 << max(0, (target - 1).bit_length())
        chunk = min(max(chunk, config.min_chunk), config.max_chunk)
    check_chunk(chunk, config.tile_blocks)
    return chunk


def check_chunk(chunk: int, tile_blocks: int) -> None:
    """Raise ValueError unless `chunk` is a power of two and a multiple of 4 * tile_blocks."""
    tile = 4 * tile_blocks
    if tile_blocks <= 0 or chunk <= 0 or chunk % tile or chunk & (chunk - 1):
        raise ValueError(
            f"chunk must be a power of two and a multiple of 4 * tile_blocks = {tile}, "
            f"got {chunk}"
        )


# ---------------------------------------------------------------------------------------------
# Kernel variants.

def _int32_halves(word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) int32 halves of int64 words (the descriptor packs int32 pairs)."""
    low = (word & 0xFFFFFFFF).astype(np.int64)
    high = ((word >> 32) & 0xFFFFFFFF).astype(np.int64)
    return low - (low >> 31 << 32), high - (high >> 31 << 32)


def row_distributions(rows: np.ndarray) -> np.ndarray:
    """The distribution code of each descriptor row (n, DESC_WORDS)."""
    return _int32_halves(rows[:, DESC_DIST.value])[0]  # noqa: F405


def row_is_strided(rows: np.ndarray) -> np.ndarray:
    """Whether each descriptor row takes the strided path: anything but one dim of memory and
    contract stride 1 (``Layout.is_contiguous`` of fastinit.plan, read from the row)."""
    ndim = _int32_halves(rows[:, DESC_NDIM.value])[0]  # noqa: F405
    return ~((ndim == 1) & (rows[:, DESC_STRIDE.value] == 1)  # noqa: F405
             & (rows[:, DESC_GLOBAL_STRIDE.value] == 1))  # noqa: F405


def row_variants(rows: np.ndarray) -> np.ndarray:
    """Each row's kernel variant code: 2 * distribution + strided (``variant_of_code``)."""
    return _variant_codes(row_distributions(rows), row_is_strided(rows))


def _variant_codes(distributions: np.ndarray, strided: np.ndarray) -> np.ndarray:
    return 2 * distributions + strided


def variant_of_code(code: int) -> tuple[int, bool]:
    """(distribution, strided) of a variant code of ``row_variants``."""
    return code // 2, bool(code % 2)


def f64_math(dist: int, dtype: torch.dtype) -> bool:
    """Whether a variant computes in fp64 (2 elements per Philox block)."""
    return elements_per_block(dist, dtype) == 2


def _chunks(rows: np.ndarray, distributions: np.ndarray, strided: np.ndarray,
            dtype: torch.dtype, chunk: int) -> np.ndarray:
    """Programs of each row (of these distributions and paths): a contiguous one is cut in
    contract-index space (chunk c covers the Philox blocks of [first // PB + c * CHUNK / PB,
    ...)), a strided one in its local row-major order."""
    numel = rows[:, DESC_NUMEL.value]  # noqa: F405
    first = rows[:, DESC_FIRST_INDEX.value]  # noqa: F405
    two = [code for code in np.unique(distributions).tolist()
           if elements_per_block(code, dtype) == 2]
    per_block = np.where(np.isin(distributions, two), 2, 4)
    span = np.where(strided, numel, first % per_block + numel)
    return np.where(numel == 0, 0, -(-span // chunk))


def build_block_map(rows: np.ndarray, dtype: torch.dtype,
                    chunk: int) -> tuple[np.ndarray, list[int]]:
    """The block map and its groups for descriptor rows (n, DESC_WORDS) of output `dtype`.

    Returns:
        (block_map, groups): block_map (programs, 2), int64, one (descriptor row, chunk) pair
        per program, the programs of one kernel variant together; groups, flat
        [variant code, programs, ...] in block map order, one pair per variant present.
    """
    distributions, strided = row_distributions(rows), row_is_strided(rows)
    counts = _chunks(rows, distributions, strided, dtype, chunk)
    variants = _variant_codes(distributions, strided)
    order = np.argsort(variants, kind="stable")
    row_of = np.repeat(order, counts[order])
    block_map = np.empty((len(row_of), 2), dtype=np.int64)
    block_map[:, 0] = row_of
    starts = np.cumsum(counts[order]) - counts[order]
    block_map[:, 1] = np.arange(len(row_of), dtype=np.int64) - np.repeat(starts, counts[order])
    groups = []
    for code in np.unique(variants[counts > 0]):
        groups += [int(code), int(counts[variants == code].sum())]
    return block_map, groups


# ---------------------------------------------------------------------------------------------
# Validation.

_DIST_CODES = range(int(min(Distribution)), int(max(Distribution)) + 1)  # as the C++ check
# Beyond this, int64 sums and products of a row's or a tensor's words may have wrapped: such
# rows go to the exact check (Python integers), which refuses them (no span comes near it).
_WRAP_GUARD = float(2**62)
# Up to this many rows, the exact check of every row costs less than setting up the vector
# screen (``_rows_to_check``, about 80 us of NumPy calls), which costs about 1 us per row after.
SCREEN_MIN_ROWS = 32


def _check_row(i: int, row: list, t: torch.Tensor, device, dtype, dtype_code: int,
               esize: int) -> None:
    """check_table on descriptor row i (Python ints) over tensor t: the exact check, which
    every refusal's message comes from."""
    size_at, stride_at = DESC_SIZE.value, DESC_STRIDE.value  # noqa: F405
    global_at = DESC_GLOBAL_STRIDE.value  # noqa: F405
    where = f"descriptor {i}: "
    dist_word, ndim = row[DESC_DIST.value], row[DESC_NDIM.value] & 0xFFFFFFFF  # noqa: F405
    dist, code = dist_word & 0xFFFFFFFF, (dist_word >> 32) & 0xFFFFFFFF  # int32 pairs:
    dist, code, ndim = (x - (x >> 31 << 32) for x in (dist, code, ndim))  # low half first
    if dist not in _DIST_CODES:
        raise ValueError(f"{where}dist: unknown distribution code {dist}")
    if t.device != device or t.dtype != dtype or code != dtype_code:
        raise ValueError(f"{where}dtype: code {code} for a {t.dtype} tensor on {t.device}; "
                         f"one launch writes {dtype} (code {dtype_code}) on {device}")
    numel, first = row[DESC_NUMEL.value], row[DESC_FIRST_INDEX.value]  # noqa: F405
    if numel < 0 or first < 0:
        raise ValueError(f"{where}numel {numel} and first_index {first} must be >= 0")
    if not 1 <= ndim <= MAX_DIMS.value:  # noqa: F405
        raise ValueError(f"{where}ndim: {ndim} is outside [1, {MAX_DIMS.value}]")  # noqa: F405
    sizes = row[size_at:size_at + ndim]
    strides = row[stride_at:stride_at + ndim]
    global_strides = row[global_at:global_at + ndim]
    if min(sizes + strides + global_strides) < 0:
        raise ValueError(f"{where}sizes {sizes}, strides {strides} and global strides "
                         f"{global_strides} must be >= 0")
    if math.prod(sizes) != numel:
        raise ValueError(f"{where}numel: {numel} differs from the product of its sizes, "
                         f"{math.prod(sizes)}")
    if not numel:
        return
    storage = t.untyped_storage()
    address = t.data_ptr()
    if address == 0 or storage.data_ptr() == 0:
        raise ValueError(f"{where}data: null address for {numel} elements "
                         f"(a tensor without storage)")
    if address % esize:
        raise ValueError(f"{where}data: address {address} is not aligned to the "
                         f"{esize}-byte elements of its dtype")
    span = 1 + sum((k - 1) * st for k, st in zip(t.shape, t.stride())) if t.numel() else 0
    room = storage.nbytes() // esize - t.storage_offset()
    if span > room:
        raise ValueError(f"{where}data: a tensor spanning {span} elements does not fit the "
                         f"{room} elements of its storage from its storage offset")
    offset = row[DESC_BASE_OFFSET.value]  # noqa: F405
    last = offset + sum((k - 1) * st for k, st in zip(sizes, strides))
    if offset < 0 or last >= span:
        raise ValueError(
            f"{where}data: elements [{offset}, {last}] from the tensor's first element lie "
            f"outside the tensor, elements [0, {span - 1}]")


def _strided_spans(tensors: list) -> tuple[np.ndarray, np.ndarray]:
    """Each tensor's span in elements, from its first to its last (0 when empty), in int64, and
    whether that may have wrapped (a sum past _WRAP_GUARD)."""
    shapes, strides = [t.shape for t in tensors], [t.stride() for t in tensors]
    ndims = np.fromiter(map(len, shapes), np.int64, count=len(shapes))
    total = int(ndims.sum())
    sizes = np.fromiter(itertools.chain.from_iterable(shapes), np.int64, count=total)
    steps = np.fromiter(itertools.chain.from_iterable(strides), np.int64, count=total)
    terms = (sizes - 1) * steps
    owner = np.repeat(np.arange(len(shapes)), ndims)
    ends = np.cumsum(ndims)
    sums = np.concatenate(([0], np.cumsum(terms)))  # wraps modulo 2^64, so each difference is
    span = 1 + sums[ends] - sums[ends - ndims]      # its tensor's sum wherever that fits
    span_f = 1 + np.bincount(owner, weights=terms.astype(np.float64), minlength=len(shapes))
    empty = np.bincount(owner[sizes == 0], minlength=len(shapes)) > 0
    return np.where(empty, 0, span), ~empty & (span_f > _WRAP_GUARD)


def _rows_to_check(rows: np.ndarray, targets: Sequence[torch.Tensor], device, dtype,
                   dtype_code: int, esize: int) -> np.ndarray:
    """The indices of the rows that ``_check_row`` could refuse: the same checks on every row
    at once, in int64, plus every row whose sums or products may have wrapped; all rows when
    a tensor's metadata cannot be read this way (a tensor without storage). The rows left out
    pass ``_check_row``, so its first refusal among the rows returned is the table's first."""
    try:
        facts = [(t.device == device and t.dtype == dtype, t.data_ptr(), s.data_ptr(),
                  s.nbytes(), t.storage_offset(), t.numel() if t.is_contiguous() else -1)
                 for t in targets for s in (t.untyped_storage(),)]
        same, address, storage_address, storage_bytes, storage_offset, span = (
            np.array(column, dtype=np.int64) for column in zip(*facts))
    except (RuntimeError, OverflowError):  # no storage to look at, or an address past int64
        return np.arange(len(targets))
    strided = np.flatnonzero(span < 0)  # a contiguous tensor's span is its numel
    wrapped = np.zeros(len(targets), dtype=bool)
    if strided.size:
        span[strided], wrapped[strided] = _strided_spans([targets[i] for i in strided.tolist()])
    dist, code = _int32_halves(rows[:, DESC_DIST.value])  # noqa: F405
    ndim = _int32_halves(rows[:, DESC_NDIM.value])[0]  # noqa: F405
    numel, first = rows[:, DESC_NUMEL.value], rows[:, DESC_FIRST_INDEX.value]  # noqa: F405
    offset = rows[:, DESC_BASE_OFFSET.value]  # noqa: F405
    dims = np.arange(MAX_DIMS.value) < ndim[:, None]  # noqa: F405

    def words(at: int, fill: int) -> np.ndarray:
        return np.where(dims, rows[:, at:at + MAX_DIMS.value], fill)  # noqa: F405

    sizes, strides = words(DESC_SIZE.value, 1), words(DESC_STRIDE.value, 0)  # noqa: F405
    global_strides = words(DESC_GLOBAL_STRIDE.value, 0)  # noqa: F405
    terms = (sizes - 1) * strides
    last = offset + terms.sum(axis=1)
    last_f = offset + ((sizes - 1.0) * strides.astype(np.float64)).sum(axis=1)
    refused = ((dist < _DIST_CODES.start) | (dist >= _DIST_CODES.stop) | (same == 0)
               | (code != dtype_code) | (numel < 0) | (first < 0) | (ndim < 1)
               | (ndim > MAX_DIMS.value)  # noqa: F405
               | (np.minimum(np.minimum(sizes, strides), global_strides).min(axis=1) < 0)
               | (sizes.prod(axis=1) != numel)
               | (sizes.astype(np.float64).prod(axis=1) > _WRAP_GUARD))
    room = storage_bytes // esize - storage_offset
    refused |= (numel > 0) & ((address == 0) | (storage_address == 0) | (address % esize != 0)
                              | (span > room) | wrapped | (offset < 0)
                              | (last >= span) | (last_f > _WRAP_GUARD))
    return np.flatnonzero(refused)


def check_table(targets: Sequence[torch.Tensor], table: np.ndarray) -> None:
    """Refuse, before any launch, a table that would make the kernel write outside its tensors.

    The checks of the C++ modules (csrc/descriptor_check.h) on each descriptor row, plus the
    bounds that an element offset allows checking: row i, over targets[i], has a known
    distribution code and the dtype code of the targets' one dtype, numel >= 0, first_index >= 0,
    ndim in [1, MAX_DIMS], sizes and strides >= 0 with numel their sizes' product; for numel > 0
    its tensor has allocated storage at an address aligned for its dtype and holding the
    tensor's span (its first to its last element), and every element the row reaches lies
    inside that span. Every block map row names a descriptor row and a chunk >= 0.

    From SCREEN_MIN_ROWS rows on, the rows are screened all at once with NumPy, and only those
    the screen cannot clear are checked one by one: the same refusals and messages as checking
    every row, at about 1 us per row.

    Args:
        targets: the tensors of the launch, one per descriptor row, on one device, one dtype.
        table: the int64 table of ``triton_fill``: the descriptor rows, then the block map.

    Raises:
        ValueError: naming the first bad row and its bad field.
    """
    n = len(targets)
    if not n:
        raise ValueError("a Triton launch needs at least one tensor")
    words = DESC_WORDS.value  # noqa: F405
    if table.ndim != 1 or table.size < n * words or (table.size - n * words) % 2:
        raise ValueError(f"table of {table.size} int64 words is not {n} descriptor rows of "
                         f"{words} words and a block map of (descriptor, chunk) pairs")
    device, dtype = targets[0].device, targets[0].dtype
    dtype_code = int(DTYPE_CODES[dtype])
    esize = targets[0].element_size()
    rows = table[:n * words].reshape(n, words)
    with torch._C.DisableTorchFunction():  # looks at tensors' storage, not at their memory
        candidates = (range(n) if n < SCREEN_MIN_ROWS else
                      _rows_to_check(rows, targets, device, dtype, dtype_code, esize).tolist())
        for i in candidates:
            _check_row(i, rows[i].tolist(), targets[i], device, dtype, dtype_code, esize)
    block_map = table[n * words:].reshape(-1, 2)
    bad = (block_map[:, 0] < 0) | (block_map[:, 0] >= n) | (block_map[:, 1] < 0)
    if bad.any():
        program = int(np.argmax(bad))
        raise ValueError(f"block map row {program}: {block_map[program].tolist()} is not a "
                         f"(descriptor in [0, {n}), chunk >= 0) pair")


def check_groups(n_rows: int, table: np.ndarray, groups: Sequence[int]) -> None:
    """Refuse groups that do not match the block map of a table that passed ``check_table``:
    the groups' programs must add up to the block map's, and every program of a group must
    name a row of that group's variant (a contiguous variant on a strided row would write
    past it).

    Raises:
        ValueError: naming the first bad group or program.
    """
    words = DESC_WORDS.value  # noqa: F405
    if len(groups) % 2 or any(c < 0 for c in groups[1::2]):
        raise ValueError(f"groups must be (variant, programs >= 0) pairs, got {list(groups)}")
    block_map = table[n_rows * words:].reshape(-1, 2)
    if sum(groups[1::2]) != len(block_map):
        raise ValueError(f"groups cover {sum(groups[1::2])} programs, the block map has "
                         f"{len(block_map)}")
    variants = row_variants(table[:n_rows * words].reshape(n_rows, words))
    expected = np.repeat(np.asarray(groups[0::2], dtype=np.int64),
                         np.asarray(groups[1::2], dtype=np.int64))
    bad = variants[block_map[:, 0]] != expected
    if bad.any():
        program = int(np.argmax(bad))
        raise ValueError(
            f"block map row {program}: descriptor {int(block_map[program, 0])} has variant "
            f"{int(variants[block_map[program, 0]])} (2 * distribution + strided), its group "
            f"says {int(expected[program])}")
