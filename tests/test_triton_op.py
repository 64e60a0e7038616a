"""The Triton fill as the op torch.ops.fastinit.triton_fill (src/fastinit/kernels/fill.py): the kernel writes
through its tensor argument (the launch's first tensor) at each descriptor row's element offset
from it, validates every row against its tensor before any launch, and is a
torch.library.triton_op, so a compiler sees the kernel and the tensor it writes.

Without a GPU the kernel runs under Triton's interpreter (TRITON_INTERPRET=1, set by conftest):
values, guards, offsets, validation and Dynamo's tracing of the op are checked here; Inductor's
compiled kernel only with a CUDA device (test_inductor_compiles_the_kernel_bitwise).
"""
import numpy as np
import pytest
import torch

from conftest import poisoned, triton_kernels_or_skip

kernels, DEVICE = triton_kernels_or_skip()
INTERPRETED = DEVICE == "cpu"

from fastinit import plan  # noqa: E402
from fastinit.backends import cpu, reference  # noqa: E402
from fastinit.backends import triton as triton_backend  # noqa: E402
from fastinit.kernels import launch_table  # noqa: E402
from fastinit.kernels.contract_numbers import DESC_BASE_OFFSET  # noqa: E402
from fastinit.contract_numbers import DESCRIPTOR_WORDS  # noqa: E402
from fastinit.plan import make_fill  # noqa: E402

from contract_cases import assert_matches_reference, distributions  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SEED = 0xFEDCBA9876543210
STREAM = 0x8000000000000005
SMALL = kernels.LaunchConfig(chunk=256, tile_blocks=32)
GUARD = 5
DATA = DESCRIPTOR_WORDS["data"]
WORDS = launch_table.DESC_WORDS.value


def table_of(fills, config=SMALL):
    """The CPU table of ``triton_fill`` for `fills`: descriptor rows, then the block map."""
    desc = triton_backend.descriptor_rows(fills)
    block_map, _ = launch_table.build_block_map(desc, fills[0].tensor.dtype, config.chunk)
    return torch.from_numpy(np.concatenate([desc.reshape(-1), block_map.reshape(-1)]))


