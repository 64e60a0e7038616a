"""Strided descriptors: every backend writes a target of any layout in place, element j of its
logical order at its strided address with the value of its contract index, and nothing else.

Layouts: channels_last 4-D and 5-D, transposed, sliced with steps, expanded-then-cloned,
storage offsets, and shards of a 3-D tensor as DTensor places them on a rank (Shard(0), (1),
(2), uneven, _StridedShard runs, even and uneven), described here by their global indices so
every backend runs without a process group (tests/test_sharded.py runs real DTensors).
Each target sits in a NaN-poisoned buffer whose other elements must stay NaN. Every backend
must write, bit for bit, what it writes into the contiguous whole tensor at the target's global
indices (the values of the contiguous path, unchanged), and the reference's values within the
contract (bitwise for uniform and constant).
"""
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

import fastinit  # noqa: F401  (conftest sets TRITON_INTERPRET before triton is imported)
from fastinit import plan
from fastinit.backends import cpu, reference
from fastinit.backends import triton as triton_backend
from fastinit.contract import Distribution, half_open_limit, uniform_params
from fastinit.plan import Layout, collapse, index_layouts, make_fill, pack_descriptors

from contract_cases import assert_matches_reference, distributions
from conftest import backend_params

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
NAMES = ["uniform", "normal", "trunc_normal", "trunc_fp64_path", "constant"]
SEED, STREAM = 0xFEDCBA9876543210, 0x8000000000000005


try:
    from fastinit import _cuda  # the CUDA kernels' per-thread code runs on the host too
except ImportError:
    _cuda = None


def _emulated_cuda(fills):
    _cuda.emulate(pack_descriptors(fills), 11)


def _triton(fills):
    from fastinit.kernels.launch_table import LaunchConfig

    triton_backend.fill(fills, LaunchConfig(chunk=256, tile_blocks=32))


def _backends():
    out = {"cpu": cpu.run, "reference": reference.run}
    if _cuda is not None:
        out["cuda_kernel_code"] = _emulated_cuda
    if triton_backend.IMPORT_ERROR is None and (
            os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()):
        out["triton"] = _triton
    return out


BACKENDS = _backends()
# What clone() gives an expanded tensor: dense strides in the order of the expanded ones.
EXPANDED_THEN_CLONED_STRIDES = torch.empty(3, 1, 5).expand(3, 4, 5).clone().stride()


def _dense(base, shape, strides, offset):
    return base.as_strided(shape, strides, offset)


# name -> function(base buffer) -> target view (all inside 4096 elements)
LAYOUTS = {
    "channels_last_4d": lambda b: _dense(b, (4, 6, 5, 3), (90, 1, 18, 6), 7),
    "channels_last_5d": lambda b: _dense(b, (2, 3, 4, 5, 6), (360, 1, 90, 18, 3), 11),
    "transposed": lambda b: _dense(b, (23, 37), (1, 23), 5),
    "sliced_with_steps": lambda b: b[100:100 + 40 * 50].view(40, 50)[3:31:2, 5:45:3],
    "expanded_then_cloned": lambda b: _dense(b, (3, 4, 5), EXPANDED_THEN_CLONED_STRIDES, 13),
    "storage_offset": lambda b: b[17:17 + 777].view(21, 37),
    "permuted_3d": lambda b: _dense(b, (7, 9, 11), (1, 77, 7), 3),
    "size_one_dims": lambda b: _dense(b, (1, 13, 1, 17), (999, 1, 5, 13), 2),
}


def _whole(backend, fill_params, shape, dtype, indices=None):
    """`backend`'s values of the whole contiguous tensor `shape`, at `indices` (per dim
    global indices; all of it when None)."""
    dist, params = fill_params
    whole = torch.full(shape, float("nan"), dtype=dtype)
    BACKENDS[backend]([make_fill(whole, dist, params, SEED, STREAM)])
    if indices is None:
        return whole
    return whole[np.ix_(*[np.asarray(list(i)) for i in indices])]


