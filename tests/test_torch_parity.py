"""fastinit is a drop-in for torch.nn.init: same names, signatures, errors and warnings.

Every bad input of the table is run against torch.nn.init and fastinit: fastinit's exception is
an instance of torch's exception type and carries torch's key phrase, and the tensor it was
given keeps its previous content (fastinit validates everything before it writes anything).
"""
from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch

import fastinit
from fastinit import InitValueError

TORCH_ALL = list(torch.nn.init.__all__)
DEPRECATED = [
    "uniform", "normal", "constant", "eye", "dirac", "xavier_uniform", "xavier_normal",
    "kaiming_uniform", "kaiming_normal", "orthogonal", "sparse",
]
RANDOM_FNS = [
    "uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
    "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
]
FASTINIT_ONLY_RANDOM = ["lecun_uniform_", "lecun_normal_", "variance_scaling_", "trunc_normal_tf_"]


# ----------------------------------------------------------------------------------------------
# Names and signatures
# ----------------------------------------------------------------------------------------------


def _params(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", TORCH_ALL)
def test_signature_matches_torch(name):
    assert hasattr(fastinit, name), f"fastinit lacks torch.nn.init.{name}"
    ours = _params(getattr(fastinit, name))
    theirs = _params(getattr(torch.nn.init, name))
    if ours == theirs:
        return
    # the only allowed difference: one keyword-only `seed=None` at the end
    assert ours[:-1] == theirs, f"{name}: {ours} != {theirs}"
    assert ours[-1] == ("seed", inspect.Parameter.KEYWORD_ONLY, None), ours[-1]


@pytest.mark.parametrize("name", [n for n in TORCH_ALL if n not in DEPRECATED])
def test_torch_function_exported_in_fastinit_all(name):
    assert name in fastinit.__all__


@pytest.mark.parametrize("name", RANDOM_FNS)
def test_random_functions_take_seed(name):
    sig = inspect.signature(getattr(fastinit, name))
    assert "seed" in sig.parameters
    assert "generator" in sig.parameters


def test_deprecated_names_are_exactly_torch_deprecated_names():
    torch_deprecated = [n for n in TORCH_ALL if not n.endswith("_") and n != "calculate_gain"]
    assert sorted(torch_deprecated) == sorted(DEPRECATED)


def _small_args(name: str):
    """(tensor, args, kwargs) of a valid call of `name` (or its `name_` form)."""
    base = name.rstrip("_")
    if base == "dirac":
        return torch.empty(4, 4, 3), (), {}
    if base == "constant":
        return torch.empty(4, 5), (0.5,), {}
    if base == "sparse":
        return torch.empty(6, 5), (0.5,), {}
    return torch.empty(4, 5), (), {}


@pytest.mark.parametrize("name", DEPRECATED)
def test_deprecated_names_warn_and_work(name):
    t, args, kwargs = _small_args(name)
    with pytest.warns(FutureWarning, match=rf"`fastinit\.{name}` is now deprecated in favor of `fastinit\.{name}_`") as rec:
        out = getattr(fastinit, name)(t, *args, **kwargs)
    assert out is t
    assert rec[0].filename == __file__  # stacklevel points at the caller, as torch's
    # same as the new name (seeded the same way)
    expected, args2, kwargs2 = _small_args(name)
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        getattr(fastinit, name)(t, *args, **kwargs)
    torch.manual_seed(0)
    getattr(fastinit, name + "_")(expected, *args2, **kwargs2)
    assert torch.equal(t, expected)


# ----------------------------------------------------------------------------------------------
# Bad inputs: torch and fastinit raise the same
# ----------------------------------------------------------------------------------------------


def sentinel(shape, dtype=torch.float32):
    """Distinct finite values, so any write (partial or not) shows up."""
    n = math.prod(shape)
    return (torch.arange(n, dtype=torch.float64) * 0.37 - 5.0).reshape(shape).to(dtype)


def int_sentinel(shape, dtype=torch.int64):
    return torch.arange(math.prod(shape), dtype=dtype).reshape(shape) * 3 - 7


def expanded():
    return sentinel((4, 1)).expand(4, 5)


# id, function name, tensor factory, args, kwargs, key phrase torch uses
TORCH_BAD_CASES = [
    ("xavier_uniform_1d", "xavier_uniform_", lambda: sentinel((5,)), (), {}, "fewer than 2 dimensions"),
    ("xavier_normal_1d", "xavier_normal_", lambda: sentinel((5,)), (), {}, "fewer than 2 dimensions"),
    ("kaiming_uniform_1d", "kaiming_uniform_", lambda: sentinel((5,)), (), {}, "fewer than 2 dimensions"),
    ("kaiming_normal_1d", "kaiming_normal_", lambda: sentinel((5,)), (), {}, "fewer than 2 dimensions"),
    ("kaiming_uniform_bad_mode", "kaiming_uniform_", lambda: sentinel((4, 5)), (), {"mode": "fan_bad"},
     "Mode fan_bad not supported, please use one of ['fan_in', 'fan_out']"),
    ("kaiming_normal_bad_mode", "kaiming_normal_", lambda: sentinel((4, 5)), (), {"mode": "fan_avg"},
     "Mode fan_avg not supported"),
    ("kaiming_uniform_bad_nonlinearity", "kaiming_uniform_", lambda: sentinel((4, 5)), (),
     {"nonlinearity": "foo"}, "Unsupported nonlinearity foo"),
    ("kaiming_normal_bad_nonlinearity", "kaiming_normal_", lambda: sentinel((4, 5)), (),
     {"nonlinearity": "swishy"}, "Unsupported nonlinearity swishy"),
    ("kaiming_uniform_slope_True", "kaiming_uniform_", lambda: sentinel((4, 5)), (), {"a": True},
     "negative_slope True not a valid number"),
    ("kaiming_normal_slope_str", "kaiming_normal_", lambda: sentinel((4, 5)), (), {"a": "x"},
     "negative_slope x not a valid number"),
    ("eye_3d", "eye_", lambda: sentinel((2, 3, 4)), (), {}, "Only tensors with 2 dimensions are supported"),
    ("eye_1d", "eye_", lambda: sentinel((3,)), (), {}, "Only tensors with 2 dimensions are supported"),
    ("sparse_3d", "sparse_", lambda: sentinel((2, 3, 4)), (0.1,), {}, "Only tensors with 2 dimensions are supported"),
    ("sparse_1d", "sparse_", lambda: sentinel((6,)), (0.1,), {}, "Only tensors with 2 dimensions are supported"),
    ("dirac_2d", "dirac_", lambda: sentinel((3, 3)), (), {}, "Only tensors with 3, 4, or 5 dimensions are supported"),
    ("dirac_6d", "dirac_", lambda: sentinel((2, 2, 1, 1, 1, 1)), (), {},
     "Only tensors with 3, 4, or 5 dimensions are supported"),
    ("dirac_groups", "dirac_", lambda: sentinel((5, 2, 3)), (2,), {}, "dim 0 must be divisible by groups"),
    ("orthogonal_1d", "orthogonal_", lambda: sentinel((5,)), (), {}, "Only tensors with 2 or more dimensions are supported"),
    ("uniform_reversed", "uniform_", lambda: sentinel((4, 5)), (1.0, 0.0), {},
     "uniform_ expects to return a [from, to) range, but found from=1 > to=0"),
    ("trunc_normal_reversed", "trunc_normal_", lambda: sentinel((4, 5)), (0.0, 1.0, 2.0, -2.0), {},
     # torch >= 2.13 names a and b; 2.11 the CDF values (from=0.9545 > to=-0.9545)
     "uniform_ expects to return a [from, to) range, but found from="),
    ("uniform_inf_to", "uniform_", lambda: sentinel((4, 5)), (0.0, math.inf), {}, "out of bounds"),
    ("uniform_-inf_from", "uniform_", lambda: sentinel((4, 5)), (-math.inf, 0.0), {}, "out of bounds"),
    ("uniform_range_overflow", "uniform_", lambda: sentinel((4, 5)), (-3e38, 3e38), {}, "exceed"),
    ("normal_negative_std", "normal_", lambda: sentinel((4, 5)), (0.0, -1.0), {},
     "normal expects std >= 0.0, but found std -1"),
    ("sparse_negative_std", "sparse_", lambda: sentinel((4, 5)), (0.5, -0.5), {},
     "normal expects std >= 0.0, but found std -0.5"),
    ("uniform_int64", "uniform_", lambda: int_sentinel((4, 5)), (), {}, "not implemented for 'Long'"),
    ("normal_int64", "normal_", lambda: int_sentinel((4, 5)), (), {}, "not implemented for 'Long'"),
    ("trunc_normal_int32", "trunc_normal_", lambda: int_sentinel((4, 5), torch.int32), (), {},
     "not implemented for 'Int'"),
    ("xavier_uniform_int64", "xavier_uniform_", lambda: int_sentinel((4, 5)), (), {}, "not implemented for 'Long'"),
    ("xavier_normal_int16", "xavier_normal_", lambda: int_sentinel((4, 5), torch.int16), (), {},
     "not implemented for 'Short'"),
    ("kaiming_uniform_int32", "kaiming_uniform_", lambda: int_sentinel((4, 5), torch.int32), (), {},
     "not implemented for 'Int'"),
    ("kaiming_normal_uint8", "kaiming_normal_", lambda: int_sentinel((4, 5), torch.uint8), (), {},
     "not implemented for 'Byte'"),
    ("orthogonal_int64", "orthogonal_", lambda: int_sentinel((4, 5)), (), {}, "not implemented for 'Long'"),
    ("sparse_int64", "sparse_", lambda: int_sentinel((4, 5)), (0.5,), {}, "not implemented for 'Long'"),
    ("uniform_bool", "uniform_", lambda: torch.ones(4, 5, dtype=torch.bool), (), {}, "not implemented for 'Bool'"),
    ("uniform_expanded", "uniform_", expanded, (), {}, "more than one element of the written-to tensor"),
    ("normal_expanded", "normal_", expanded, (), {}, "more than one element of the written-to tensor"),
    ("trunc_normal_expanded", "trunc_normal_", expanded, (), {}, "more than one element of the written-to tensor"),
    ("xavier_uniform_expanded", "xavier_uniform_", expanded, (), {}, "more than one element of the written-to tensor"),
    ("kaiming_normal_expanded", "kaiming_normal_", expanded, (), {}, "more than one element of the written-to tensor"),
    ("constant_overflow_fp16", "constant_", lambda: sentinel((4, 5), torch.float16), (70000.0,), {},
     "without overflow"),
    ("constant_overflow_bf16", "constant_", lambda: sentinel((4, 5), torch.bfloat16), (-1e39,), {},
     "without overflow"),
    ("constant_overflow_fp32", "constant_", lambda: sentinel((4, 5)), (1e39,), {}, "without overflow"),
    ("constant_overflow_fp16_empty", "constant_", lambda: sentinel((0, 5), torch.float16), (65520.0,), {},
     "without overflow"),
    ("trunc_normal_std0", "trunc_normal_", lambda: sentinel((4, 5)), (0.0, 0.0), {}, "division by zero"),
    ("trunc_normal_std0_int", "trunc_normal_", lambda: sentinel((4, 5)), (0.0, 0), {}, "division by zero"),
]


def _run_torch(name, factory, args, kwargs) -> BaseException:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as info:
            getattr(torch.nn.init, name)(factory(), *args, **kwargs)
    return info.value


@pytest.mark.parametrize(
    "name, factory, args, kwargs, phrase",
    [pytest.param(*case[1:], id=case[0]) for case in TORCH_BAD_CASES],
)
def test_bad_input_same_error_as_torch(name, factory, args, kwargs, phrase):
    torch_exc = _run_torch(name, factory, args, kwargs)
    assert phrase in str(torch_exc), f"the table's key phrase is not torch's: {torch_exc!r}"
    target = factory()
    before = target.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(type(torch_exc)) as info:
            getattr(fastinit, name)(target, *args, **kwargs)
    assert phrase in str(info.value), f"fastinit: {info.value!r}; torch: {torch_exc!r}"
    assert target.dtype == before.dtype
    assert torch.equal(target, before), "a failing call wrote into the tensor"


@pytest.mark.parametrize("param", [True, False, "x", [0.1]], ids=["True", "False", "str", "list"])
def test_calculate_gain_bad_slope_same_as_torch(param):
    with pytest.raises(ValueError) as theirs:
        torch.nn.init.calculate_gain("leaky_relu", param)
    with pytest.raises(ValueError) as ours:
        fastinit.calculate_gain("leaky_relu", param)
    assert str(ours.value) == str(theirs.value)


def test_calculate_gain_bad_name_same_as_torch():
    with pytest.raises(ValueError) as theirs:
        torch.nn.init.calculate_gain("foo")
    with pytest.raises(ValueError) as ours:
        fastinit.calculate_gain("foo")
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,), (3, 0, 2)], ids=lambda s: "x".join(map(str, s)) or "0")
def test_kaiming_zero_element_warns_like_torch(name, shape):
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op") as theirs:
        out_t = getattr(torch.nn.init, name)(torch.empty(shape))
    t = torch.empty(shape)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op") as ours:
        out = getattr(fastinit, name)(t)
    assert out is t and out_t.shape == t.shape
    assert str(ours[0].message) == str(theirs[0].message)
    assert ours[0].filename == theirs[0].filename == __file__


