"""The eager drop-in call: a whole plain CPU tensor is checked, its seed drawn and filled in one
native call (backends.fill_whole_natively, _C.fill_tensor), with exactly the seed, generator
state and values of the general path; argument errors come before storage errors, and a call
that raises draws and writes nothing."""
from __future__ import annotations

import math

import pytest
import torch

import fastinit
from fastinit import backends
from fastinit.contract import draw_seeds, seeds_from
from fastinit.errors import InitValueError, UnsafeTargetError

POISON = 7.0


@pytest.fixture(params=["tensor calls", "raw metadata"])
def native_calls(request, monkeypatch):
    """The seeds (None: drawn natively) of the calls filled in one native call: by
    fastinit._C_tensor's fill_tensor (where it is loaded; "raw metadata" turns it off) or by
    _C.fill_tensor."""
    seeds = []
    real = backends._CPU.fill_tensor

    def recording(*args):
        seeds.append(args[9])
        return real(*args)

    monkeypatch.setattr(backends._CPU, "fill_tensor", recording)
    if request.param == "raw metadata":
        monkeypatch.setattr(backends, "_tensor_fill", None)
    elif backends._tensor_fill is None:
        pytest.skip(f"fastinit._C_tensor: {backends._CPU.TENSOR_CALLS_STATUS}")
    else:
        real_tensor_fill = backends._tensor_fill

        def tensor_recording(tensor, dist, params, seed, generator, stream):
            filled = real_tensor_fill(tensor, dist, params, seed, generator, stream)
            if filled:
                seeds.append(seed)
            return filled

        monkeypatch.setattr(backends, "_tensor_fill", tensor_recording)
    return seeds


def _values(name, shape, args, seed):
    """The values of the same call with `seed` on a plain tensor."""
    return getattr(fastinit, name)(torch.empty(shape), *args, seed=seed)


CALLS = [("uniform_", (-0.5, 2.0)), ("normal_", (0.25, 3.0)), ("trunc_normal_", (0.0, 1.0)),
         ("kaiming_uniform_", (math.sqrt(5),)), ("xavier_normal_", ())]


@pytest.mark.parametrize("name,args", CALLS)
def test_native_draw_from_the_default_generator_equals_draw_seeds(name, args, native_calls):
    torch.manual_seed(2024)
    expected_seed = draw_seeds(None, 1)[0]
    expected_state = torch.get_rng_state()
    torch.manual_seed(2024)
    got = getattr(fastinit, name)(torch.empty(24, 40), *args)
    assert native_calls == [None]  # the native call drew the seed
    assert torch.equal(torch.get_rng_state(), expected_state)
    assert torch.equal(got, _values(name, (24, 40), args, expected_seed))


def test_native_draw_from_an_explicit_generator_equals_draw_seeds(native_calls):
    g = torch.Generator().manual_seed(31)
    expected_seeds = draw_seeds(g, 3)
    expected_state = g.get_state()
    g.manual_seed(31)
    default_state = torch.get_rng_state()
    got = [fastinit.uniform_(torch.empty(100), generator=g) for _ in range(3)]
    assert native_calls == [None] * 3
    assert torch.equal(g.get_state(), expected_state)
    assert torch.equal(torch.get_rng_state(), default_state)  # the default one is untouched
    for values, seed in zip(got, expected_seeds):
        assert torch.equal(values, _values("uniform_", (100,), (), seed))
    assert not torch.equal(got[0], got[1])


def test_native_draw_inside_seeds_from_equals_draw_seeds(native_calls):
    g = torch.Generator().manual_seed(5)
    expected_seeds = draw_seeds(g, 2)
    expected_state = g.get_state()
    g.manual_seed(5)
    default_state = torch.get_rng_state()
    with seeds_from(g):
        got = [fastinit.normal_(torch.empty(64, 3)) for _ in range(2)]
    assert native_calls == [None, None]
    assert torch.equal(g.get_state(), expected_state)
    assert torch.equal(torch.get_rng_state(), default_state)
    for values, seed in zip(got, expected_seeds):
        assert torch.equal(values, _values("normal_", (64, 3), (), seed))


def test_a_given_seed_draws_nothing(native_calls):
    state = torch.get_rng_state()
    got = fastinit.uniform_(torch.empty(50), seed=2**64 - 1)
    assert native_calls == [2**64 - 1]
    assert torch.equal(torch.get_rng_state(), state)
    fastinit.set_backend("reference")  # the general path, and the contract's values
    try:
        expected = fastinit.uniform_(torch.empty(50), seed=2**64 - 1)
    finally:
        fastinit.set_backend("auto")
    assert torch.equal(got, expected)


# --- argument errors before storage errors, and nothing drawn or written on error ---------------


def _freed(shape, dtype=torch.float32):
    t = torch.full(shape, POISON, dtype=dtype)
    t.untyped_storage().resize_(0)
    return t


