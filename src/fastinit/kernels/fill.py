"""The fused Triton fill's launch: the op ``torch.ops.fastinit.triton_fill`` and ``fill``, which
write a list of tensors of one dtype from their packed descriptor rows.

The maths are in fill_math.py, the kernel and its variants in fill_kernels.py, the launch table
(block map, variant groups, validation) in launch_table.py. All launches go through
``triton_fill`` (a torch.library.triton_op, so torch.compile can trace the kernel through
wrap_triton), which checks every row against its own tensor (``check_table``) and every
program against its variant (``check_groups``), rebases the rows on the first tensor, copies
the table to the device once, and launches one kernel per variant present.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from torch._subclasses.functional_tensor import FunctionalTensor

from fastinit.plan import has_real_storage

from .contract_numbers import DESC_BASE_OFFSET, DESC_NUMEL, DESC_WORDS
from .fill_kernels import fill_kernel
from .launch_table import (DEFAULT_CONFIG, LaunchConfig, build_block_map, check_chunk,
                           check_groups, check_table, chunk_for, f64_math, variant_of_code)

OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _fma_probe_kernel(x_ptr, out_ptr):
    a = tl.load(x_ptr)
    c = tl.load(x_ptr + 1)
    tl.store(out_ptr, tl.fma(a, a, c))


@functools.lru_cache(maxsize=None)
def interpreter_fma_is_fused() -> bool:
    """Whether this Triton's interpreter evaluates tl.fma(a, b, c) with a single rounding.

    a = 1 + 2^-12, c = -(1 + 2^-11): a * a = 1 + 2^-11 + 2^-24 exactly, so a fused fma gives
    2^-24 and a multiply then add (the product ties to 1 + 2^-11) gives 0.
    """
    a, c = 1.0 + 2.0**-12, -(1.0 + 2.0**-11)
    x = torch.tensor([a, c], dtype=torch.float32)
    out = torch.zeros(1, dtype=torch.float32)
    _fma_probe_kernel[(1,)](x, out)
    return float(out[0]) == 2.0**-24


def exact_fma_path(device: torch.device) -> bool:
    """Whether the kernels take EXACT_FMA (an interpreter whose tl.fma rounds twice)."""
    return interpreting() and not interpreter_fma_is_fused()


def _check_decomposable(targets: Sequence[torch.Tensor]) -> None:
    """Raise unless a compiler's decomposition of ``triton_fill`` (functional tensors) can trace
    a launch that writes what the op says it writes."""
    if len(targets) != 1:
        raise ValueError(
            f"fastinit::triton_fill traced with {len(targets)} tensors: a compiler sees only "
            "the kernel's tensor argument (the first), and the other tensors' offsets from it "
            "are addresses known only at run time; trace one call per tensor")
    if interpreting():
        raise RuntimeError(
            "fastinit::triton_fill cannot be decomposed under TRITON_INTERPRET=1: "
            "torch.library.wrap_triton hands back the interpreted kernel, which cannot run on "
            "the compiler's tensors. Compile with a backend that keeps custom ops whole "
            "(backend='eager'), or run compiled Triton on a GPU")


@torch.library.triton_op("fastinit::triton_fill", mutates_args=("targets",))
def triton_fill(targets: list[torch.Tensor], table: torch.Tensor, groups: list[int], chunk: int,
                tile_blocks: int, num_warps: int, max_programs: int, exact_fma: bool) -> None:
    """Fill targets[i] as descriptor row i of `table` says: the one launch path of the kernels.

    A torch.library.triton_op, so torch.compile sees the kernels (through wrap_triton) and the
    tensor they write. The kernels' base pointer is targets[0]; before the launch each row's
    element offset from its own tensor becomes one from targets[0] (the tensors' address
    difference), so a launch over many tensors stays one pass, and a launch over one tensor
    writes only through its tensor argument. One kernel per group of `groups`, each over its
    programs of the block map. On fake or meta tensors (the op's fake implementation) it writes
    nothing. Decomposed by a compiler (functional tensors) the table is not read on the host
    (no validation, no rebasing), so such a call takes exactly one tensor, and it needs
    compiled Triton (a GPU).

    Args:
        targets: the tensors written, one per descriptor row (repeats allowed), on one device
          and of one dtype (the output dtype).
        table: int64, on the CPU: len(targets) descriptor rows of DESC_WORDS words (the layout
          of contract_numbers.py, the data word an element offset from that row's tensor),
          then the block map, one (row, chunk) pair per program, grouped by variant.
        groups: flat [variant code, programs, ...] in block map order (``build_block_map``).
        chunk: elements per program (``chunk_for``).
        tile_blocks: Philox blocks per loop iteration of a program.
        num_warps: warps per program.
        max_programs: programs per launch; more launches above it.
        exact_fma: the fp64 round-to-odd fma (``interpreter_fma_is_fused``).

    Raises:
        ValueError: a bad table (not contiguous 1-d int64 on the CPU), table row or block map
          row (``check_table``), groups (``check_groups``), chunk or max_programs; a decomposed
          call over more than one tensor.
        RuntimeError: decomposed by a compiler under TRITON_INTERPRET=1.
    """
    words = DESC_WORDS.value
    base = targets[0]
    if table.dtype != torch.int64 or table.device.type != "cpu" or table.dim() != 1 \
            or not table.is_contiguous():
        raise ValueError(f"table must be a contiguous 1-d int64 CPU tensor, got {table.dtype} "
                         f"of shape {tuple(table.shape)} on {table.device}")
    if max_programs < 1:
        raise ValueError(f"max_programs must be >= 1, got {max_programs}")
    if isinstance(base, FunctionalTensor):  # a compiler decomposes the op: trace the launch
        _check_decomposable(targets)
    elif not has_real_storage(base):  # the fake implementation (fake or meta tensors)
        return
    else:
        check_chunk(chunk, tile_blocks)
        host = table.numpy()
        check_table(targets, host)
        check_groups(len(targets), host, groups)
        if len(targets) > 1:  # offsets from each row's tensor -> offsets from targets[0]
            address, esize = base.data_ptr(), base.element_size()
            deltas = [(t.data_ptr() - address) // esize for t in targets]
            host = host.copy()
            host[:len(targets) * words].reshape(len(targets), words)[:, DESC_BASE_OFFSET.value] \
                += deltas
            table = torch.from_numpy(host)
        if base.device.type == "cuda":  # pinned, so the copy does not wait for the host
            table = table.pin_memory().to(base.device, non_blocking=True)
    table = table.to(base.device)
    map_all = table[len(targets) * words:]
    # enable_fp_fusion=False reaches the kernel in eager; Inductor compiles a decomposed op's
    # kernel with options of its own, without it in torch 2.13 (codegen/wrapper.py), which
    # tests/test_triton_op.py::test_inductor_compiles_the_kernel_bitwise checks on a GPU.
    kernel = torch.library.wrap_triton(fill_kernel)
    with torch.cuda.device(base.device) if base.device.type == "cuda" else contextlib.nullcontext():
        first_program = 0
        for code, programs in zip(groups[0::2], groups[1::2]):
            dist, strided = variant_of_code(code)
            for start in range(first_program, first_program + programs, max_programs):
                kernel[(min(max_programs, first_program + programs - start),)](
                    base, table, map_all[2 * start:], chunk, TILE=tile_blocks, DIST=dist,
                    STRIDED=strided, F64_MATH=f64_math(dist, base.dtype), EXACT_FMA=exact_fma,
                    num_warps=num_warps, enable_fp_fusion=False,
                )
            first_program += programs


def fill(targets: Sequence[torch.Tensor], rows: np.ndarray,
         config: LaunchConfig = DEFAULT_CONFIG) -> int:
    """Fill `targets` (one device, one dtype, all non-empty) from their descriptor rows through
    ``triton_fill``, which validates every row first: one kernel per variant present, more
    launches only when a variant's programs exceed config.max_programs.

    Args:
        targets: the tensors, one per row.
        rows: int64 (len(targets), DESC_WORDS): the packed descriptors, the data word each
          row's element offset from its own tensor's first element.
        config: how the work is cut into programs.

    Returns:
        The number of kernel launches.

    Raises:
        TypeError: a dtype the kernels do not write.
        ValueError: as ``check_table`` and ``check_groups``, before anything is written.
    """
    if not len(targets):
        return 0
    dtype = targets[0].dtype
    if dtype not in OUT_DTYPES:
        raise TypeError(f"the Triton fill writes {list(OUT_DTYPES)}, got {dtype}")
    chunk = chunk_for(int(rows[:, DESC_NUMEL.value].sum()), targets[0].device, config)
    block_map, groups = build_block_map(rows, dtype, chunk)
    table = torch.from_numpy(np.concatenate([rows.reshape(-1), block_map.reshape(-1)]))
    torch.ops.fastinit.triton_fill(list(targets), table, groups, chunk, config.tile_blocks,
                                   config.num_warps, config.max_programs,
                                   exact_fma_path(targets[0].device))
    return sum(-(-programs // config.max_programs) for programs in groups[1::2])
