"""`fused()` intercepts instead of replacing: torch.nn.init however reached, the in-place tensor
fills, torch's and timm's truncated normals and torch.randn-style factories are recorded with
fastinit's values; overwritten fills are dropped; escapes of memory flush; threads are
independent.

The reference for "the values fastinit gives" is always the drop-in fastinit call with the same
arguments from the same generator state, compared bitwise, with the generator's end state
compared too (each call draws its seed when it is made, dropped or not).
"""
from __future__ import annotations

import io
import threading

import pytest
import torch
from torch import nn

import fastinit
from fastinit import backends

ORIGINAL_INIT = {name: getattr(torch.nn.init, name) for name in torch.nn.init.__all__}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def assert_bitwise(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(bits(a.contiguous()), bits(b.contiguous()))


@pytest.fixture
def written(monkeypatch):
    """Counts the elements the backends write (every fastinit fill goes through execute, a
    fused pass's execute_whole, or a drop-in call's one native call, fill_whole_natively, which
    both also use)."""
    count = {"elements": 0, "calls": 0, "executing": False}
    real, real_whole, real_native = (backends.execute, backends.execute_whole,
                                     backends.fill_whole_natively)

    def counted(run, tensors, argument):
        if count["executing"]:  # execute_whole's own call of execute
            return run(argument)
        count["elements"] += sum(t.numel() for t in tensors)
        count["calls"] += 1
        count["executing"] = True
        try:
            return run(argument)
        finally:
            count["executing"] = False

    def counting(fills):
        return counted(real, [f.tensor for f in fills], fills)

    def counting_whole(rows):
        return counted(real_whole, [row[0] for row in rows], rows)

    def counting_native(tensor, *args, **kwargs):
        filled = real_native(tensor, *args, **kwargs)
        if filled and not count["executing"]:
            count["elements"] += tensor.numel()
            count["calls"] += 1
        return filled

    monkeypatch.setattr(backends, "execute", counting)
    monkeypatch.setattr(backends, "execute_whole", counting_whole)
    monkeypatch.setattr(backends, "fill_whole_natively", counting_native)
    return count


def fused_and_reference(fused_fn, reference_fn, seed=0):
    """fused_fn() inside a block and reference_fn() one by one with fastinit, from one seed; the
    generator must end in the same state."""
    torch.manual_seed(seed)
    with fastinit.fused() as recorder:
        got = fused_fn()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    ref = reference_fn()
    assert torch.equal(state, torch.get_rng_state()), "a different number of seed draws"
    return got, ref, recorder


# --- every route to torch.nn.init --------------------------------------------------------------


@pytest.mark.parametrize("name,args,kwargs", [
    ("uniform_", (-0.3, 0.7), {}),
    ("normal_", (0.5, 0.02), {}),
    ("constant_", (0.25,), {}),
    ("ones_", (), {}),
    ("zeros_", (), {}),
    ("xavier_uniform_", (), {"gain": 1.5}),
    ("xavier_normal_", (), {}),
    ("kaiming_uniform_", (), {"a": 5 ** 0.5}),
    ("kaiming_normal_", (), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("trunc_normal_", (), {"std": 0.02}),                    # torch's wide-interval branch
    ("trunc_normal_", (0.0, 1.0, 2.0, 3.0), {}),             # torch's narrow-interval branch
    ("sparse_", (0.3,), {"std": 0.05}),
])
def test_torch_nn_init_inside_fused_gives_fastinit_values(name, args, kwargs, written):
    shape = (48, 40)
    w = torch.empty(shape)
    got, ref, recorder = fused_and_reference(
        lambda: getattr(torch.nn.init, name)(w, *args, **kwargs),
        lambda: getattr(fastinit, name)(torch.empty(shape), *args, **kwargs))
    assert_bitwise(got, ref)
    # each run writes the tensor once (sparse_ also fills its key matrix once)
    assert written["elements"] == w.numel() * (4 if name == "sparse_" else 2)
    assert recorder.recorded >= 1


def test_captured_copies_and_guard_wrappers_reach_fastinit():
    """Hugging Face keeps torch.nn.init functions captured at import and wraps them: the calls
    through the copies are recorded too, since nothing needs replacing."""
    from transformers import initialization as hf_init

    w = torch.empty(64, 32)
    got, ref, recorder = fused_and_reference(
        lambda: (hf_init.TORCH_INIT_FUNCTIONS["normal_"](w, std=0.02), hf_init.ones_(b := torch.empty(8)),
                 hf_init.normal_(w, std=0.05))[2],
        lambda: (fastinit.normal_(torch.empty(64, 32), std=0.02),
                 fastinit.normal_(torch.empty(64, 32), std=0.05))[1])
    assert_bitwise(got, ref)
    assert recorder.dropped == 1  # the first normal_ of w was overwritten before any read


@pytest.mark.parametrize("route", ["method", "data", "keyword_bounds"])
def test_tensor_methods_are_recorded(route, written):
    w = nn.Parameter(torch.empty(64, 16))

    def fused_fn():
        with torch.no_grad():
            if route == "method":
                w.normal_(0.1, 0.3)
                w.uniform_(-1, 1)
            elif route == "data":
                w.data.normal_(0.1, 0.3)
                w.data.uniform_(-1, 1)
            else:
                w.normal_(mean=0.1, std=0.3)
                w.uniform_(**{"from": -1, "to": 1})
        return w.detach()

    def reference_fn():
        r = torch.empty(64, 16)
        fastinit.normal_(r, 0.1, 0.3)
        return fastinit.uniform_(r, -1, 1)

    got, ref, recorder = fused_and_reference(fused_fn, reference_fn)
    assert_bitwise(got, ref)
    assert recorder.dropped == 1 and written["elements"] == 3 * w.numel()  # once here, twice in ref


def test_fill_and_zero_are_constant_fills():
    a, b = torch.empty(10, 10), torch.empty(10, 10, dtype=torch.bfloat16)
    with fastinit.fused() as recorder:
        a.fill_(0.5)
        b.zero_()
        assert len(recorder.pending) == 2
    assert (a == 0.5).all() and (b == 0).all()


def test_a_leaf_requiring_grad_outside_no_grad_raises_as_in_torch():
    p = nn.Parameter(torch.empty(4))
    with fastinit.fused():
        with pytest.raises(RuntimeError, match="leaf Variable"):
            p.normal_()


def test_factories_become_fills(written):
    got, ref, recorder = fused_and_reference(
        lambda: (torch.randn(3, 5), torch.rand((7,), dtype=torch.float64), torch.zeros(4),
                 torch.ones(2, 2, requires_grad=True)),
        lambda: (fastinit.normal_(torch.empty(3, 5)), fastinit.uniform_(torch.empty(7, dtype=torch.float64)),
                 torch.zeros(4), torch.ones(2, 2)))
    for g, r in zip(got, ref):
        assert_bitwise(g.detach(), r)
    assert got[3].requires_grad and recorder.recorded == 4


def test_a_constructor_draw_then_an_init_writes_once(written):
    """ViT-style: `nn.Parameter(torch.randn(...))` in a constructor, overwritten by the model's
    init: the first fill is dropped, its seed draw kept."""
    def fused_fn():
        p = nn.Parameter(torch.randn(1, 1, 64))
        torch.nn.init.trunc_normal_(p, std=0.02)
        return p.detach()

    def reference_fn():
        fastinit.normal_(torch.empty(1, 1, 64))
        return fastinit.trunc_normal_(torch.empty(1, 1, 64), std=0.02)

    torch.manual_seed(0)
    with fastinit.fused() as recorder:
        got = fused_fn()
    elements = written["elements"]
    state = torch.get_rng_state()
    torch.manual_seed(0)
    ref = reference_fn()
    assert torch.equal(state, torch.get_rng_state())
    assert_bitwise(got, ref)
    assert recorder.dropped == 1 and elements == 64


# --- dropped overwrites, bitwise -------------------------------------------------------------


def test_overwrites_are_dropped_and_values_equal_one_by_one(written):
    def calls(init):
        model = nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64), nn.Linear(64, 8))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                init.normal_(m.weight, std=0.02)
                init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                init.ones_(m.weight)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    torch.manual_seed(3)
    with fastinit.fused() as recorder:
        got = calls(torch.nn.init)
    in_block = written["elements"]
    state = torch.get_rng_state()
    # one by one: each layer's own reset_parameters through fastinit, then the same calls
    torch.manual_seed(3)
    with fastinit.fused():  # (only to route the constructors' torch.nn.init calls to fastinit)
        model = nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64), nn.Linear(64, 8))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            fastinit.normal_(m.weight, std=0.02)
            fastinit.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            fastinit.ones_(m.weight)
    assert torch.equal(state, torch.get_rng_state())
    for name, ref in model.state_dict().items():
        assert_bitwise(got[name], ref)
    parameters = sum(t.numel() for t in got.values())
    assert in_block == parameters  # every element written once
    assert recorder.dropped == 5  # two weights, two biases, the LayerNorm's weight


