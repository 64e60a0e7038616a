"""fastinit._C_tensor, the drop-in call's native entry point that takes torch tensors: built
against the installed torch and loaded only under it; its seed draw equals torch's (values and
generator state), its values equal the raw-metadata call's (_C.fill_tensor) on every layout and
dtype, it declines what it does not fill before drawing or writing anything, and its storage
errors draw and write nothing. (tests/test_eager_path.py runs the drop-in call on both entry
points.)"""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

import fastinit
from contract_cases import NAN, strided_layouts
from fastinit import backends
from fastinit.backends import cpu
from fastinit.contract import Distribution, draw_seeds, seeds_from, uniform_params
from fastinit.contract_numbers import MAX_DIMS
from fastinit.errors import UnsafeTargetError

pytestmark = pytest.mark.skipif(cpu.TENSOR_CALLS is None,
                                reason=f"fastinit._C_tensor: {cpu.TENSOR_CALLS_STATUS}")

POISON = 7.0
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
UNIFORM = Distribution.UNIFORM


def tensor_fill(tensor, seed=None, generator=None, dist=UNIFORM, params=None):
    """fastinit._C_tensor.fill_tensor of a uniform on [-1, 2), stream 0."""
    if params is None:
        dtype = getattr(tensor, "dtype", None)
        params = uniform_params(-1.0, 2.0, dtype if dtype in DTYPES else torch.float32)
    return cpu.TENSOR_CALLS.fill_tensor(tensor, dist, params, seed, generator, 0)


@contextlib.contextmanager
def raw_metadata_call():
    """The drop-in call through _C.fill_tensor (today's path without fastinit._C_tensor)."""
    saved = backends._tensor_fill
    backends._tensor_fill = None
    try:
        yield
    finally:
        backends._tensor_fill = saved


@pytest.fixture
def tensor_calls(monkeypatch):
    """The seed of each call fastinit._C_tensor filled (None: drawn natively)."""
    filled = []
    real = backends._tensor_fill

    def recording(tensor, dist, params, seed, generator, stream):
        if real(tensor, dist, params, seed, generator, stream):
            filled.append(seed)
            return True
        return False

    monkeypatch.setattr(backends, "_tensor_fill", recording)
    return filled


# --- built and loaded against the running torch ---------------------------------------------------


def test_loaded_here_and_stamped_with_the_running_torch():
    module = cpu.TENSOR_CALLS
    assert fastinit.backend_info()["tensor_calls"] == "loaded"
    assert module.TORCH_BUILD_VERSION == torch.__version__
    assert module.TORCH_VERSION == torch.__version__.split("+")[0]
    assert module.CXX11_ABI == torch._C._GLIBCXX_USE_CXX11_ABI
    assert backends._tensor_fill is module.fill_tensor


# --- the seed: torch's draw, values and generator state ------------------------------------------


def test_a_draw_from_the_default_generator_equals_draw_seeds():
    torch.manual_seed(2026)
    expected = draw_seeds(None, 3)
    expected_state = torch.get_rng_state()
    torch.manual_seed(2026)
    got = [torch.empty(8, 9) for _ in range(3)]
    for t in got:
        assert tensor_fill(t) is True
    assert torch.equal(torch.get_rng_state(), expected_state)
    for t, seed in zip(got, expected):
        assert torch.equal(t, fill_with_seed(t.shape, seed))


def test_a_draw_from_an_explicit_generator_equals_draw_seeds_and_leaves_the_default():
    g = torch.Generator().manual_seed(99)
    expected = draw_seeds(g, 2)
    expected_state = g.get_state()
    g.manual_seed(99)
    default_state = torch.get_rng_state()
    got = [torch.empty(5, 7), torch.empty(5, 7)]
    for t in got:
        assert tensor_fill(t, generator=g) is True
    assert torch.equal(g.get_state(), expected_state)
    assert torch.equal(torch.get_rng_state(), default_state)
    for t, seed in zip(got, expected):
        assert torch.equal(t, fill_with_seed(t.shape, seed))


def test_a_drop_in_call_inside_seeds_from_draws_from_its_generator(tensor_calls):
    g = torch.Generator().manual_seed(5)
    expected = draw_seeds(g, 1)[0]
    expected_state = g.get_state()
    g.manual_seed(5)
    default_state = torch.get_rng_state()
    t = torch.empty(6, 6)
    with seeds_from(g):
        fastinit.uniform_(t, -1.0, 2.0)
    assert tensor_calls == [None]
    assert torch.equal(g.get_state(), expected_state)
    assert torch.equal(torch.get_rng_state(), default_state)
    assert torch.equal(t, fill_with_seed(t.shape, expected))


