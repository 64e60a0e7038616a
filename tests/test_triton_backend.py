"""The `triton` backend (src/fastinit/kernels/) held to the `reference` backend: bitwise for uniform
and constant, within the contract's tolerance for normal and trunc_normal, for every dtype.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, set
here before Triton is imported); with a CUDA device and no TRITON_INTERPRET they run compiled.
Launch configurations with small chunks and tiles put the chunk and tile edges at small sizes.
"""
import os

import numpy as np
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from conftest import poisoned, triton_kernels_or_skip  # noqa: E402

kernels, DEVICE = triton_kernels_or_skip()
INTERPRETED = DEVICE == "cpu"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import fastinit  # noqa: E402
from fastinit import plan  # noqa: E402
from fastinit.backends import cpu, reference  # noqa: E402
from fastinit.backends import triton as triton_backend  # noqa: E402
from fastinit.contract import Distribution  # noqa: E402
from fastinit.contract_numbers import DESCRIPTOR_WORDS  # noqa: E402
from fastinit.kernels import fill_math, launch_table  # noqa: E402
from fastinit.plan import make_fill, pack_descriptors  # noqa: E402

from contract_cases import (  # noqa: E402
    Z_TOLERANCE,
    assert_matches_reference,
    distributions,
    second_draw_indices,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SEED = 0xFEDCBA9876543210  # above 2^63: the halves are split on the host
STREAM = 0x8000000000000005
# 4 * 2^32 - 6: Philox blocks 2^32 - 2, 2^32 - 1, 2^32, ... so the low counter word wraps and
# carries into the high one inside a tile; not a multiple of 4 (nor of 2 + 1).
FIRST_INDEX = 4 * 2**32 - 6
SMALL = kernels.LaunchConfig(chunk=256, tile_blocks=32)  # 128-element tiles, 2 per chunk


def reference_values(fill):
    return reference.contract_values(fill).reshape(fill.tensor.shape)


@triton.jit
def _philox_kernel(words_ptr, out_ptr):
    w = tl.load(words_ptr + tl.arange(0, 8)).to(tl.uint32)
    c0 = tl.sum(tl.where(tl.arange(0, 8) == 0, w, 0), axis=0)
    c1 = tl.sum(tl.where(tl.arange(0, 8) == 1, w, 0), axis=0)
    c2 = tl.sum(tl.where(tl.arange(0, 8) == 2, w, 0), axis=0)
    c3 = tl.sum(tl.where(tl.arange(0, 8) == 3, w, 0), axis=0)
    k0 = tl.sum(tl.where(tl.arange(0, 8) == 4, w, 0), axis=0)
    k1 = tl.sum(tl.where(tl.arange(0, 8) == 5, w, 0), axis=0)
    zero = tl.zeros([2], tl.uint32)
    r0, r1, r2, r3 = fill_math.philox4x32_10(zero + c0, zero + c1, zero + c2, zero + c3, k0, k1)
    tl.store(out_ptr + tl.arange(0, 2), r0.to(tl.int64))
    tl.store(out_ptr + 2 + tl.arange(0, 2), r1.to(tl.int64))
    tl.store(out_ptr + 4 + tl.arange(0, 2), r2.to(tl.int64))
    tl.store(out_ptr + 6 + tl.arange(0, 2), r3.to(tl.int64))


@pytest.mark.parametrize(
    "counter,key,expected",
    [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter, key, expected):
    words = torch.tensor(list(counter) + list(key) + [0, 0], dtype=torch.int64, device=DEVICE)
    out = torch.zeros(8, dtype=torch.int64, device=DEVICE)
    _philox_kernel[(1,)](words, out)
    assert tuple(out.cpu().tolist()[::2]) == expected


def test_interpreter_fma_is_detected():
    """Uniform's bitwise equality rests on a single-rounding fma; Triton >= 3.9's interpreter
    has one, older ones take the fp64 round-to-odd path (covered by the test below)."""
    if not INTERPRETED:
        pytest.skip("the probe is for the interpreter")
    version = tuple(int(x) for x in triton.__version__.split(".")[:2])
    assert kernels.interpreter_fma_is_fused() == (version >= (3, 9)), triton.__version__


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(distributions(torch.float32)))
def test_matches_reference(name, dtype):
    dist, params = distributions(dtype)[name]
    fill = make_fill(poisoned((37, 29), dtype, DEVICE), dist, params, SEED, STREAM, FIRST_INDEX)
    assert triton_backend.fill([fill], SMALL) == 1
    assert_matches_reference(fill.tensor, reference_values(fill), name, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_exact_fma_path_matches_reference(monkeypatch, dtype):
    """The fp64 round-to-odd fma (used where an interpreter's fma is not fused) is exact."""
    monkeypatch.setattr(kernels, "exact_fma_path", lambda device: True)
    for name in ("uniform", "trunc_normal"):
        dist, params = distributions(dtype)[name]
        fill = make_fill(poisoned((1000,), dtype, DEVICE), dist, params, 7, 3, 1)
        triton_backend.fill([fill], SMALL)
        assert_matches_reference(fill.tensor, reference_values(fill), name, dtype)


@pytest.mark.slow
@pytest.mark.skipif(cpu.IMPORT_ERROR is not None, reason="the C++ cpu backend is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_exact_fma_path_gives_the_cpp_bits(monkeypatch, dtype):
    """Every fma of the fp32 polynomials takes the exact path where an interpreter's fma is not
    fused (Triton < 3.9, which otherwise moved normal values by up to 8 ulp): forced here, every
    fp32-math distribution, contiguous and strided, is bitwise the cpu backend's."""
    monkeypatch.setattr(kernels, "exact_fma_path", lambda device: True)
    for name, (dist, params) in distributions(dtype).items():
        for shape, make in (((2000,), lambda t: t), ((40, 30), lambda t: t.t())):
            target = make(poisoned(shape, dtype, DEVICE))
            triton_backend.fill(plan.descriptor_fills([make_fill(target, dist, params, SEED, STREAM)]),
                         SMALL)
            expected = poisoned(tuple(target.shape), dtype)
            cpu.run([make_fill(expected, dist, params, SEED, STREAM)])
            assert torch.equal(target.cpu(), expected), f"{name} {dtype} {shape}"


@pytest.mark.slow
@pytest.mark.skipif(cpu.IMPORT_ERROR is not None, reason="the C++ cpu backend is not built")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_same_numbers_as_cpp(dtype):
    """The fp32 polynomials are the C++ ones with the same fmas: fp32-math results are bitwise
    those of the cpu backend; fp64 uniform rounds its product and sum separately there, here and
    in the reference; fp64 log/sin/cos differ between libms by an ulp, so only those are left
    out."""
    for name, (dist, params) in distributions(dtype).items():
        ours = make_fill(poisoned((2000,), dtype, DEVICE), dist, params, SEED, STREAM, 5)
        theirs = make_fill(poisoned((2000,), dtype), dist, params, SEED, STREAM, 5)
        triton_backend.fill([ours], SMALL)
        cpu.run([theirs])
        if dtype == torch.float64 and name not in ("uniform", "constant"):
            continue
        assert torch.equal(ours.tensor.cpu(), theirs.tensor), f"{name} {dtype}"


@pytest.mark.skipif(cpu.IMPORT_ERROR is not None, reason="the C++ cpu backend is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_wide_trunc_normal_second_draws_as_cpp(dtype):
    """Windows around the elements of a wide trunc_normal that take their second draw, in one
    launch, contiguous and (transposed) strided: bitwise the cpu backend's values."""
    dist, params = distributions(dtype)["trunc_wide"]
    firsts = [max(0, i - 50) for i in second_draw_indices(params, SEED, STREAM)]
    for shape, make in (((100,), lambda t: t), ((10, 10), lambda t: t.t())):
        targets = [make(poisoned(shape, dtype, DEVICE)) for _ in firsts]
        triton_backend.fill(plan.descriptor_fills([make_fill(t, dist, params, SEED, STREAM, first)
                                            for t, first in zip(targets, firsts)]), SMALL)
        for target, first in zip(targets, firsts):
            expected = poisoned(tuple(target.shape), dtype)
            cpu.run([make_fill(expected, dist, params, SEED, STREAM, first)])
            assert torch.equal(target.cpu(), expected), f"{shape} first index {first}"


def _carve(buffer, offset, numel, guard):
    """A view of `numel` elements at `offset` in `buffer`, with `guard` elements either side."""
    start = offset + guard
    return buffer[start : start + numel], start + numel + guard


@pytest.mark.slow
def test_one_launch_many_tensors():
    """Over 200 tensors of mixed sizes, distributions and shard offsets in one pass; each a
    slice of one poisoned buffer with NaN guards around it that must stay untouched."""
    dtype = torch.float32
    chunk = SMALL.chunk
    sizes = [0, 1, 3, chunk - 1, chunk, chunk + 1, 2, 5, 7, 64, 129]
    names = list(distributions(dtype))
    firsts = [0, 1, 2, 3, 5, 4 * 2**32 - 1, 2**40 + 2]
    guard = 3
    specs = [
        (sizes[i % len(sizes)], names[(i // 3) % len(names)], firsts[i % len(firsts)], i)
        for i in range(230)
    ]
    total = sum(n + 2 * guard for n, *_ in specs)
    buffer = poisoned((total,), dtype, DEVICE)
    fills, spans, offset = [], [], 0
    for numel, name, first, i in specs:
        view, end = _carve(buffer, offset, numel, guard)
        dist, params = distributions(dtype)[name]
        fills.append(make_fill(view, dist, params, SEED + i, i, first))
        spans.append((offset, end, name))
        offset = end
    # one kernel per variant present: here one per distribution, all contiguous
    assert triton_backend.fill(fills, SMALL) == len({d for d, _ in distributions(dtype).values()})
    host = buffer.cpu()
    for f, (start, end, name) in zip(fills, spans):
        assert torch.isnan(host[start : start + guard]).all(), "wrote before a target"
        assert torch.isnan(host[end - guard : end]).all(), "wrote after a target"
        numel = f.tensor.numel()
        got = host[start + guard : start + guard + numel]
        assert_matches_reference(got, reference_values(f).cpu(), name, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_shards_equal_the_whole(dtype):
    """A tensor filled as shards (first_index = the shard's global offset, not a multiple of
    4) equals the tensor filled whole, for 4- and 2-element Philox blocks."""
    for name in ("uniform", "normal", "trunc_fp64_path"):
        dist, params = distributions(dtype)[name]
        whole = make_fill(poisoned((1001,), dtype, DEVICE), dist, params, 11, 2)
        triton_backend.fill([whole], SMALL)
        cuts = [0, 3, 130, 131, 517, 1001]
        out = poisoned((1001,), dtype, DEVICE)
        shards = [
            make_fill(out[a:b], dist, params, 11, 2, first_index=a) for a, b in zip(cuts, cuts[1:])
        ]
        triton_backend.fill(shards, SMALL)
        assert torch.equal(out, whole.tensor), name


def test_block_map_split_over_launches():
    """A block map longer than max_programs is split into several launches, same values."""
    dtype = torch.float16
    fills = []
    for i, numel in enumerate([700, 5, 1025, 256, 3]):
        name = list(distributions(dtype))[i]
        dist, params = distributions(dtype)[name]
        fills.append(make_fill(poisoned((numel,), dtype, DEVICE), dist, params, 3, i, i))
    split = kernels.LaunchConfig(chunk=256, tile_blocks=32, max_programs=3)
    assert triton_backend.fill(fills, split) > 1
    for f in fills:
        again = make_fill(poisoned(f.tensor.shape, dtype, DEVICE), f.dist, f.params, f.seed,
                          f.stream, f.first_index)
        triton_backend.fill([again], SMALL)
        assert torch.equal(f.tensor, again.tensor)
        assert not torch.isnan(f.tensor).any()


def test_tables_and_chunks():
    """Host tables: the packed descriptors (seeds and streams above 2^63 as their 64-bit
    patterns), one program per chunk, none for an empty tensor, a strided tensor cut in its
    local order; the automatic chunk is a power of two within its bounds."""
    tensors = [torch.empty(n, dtype=torch.float32) for n in (0, 256, 257, 1)]
    tensors.append(torch.empty(20, 26).t())
    fills = [make_fill(t, Distribution.UNIFORM, [1.0, 0.0], 2**64 - 1, 2**63 + 1, 3) for t in tensors]
    desc, block_map = triton_backend.descriptor_rows(fills), launch_table.build_block_map(
        triton_backend.descriptor_rows(fills), torch.float32, 256)[0]
    word = DESCRIPTOR_WORDS
    packed = np.frombuffer(pack_descriptors(fills), dtype=np.int64).reshape(desc.shape)
    others = [w for w in range(desc.shape[1]) if w != word["data"]]
    assert np.array_equal(desc[:, others], packed[:, others])
    # the data word: each descriptor's element offset from its tensor's first element (no
    # address); 0 for a whole plain tensor, the layout's offset for the parts of a tensor of
    # more dims than a descriptor holds
    assert desc[:, word["data"]].tolist() == [0] * 5
    parts = plan.descriptor_fills([make_fill(torch.empty([2] * 10).permute(*range(9, -1, -1)),
                                             Distribution.UNIFORM, [1.0, 0.0], 1)])
    offsets = triton_backend.descriptor_rows(parts)[:, word["data"]].tolist()
    assert offsets == [p.layout.offset for p in parts] and len(set(offsets)) == len(parts) > 1
    assert int(desc[0, word["seed"]]) % 2**64 == 2**64 - 1
    assert int(desc[0, word["stream"]]) % 2**64 == 2**63 + 1
    assert desc[4, word["size"]: word["size"] + 2].tolist() == [26, 20]
    assert desc[4, word["stride"]: word["stride"] + 2].tolist() == [1, 26]
    assert desc[4, word["global_stride"]: word["global_stride"] + 2].tolist() == [20, 1]
    # first_index 3: 256 elements span blocks 0..64 (2 chunks), 257 span 0..65 (2), 1 -> 1;
    # the strided 26 x 20 (520 elements) takes ceil(520 / 256) = 3, whatever first_index is.
    assert block_map.tolist() == [[1, 0], [1, 1], [2, 0], [2, 1], [3, 0], [4, 0], [4, 1], [4, 2]]
    big = kernels.chunk_for(3 * 10**9, torch.device("cpu"), kernels.DEFAULT_CONFIG)
    assert big == kernels.DEFAULT_CONFIG.max_chunk
    assert kernels.chunk_for(10, torch.device("cpu"), kernels.DEFAULT_CONFIG) == 4096
    with pytest.raises(ValueError):
        kernels.chunk_for(10, torch.device("cpu"), kernels.LaunchConfig(chunk=100))


def test_empty_and_nothing_to_do():
    assert triton_backend.fill([]) == 0
    empty = poisoned((0, 5), torch.float32, DEVICE)
    assert triton_backend.fill([make_fill(empty, Distribution.NORMAL, [0.0, 1.0], 1)]) == 0
    triton_backend.run([])


def test_supports():
    assert triton_backend.NAME == "triton"
    assert triton_backend.supports(torch.device("cuda"))
    assert triton_backend.supports(torch.device("cpu")) == INTERPRETED
    assert triton_backend.supports(torch.device("meta")) is False


def _dropin_calls():
    return [
        lambda t, g: fastinit.kaiming_uniform_(t, a=0.1, generator=g),
        lambda t, g: fastinit.kaiming_normal_(t, mode="fan_out", generator=g),
        lambda t, g: fastinit.xavier_uniform_(t, gain=1.5, generator=g),
        lambda t, g: fastinit.xavier_normal_(t, generator=g),
        lambda t, g: fastinit.uniform_(t, -0.2, 0.3, generator=g),
        lambda t, g: fastinit.normal_(t, 0.1, 0.02, generator=g),
        lambda t, g: fastinit.trunc_normal_(t, std=0.02, generator=g),
        lambda t, g: fastinit.trunc_normal_(t, mean=0.0, std=1.0, a=4.0, b=5.0, generator=g),
        lambda t, g: fastinit.constant_(t, 0.3),
        lambda t, g: fastinit.ones_(t),
        lambda t, g: fastinit.zeros_(t),
    ]


@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropin_api_uses_triton(dtype):
    """set_backend("triton"): the torch.nn.init-style functions give the reference's values."""
    names = ["uniform", "normal", "uniform", "normal", "uniform", "normal", "trunc_normal",
             "trunc_normal", "constant", "constant", "constant"]
    stds = [None, None, None, None, None, 0.02, 0.02, 1.0, None, None, None]
    for call, name, std in zip(_dropin_calls(), names, stds):
        outs = []
        for backend in ("triton", "reference"):
            fastinit.set_backend(backend)
            t = poisoned((48, 33), dtype, DEVICE if backend == "triton" else "cpu")
            call(t, torch.Generator().manual_seed(1234))
            outs.append(t.cpu())
        if name in ("uniform", "constant"):
            assert torch.equal(outs[0], outs[1]), (name, dtype)
        else:
            o, r = outs[0].double(), outs[1].double()
            scale = 1.0 if std is None else std
            if std is None:  # kaiming / xavier normal: the fill's own std
                scale = float(r.std())
            ulp = torch.finfo(dtype).eps * r.abs().clamp_min(torch.finfo(dtype).tiny)
            assert ((o - r).abs() <= 2 * Z_TOLERANCE * scale + ulp).all(), (name, dtype)
    fastinit.set_backend("triton")
    t = poisoned((5, 7), dtype, DEVICE)
    fastinit.normal_(t, generator=torch.Generator().manual_seed(0))
    assert fastinit.backend_info()["last_run"][torch.device(DEVICE).type] == "triton"


def test_dropin_noncontiguous_target():
    """A transposed target gets the values of its logical indices, written in place."""
    fastinit.set_backend("triton")
    base = poisoned((33, 48), torch.float32, DEVICE)
    fastinit.uniform_(base.t(), generator=torch.Generator().manual_seed(5))
    fastinit.set_backend("reference")
    ref = poisoned((48, 33), torch.float32)
    fastinit.uniform_(ref, generator=torch.Generator().manual_seed(5))
    assert torch.equal(base.t().cpu(), ref)


@pytest.mark.skipif(not INTERPRETED or not torch.cuda.is_available(), reason="needs CUDA tensors")
def test_interpreter_with_cuda_tensors():
    fill = make_fill(poisoned((100,), torch.float32, "cuda"), Distribution.UNIFORM, [1.0, 0.0], 1)
    triton_backend.run([fill])
    assert torch.equal(fill.tensor.cpu(), reference_values(fill))