def test_a_partial_fill_runs_after_the_earlier_fill(written):
    with fastinit.fused() as recorder:
        w = torch.empty(8, 8)
        fastinit.normal_(w, seed=1)
        fastinit.zeros_(w[2])
        assert [p.phase for p in recorder.pending] == [0, 1] and recorder.flushes == 0
    assert recorder.flushes == 1 and written["calls"] == 2  # one pass, two phases
    ref = fastinit.normal_(torch.empty(8, 8), seed=1)
    ref[2] = 0
    assert torch.equal(w, ref)


# --- escapes of memory flush -------------------------------------------------------------------


@pytest.mark.parametrize("access", ["type", "save", "data_ptr", "untyped_storage"])
def test_memory_escapes_see_written_values(access):
    ref = fastinit.normal_(torch.empty(32, 8), seed=9)
    with fastinit.fused() as recorder:
        w = torch.empty(32, 8)
        fastinit.normal_(w, seed=9)
        if access == "type":
            seen = w.type(torch.float64)
        elif access == "save":
            buffer = io.BytesIO()
            torch.save(w, buffer)
            buffer.seek(0)
            seen = torch.load(buffer)
        elif access == "data_ptr":
            import ctypes
            raw = (ctypes.c_float * w.numel()).from_address(w.data_ptr())
            seen = torch.tensor(list(raw)).view(32, 8)
        else:
            seen = torch.frombuffer(bytearray(bytes(w.untyped_storage())), dtype=torch.float32).view(32, 8)
        assert recorder.flushes == 1
    assert torch.equal(seen.to(torch.float32), ref)