def test_draws_follow_manual_seed_and_the_python_draw_interleaved():
    torch.manual_seed(1)
    expected = draw_seeds(None, 4)
    torch.manual_seed(1)
    a, b = torch.empty(4, 4), torch.empty(4, 4)
    tensor_fill(a)
    python_draws = draw_seeds(None, 2)  # the Python draw continues where the native one stopped
    tensor_fill(b)
    assert python_draws == expected[1:3]
    assert torch.equal(a, fill_with_seed(a.shape, expected[0]))
    assert torch.equal(b, fill_with_seed(b.shape, expected[3]))


def test_a_given_seed_draws_nothing():
    state = torch.get_rng_state()
    t = torch.empty(3, 11)
    assert tensor_fill(t, seed=2**64 - 1) is True
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(t, fill_with_seed(t.shape, 2**64 - 1))


def fill_with_seed(shape, seed, dtype=torch.float32):
    """The raw-metadata call's uniform on [-1, 2) with `seed` on a fresh tensor."""
    with raw_metadata_call():
        return fastinit.uniform_(torch.empty(shape, dtype=dtype), -1.0, 2.0, seed=seed)


# --- values: the raw-metadata call's, on every layout and dtype -----------------------------------


CALLS = [("uniform_", (-0.5, 2.0)), ("normal_", (0.25, 3.0)), ("trunc_normal_", (0.0, 1.0)),
         ("kaiming_uniform_", (math.sqrt(5),)), ("xavier_normal_", ())]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", list(strided_layouts(torch.float32)))
@pytest.mark.parametrize("name,args", CALLS)
def test_values_equal_the_raw_metadata_calls(name, args, layout, dtype, tensor_calls):
    if layout in ("0-d", "one chunk and more") and name in ("kaiming_uniform_", "xavier_normal_"):
        pytest.skip("fan-based initialisers need 2 dims")
    fn = getattr(fastinit, name)
    ours = strided_layouts(dtype)[layout]
    theirs = strided_layouts(dtype)[layout]
    torch.manual_seed(321)
    fn(ours, *args)
    state = torch.get_rng_state()
    torch.manual_seed(321)
    with raw_metadata_call():
        fn(theirs, *args)
    assert tensor_calls == [None]
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.any(torch.isnan(ours)) and torch.equal(ours.detach(), theirs.detach())
    assert ours.stride() == theirs.stride()  # filled in place


def test_the_version_counter_is_bumped_once_per_fill():
    t = torch.empty(4, 5)
    before = t._version
    tensor_fill(t)
    assert t._version == before + 1
    tensor_fill(t, seed=3)
    assert t._version == before + 2


def test_an_inference_tensor_inside_inference_mode_is_filled():
    with torch.inference_mode():
        t = torch.full((4, 4), POISON)
        assert tensor_fill(t, seed=4) is True
    assert torch.equal(t, fill_with_seed((4, 4), 4))


def test_a_large_fill_releases_the_gil_and_equals_the_raw_call():
    t = torch.empty(1 << 18)
    assert tensor_fill(t, seed=11) is True
    assert torch.equal(t, fill_with_seed(t.shape, 11))


# --- declines: False, nothing drawn or written; the drop-in call then takes today's path ----------


def _declined():
    with torch.inference_mode():
        inference = torch.full((3, 4), POISON)
    return {
        "meta": torch.empty(3, 4, device="meta"),
        "negative view": torch.full((3, 4), POISON)._neg_view(),
        "functional": torch._to_functional_tensor(torch.full((3, 4), POISON)),
        "inference outside inference mode": inference,
        "more dims than MAX_DIMS": torch.full((2,) * (MAX_DIMS + 1), POISON),
        "empty": torch.empty(0, 4),
        "integer dtype": torch.full((3, 4), 7, dtype=torch.int32),
        "complex dtype": torch.full((3, 4), POISON, dtype=torch.complex64),
        "sparse": torch.eye(4).to_sparse(),
        "quantized": torch.quantize_per_tensor(torch.zeros(3, 4), 0.1, 0, torch.quint8),
        "not a tensor": [1.0, 2.0],
    }


@pytest.mark.parametrize("case", list(_declined()))
def test_what_it_does_not_fill_is_declined_before_anything_is_drawn(case):
    tensor = _declined()[case]
    state = torch.get_rng_state()
    before = tensor.clone() if case in ("negative view", "inference outside inference mode",
                                        "more dims than MAX_DIMS") else None
    version = getattr(tensor, "_version", None) if case != "inference outside inference mode" \
        else None
    assert tensor_fill(tensor) is False
    assert torch.equal(torch.get_rng_state(), state)
    if before is not None:
        assert torch.equal(tensor, before)
    if version is not None:
        assert tensor._version == version


def test_a_generator_of_another_device_is_declined():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA generator")
    g = torch.Generator(device="cuda").manual_seed(1)
    offset = g.get_offset()
    t = torch.full((3, 4), POISON)
    assert tensor_fill(t, generator=g) is False
    assert g.get_offset() == offset and torch.all(t == POISON)