def test_trunc_normal_mean_far_outside_warns_like_torch():
    msg = "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. The distribution of values may be incorrect."
    for mean in (10.0, -10.0):
        with pytest.warns(UserWarning) as theirs:
            torch.nn.init.trunc_normal_(torch.empty(4, 5), mean, 1.0, -2.0, 2.0)
        t = torch.empty(4, 5)
        with pytest.warns(UserWarning) as ours:
            fastinit.trunc_normal_(t, mean, 1.0, -2.0, 2.0)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs] == [msg]
        assert ((t >= -2.0) & (t <= 2.0)).all()


def test_no_warning_for_valid_calls():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in RANDOM_FNS + FASTINIT_ONLY_RANDOM:
            t, args, kwargs = _small_args(name)
            getattr(fastinit, name)(t, *args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Beyond torch: nan / inf / negative parameters are InitValueError naming the value
# ----------------------------------------------------------------------------------------------

nan, inf = math.nan, math.inf

# id, function, args, kwargs, text naming the bad value (the tensor is a (6, 5) sentinel)
FASTINIT_BAD_CASES = [
    ("uniform_nan_a", "uniform_", (nan, 1.0), {}, "nan"),
    ("uniform_nan_b", "uniform_", (0.0, nan), {}, "nan"),
    ("uniform_inf_b", "uniform_", (0.0, inf), {}, "inf"),
    ("normal_nan_mean", "normal_", (nan, 1.0), {}, "nan"),
    ("normal_inf_mean", "normal_", (inf, 1.0), {}, "inf"),
    ("normal_nan_std", "normal_", (0.0, nan), {}, "nan"),
    ("normal_inf_std", "normal_", (0.0, inf), {}, "inf"),
    ("trunc_normal_nan_mean", "trunc_normal_", (nan, 1.0), {}, "nan"),
    ("trunc_normal_inf_mean", "trunc_normal_", (-inf, 1.0), {}, "-inf"),
    ("trunc_normal_nan_std", "trunc_normal_", (0.0, nan), {}, "nan"),
    ("trunc_normal_inf_std", "trunc_normal_", (0.0, inf), {}, "inf"),
    ("trunc_normal_negative_std", "trunc_normal_", (0.0, -1.5), {}, "-1.5"),
    ("trunc_normal_nan_a", "trunc_normal_", (0.0, 1.0, nan, 2.0), {}, "nan"),
    ("trunc_normal_nan_b", "trunc_normal_", (0.0, 1.0, -2.0, nan), {}, "nan"),
    ("sparse_sparsity_1.5", "sparse_", (1.5,), {}, "1.5"),
    ("sparse_sparsity_-0.1", "sparse_", (-0.1,), {}, "-0.1"),
    ("sparse_sparsity_nan", "sparse_", (nan,), {}, "nan"),
    ("sparse_std_nan", "sparse_", (0.5, nan), {}, "nan"),
    ("xavier_uniform_gain_nan", "xavier_uniform_", (), {"gain": nan}, "nan"),
    ("xavier_normal_gain_inf", "xavier_normal_", (), {"gain": inf}, "inf"),
    ("kaiming_uniform_slope_nan", "kaiming_uniform_", (), {"a": nan}, "nan"),
    ("orthogonal_gain_nan", "orthogonal_", (), {"gain": nan}, "nan"),
    ("orthogonal_gain_inf", "orthogonal_", (), {"gain": inf}, "inf"),
    ("variance_scaling_scale_nan", "variance_scaling_", (nan,), {}, "nan"),
    ("variance_scaling_scale_negative", "variance_scaling_", (-2.0,), {}, "-2"),
    ("variance_scaling_scale_zero", "variance_scaling_", (0.0,), {}, "0"),
]


@pytest.mark.parametrize(
    "name, args, kwargs, value_text",
    [pytest.param(*case[1:], id=case[0]) for case in FASTINIT_BAD_CASES],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_non_finite_or_out_of_range_params_raise_init_value_error(name, args, kwargs, value_text, dtype):
    target = sentinel((6, 5), dtype)
    before = target.clone()
    with pytest.raises(InitValueError) as info:
        getattr(fastinit, name)(target, *args, **kwargs)
    assert value_text in str(info.value), str(info.value)
    assert torch.equal(target, before), "a failing call wrote into the tensor"


def test_init_value_error_is_caught_as_torch_types():
    """InitValueError derives from ValueError and RuntimeError: torch-style handlers catch it."""
    with pytest.raises(RuntimeError):
        fastinit.uniform_(torch.empty(3, 3), 1.0, 0.0)
    with pytest.raises(ValueError):
        fastinit.normal_(torch.empty(3, 3), 0.0, -1.0)
    with pytest.raises(NotImplementedError):
        fastinit.normal_(torch.empty(3, 3, dtype=torch.int64))
    with pytest.raises(ZeroDivisionError):
        fastinit.trunc_normal_(torch.empty(3, 3), 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Behaviour every function shares with torch: returns its input, no_grad, meta, generator, seed
# ----------------------------------------------------------------------------------------------

# name -> (shape, args) of a valid call
ALL_CALLS = {
    "uniform_": ((6, 5), (-1.0, 2.0)),
    "normal_": ((6, 5), (0.5, 2.0)),
    "trunc_normal_": ((6, 5), (0.0, 1.0, -1.0, 1.5)),
    "constant_": ((6, 5), (0.25,)),
    "ones_": ((6, 5), ()),
    "zeros_": ((6, 5), ()),
    "eye_": ((6, 5), ()),
    "dirac_": ((6, 3, 3, 3), (2,)),
    "xavier_uniform_": ((6, 5, 2), (1.5,)),
    "xavier_normal_": ((6, 5, 2), ()),
    "kaiming_uniform_": ((6, 5, 3), (0.1, "fan_out", "leaky_relu")),
    "kaiming_normal_": ((6, 5), (0, "fan_in", "relu")),
    "orthogonal_": ((6, 5), (2.0,)),
    "sparse_": ((6, 5), (0.5, 0.1)),
    "lecun_uniform_": ((6, 5), ()),
    "lecun_normal_": ((6, 5), ()),
    "variance_scaling_": ((6, 5), (2.0, "fan_avg", "uniform")),
    "trunc_normal_tf_": ((6, 5), (0.1, 0.02)),
}
ALL_NAMES = list(ALL_CALLS)
SEEDED = [n for n in ALL_NAMES if n in RANDOM_FNS + FASTINIT_ONLY_RANDOM]


def test_all_calls_cover_every_public_init_function():
    public = {n for n in fastinit.__all__ if n.endswith("_") and callable(getattr(fastinit, n))}
    assert public == set(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_returns_same_tensor_object(name):
    shape, args = ALL_CALLS[name]
    t = torch.empty(shape)
    assert getattr(fastinit, name)(t, *args) is t


@pytest.mark.parametrize("name", ALL_NAMES)
def test_works_on_leaf_parameter_like_torch_no_grad(name):
    shape, args = ALL_CALLS[name]
    p = torch.nn.Parameter(torch.full(shape, math.nan))
    version = p._version
    out = getattr(fastinit, name)(p, *args)
    assert out is p
    assert p.is_leaf and p.requires_grad
    assert p.grad_fn is None
    assert p._version > version
    assert not p.isnan().any()
    # autograd still works on the initialised parameter
    (p * 2).sum().backward()
    assert torch.equal(p.grad, torch.full(shape, 2.0))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_works_inside_no_grad_and_on_views(name):
    shape, args = ALL_CALLS[name]
    p = torch.nn.Parameter(torch.full(shape, math.nan))
    with torch.no_grad():
        getattr(fastinit, name)(p, *args)
    assert p.grad_fn is None and not p.isnan().any()


@pytest.mark.parametrize("name", ALL_NAMES + DEPRECATED)
def test_meta_tensor_is_a_no_op(name):
    if name in DEPRECATED:
        shape, args = ALL_CALLS[name + "_"]
    else:
        shape, args = ALL_CALLS[name]
    t = torch.empty(shape, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = getattr(fastinit, name)(t, *args)
    assert out is t
    assert t.is_meta and t.shape == shape


@pytest.mark.parametrize("name", SEEDED)
def test_generator_argument(name):
    shape, args = ALL_CALLS[name]
    g = torch.Generator().manual_seed(1234)
    g_state = g.get_state()
    default_state = torch.get_rng_state()
    a = getattr(fastinit, name)(torch.empty(shape), *args, generator=g)
    assert not torch.equal(g.get_state(), g_state), "the generator was not used"
    assert torch.equal(torch.get_rng_state(), default_state), "the default generator was used"
    b = getattr(fastinit, name)(torch.empty(shape), *args, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", [n for n in SEEDED if n in RANDOM_FNS])
def test_generator_positional_like_torch(name):
    """The generator sits at the position torch's signature gives it."""
    shape, args = ALL_CALLS[name]
    torch_params = list(inspect.signature(getattr(torch.nn.init, name)).parameters)
    position = torch_params.index("generator")
    defaults = [p.default for p in inspect.signature(getattr(torch.nn.init, name)).parameters.values()]
    full_args = list(args) + defaults[1 + len(args) : position]
    a = getattr(fastinit, name)(torch.empty(shape), *full_args, torch.Generator().manual_seed(9))
    b = getattr(fastinit, name)(torch.empty(shape), *args, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    # torch accepts the same positional call
    getattr(torch.nn.init, name)(torch.empty(shape), *full_args, torch.Generator().manual_seed(9))


@pytest.mark.parametrize("name", SEEDED)
def test_seed_argument(name):
    shape, args = ALL_CALLS[name]
    state = torch.get_rng_state()
    a = getattr(fastinit, name)(torch.empty(shape), *args, seed=2024)
    assert torch.equal(torch.get_rng_state(), state), "seed= must not touch the default generator"
    b = getattr(fastinit, name)(torch.empty(shape), *args, seed=2024)
    c = getattr(fastinit, name)(torch.empty(shape), *args, seed=2025)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("bad_seed", [-1, 2**64, 1.5, "7", True], ids=["neg", "2^64", "float", "str", "bool"])
def test_bad_seed_rejected_before_writing(bad_seed):
    t = sentinel((4, 5))
    before = t.clone()
    with pytest.raises((TypeError, ValueError)):
        fastinit.normal_(t, seed=bad_seed)
    assert torch.equal(t, before)


def test_seed_full_64_bit_range():
    a = fastinit.uniform_(torch.empty(100), seed=2**64 - 1)
    b = fastinit.uniform_(torch.empty(100), seed=2**63)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_structured_inits_equal_torch(dtype):
    """The deterministic initialisers give exactly torch's values."""
    for name, shape, args in [
        ("constant_", (5, 7), (0.1,)),
        ("ones_", (5, 7), ()),
        ("zeros_", (5, 7), ()),
        ("eye_", (5, 7), ()),
        ("eye_", (7, 5), ()),
        ("dirac_", (6, 4, 3), ()),
        ("dirac_", (6, 4, 3, 3), (2,)),
        ("dirac_", (8, 4, 3, 3, 3), (4,)),
    ]:
        ours = getattr(fastinit, name)(sentinel(shape, dtype), *args)
        theirs = getattr(torch.nn.init, name)(sentinel(shape, dtype), *args)
        assert torch.equal(ours, theirs), name


def test_constant_on_integer_and_expanded_tensors_like_torch():
    t = int_sentinel((3, 4))
    fastinit.constant_(t, 7)
    assert torch.equal(t, torch.full((3, 4), 7))
    base = sentinel((3, 1))
    fastinit.constant_(base.expand(3, 4), 2.5)
    assert torch.equal(base, torch.full((3, 1), 2.5))


def test_zero_element_tensors_are_no_ops():
    for name in ALL_NAMES:
        shape, args = ALL_CALLS[name]
        empty_shape = (0,) + shape[1:]
        t = torch.empty(empty_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            assert getattr(fastinit, name)(t, *args) is t


def test_inference_tensor_outside_inference_mode_is_refused_like_torch():
    with torch.inference_mode():
        t = torch.zeros(10)
        fastinit.uniform_(t, seed=1)  # inside inference_mode: allowed, as in torch
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        torch.nn.init.uniform_(t)
    before = t.clone()  # torch has written before raising; fastinit refuses before writing
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        fastinit.uniform_(t, seed=2)
    assert torch.equal(t, before)