def _check(base, target, backend, name, dtype, fill_params, shape, indices=None):
    """Only the target was written; it holds, bit for bit, what the same backend writes into
    the whole contiguous tensor at the same indices, and the reference's values within the
    contract."""
    marker = torch.full(base.shape, 0.0, dtype=torch.float64)
    marker.as_strided(target.shape, target.stride(), target.storage_offset()).fill_(1.0)
    written = marker == 1.0
    assert torch.isnan(base[~written]).all(), f"{backend}: an element outside the target was written"
    got = target.contiguous()
    assert not torch.isnan(got).any(), f"{backend}: an element was not written"
    same_backend = _whole(backend, fill_params, shape, dtype, indices)
    assert torch.equal(got.view(-1).view(torch.uint8), same_backend.reshape(-1).view(torch.uint8)), \
        f"{backend} {name} {dtype}: not bitwise equal to its contiguous fill"
    assert_matches_reference(got, _whole("reference", fill_params, shape, dtype, indices),
                             name, dtype)


@pytest.mark.parametrize("backend", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_get_their_logical_values_in_place(layout, dtype, backend):
    for name in NAMES:
        base = torch.full((4096,), float("nan"), dtype=dtype)
        target = LAYOUTS[layout](base)
        fill = make_fill(target, *distributions(dtype)[name], SEED, STREAM)
        fills = plan.descriptor_fills([fill])
        assert len(fills) == 1
        BACKENDS[backend](fills)
        _check(base, target, backend, name, dtype, distributions(dtype)[name],
               tuple(target.shape))


# Shards of a global (6, 10, 12) tensor: per dim, the global indices the local part holds.
GLOBAL = (6, 10, 12)
SHARDS = {
    "shard0": [range(3, 6), range(10), range(12)],
    "shard1": [range(6), range(5, 10), range(12)],
    "shard2": [range(6), range(10), range(4, 8)],
    "shard1_uneven_last": [range(6), range(8, 10), range(12)],
    "shard0_and_2": [range(2, 4), range(10), range(9, 12)],
    "strided_shard_even": [[0, 1, 4, 5], range(10), range(12)],
    "strided_shard_dim2": [range(6), range(10), [1, 2, 5, 6, 9, 10]],
    "strided_shard_uneven": [range(6), [0, 1, 2, 5, 6, 9], range(12)],
    "strided_single_elements": [range(6), range(10), [0, 3, 6, 9]],
}


@pytest.mark.parametrize("backend", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shard", list(SHARDS))
@pytest.mark.parametrize("memory", ["contiguous", "permuted"])
def test_shards_get_the_values_of_their_global_indices(shard, dtype, backend, memory):
    idx = SHARDS[shard]
    local_shape = tuple(len(i) for i in idx)
    for name in ("uniform", "normal", "trunc_fp64_path", "constant"):
        base = torch.full((4096,), float("nan"), dtype=dtype)
        if memory == "contiguous":
            target = base[9: 9 + int(np.prod(local_shape))].view(local_shape)
        else:  # a local shard stored channels-last-like: dim 0 innermost
            n0 = local_shape[0]
            target = base.as_strided(local_shape, (1, n0 * local_shape[2], n0), 9)
        fill = make_fill(target, *distributions(dtype)[name], SEED, STREAM)
        layouts = index_layouts(target, GLOBAL, idx)
        uneven = shard == "strided_shard_uneven"
        assert len(layouts) == (3 if uneven else 1)
        fills = [replace(fill, first_index=first, layout=layout) for layout, first in layouts]
        BACKENDS[backend](fills)
        _check(base, target, backend, name, dtype, distributions(dtype)[name], GLOBAL, idx)


def test_collapse_merges_what_nests_and_drops_size_one_dims():
    # contiguous 3-D: one dim
    assert collapse((2, 3, 4), (12, 4, 1), (12, 4, 1)) == ((24,), (1,), (1,))
    # transposed: memory does not nest, nothing merges
    assert collapse((4, 3), (1, 4), (3, 1)) == ((4, 3), (1, 4), (3, 1))
    # a Shard(1) of a (4, 10) tensor, 5 columns: memory nests, global does not
    assert collapse((4, 5), (5, 1), (10, 1)) == ((4, 5), (5, 1), (10, 1))
    # size-one dims vanish, a scalar is (1,)
    assert collapse((1, 7, 1), (0, 1, 0), (7, 1, 1)) == ((7,), (1,), (1,))
    assert collapse((), (), ()) == ((1,), (1,), (1,))


def test_descriptor_count_and_fast_path():
    """Contiguous targets (whatever their shape) are the single-dim fast path; strided ones are
    one descriptor each; more than MAX_DIMS dims that do not merge split on leading dims."""
    t = torch.empty(3, 4, 5)
    (layout, first), = index_layouts(t, t.shape, [range(n) for n in t.shape])
    assert layout.is_contiguous() and layout.sizes == (60,) and first == 0
    cl = torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last)
    (layout, _), = plan.tensor_layouts(cl)
    assert not layout.is_contiguous() and layout.sizes == (2, 3, 20)
    many = torch.empty([2] * 10).permute(*reversed(range(10)))  # nothing merges
    layouts = plan.tensor_layouts(many)
    assert len(layouts) == 4 and all(len(lay.sizes) == plan.MAX_DIMS for lay, _ in layouts)
    for backend, run in BACKENDS.items():
        many.fill_(float("nan"))
        fill = make_fill(many, *distributions(torch.float32)["uniform"], SEED, STREAM)
        run(plan.descriptor_fills([fill]))
        assert torch.equal(many, _whole("reference", distributions(torch.float32)["uniform"],
                                        tuple(many.shape), torch.float32)), backend


def test_layout_is_packed_as_the_descriptor():
    t = torch.empty(20, 26)[2:, 1:].t()
    fill = make_fill(t, *distributions(torch.float32)["uniform"], 3, 4)
    (f,) = plan.descriptor_fills([fill])
    assert f.layout == Layout((25, 18), (1, 26), (18, 1), 0)
    assert len(f.pack()) == plan.DESCRIPTOR_SIZE == 312


BIG_LAYOUTS = {  # past the CPU's 65,536-element boxes, and a last dim longer than one box
    "channels_last": lambda b: _dense(b, (3, 130, 17, 31), (68510, 1, 4030, 130), 5),
    "transposed": lambda b: _dense(b, (300, 701), (1, 300), 3),
    "long_last_dim_transposed": lambda b: _dense(b, (2, 70001), (1, 2), 1),
    "row_shard": lambda b: _dense(b, (40, 3001), (3001, 1), 2),
}


@pytest.mark.parametrize("backend", [b for b in ("cpu", "cuda_kernel_code") if b in BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", list(BIG_LAYOUTS))
def test_large_layouts_cross_chunk_boundaries(layout, dtype, backend):
    for name in ("uniform", "normal"):
        base = torch.full((300 * 701 + 16,), float("nan"), dtype=dtype)
        target = BIG_LAYOUTS[layout](base)
        fill = make_fill(target, *distributions(dtype)[name], SEED, STREAM)
        if layout == "row_shard":  # columns 1000..4000 of a (40, 6000) tensor, from index 7
            idx = [range(40), range(1000, 4001)]
            (lay, first), = index_layouts(target, (40, 6000), idx, 7)
            fills = [replace(fill, layout=lay, first_index=first)]
        else:
            fills = plan.descriptor_fills([fill])
        BACKENDS[backend](fills)
        marker = torch.zeros(base.shape, dtype=torch.bool)
        marker.as_strided(target.shape, target.stride(), target.storage_offset()).fill_(True)
        assert torch.isnan(base[~marker]).all()
        if layout == "row_shard":
            whole = torch.full((7 + 40 * 6000,), float("nan"), dtype=dtype)
            cpu.run([make_fill(whole, *distributions(dtype)[name], SEED, STREAM)])
            expected = whole[7:].view(40, 6000)[:, 1000:4001]
        else:
            expected = _whole("cpu", distributions(dtype)[name], tuple(target.shape), dtype)
        assert torch.equal(target.contiguous().view(-1).view(torch.uint8),
                           expected.contiguous().view(-1).view(torch.uint8)), (backend, name)


HALF_OPEN_SIZES = {"cpu": 2**24, "cuda_kernel_code": 2**24, "reference": 2**20,
                   "triton": 2**14 if os.environ.get("TRITON_INTERPRET") == "1" else 2**24}


@pytest.mark.parametrize("backend", backend_params(BACKENDS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("a,b", [(0.0, 1.0), (-0.1, 0.1)])
def test_half_precision_uniform_stays_below_b(a, b, dtype, backend):
    """uniform_ on [a, b) in bf16/fp16 never reaches b on any backend (2^24 elements; fewer for
    the reference and Triton's interpreter), and every backend writes the cpu backend's bits."""
    n = HALF_OPEN_SIZES[backend]
    fill_params = (Distribution.UNIFORM, uniform_params(a, b, dtype))
    out = torch.full((n,), float("nan"), dtype=dtype)
    BACKENDS[backend]([make_fill(out, *fill_params, SEED, STREAM)])
    assert not torch.isnan(out).any()
    assert float(out.double().max()) < b, f"{backend} {dtype}: reached b = {b}"
    if backend != "cpu":
        assert torch.equal(out, _whole("cpu", fill_params, (n,), dtype))


@pytest.mark.parametrize("dtype,a,b", [(torch.bfloat16, 0.0, 1.0), (torch.bfloat16, -0.1, 0.1),
                                       (torch.float16, 0.0, 1.0)])
def test_half_open_limit_changes_only_the_values_that_reach_b(dtype, a, b):
    """Negative control: without the limit the same 2^24 draws reach b; with it exactly those
    elements become a (rounded to the dtype) and the others keep their bits."""
    n = 2**24
    params = uniform_params(a, b, dtype)
    out, unlimited = (torch.empty(n, dtype=dtype) for _ in range(2))
    cpu.run([make_fill(out, Distribution.UNIFORM, params, SEED, STREAM)])
    cpu.run([make_fill(unlimited, Distribution.UNIFORM, params[:2], SEED, STREAM)])
    reached = unlimited.double() >= b
    assert reached.sum() > 100
    assert torch.equal(out[~reached], unlimited[~reached])
    assert (out[reached] == torch.tensor(a, dtype=dtype)).all()


def test_half_open_limit_is_the_rounding_boundary():
    """The limit is the smallest fp32 value the dtype rounds to b or above."""
    for dtype in (torch.bfloat16, torch.float16):
        for b in (1.0, 0.1, -0.1, 3.0, 1e-3):
            limit = half_open_limit(b, dtype)
            below = float(np.nextafter(np.float32(limit), np.float32(-np.inf)))
            assert torch.tensor(limit, dtype=torch.float32).to(dtype).double() >= b
            assert torch.tensor(below, dtype=torch.float32).to(dtype).double() < b
    assert half_open_limit(1.0, torch.float32) == float("inf")


def test_a_fill_that_needs_several_descriptors_must_be_planned():
    many = torch.empty([2] * 10).permute(*reversed(range(10)))
    fill = make_fill(many, *distributions(torch.float32)["uniform"], SEED, STREAM)
    with pytest.raises(fastinit.InitValueError, match="needs 4 descriptors"):
        fill.pack()
    assert len(plan.descriptor_fills([fill])) == 4