def test_not_a_generator_raises_typeerror_before_anything_is_drawn():
    t = torch.full((3, 4), POISON)
    state = torch.get_rng_state()
    with pytest.raises(TypeError, match="torch.Generator"):
        tensor_fill(t, generator=3)
    assert torch.equal(torch.get_rng_state(), state) and torch.all(t == POISON)


@pytest.mark.parametrize("case", ["negative view", "more dims than MAX_DIMS"])
def test_a_declined_tensor_gets_todays_values(case, tensor_calls):
    ours, theirs = _declined()[case], _declined()[case]
    torch.manual_seed(8)
    fastinit.normal_(ours, 0.5, 2.0)
    state = torch.get_rng_state()
    torch.manual_seed(8)
    with raw_metadata_call():
        fastinit.normal_(theirs, 0.5, 2.0)
    assert None not in tensor_calls  # declined before the draw (a negative view's plain alias,
    # with its seed drawn and its parameters negated, may then be filled natively)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ours, theirs) and not torch.any(ours == POISON)


# --- storage errors: torch's message, nothing drawn or written ------------------------------------


@pytest.mark.parametrize("size", [0, 40], ids=["freed", "shrunk"])
def test_a_storage_error_raises_the_raw_calls_error_and_draws_and_writes_nothing(size):
    messages = []
    for call in (tensor_fill, _raw_fill):
        t = torch.full((6, 5), POISON)
        t.untyped_storage().resize_(size)
        state, version = torch.get_rng_state(), t._version
        with pytest.raises(IndexError) as info:
            call(t)
        messages.append(str(info.value))
        assert torch.equal(torch.get_rng_state(), state) and t._version == version
        if size:
            kept = torch.frombuffer(bytearray(bytes(t.untyped_storage())), dtype=torch.float32)
            assert torch.all(kept == POISON)
    assert messages[0] == messages[1]
    assert ("not allocated yet" if size == 0 else "out of bounds for storage") in messages[0]


def test_the_drop_in_call_raises_a_storage_error_as_unsafetargeterror(tensor_calls):
    t = torch.full((6, 5), POISON)
    t.untyped_storage().resize_(40)
    with pytest.raises(UnsafeTargetError, match="out of bounds for storage"):
        fastinit.uniform_(t)
    assert tensor_calls == []


def _raw_fill(t):
    """_C.fill_tensor of the same uniform, seed drawn from the default generator."""
    storage = t.untyped_storage()
    backends._CPU.fill_tensor(t.data_ptr(), storage.data_ptr(), storage.nbytes(),
                              t.storage_offset(), t.shape, t.stride(), 0, int(UNIFORM),
                              uniform_params(-1.0, 2.0, t.dtype), None, 0, None)


# --- fill_tensors: the tensors of a whole pass in one call ----------------------------------------


def _raw_rows(rows):
    """_C.fill_tensors' rows of (tensor, dist, params, seed, stream) rows."""
    return [(t.data_ptr(), t.untyped_storage().data_ptr(), t.untyped_storage().nbytes(),
             t.storage_offset(), t.shape, t.stride(), int(fastinit.contract.DTYPE_CODES[t.dtype]),
             int(dist), params, seed, stream) for t, dist, params, seed, stream in rows]


def _batch(layouts):
    """One row per layout and dtype: alternating uniform and normal, distinct seeds and streams."""
    rows = []
    for i, t in enumerate(layouts):
        dist = UNIFORM if i % 2 else Distribution.NORMAL
        params = uniform_params(-1.0, 2.0, t.dtype) if i % 2 else [0.5, 2.0]
        rows.append((t, dist, params, 1000 + i, 17 * i))
    return rows


def _mixed_layouts():
    return [t for dtype in DTYPES for t in strided_layouts(dtype).values()]


def test_a_batch_equals_the_raw_metadata_call_on_mixed_layouts_and_dtypes():
    ours, theirs = _batch(_mixed_layouts()), _batch(_mixed_layouts())
    assert cpu.TENSOR_CALLS.fill_tensors(ours) is True
    cpu.fill_tensors(_raw_rows(theirs))
    for (a, *_), (b, *_) in zip(ours, theirs):
        assert not torch.any(torch.isnan(a)) and torch.equal(a.detach(), b.detach())


def test_a_batch_bumps_each_version_counter_once_and_draws_nothing():
    tensors = [torch.empty(4, 5), torch.empty(3, dtype=torch.bfloat16), torch.empty(2, 6).t()]
    versions, state = [t._version for t in tensors], torch.get_rng_state()
    assert cpu.TENSOR_CALLS.fill_tensors(_batch(tensors)) is True
    assert [t._version for t in tensors] == [v + 1 for v in versions]
    assert torch.equal(torch.get_rng_state(), state)
    assert cpu.TENSOR_CALLS.fill_tensors([]) is True