def groups_of(n, table):
    """The variant groups of a table of n rows: its block map's run of variants (any program
    naming a row outside [0, n) counted as row 0's, for the op to refuse)."""
    if table.dtype != torch.int64 or table.dim() != 1 or table.numel() < n * WORDS:
        return []
    host = table.numpy()
    variants = launch_table.row_variants(host[:n * WORDS].reshape(n, WORDS))
    rows = host[n * WORDS:n * WORDS + (host.size - n * WORDS) // 2 * 2].reshape(-1, 2)[:, 0]
    groups = []
    for v in variants[np.where((rows >= 0) & (rows < n), rows, 0)].tolist():
        if groups and groups[-2] == v:
            groups[-1] += 1
        else:
            groups += [v, 1]
    return groups


EXACT_FMA = kernels.exact_fma_path(torch.device(DEVICE))


def launch(targets, table, config=SMALL, groups=None):
    groups = groups_of(len(targets), table) if groups is None else groups
    torch.ops.fastinit.triton_fill(targets, table, groups, config.chunk, config.tile_blocks,
                                   config.num_warps, config.max_programs, EXACT_FMA)


def guarded(shape, dtype, transpose=False):
    """(target, buffer): a poisoned view of `shape` (transposed when asked) with GUARD elements
    of its own allocation on each side."""
    numel = int(np.prod(shape))
    buffer = poisoned((numel + 2 * GUARD,), dtype, DEVICE)
    target = buffer[GUARD:GUARD + numel].view(shape)
    return (target.t() if transpose else target), buffer


def expected_values(fill):
    """The cpu backend's values (bitwise the kernel's for fp32 math and fp64 uniform /
    constant), else the reference's (compared within the contract's tolerance)."""
    out = poisoned(tuple(fill.tensor.shape), fill.tensor.dtype)
    again = make_fill(out, fill.dist, fill.params, fill.seed, fill.stream, fill.first_index)
    if cpu.IMPORT_ERROR is None:
        cpu.run(plan.descriptor_fills([again]))
    else:
        out = reference.contract_values(again).reshape(out.shape)
    return out


def assert_written(fill, name):
    expected = expected_values(fill)
    got = fill.tensor.cpu()
    if cpu.IMPORT_ERROR is None and (fill.tensor.dtype != torch.float64
                                     or name in ("uniform", "constant")):
        assert torch.equal(got, expected), f"{name} {fill.tensor.dtype}"
    else:  # fp64 log / sin / cos differ between libms by an ulp
        assert_matches_reference(got, expected, name, fill.tensor.dtype)


def assert_guards(buffer):
    host = buffer.cpu()
    assert torch.isnan(host[:GUARD]).all() and torch.isnan(host[-GUARD:]).all(), \
        "an element outside the target was written"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("transpose", [False, True], ids=["contiguous", "transposed"])
def test_one_tensor(dtype, transpose):
    """One target, a view inside its own allocation: every element written, the cpu backend's
    bits, the guards either side untouched; its row's offset from the kernel's base is 0."""
    for name in ("uniform", "normal", "trunc_deep_tail", "trunc_fp64_path"):
        dist, params = distributions(dtype)[name]
        target, buffer = guarded((37, 29), dtype, transpose)
        (fill,) = plan.descriptor_fills([make_fill(target, dist, params, SEED, STREAM, 5)])
        table = table_of([fill])
        assert int(table[DATA]) == 0
        launch([fill.tensor], table)
        assert_written(fill, name)
        assert_guards(buffer)


def test_one_launch_over_separate_allocations():
    """One launch over tensors of separate allocations, the first in the middle of them by
    address, so the other rows' offsets from the kernel's base are negative and positive: every
    tensor gets its values, no guard is touched. Also a tensor of more dims than a descriptor
    holds (several rows over one tensor, each at its own offset) and a transposed one."""
    dtype = torch.float32
    names = list(distributions(dtype))
    pieces = [guarded((n,), dtype) for n in (300, 1, 257, 64, 1000, 3)]
    pieces.append(guarded((40, 30), dtype, transpose=True))
    pieces.sort(key=lambda p: p[0].data_ptr())
    pieces.insert(0, pieces.pop(len(pieces) // 2))
    wide_buffer = poisoned((2**10 + 2 * GUARD,), dtype, DEVICE)
    wide = wide_buffer[GUARD:GUARD + 2**10].view([2] * 10).permute(*range(9, -1, -1))
    fills = []
    for i, (target, _) in enumerate(pieces):
        dist, params = distributions(dtype)[names[i % len(names)]]
        fills.append(make_fill(target, dist, params, SEED + i, i, 3 * i))
    dist, params = distributions(dtype)["normal"]
    fills.append(make_fill(wide, dist, params, 9, 9))
    fills = plan.descriptor_fills(fills)
    assert len(fills) > len(pieces) + 1  # the 10-dim tensor takes several rows
    base = fills[0].tensor.data_ptr()
    deltas = [(f.tensor.data_ptr() - base) // 4 for f in fills]
    assert min(deltas) < 0 < max(deltas)
    table = table_of(fills)
    launch([f.tensor for f in fills], table)
    for i, f in enumerate(fills[:len(pieces)]):
        assert_written(f, names[i % len(names)])
        assert_guards(pieces[i][1])
    expected = expected_values(make_fill(wide, dist, params, 9, 9))
    assert torch.equal(wide.cpu(), expected)
    assert_guards(wide_buffer)


def _bad_tables():
    """(name, edit of the table of three 100-element fills and their targets, message)."""
    words = WORDS
    size, numel = DESCRIPTOR_WORDS["size"], DESCRIPTOR_WORDS["numel"]
    stride, dist = DESCRIPTOR_WORDS["stride"], DESCRIPTOR_WORDS["dist"]

    def word(row, field, value):
        def edit(table, targets):
            table[row * words + field] = value
        return edit

    def grow(row, by):
        def edit(table, targets):
            table[row * words + size] += by
            table[row * words + numel] += by
        return edit

    def freed(row):
        def edit(table, targets):
            targets[row].untyped_storage().resize_(0)
        return edit

    def map_row(value):
        def edit(table, targets):
            table[3 * words] = value
        return edit

    return [
        ("offset past the end", word(1, DATA, 1), "descriptor 1: data: elements [1, 100]"),
        ("offset before the start", word(2, DATA, -GUARD), "descriptor 2: data: elements [-5"),
        ("more elements", grow(2, 1), "descriptor 2: data: elements [0, 100]"),
        ("stride", word(1, stride, 2), "descriptor 1: data: elements [0, 198]"),
        ("numel", word(1, numel, 99), "descriptor 1: numel: 99 differs"),
        ("dist", word(2, dist, 9), "descriptor 2: dist: unknown distribution code 9"),
        ("dtype", word(1, dist, 1 + (2 << 32)), "descriptor 1: dtype: code 2"),
        ("freed", freed(1), "descriptor 1: data: null address for 100 elements"),
        ("block map row", map_row(3), "block map row 0: [3, 0]"),
        ("negative chunk", lambda table, targets: table.__setitem__(3 * words + 1, -1),
         "block map row 0: [0, -1]"),
    ]


@pytest.mark.parametrize("name,edit,message", _bad_tables(), ids=[c[0] for c in _bad_tables()])
def test_a_bad_row_raises_and_nothing_is_written(name, edit, message):
    """A row that would write outside its tensor (or a bad code, or a block map row naming no
    descriptor) raises ValueError naming it, before the launch: no tensor is written, the good
    ones before and after it included."""
    pieces = [guarded((100,), torch.float32) for _ in range(3)]
    dist, params = distributions(torch.float32)["uniform"]
    fills = [make_fill(t, dist, params, 1, i) for i, (t, _) in enumerate(pieces)]
    table = table_of(fills)
    targets = [f.tensor for f in fills]
    edit(table, targets)
    with pytest.raises(ValueError) as info:
        launch(targets, table)
    assert message in str(info.value), str(info.value)
    for target, buffer in pieces:
        if target.untyped_storage().nbytes():
            assert torch.isnan(buffer.cpu()).all(), f"{name}: a tensor was written"


def test_a_bad_chunk_or_table_length_raises():
    target, _ = guarded((100,), torch.float32)
    dist, params = distributions(torch.float32)["uniform"]
    table = table_of([make_fill(target, dist, params, 1)])
    with pytest.raises(ValueError, match="chunk must be a power of two"):
        torch.ops.fastinit.triton_fill([target], table, groups_of(1, table), 384, 32, 4,
                                       2**31 - 1, False)
    with pytest.raises(ValueError, match="is not 1 descriptor rows"):
        launch([target], table[:-1])
    assert torch.isnan(target).all()


def _compiled_fill(backend):
    """A compiled function that fills its tensor through the op, its graphs recorded."""
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def fill(target, table, groups):  # groups: computed eagerly (``groups_of``)
        launch([target], table, groups=groups)
        return target

    torch._dynamo.reset()
    return torch.compile(fill, backend=recording if backend == "recording" else backend,
                         fullgraph=True), graphs


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dynamo_traces_the_op(dtype):
    """fullgraph=True: Dynamo traces the op (its fake implementation writes nothing) into one
    graph that calls it; the compiled call's values are eager's, bitwise."""
    compiled, graphs = _compiled_fill("recording")
    for name in ("uniform", "normal", "trunc_normal"):
        dist, params = distributions(dtype)[name]
        target, buffer = guarded((33, 48), dtype)
        (fill,) = plan.descriptor_fills([make_fill(target, dist, params, SEED, STREAM, 7)])
        table = table_of([fill])
        compiled(fill.tensor, table, groups_of(1, table))
        eager, _ = guarded((33, 48), dtype)
        launch([eager], table_of([make_fill(eager, dist, params, SEED, STREAM, 7)]))
        assert torch.equal(target, eager), name
        assert not torch.isnan(target).any()
        assert_guards(buffer)
    calls = [n.target for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert calls and set(calls) == {torch.ops.fastinit.triton_fill}  # one graph: the op


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_decomposed_call_takes_one_tensor(backend):
    """Decomposed by a compiler (AOTAutograd), the op refuses a table over two tensors: the
    compiler would see only the first, and the second's offset from it is an address known
    only at run time. Kept whole (Dynamo alone) it runs as in eager."""
    torch._dynamo.reset()
    (a, _), (b, _) = guarded((100,), torch.float32), guarded((100,), torch.float32)
    dist, params = distributions(torch.float32)["uniform"]
    table = table_of([make_fill(a, dist, params, 1), make_fill(b, dist, params, 2)])
    groups = groups_of(2, table)
    compiled = torch.compile(lambda x, y, t, g: launch([x, y], t, groups=g), backend=backend,
                             fullgraph=True)
    if backend == "eager":
        compiled(a, b, table, groups)
        (ea, _), (eb, _) = guarded((100,), torch.float32), guarded((100,), torch.float32)
        launch([ea, eb], table_of([make_fill(ea, dist, params, 1), make_fill(eb, dist, params, 2)]))
        assert torch.equal(a, ea) and torch.equal(b, eb) and not torch.isnan(a).any()
        return
    with pytest.raises(Exception, match="traced with 2 tensors"):
        compiled(a, b, table, groups)
    assert torch.isnan(a).all() and torch.isnan(b).all()


def test_fake_and_meta_tensors_write_nothing():
    """The op's fake implementation: on fake or meta tensors it returns, launching nothing."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    target, _ = guarded((100,), torch.float32)
    dist, params = distributions(torch.float32)["uniform"]
    table = table_of([make_fill(target, dist, params, 1)])
    meta = torch.empty(100, device="meta")
    launch([meta], table)
    groups = groups_of(1, table)
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(target)
        launch([fake], mode.from_tensor(table), groups=groups)
    assert torch.isnan(target).all()


def test_a_bad_table_tensor_raises():
    target, _ = guarded((100,), torch.float32)
    dist, params = distributions(torch.float32)["uniform"]
    table = table_of([make_fill(target, dist, params, 1)])
    for bad in (table.to(torch.int32), table.reshape(1, -1), torch.cat([table, table])[::2]):
        with pytest.raises(ValueError, match="contiguous 1-d int64 CPU tensor"):
            launch([target], bad)
    with pytest.raises(ValueError, match="max_programs must be >= 1"):
        launch([target], table, kernels.LaunchConfig(chunk=256, tile_blocks=32, max_programs=0))
    assert torch.isnan(target).all()


@pytest.mark.skipif(not INTERPRETED, reason="the interpreter's limit")
def test_decomposition_under_the_interpreter_raises():
    """AOTAutograd decomposes a triton_op into its kernel, but under TRITON_INTERPRET=1
    wrap_triton returns the interpreted kernel, which cannot run on the compiler's tensors: a
    clear error, never a compiled graph that silently writes nothing."""
    target, _ = guarded((100,), torch.float32)
    dist, params = distributions(torch.float32)["uniform"]
    compiled, _ = _compiled_fill("aot_eager")
    with pytest.raises(Exception, match="cannot be decomposed under TRITON_INTERPRET=1"):
        table = table_of([make_fill(target, dist, params, 1)])
        compiled(target, table, groups_of(1, table))
    assert torch.isnan(target).all()


@pytest.mark.skipif(INTERPRETED, reason="Inductor compiles Triton kernels for a GPU only; under "
                    "TRITON_INTERPRET=1 the op cannot be decomposed (see the test above)")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inductor_compiles_the_kernel_bitwise(dtype):
    """torch.compile (Inductor, fullgraph=True) decomposes the op into the user kernel, which it
    compiles into its own code: the output equals eager bitwise for every distribution, and the
    guards are untouched."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    compiled = torch.compile(lambda t, table, g: launch([t], table, groups=g), fullgraph=True)
    for name, (dist, params) in distributions(dtype).items():
        target, buffer = guarded((129, 65), dtype, transpose=True)
        (fill,) = plan.descriptor_fills([make_fill(target, dist, params, SEED, STREAM, 3)])
        table = table_of([fill])
        _, code = run_and_get_code(compiled, fill.tensor, table, groups_of(1, table))
        assert "fill_kernel" in "\n".join(code)
        eager, _ = guarded((129, 65), dtype, transpose=True)
        (again,) = plan.descriptor_fills([make_fill(eager, dist, params, SEED, STREAM, 3)])
        launch([again.tensor], table_of([again]))
        assert torch.equal(target, eager), f"{name} {dtype}"
        assert not torch.isnan(target).any()
        assert_guards(buffer)


def test_groups_that_do_not_match_the_rows_raise():
    """Each program runs the kernel variant of its group: a group naming the contiguous variant
    over a strided row (whose contiguous path would write past its elements), or groups that
    do not cover the block map, are refused before anything is written."""
    dist, params = distributions(torch.float32)["uniform"]
    target, buffer = guarded((40, 30), torch.float32, transpose=True)
    (fill,) = plan.descriptor_fills([make_fill(target, dist, params, 1)])
    table = table_of([fill])
    (code, programs) = groups_of(1, table)
    assert launch_table.variant_of_code(code) == (int(dist), True)
    for groups, message in (([code - 1, programs], "has variant"),
                            ([code, programs - 1], "groups cover"),
                            ([code], "pairs")):
        with pytest.raises(ValueError, match=message):
            launch([fill.tensor], table, groups=groups)
    assert torch.isnan(buffer).all()
    launch([fill.tensor], table)
    assert torch.equal(target, expected_values(make_fill(target, dist, params, 1)))


@pytest.mark.parametrize("make", [
    lambda: torch.empty(4, 4), lambda: torch.empty(4, 4).t(), lambda: torch.empty(8, 6)[2:5, 1:4],
    lambda: torch.empty(3, 1, 5), lambda: torch.empty(2, 3, 4, 5).permute(0, 2, 1, 3),
    lambda: torch.empty(7, dtype=torch.bfloat16),
    lambda: torch.empty(10, 10, dtype=torch.float64)[::2, ::3],
], ids=["contiguous", "transposed", "sliced", "unit-dim", "permuted", "bf16", "stepped-fp64"])
def test_rows_planned_natively_equal_the_python_packing(make):
    # whole tensors' rows come from one native call (_C.plan_tensors); they are the bytes the
    # Python packing gives, with the element offset of element 0 (0) in the data word
    t = make()
    cases = distributions(t.dtype)
    fills = [make_fill(t, *cases[name], 123, stream)
             for stream, name in enumerate(("uniform", "constant", "normal", "trunc_normal"))]
    rows = triton_backend.descriptor_rows(fills)
    assert triton_backend.natively_packed(fills) is not None
    expected = np.frombuffer(plan.pack_descriptors(fills), dtype=np.int64).reshape(len(fills), -1)
    expected = expected.copy()
    expected[:, DESC_BASE_OFFSET.value] = 0
    assert np.array_equal(rows, expected)


def test_rows_of_tensors_without_memory_are_packed_in_python():
    fills = [make_fill(torch.empty(4, 4, device="meta"), plan.Distribution.NORMAL, [0.0, 1.0], 1)]
    assert triton_backend.natively_packed(fills) is None


def _refusal(targets, table):
    """check_table's message for `table`, or None when it passes."""
    try:
        launch_table.check_table(targets, table)
    except ValueError as exc:
        return str(exc)
    return None


def test_the_row_screen_refuses_exactly_what_the_exact_check_refuses(monkeypatch):
    """check_table screens a launch of many rows with NumPy (``_rows_to_check``) and checks
    exactly only the rows it could not clear: over random corruptions of a 40-row table (every
    word of a row, edge values, sums and products that wrap int64, freed storage, a tensor of
    another dtype) it refuses with the message of the exact check of every row, or passes
    where that passes."""
    rng = np.random.default_rng(20261203)
    dist, params = distributions(torch.float32)["uniform"]
    shared = poisoned((4096,), torch.float32, DEVICE)
    makers = [lambda i: guarded((100,), torch.float32)[0],
              lambda i: guarded((12, 9), torch.float32, transpose=True)[0],
              lambda i: shared[64 * i:64 * i + 48].view(6, 8)[:, 1:7],
              lambda i: guarded((), torch.float32)[0]]
    n = 40
    assert n >= launch_table.SCREEN_MIN_ROWS
    targets = [makers[i % len(makers)](i) for i in range(n)]
    fills = plan.descriptor_fills([make_fill(t, dist, params, 7, i) for i, t in enumerate(targets)])
    good = table_of(fills).numpy()
    targets = [f.tensor for f in fills]
    assert _refusal(targets, good) is None
    unaligned = bytearray(4 * 200 + 4)
    edge = [0, 1, -1, 2, 3, 99, 100, 2**31, 2**32, 2**62, 2**63 - 1, -2**63, 2**62 + 1]

    def corrupted():
        table, chosen = good.copy(), list(targets)
        for _ in range(int(rng.integers(1, 3))):
            row, word = int(rng.integers(n)), int(rng.integers(WORDS))
            at = row * WORDS + word
            kind = rng.integers(4)
            if kind == 0:
                table[at] = edge[rng.integers(len(edge))]
            elif kind == 1:
                table[at] += int(rng.integers(-3, 4))
            elif kind == 2:  # one int32 half of a paired word (dist and dtype, ndim)
                at = row * WORDS + DESCRIPTOR_WORDS["dist" if rng.integers(2) else "ndim"]
                half = int(rng.integers(-2, 12)) & 0xFFFFFFFF
                table[at] = (int(table[at]) & ~0xFFFFFFFF) | half if rng.integers(2) \
                    else np.int64(np.uint64((half << 32) | (int(table[at]) & 0xFFFFFFFF)))
            else:
                table[at] = (int(table[at]) * int(rng.integers(2, 5)) + 2**63) % 2**64 - 2**63
        if rng.integers(6) == 0:  # row's tensor: another dtype, freed, too short, misaligned
            row = int(rng.integers(n))
            shape, numel = chosen[row].shape, chosen[row].numel()
            kind = rng.integers(4)
            if kind == 0:
                other = torch.empty(shape, dtype=torch.float64)
            elif kind == 1:  # a view at an offset: its address is not null, its storage's is
                other = guarded(shape, torch.float32)[0]
                other.untyped_storage().resize_(0)
            elif kind == 2:
                other = guarded(shape, torch.float32)[0]
                other.untyped_storage().resize_(4 * max(1, numel // 2))
            else:
                other = torch.frombuffer(unaligned, dtype=torch.float32, offset=1,
                                         count=numel).view(shape)
            chosen[row] = other
        return chosen, table

    cases = [corrupted() for _ in range(300)]
    wrapped = good.copy()  # sum (size - 1) * stride wraps int64 to a small value
    wrapped[4 * WORDS + DESCRIPTOR_WORDS["stride"]] = 2**62
    product = good.copy()  # sizes whose product wraps to numel 0
    product[8 * WORDS + DESCRIPTOR_WORDS["numel"]] = 0
    product[8 * WORDS + DESCRIPTOR_WORDS["ndim"]] = 2
    product[8 * WORDS + DESCRIPTOR_WORDS["size"]] = 2**32
    product[8 * WORDS + DESCRIPTOR_WORDS["size"] + 1] = 2**32
    cases += [(targets, wrapped), (targets, product)]
    for row in range(n):  # each row moved one element past either end of its tensor
        for delta in (1, -1):
            moved = good.copy()
            moved[row * WORDS + DATA] += delta
            cases.append((targets, moved))
    for row in range(len(makers)):  # each kind of tensor, its storage just long enough or not
        for short in (0, 1):
            t = targets[row]
            alone = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
            alone.untyped_storage().resize_(alone.untyped_storage().nbytes() - 4 * short)
            cases.append((targets[:row] + [alone] + targets[row + 1:], good))
    screened = [_refusal(t, table) for t, table in cases]
    monkeypatch.setattr(launch_table, "SCREEN_MIN_ROWS", 10**9)  # every row checked exactly
    exact = [_refusal(t, table) for t, table in cases]
    assert screened == exact
    assert exact[300].startswith("descriptor 4: data: elements")
    assert exact[301].startswith("descriptor 8: numel: 0 differs")
    assert all(m and m.startswith(f"descriptor {i // 2}: data: ")
               for i, m in enumerate(exact[302:302 + 2 * n]))
    assert [m is None for m in exact[-2 * len(makers):]] == [True, False] * len(makers)
    refused = sum(m is not None for m in exact)
    assert 150 < refused < len(cases) - 30, refused
    assert len({m.split(":")[1] for m in exact if m}) >= 5  # many different fields refused