BAD_ARGUMENTS = [
    ("uniform_", (3, 4), (2.0, 1.0), {}, InitValueError, "from=2 > to=1"),
    ("normal_", (3, 4), (0.0, -1.0), {}, InitValueError, "std >= 0.0"),
    ("uniform_", (3, 4), (), {"generator": "cpu"}, TypeError, "must be torch.Generator"),
    ("uniform_", (3, 4), (), {"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*64\)"),
    ("trunc_normal_", (3, 4), (0.0, 0.0), {}, ZeroDivisionError, "std must be positive"),
    ("kaiming_uniform_", (3, 4), (), {"mode": "fan_up"}, ValueError, "fan_up"),
    ("xavier_uniform_", (3,), (), {}, ValueError, "fewer than 2 dimensions"),
    ("constant_", (3, 4), (1e6,), {"dtype": torch.float16}, InitValueError, "overflow"),
    ("eye_", (3, 4, 5), (), {}, ValueError, "Only tensors with 2 dimensions"),
    ("dirac_", (3, 4), (), {}, ValueError, "Only tensors with 3, 4, or 5 dimensions"),
    ("orthogonal_", (3,), (), {}, ValueError, "Only tensors with 2 or more dimensions"),
    ("sparse_", (3, 4), (2.0,), {}, InitValueError, "sparsity must be in"),
]


@pytest.mark.parametrize("name,shape,args,kwargs,error,match", BAD_ARGUMENTS,
                         ids=[f"{c[0]}-{c[-1][:12]}" for c in BAD_ARGUMENTS])
def test_a_bad_argument_on_a_freed_storage_raises_the_argument_error(name, shape, args, kwargs,
                                                                     error, match):
    kwargs = dict(kwargs)
    t = _freed(shape, kwargs.pop("dtype", torch.float32))
    state = torch.get_rng_state()
    with pytest.raises(error, match=match):
        getattr(fastinit, name)(t, *args, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert t.untyped_storage().nbytes() == 0


STORAGE_CALLS = [("uniform_", ()), ("normal_", (1.0, 2.0)), ("kaiming_normal_", ()),
                 ("trunc_normal_", ()), ("constant_", (0.5,)), ("zeros_", ()), ("ones_", ()),
                 ("eye_", ()), ("orthogonal_", ()), ("sparse_", (0.5,))]


@pytest.mark.parametrize("name,args", STORAGE_CALLS)
@pytest.mark.parametrize("size", [0, 40], ids=["freed", "shrunk"])
def test_a_storage_error_draws_and_writes_nothing(name, args, size):
    t = torch.full((6, 5), POISON)
    t.untyped_storage().resize_(size)
    state = torch.get_rng_state()
    phrase = "data is not allocated yet" if size == 0 else "out of bounds for storage"
    with pytest.raises(RuntimeError, match=phrase) as info:
        getattr(fastinit, name)(t, *args)
    assert isinstance(info.value, UnsafeTargetError)  # fastinit's check, before any torch op
    assert torch.equal(torch.get_rng_state(), state)
    assert t.untyped_storage().nbytes() == size
    if size:
        kept = torch.frombuffer(bytearray(bytes(t.untyped_storage())), dtype=torch.float32)
        assert torch.all(kept == POISON)


# --- what the native call declines gets the general path's values -------------------------------


def _declined_cases():
    base = torch.full((6, 7), POISON)
    many_dims = torch.full((2,) * 10, POISON).transpose(0, 9)  # 10 dims that do not merge
    return {"negative view": base._neg_view(), "more dims than a descriptor": many_dims}


@pytest.mark.parametrize("case", ["negative view", "more dims than a descriptor"])
@pytest.mark.parametrize("name,args", [("uniform_", (-1.0, 3.0)), ("normal_", (0.5, 2.0))])
def test_a_declined_tensor_gets_the_general_paths_values(case, name, args, native_calls):
    tensor = _declined_cases()[case]
    torch.manual_seed(77)
    expected_seed = draw_seeds(None, 1)[0]
    expected_state = torch.get_rng_state()
    torch.manual_seed(77)
    getattr(fastinit, name)(tensor, *args)
    assert None not in native_calls  # declined before anything was drawn
    assert torch.equal(torch.get_rng_state(), expected_state)
    # the contract: a view reads the values of a plain tensor of its shape
    expected = _values(name, tensor.shape, args, expected_seed)
    assert torch.equal(tensor.clone(), expected) and not torch.any(tensor == POISON)


def test_an_inference_tensor_in_inference_mode_is_filled_natively(native_calls):
    with torch.inference_mode():
        t = torch.full((5, 4), POISON)
        got = fastinit.uniform_(t, seed=8)
    assert native_calls == [8]
    assert torch.equal(got, _values("uniform_", (5, 4), (), 8))


def test_an_inference_tensor_outside_inference_mode_raises_torchs_error(native_calls):
    with torch.inference_mode():
        t = torch.full((4, 3), POISON)
    with pytest.raises(UnsafeTargetError, match="inference tensor"):
        fastinit.uniform_(t)
    assert native_calls == []
    assert torch.all(t == POISON)


def test_the_native_fill_bumps_the_version_counter(native_calls):
    w = torch.nn.Parameter(torch.empty(8, 8))
    version = w._version
    fastinit.kaiming_uniform_(w, a=math.sqrt(5))
    fastinit.zeros_(w)
    assert native_calls == [None, 0]
    assert w._version == version + 2 and torch.all(w == 0)


def test_inside_fused_the_fill_is_recorded_not_run_natively(native_calls):
    torch.manual_seed(3)
    with fastinit.fused() as recorder:
        w = fastinit.uniform_(torch.empty(16, 16))
        assert native_calls == [] and recorder.recorded == 1
    assert None not in native_calls  # the block's pass ran it with the seed drawn at the call
    torch.manual_seed(3)
    assert torch.equal(w, fastinit.uniform_(torch.empty(16, 16)))