@pytest.mark.parametrize("size", [0, 40], ids=["freed", "shrunk"])
def test_one_bad_storage_raises_the_raw_calls_error_and_writes_nothing(size):
    messages = []
    for call in (cpu.TENSOR_CALLS.fill_tensors, lambda rows: cpu.fill_tensors(_raw_rows(rows))):
        tensors = [torch.full((4, 4), POISON), torch.full((6, 5), POISON), torch.full((3,), POISON)]
        tensors[1].untyped_storage().resize_(size)
        versions = [t._version for t in tensors]
        with pytest.raises(IndexError) as info:
            call(_batch(tensors))
        messages.append(str(info.value))
        assert torch.all(tensors[0] == POISON) and torch.all(tensors[2] == POISON)
        assert [t._version for t in tensors] == versions
    assert messages[0] == messages[1]
    assert ("not allocated yet" if size == 0 else "out of bounds for storage") in messages[0]


@pytest.mark.parametrize("case", list(_declined()))
def test_one_tensor_it_does_not_take_declines_the_whole_batch(case):
    declined = _declined()[case]
    tensors = [torch.full((4, 4), POISON), torch.full((5,), POISON)]
    versions = [t._version for t in tensors]
    rows = _batch(tensors)
    rows.insert(1, (declined, UNIFORM, uniform_params(-1.0, 2.0, torch.float32), 5, 0))
    assert cpu.TENSOR_CALLS.fill_tensors(rows) is False
    assert all(torch.all(t == POISON) for t in tensors)
    assert [t._version for t in tensors] == versions


def test_a_row_that_is_not_a_five_tuple_raises_typeerror_and_writes_nothing():
    t = torch.full((4, 4), POISON)
    with pytest.raises(TypeError, match="row 1"):
        cpu.TENSOR_CALLS.fill_tensors(_batch([t]) + [(t, UNIFORM)])
    assert torch.all(t == POISON)


def test_dense_codes_take_plain_contiguous_tensors_it_fills():
    class Sub(torch.Tensor):
        pass

    cases = {"float32": (torch.empty(3, 4), 0), "bfloat16": (torch.empty(3, dtype=torch.bfloat16), 3),
             "parameter": (torch.nn.Parameter(torch.empty(2, 2)), 0),
             "transposed": (torch.empty(3, 4).t(), None),
             "subclass": (torch.empty(3, 4).as_subclass(Sub), None)}
    cases.update({name: (t, None) for name, t in _declined().items()})
    tensors = [t for t, _ in cases.values()]
    got = cpu.TENSOR_CALLS.dense_codes(tensors, backends.PLAIN_TENSOR_TYPES)
    expected = [None if code is None else int(fastinit.contract.DTYPE_CODES[t.dtype])
                for t, code in cases.values()]
    assert dict(zip(cases, got)) == dict(zip(cases, expected))


@contextlib.contextmanager
def without_tensor_calls():
    """fastinit as it runs where fastinit._C_tensor is not loaded."""
    saved = cpu.TENSOR_CALLS, backends._tensor_fill
    cpu.TENSOR_CALLS, backends._tensor_fill = None, None
    try:
        yield
    finally:
        cpu.TENSOR_CALLS, backends._tensor_fill = saved


def _mixed_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5),
                                torch.nn.Linear(5, 3).to(torch.bfloat16),
                                torch.nn.Embedding(9, 4).to(torch.float64))
    model[0].weight.data = torch.empty(5, 7).t().contiguous().t()  # a transposed layout
    return model


@pytest.mark.parametrize("entry", ["reset_parameters", "materialize", "fused pass"])
def test_a_pass_is_one_batch_call_with_the_values_without_it(entry, monkeypatch):
    calls = []
    real = cpu.fill_whole_tensors

    def counting(rows):
        filled = real(rows)
        calls.append((len(rows), filled))
        return filled

    def run():
        if entry == "reset_parameters":
            model = _mixed_model()
            fastinit.reset_parameters(model, seed=41)
            return [t.detach() for t in model.state_dict().values()]
        if entry == "materialize":
            with torch.device("meta"):
                model = _mixed_model()
            fastinit.materialize(model, seed=41, init="reset_parameters")
            return [t.detach() for t in model.state_dict().values()]
        tensors = [torch.empty(3 + i % 4, dtype=DTYPES[i % 4]) for i in range(40)]
        with fastinit.fused():
            for i, t in enumerate(tensors):
                fastinit.normal_(t, 0.5, 2.0, seed=i)
        return tensors

    with without_tensor_calls():
        expected = run()
    monkeypatch.setattr(cpu, "fill_whole_tensors", counting)
    got = run()
    assert len(calls) == 1 and calls[0][1] is True and calls[0][0] >= 4
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
