"""Reproducibility of the drop-in API: seeds, generators, backends and memory layouts.

docs/contract.md: a drop-in call draws its seed from its generator (default: the CPU generator) as
``int(torch.randint(0, 2**63 - 1, (1,), generator=g))``, or takes ``seed=``; every value is a pure
function of (seed, stream, logical element index); uniform and constant are bitwise identical in
every backend, normal and truncated normal agree within 4e-6 on z.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import fastinit

Z_TOL = 4e-6  # the contract's cross-backend tolerance on the standard normal z
ULP_REL = {torch.float32: 2.0**-23, torch.float64: 2.0**-52, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp64", "fp16", "bf16"]

# id -> (function, shape, args); every random drop-in function, with several parameterisations
RANDOM_CALLS = {
    "uniform_": (fastinit.uniform_, (37, 29), (-2.0, 3.0)),
    "normal_": (fastinit.normal_, (37, 29), (0.5, 2.0)),
    "trunc_normal_": (fastinit.trunc_normal_, (37, 29), (0.0, 0.02, -0.04, 0.04)),
    "trunc_normal_tail": (fastinit.trunc_normal_, (37, 29), (0.0, 1.0, 4.0, 5.0)),
    "xavier_uniform_": (fastinit.xavier_uniform_, (37, 29, 3), (1.5,)),
    "xavier_normal_": (fastinit.xavier_normal_, (37, 29, 3), ()),
    "kaiming_uniform_": (fastinit.kaiming_uniform_, (37, 29, 2, 2), (math.sqrt(5),)),
    "kaiming_normal_": (fastinit.kaiming_normal_, (37, 29), (0, "fan_out", "relu")),
    "orthogonal_": (fastinit.orthogonal_, (37, 29), (1.0,)),
    "sparse_": (fastinit.sparse_, (37, 29), (0.3, 0.05)),
    "lecun_uniform_": (fastinit.lecun_uniform_, (37, 29), ()),
    "lecun_normal_": (fastinit.lecun_normal_, (37, 29), ()),
    "variance_scaling_tn": (fastinit.variance_scaling_, (37, 29), (2.0, "fan_avg", "truncated_normal")),
    "variance_scaling_u": (fastinit.variance_scaling_, (37, 29), (1.0, "fan_out", "uniform")),
}
RANDOM_IDS = list(RANDOM_CALLS)


def run(call_id, seed=None, generator=None, dtype=torch.float32, make=None):
    fn, shape, args = RANDOM_CALLS[call_id]
    t = make(shape, dtype) if make is not None else torch.empty(shape, dtype=dtype)
    kwargs = {}
    if seed is not None:
        kwargs["seed"] = seed
    if generator is not None:
        kwargs["generator"] = generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # trunc_normal_tail: mean far from [a, b]
        out = fn(t, *args, **kwargs)
    assert out is t
    return t


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# Seeds and generators
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call_id", RANDOM_IDS)
@pytest.mark.parametrize("s", [0, 1, 123456789])
def test_manual_seed_repeats(call_id, s):
    torch.manual_seed(s)
    a = run(call_id)
    torch.manual_seed(s)
    b = run(call_id)
    assert bitwise_equal(a, b)
    assert a.unique().numel() > a.numel() // 2  # not a constant fill


@pytest.mark.parametrize("call_id", RANDOM_IDS)
def test_consecutive_calls_differ(call_id):
    torch.manual_seed(3)
    a = run(call_id)
    b = run(call_id)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("call_id", RANDOM_IDS)
def test_generator_equals_default_generator(call_id):
    g = torch.Generator().manual_seed(77)
    a = run(call_id, generator=g)
    torch.manual_seed(77)
    b = run(call_id)
    assert bitwise_equal(a, b)
    # and the next call continues the same way on both
    c = run(call_id, generator=g)
    d = run(call_id)
    assert bitwise_equal(c, d)


@pytest.mark.parametrize("call_id", RANDOM_IDS)
def test_seed_is_one_randint_draw_of_the_generator(call_id):
    """The drawn seed is int(torch.randint(0, 2**63 - 1, (1,), generator=g)), one draw."""
    torch.manual_seed(42)
    a = run(call_id)
    state_after_call = torch.get_rng_state()
    torch.manual_seed(42)
    drawn = int(torch.randint(0, 2**63 - 1, (1,)))
    assert torch.equal(torch.get_rng_state(), state_after_call), "the call must draw exactly once"
    b = run(call_id, seed=drawn)
    assert bitwise_equal(a, b)


@pytest.mark.parametrize("call_id", RANDOM_IDS)
def test_seed_bypasses_generators(call_id):
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = run(call_id, seed=99)
    assert torch.equal(torch.get_rng_state(), state), "seed= changed the default generator"
    g = torch.Generator().manual_seed(1)
    g_state = g.get_state()
    b = run(call_id, seed=99, generator=g)
    assert torch.equal(g.get_state(), g_state), "seed= changed the given generator"
    torch.manual_seed(12345)
    c = run(call_id, seed=99)
    assert bitwise_equal(a, b) and bitwise_equal(a, c)


@pytest.mark.parametrize("call_id", RANDOM_IDS)
def test_different_seeds_differ(call_id):
    a = run(call_id, seed=1)
    b = run(call_id, seed=2)
    assert not torch.equal(a, b)
    torch.manual_seed(1)
    c = run(call_id)
    torch.manual_seed(2)
    d = run(call_id)
    assert not torch.equal(c, d)
    assert not torch.equal(run(call_id, generator=torch.Generator().manual_seed(1)),
                           run(call_id, generator=torch.Generator().manual_seed(2)))


def test_different_functions_on_same_seed_are_not_the_same_numbers():
    u = fastinit.uniform_(torch.empty(1000), seed=7)
    n = fastinit.normal_(torch.empty(1000), seed=7)
    assert not torch.allclose(u, n)


def test_values_do_not_depend_on_tensor_size_prefix():
    """Element j is a function of (seed, j): a longer tensor extends a shorter one."""
    short = fastinit.normal_(torch.empty(1001), seed=31)
    long = fastinit.normal_(torch.empty(5000), seed=31)
    assert torch.equal(short, long[:1001])
    short = fastinit.uniform_(torch.empty(3, 7), seed=31)
    long = fastinit.uniform_(torch.empty(4, 7), seed=31)
    assert torch.equal(short, long[:3])


# ----------------------------------------------------------------------------------------------
# cpu backend vs reference backend
# ----------------------------------------------------------------------------------------------


def both_backends(fn, shape, dtype, *args, **kwargs):
    out = {}
    for backend in ("cpu", "reference"):
        fastinit.set_backend(backend)
        t = torch.empty(shape, dtype=dtype)
        fn(t, *args, **kwargs)
        assert fastinit.backend_info()["last_run"]["cpu"] == backend
        out[backend] = t
    fastinit.set_backend("auto")
    return out["cpu"], out["reference"]


def assert_contract_close(cpu, ref, std):
    """|x_cpu - x_ref| <= 4e-6 * std (z tolerance) plus the output's rounding: one ulp of the
    larger of the two (a value may round up into the next binade), and no less than the
    subnormal spacing."""
    assert cpu.dtype == ref.dtype
    diff = (cpu.double() - ref.double()).abs()
    magnitude = torch.maximum(cpu.double().abs(), ref.double().abs())
    magnitude = magnitude.clamp_min(torch.finfo(cpu.dtype).tiny)
    if cpu.dtype == torch.float64:
        allowed = 1e-12 * std + 4 * ULP_REL[torch.float64] * magnitude
    else:
        allowed = Z_TOL * std * 1.01 + ULP_REL[cpu.dtype] * magnitude + 1e-30
    bad = diff > allowed
    assert not bad.any(), (
        f"{int(bad.sum())} values differ beyond the contract tolerance; worst "
        f"{diff.max().item():.3g} at {ref.flatten()[diff.flatten().argmax()].item():.6g}"
    )


SIZES = [1, 7, 4099, 65_537]


UNIFORM_DTYPES = [pytest.param(d, id=i) for d, i in zip(DTYPES, DTYPE_IDS)]


@pytest.mark.parametrize("dtype", UNIFORM_DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_cpu_reference_uniform_bitwise(n, dtype):
    cpu, ref = both_backends(fastinit.uniform_, (n,), dtype, -3.0, 0.5, seed=n)
    assert bitwise_equal(cpu, ref)


@pytest.mark.parametrize("n", SIZES)
def test_cpu_reference_uniform_fp64_within_one_ulp(n):
    cpu, ref = both_backends(fastinit.uniform_, (n,), torch.float64, -3.0, 0.5, seed=n)
    # one rounding of the fp64 result: at most one ulp of the larger bound (|-3.0|: 2**-51)
    assert ((cpu - ref).abs() <= 2.0**-51).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("value", [0.1, -3.0, 1e-8, 65504.0, 0.0, -0.0, math.inf, math.nan], ids=str)
def test_cpu_reference_constant_bitwise(value, dtype):
    cpu, ref = both_backends(fastinit.constant_, (1000,), dtype, value)
    expected = torch.full((1000,), value, dtype=dtype)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[expected.element_size()]
    for t in (cpu, ref):  # bitwise, so the sign of -0.0 and nan count too
        assert torch.equal(t.view(bits), expected.view(bits))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpu_reference_ones_zeros_bitwise(dtype):
    for fn, v in ((fastinit.ones_, 1.0), (fastinit.zeros_, 0.0)):
        cpu, ref = both_backends(fn, (3, 333), dtype)
        assert bitwise_equal(cpu, ref) and bool((cpu == v).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.5, 0.02), (-3.0, 7.0)], ids=str)
def test_cpu_reference_normal_close(mean, std, n, dtype):
    cpu, ref = both_backends(fastinit.normal_, (n,), dtype, mean, std, seed=n + 1)
    assert_contract_close(cpu, ref, std)


TRUNC_CASES = [
    ("default", 0.0, 1.0, -2.0, 2.0),
    ("std0.02", 0.0, 0.02, -0.04, 0.04),
    ("onesided", 1.0, 0.5, 1.0, 3.0),
    ("shifted", 0.3, 2.0, -1.0, 6.0),
    ("tail_4_5", 0.0, 1.0, 4.0, 5.0),
    ("tail_-8_-7.5", 0.0, 1.0, -8.0, -7.5),
    ("std0.001", 0.0, 0.001, -2.0, 2.0),
    ("tail_-6_-5", 0.0, 1.0, -6.0, -5.0),
    ("tail_-7_-5", 0.0, 1.0, -7.0, -5.0),
    ("tail_5_6", 0.0, 1.0, 5.0, 6.0),
]
# Mirrored intervals that reach below z = -5.5 while beta >= -5 take the fp32 path; their
# elements with p < 2^-24 (below Giles' fitted range) take the fp64 quantile, so the whole
# interval stays within the contract's tolerance.
TRUNC_PARAMS = [
    pytest.param(*case, d, id=f"{case[0]}-{i}")
    for case in TRUNC_CASES
    for d, i in zip(DTYPES, DTYPE_IDS)
]


@pytest.mark.parametrize("name, mean, std, a, b, dtype", TRUNC_PARAMS)
def test_cpu_reference_trunc_normal_close(name, mean, std, a, b, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cpu, ref = both_backends(fastinit.trunc_normal_, (200_000,), dtype, mean, std, a, b, seed=17)
    assert_contract_close(cpu, ref, std)
    for t in (cpu, ref):
        assert float(t.min()) >= a and float(t.max()) <= b


# the drop-in wrappers: (function, shape, args, kind, std of the underlying normal or None)
DROPIN = {
    "xavier_uniform_": (fastinit.xavier_uniform_, (64, 32, 3), (1.3,), "uniform"),
    "kaiming_uniform_": (fastinit.kaiming_uniform_, (64, 32, 3), (math.sqrt(5),), "uniform"),
    "lecun_uniform_": (fastinit.lecun_uniform_, (64, 32, 3), (), "uniform"),
    "variance_scaling_uniform": (fastinit.variance_scaling_, (64, 96), (3.0, "fan_avg", "uniform"), "uniform"),
    "xavier_normal_": (fastinit.xavier_normal_, (64, 32, 3), (), "normal"),
    "kaiming_normal_": (fastinit.kaiming_normal_, (64, 32, 3), (0.2, "fan_out"), "normal"),
    "lecun_normal_": (fastinit.lecun_normal_, (64, 32, 3), (), "normal"),
    "variance_scaling_normal": (fastinit.variance_scaling_, (64, 96), (2.0, "fan_in", "normal"), "normal"),
    "variance_scaling_tn": (fastinit.variance_scaling_, (64, 96), (0.5, "fan_out", "truncated_normal"), "normal"),
}


DROPIN_CASES = [
    pytest.param(
        name, d, id=f"{name}-{i}",
    )
    for name in DROPIN
    for d, i in zip(DTYPES, DTYPE_IDS)
]


@pytest.mark.parametrize("name, dtype", DROPIN_CASES)
def test_cpu_reference_dropin_functions(name, dtype):
    fn, shape, args, kind = DROPIN[name]
    cpu, ref = both_backends(fn, shape, dtype, *args, seed=2718)
    if kind == "uniform":
        assert bitwise_equal(cpu, ref)
    else:
        assert_contract_close(cpu, ref, float(ref.double().std()) * 1.2)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cpu_reference_sparse(dtype):
    cpu, ref = both_backends(fastinit.sparse_, (50, 80), dtype, 0.3, 0.1, seed=5)
    assert torch.equal(cpu == 0, ref == 0), "zero positions come from bitwise uniform keys"
    assert_contract_close(cpu, ref, 0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (16, 4, 3, 3)], ids=str)
def test_cpu_reference_orthogonal(shape, dtype):
    cpu, ref = both_backends(fastinit.orthogonal_, shape, dtype, 1.5, seed=8)
    torch.testing.assert_close(cpu, ref, atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=0)


def test_reference_is_selected_and_restored():
    fastinit.set_backend("reference")
    assert fastinit.get_backend() == "reference"
    fastinit.uniform_(torch.empty(10))
    assert fastinit.backend_info()["last_run"]["cpu"] == "reference"
    fastinit.set_backend("auto")
    fastinit.uniform_(torch.empty(10))
    assert fastinit.backend_info()["last_run"]["cpu"] == "cpu"


# ----------------------------------------------------------------------------------------------
# Memory layouts: the values of the same logical indices
# ----------------------------------------------------------------------------------------------


def channels_last(shape, dtype):
    return torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last)


def channels_last_3d(shape, dtype):
    return torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last_3d)


def transposed(shape, dtype):
    return torch.empty(tuple(reversed(shape)), dtype=dtype).t()


def permuted(shape, dtype):
    # a general permutation of a 3-D+ tensor: logical shape `shape`, memory order reversed
    dims = list(range(len(shape)))
    return torch.empty(tuple(reversed(shape)), dtype=dtype).permute(*reversed(dims))


LAYOUT_CALLS = {
    # call id -> shape to use (4-D for channels_last, 2-D for transposed)
    "uniform_": ["cl", "cl3d", "t", "perm"],
    "normal_": ["cl", "cl3d", "t", "perm"],
    "trunc_normal_": ["cl", "t", "perm"],
    "xavier_uniform_": ["cl", "cl3d", "t"],
    "xavier_normal_": ["cl", "t"],
    "kaiming_uniform_": ["cl", "cl3d", "t"],
    "kaiming_normal_": ["cl", "t"],
    "orthogonal_": ["cl", "t"],
    "sparse_": ["t"],
    "lecun_uniform_": ["cl", "t"],
    "lecun_normal_": ["cl", "t"],
    "variance_scaling_tn": ["cl", "t"],
}
LAYOUT_SHAPES = {"cl": (6, 5, 3, 4), "cl3d": (4, 3, 2, 3, 5), "t": (13, 21), "perm": (5, 6, 7)}
LAYOUT_MAKERS = {"cl": channels_last, "cl3d": channels_last_3d, "t": transposed, "perm": permuted}
LAYOUT_CASES = [(c, layout) for c, layouts in LAYOUT_CALLS.items() for layout in layouts]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("call_id, layout", LAYOUT_CASES, ids=[f"{c}-{l}" for c, l in LAYOUT_CASES])
def test_layout_gets_values_of_logical_indices(call_id, layout, dtype):
    fn, _, args = RANDOM_CALLS[call_id]
    shape = LAYOUT_SHAPES[layout]
    target = LAYOUT_MAKERS[layout](shape, dtype)
    assert target.shape == shape and not target.is_contiguous()
    strides = target.stride()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fn(target, *args, seed=4242)
        contiguous = fn(torch.empty(shape, dtype=dtype), *args, seed=4242)
    assert target.stride() == strides, "the layout must be kept"
    assert torch.equal(target, contiguous)
    # through the default generator too
    torch.manual_seed(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fn(target, *args)
        torch.manual_seed(8)
        contiguous = fn(torch.empty(shape, dtype=dtype), *args)
    assert torch.equal(target, contiguous)


@pytest.mark.parametrize("call_id", ["uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "kaiming_normal_"])
def test_strided_view_is_written_alone(call_id):
    """A slice gets the values of a contiguous tensor of its shape; the rest stays untouched."""
    fn, _, args = RANDOM_CALLS[call_id]
    big = torch.full((12, 40), math.nan)
    view = big[2:10, 5:35:2]
    fn(view, *args, seed=555)
    contiguous = fn(torch.empty(view.shape), *args, seed=555)
    assert torch.equal(view, contiguous)
    mask = torch.ones_like(big, dtype=torch.bool)
    mask[2:10, 5:35:2] = False
    assert big[mask].isnan().all()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_layouts_agree_on_every_backend(backend):
    fastinit.set_backend(backend)
    a = fastinit.normal_(channels_last((4, 3, 5, 6), torch.float32), seed=6)
    b = fastinit.normal_(torch.empty(4, 3, 5, 6), seed=6)
    assert torch.equal(a, b)


def test_channels_last_conv_module_matches_contiguous():
    """Conv reset_parameters under fastinit: channels_last weights equal contiguous ones."""
    torch.manual_seed(0)
    w1 = fastinit.kaiming_uniform_(channels_last((8, 4, 3, 3), torch.float32), a=math.sqrt(5))
    torch.manual_seed(0)
    w2 = fastinit.kaiming_uniform_(torch.empty(8, 4, 3, 3), a=math.sqrt(5))
    assert torch.equal(w1, w2)