def test_empty_makes_new_memory_without_a_flush_and_out_runs_the_fill_first():
    ref = fastinit.normal_(torch.empty(32, 8), seed=9)
    with fastinit.fused() as recorder:
        w = torch.empty(32, 8)
        fastinit.normal_(w, seed=9)
        scratch = torch.empty(32, 8, dtype=torch.float64)
        assert recorder.flushes == 0 and len(recorder.pending) == 1
        same = torch.empty((32, 8), out=w)  # `out=` touches w: its fill runs first, values stay
        assert same is w and recorder.flushes == 1 and not recorder.pending
    assert torch.equal(w, ref) and scratch.dtype == torch.float64


# --- threads -----------------------------------------------------------------------------------


def test_threads_are_independent():
    """One thread builds models inside fused() while another builds them outside: the outside
    one gets torch's own values, and torch.nn.init is torch's throughout."""
    barrier = threading.Barrier(2)
    errors, outside_values, seen_init = [], [], []
    stop = threading.Event()

    def inside():
        try:
            barrier.wait()
            for i in range(20):
                with fastinit.fused():
                    m = nn.Linear(128, 128)
                    torch.nn.init.normal_(m.weight, generator=torch.Generator().manual_seed(i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            stop.set()

    def outside():
        try:
            barrier.wait()
            i = 0
            while not stop.is_set() or i < 20:
                w = torch.empty(128, 128)
                torch.nn.init.normal_(w, generator=torch.Generator().manual_seed(i))
                outside_values.append((i, w))
                seen_init.append(torch.nn.init.normal_ is ORIGINAL_INIT["normal_"])
                i += 1
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=inside), threading.Thread(target=outside)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(seen_init) and len(outside_values) >= 20
    for i, w in outside_values[:40]:
        expected = torch.empty(128, 128).normal_(generator=torch.Generator().manual_seed(i))
        assert torch.equal(w, expected), "the outside thread did not get torch's values"
    assert all(getattr(torch.nn.init, n) is f for n, f in ORIGINAL_INIT.items())


def test_overlapping_blocks_in_two_threads_leave_torch_unchanged():
    barrier = threading.Barrier(2)

    def work(seed):
        with fastinit.fused():
            barrier.wait()
            nn.Linear(16, 16)
            barrier.wait()

    threads = [threading.Thread(target=work, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(getattr(torch.nn.init, n) is f for n, f in ORIGINAL_INIT.items())
    assert fastinit.fused.__module__  # the module is importable and no recorder is left:
    from fastinit.fused import active_recorder
    assert active_recorder() is None


# --- trunc_normal_tf_ --------------------------------------------------------------------------


def test_trunc_normal_tf_is_the_standard_truncated_normal_scaled():
    w = fastinit.trunc_normal_tf_(torch.empty(400_000, dtype=torch.float64), mean=0.5, std=0.1,
                                  a=-1.0, b=2.0, seed=4)
    assert w.min() >= 0.5 - 0.1 and w.max() <= 0.5 + 0.2
    from scipy import stats
    dist = stats.truncnorm(-1.0, 2.0, loc=0.5, scale=0.1)
    assert stats.kstest(w.numpy(), dist.cdf).pvalue > 1e-3
    # negative control: torch semantics (bounds on the values) is a different distribution here
    wrong = stats.truncnorm((-1.0 - 0.5) / 0.1, (2.0 - 0.5) / 0.1, loc=0.5, scale=0.1)
    assert stats.kstest(w.numpy(), wrong.cdf).pvalue < 1e-6


def test_trunc_normal_tf_validates_like_trunc_normal():
    with pytest.raises(fastinit.ZeroStdError):
        fastinit.trunc_normal_tf_(torch.empty(3), std=0.0)
    with pytest.raises(fastinit.InitValueError):
        fastinit.trunc_normal_tf_(torch.empty(3), a=1.0, b=-1.0)
    with pytest.raises(fastinit.UnsupportedDtypeError):
        fastinit.trunc_normal_tf_(torch.empty(3, dtype=torch.int32))


# --- memory nothing can reach is not written ---------------------------------------------------


def test_a_weight_replaced_by_a_tie_before_the_pass_is_not_written(written):
    with fastinit.fused() as recorder:
        emb = nn.Embedding(100, 16)
        head = nn.Linear(16, 100, bias=False)
        head.weight = emb.weight  # the Linear's own weight, initialised above, is dropped
    assert recorder.unreachable == 1 and written["elements"] == 100 * 16
    assert head.weight is emb.weight and emb.weight.std() > 0.5


def test_memory_reachable_through_a_view_is_written():
    torch.manual_seed(0)
    with fastinit.fused() as recorder:
        w = torch.empty(10, 10)
        fastinit.normal_(w, seed=5)
        v = w[2:5]
        del w
    assert recorder.unreachable == 0
    assert torch.equal(v, fastinit.normal_(torch.empty(10, 10), seed=5)[2:5])


# --- dry runs ----------------------------------------------------------------------------------


def test_a_dry_run_records_on_meta_and_writes_nothing(written):
    with torch.device("meta"):
        w, v, b = torch.empty(64, 32), torch.empty(10), torch.empty(5)
    state = torch.get_rng_state()
    with fastinit.fused(dry_run=True) as recorder:
        torch.nn.init.trunc_normal_(w, std=0.02)  # torch's returns at once on meta: seen there
        torch.nn.init.trunc_normal_(v, std=0.5, a=-1, b=1)
        b.fill_(0.25)
    torch.set_rng_state(state)
    assert recorder.describe(w) == "trunc_normal(mean=0, std=0.02, a=-2, b=2)"
    assert recorder.describe(v) == "trunc_normal(mean=0, std=0.5, a=-1, b=1)"
    assert recorder.describe(b) == "constant(0.25)"
    assert written["calls"] == 0


# --- writes compared in bytes, across views of any dtype ----------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.int16])
@pytest.mark.parametrize("write", ["zero_", "fill_", "copy_"])
def test_a_write_through_another_dtype_keeps_a_fill_of_other_bytes(dtype, write):
    w = torch.full((16,), 7.0)
    with fastinit.fused() as recorder:
        fastinit.normal_(w[4:8], seed=3)  # bytes 16..31
        v = w.view(dtype)[0:16 // v_size(dtype)]  # bytes 0..15: w[0:4]
        if write == "zero_":
            v.zero_()
        elif write == "fill_":
            v.fill_(0)
        else:
            v.copy_(torch.zeros_like(v))
    assert recorder.dropped == 0
    assert_bitwise(w[4:8], fastinit.normal_(torch.empty(4), seed=3))
    assert torch.equal(w[0:4], torch.zeros(4)) and torch.equal(w[8:], torch.full((8,), 7.0))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.int16])
def test_a_write_through_another_dtype_over_the_same_bytes_drops_the_fill(dtype, written):
    w = torch.full((16,), 7.0)
    with fastinit.fused() as recorder:
        fastinit.normal_(w[4:8], seed=3)
        w.view(dtype)[16 // v_size(dtype):32 // v_size(dtype)].zero_()  # exactly w[4:8]'s bytes
    assert recorder.dropped == 1
    assert torch.equal(w[4:8], torch.zeros(4)) and torch.equal(w[8:], torch.full((8,), 7.0))


def test_a_write_through_another_dtype_over_part_of_a_fill_runs_it_first():
    w = torch.full((16,), 7.0)
    with fastinit.fused() as recorder:
        fastinit.normal_(w[4:8], seed=3)
        w.view(torch.uint8)[16:20].zero_()  # w[4]'s bytes only
    assert recorder.dropped == 0
    expected = fastinit.normal_(torch.empty(4), seed=3)
    expected[0] = 0.0
    assert_bitwise(w[4:8], expected)


def v_size(dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


# --- an exception inside the block --------------------------------------------------------------


def test_an_exception_inside_the_block_runs_the_recorded_fills_then_propagates():
    from fastinit.fused import active_recorder
    torch.manual_seed(0)
    with pytest.raises(KeyError, match="boom"):
        with fastinit.fused():
            lin = nn.Linear(64, 64)
            raise KeyError("boom")
    assert active_recorder() is None
    torch.manual_seed(0)
    with fastinit.fused():
        ref = nn.Linear(64, 64)
    assert_bitwise(lin.weight.detach(), ref.weight.detach())
    assert_bitwise(lin.bias.detach(), ref.bias.detach())


# --- memory someone else owns is always written -------------------------------------------------


def _numpy_memory(tmp_path):
    import numpy as np
    a = np.full(1000, 7.0, dtype=np.float32)
    return a, torch.from_numpy(a)


def _dlpack_memory(tmp_path):
    import numpy as np
    a = np.full(1000, 7.0, dtype=np.float32)
    return a, torch.from_dlpack(a)


def _file_memory(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(torch.full((1000,), 7.0).numpy().tobytes())
    return path, torch.from_file(str(path), shared=True, size=1000)


@pytest.mark.parametrize("make", [_numpy_memory, _dlpack_memory, _file_memory])
def test_memory_shared_outside_torch_filled_then_dropped_is_written(make, tmp_path):
    owner, t = make(tmp_path)
    with fastinit.fused() as recorder:
        fastinit.normal_(t, seed=2)
        del t
    assert recorder.unreachable == 0
    values = torch.from_file(str(owner), size=1000) if isinstance(owner, type(tmp_path)) \
        else torch.from_numpy(owner)
    assert_bitwise(values, fastinit.normal_(torch.empty(1000), seed=2))


# --- memory that moves after a write ------------------------------------------------------------


def test_a_tensor_whose_memory_moves_keeps_the_record_of_its_write():
    with fastinit.fused() as recorder:
        b = nn.Parameter(torch.empty(10))
        nn.init.zeros_(b)
        b.data = nn.functional.pad(b.data, (0, 6), "constant", 0)  # transformers' _adjust_bias
        c = torch.empty(8)
        fastinit.constant_(c, 0.5)
        old = c.detach()
        user_data = torch.arange(8.0)
        c.set_(user_data.untyped_storage())  # (torch shows set_ to no function mode)
    assert torch.equal(b.detach(), torch.zeros(16))
    assert recorder.wrote(b) and recorder.describe(b) == "constant(0)"
    # the pending fill writes the memory it was recorded for, never the user's new memory
    assert torch.equal(old, torch.full((8,), 0.5)) and torch.equal(c, torch.arange(8.0))
    fresh = torch.empty(4)
    assert not recorder.wrote(fresh)  # negative control: memory the block never wrote


# --- the write log: queries look at the writes near the queried bytes ---------------------------


def test_describe_keeps_what_an_in_place_op_builds_on():
    """An in-place op that reads the tensor (mul_) follows the fill it changes; one that
    overwrites it (copy_) replaces what was there."""
    w = torch.empty(4, 4)
    with fastinit.fused() as recorder:
        fastinit.normal_(w, std=0.02, seed=0)
        w.mul_(0.5)
        assert recorder.describe(w) == "normal(mean=0, std=0.02); then mul_"
        w.copy_(torch.ones(4, 4))
        assert recorder.describe(w) == "copy_"
        w[0].add_(1.0)
        assert recorder.describe(w) == "copy_; then add_ on part"
    assert torch.equal(w[1:], torch.ones(3, 4)) and torch.equal(w[0], torch.full((4,), 2.0))


def test_write_log_queries_on_a_flat_buffer_of_many_parameters(monkeypatch):
    """1000 parameters as views of one flat buffer, one write over all of it, then a fill of
    most views and a few other writes: wrote / describe / by_fastinit give the answers of
    the whole log, and each query compares only the few writes near its bytes."""
    from fastinit.recorder import Footprint
    n = 1000
    flat = torch.empty(4 * n)
    views = [flat[4 * i:4 * (i + 1)] for i in range(n)]
    with fastinit.fused() as recorder:
        fastinit.constant_(flat, 0.5)
        for i, v in enumerate(views):
            if i % 3:
                fastinit.normal_(v, seed=i)
        views[7].add_(1.0)                 # covers view 7: not fastinit's
        flat[1000:1010].mul_(2.0)          # covers views 250 and 251, part of 252
        views[400][1:3].zero_()            # part of view 400, a fastinit fill
    compared = []
    overlaps = Footprint.overlaps

    def counting(self, other):
        compared.append(1)
        return overlaps(self, other)

    monkeypatch.setattr(Footprint, "overlaps", counting)
    normal = "normal(mean=0, std=1)"
    for i, v in enumerate(views):
        full = normal if i % 3 else "constant(0.5)"
        # an in-place op that reads the view (add_, mul_) builds on its fill
        want = {7: (f"{full}; then add_", False), 250: (f"{full}; then mul_", False),
                251: (f"{full}; then mul_", False),
                252: (f"{full}; then mul_ on part", False),
                400: (f"{full}; then constant(0) on part", True)}.get(i, (full, True))
        compared.clear()
        assert recorder.wrote(v), i
        assert (recorder.describe(v), recorder.by_fastinit(v)) == want, i
        # three queries, each near its 4 elements: a handful of writes, not the whole log
        assert len(compared) <= 3 * 6, (i, len(compared))
    assert recorder.describe(flat) == "constant(0.5); then " + "; then ".join(
        ["normal(mean=0, std=1) on part"] * (2 * n // 3 + (n % 3 == 2))
        + ["add_ on part", "mul_ on part", "constant(0) on part"])
    assert not recorder.by_fastinit(flat)
    assert not recorder.wrote(torch.empty(4))  # negative control: memory the block never wrote


# --- constant fills recorded without the drop-in call ------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_constant_fills_are_recorded_with_fastinits_values(dtype, written):
    """fill_ / zero_ / torch.nn.init's constants / torch.zeros and ones, recorded directly: the
    values of fastinit's constant_ (torch's fill_ rounding, -0.0 kept), one write each, logged
    as fastinit's fills; a later covering fill drops them."""
    values = (0.1, -0.0, 1 / 3, 1e-8, 2 ** -24, -7, 0, 1.0)
    with fastinit.fused() as recorder:
        got = [torch.empty(5, dtype=dtype).fill_(v) for v in values]
        zeros, ones = torch.zeros(3, dtype=dtype), torch.ones(2, 2, dtype=dtype)
        p = nn.Parameter(torch.empty(6, dtype=dtype))
        nn.init.constant_(p, 0.25)
        covered = torch.empty(4, dtype=dtype)
        nn.init.zeros_(covered)
        fastinit.normal_(covered, seed=3)     # drops the zeros_
        assert len(recorder.pending) == len(values) + 4 and recorder.dropped == 1
        assert recorder.describe(p) == "constant(0.25)" and recorder.by_fastinit(p)
        assert recorder.describe(ones) == "constant(1)"
        with fastinit.fused() as alone:       # the drop-in call's record, for comparison
            want = alone.describe(fastinit.constant_(torch.empty(5, dtype=dtype), 0.1))
        assert recorder.describe(got[0]) == want and want.startswith("constant(0.")  # rounded
    assert written["elements"] == 5 * len(values) + 3 + 4 + 6 + 4  # each written once
    for g, v in zip(got, values):
        assert_bitwise(g, fastinit.constant_(torch.empty(5, dtype=dtype), v))
        assert_bitwise(g, torch.empty(5, dtype=dtype).fill_(v))
    assert_bitwise(zeros, torch.zeros(3, dtype=dtype))
    assert_bitwise(ones, torch.ones(2, 2, dtype=dtype))
    assert_bitwise(p.detach(), torch.full((6,), 0.25, dtype=dtype))
    assert_bitwise(covered, fastinit.normal_(torch.empty(4, dtype=dtype), seed=3))


def test_constant_fills_keep_their_errors_and_other_tensors_take_the_drop_in_path():
    with fastinit.fused() as recorder:
        with pytest.raises(fastinit.InitValueError, match="overflow"):
            nn.init.constant_(torch.empty(4, dtype=torch.float16), 1e6)
        t = torch.empty(4)
        t.untyped_storage().resize_(0)        # freed (as by FSDP): raises at the call
        with pytest.raises(RuntimeError, match="not allocated"):
            nn.init.zeros_(t)
        assert recorder.pending == []
        ints = torch.empty(3, dtype=torch.int64)
        ints.fill_(7)                         # torch's own fill
        strided = torch.empty(4, 4).t()
        strided.fill_(2.0)                    # not dense: the drop-in path records it
        assert len(recorder.pending) == 1
    assert (ints == 7).all() and (strided == 2).all()
    with fastinit.fused(dry_run=True) as recorder:  # a dry run writes nothing
        m = torch.full((4,), 7.0)
        nn.init.ones_(m)
        assert len(recorder.pending) == 1
    assert (m == 7).all()


def test_a_pass_of_many_small_tensors_is_one_native_call(monkeypatch):
    """The pass of whole plain CPU tensors: one native call, the values of the calls one by
    one, the tensors' version counters bumped."""
    from fastinit.backends import cpu
    calls = []
    real, real_whole = cpu.fill_tensors, cpu.fill_whole_tensors

    def whole(rows):  # fastinit._C_tensor's call, where it is loaded
        filled = real_whole(rows)
        if filled:
            calls.append(len(rows))
        return filled

    monkeypatch.setattr(cpu, "fill_tensors", lambda rows: (calls.append(len(rows)), real(rows))[1])
    monkeypatch.setattr(cpu, "fill_whole_tensors", whole)
    tensors = [torch.empty(3 + i % 5, dtype=(torch.float32, torch.bfloat16)[i % 2]) for i in range(50)]
    versions = [t._version for t in tensors]
    with fastinit.fused():
        for i, t in enumerate(tensors):
            fastinit.normal_(t, seed=i)
    assert calls == [50]
    for i, t in enumerate(tensors):
        assert t._version > versions[i]
        assert_bitwise(t, fastinit.normal_(torch.empty_like(t), seed=i))
