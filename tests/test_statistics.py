"""Distribution tests for every public random initialiser of fastinit.

Each random function is run over random shapes (2-D to 5-D), fans, gains and modes, with fixed
seeds, and its output is compared with the distribution torch.nn.init documents for it by a
Kolmogorov-Smirnov test (p > 1e-4, n >= 200k samples for the main cases). Every distribution
family also has a negative control: the same samples against a distribution with a 5% wrong
std or bound are rejected, so the thresholds have the power to catch a wrong distribution.

fp16/bf16 outputs take values on a coarse grid; they are compared with the *rounded*
distribution (the exact CDF of round-to-nearest of the continuous law), with the KS p-value of
the discrete statistic (conservative). fp32/fp64 use scipy.stats.kstest directly.
"""
from __future__ import annotations

import contextlib
import math
import warnings
import zlib

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

import fastinit
from fastinit.contract import half_open_limit

P_MIN = 1e-4  # KS acceptance threshold
N_MAIN = 200_000  # minimum samples of a main case
N_CONTROL = 200_000  # samples of a negative control
WRONG = 1.05  # the negative controls' std / bound factor

FP32, FP64, FP16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
DTYPE_IDS = {FP32: "fp32", FP64: "fp64", FP16: "fp16", BF16: "bf16"}
TRUNC_CORRECTION = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


# ----------------------------------------------------------------------------------------------
# KS helpers
# ----------------------------------------------------------------------------------------------


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).flatten().numpy()


def _neighbour(values: np.ndarray, dtype: torch.dtype, up: bool) -> np.ndarray:
    t = torch.from_numpy(values).to(dtype)
    target = torch.full_like(t, math.inf if up else -math.inf)
    return torch.nextafter(t, target).to(torch.float64).numpy()


def discrete_ks_pvalue(x: np.ndarray, cdf, dtype: torch.dtype) -> float:
    """KS p-value of samples on the grid of `dtype` against round-to-nearest of `cdf`.

    The model CDF of a rounded variable jumps at each representable value v by the mass of
    [mid(prev(v), v), mid(v, next(v))). Both sides of every observed atom are compared (the
    empirical CDF is constant in between, the model CDF is monotone), which gives the exact sup
    distance; its p-value from the continuous Kolmogorov distribution is conservative.
    """
    values, counts = np.unique(x, return_counts=True)
    n = counts.sum()
    ecdf_hi = np.cumsum(counts) / n
    ecdf_lo = ecdf_hi - counts / n
    upper_edge = 0.5 * (values + _neighbour(values, dtype, up=True))
    lower_edge = 0.5 * (values + _neighbour(values, dtype, up=False))
    d = max(
        np.abs(ecdf_hi - cdf(upper_edge)).max(),
        np.abs(ecdf_lo - cdf(lower_edge)).max(),
    )
    return float(stats.kstwo.sf(d, n))


def ks_pvalue(x: torch.Tensor, cdf) -> float:
    """KS p-value of the values of `x` against `cdf`; dtype-aware for fp16/bf16."""
    values = _as_numpy(x)
    assert np.isfinite(values).all(), "non-finite values"
    if x.dtype in (FP16, BF16):
        return discrete_ks_pvalue(values, cdf, x.dtype)
    return float(stats.kstest(values, cdf).pvalue)


def assert_ks(x: torch.Tensor, cdf, what: str) -> None:
    p = ks_pvalue(x, cdf)
    assert p > P_MIN, f"{what}: KS rejects (p = {p:.3g}, n = {x.numel()}, dtype {x.dtype})"


def assert_ks_rejects(x: torch.Tensor, cdf, what: str) -> None:
    p = ks_pvalue(x, cdf)
    assert p < P_MIN, f"negative control {what}: KS did not reject (p = {p:.3g})"


def uniform_cdf(lo: float, hi: float):
    return stats.uniform(loc=lo, scale=hi - lo).cdf


def half_open_uniform_cdf(lo: float, hi: float, dtype: torch.dtype):
    """CDF of fp16/bf16 uniform_ on [lo, hi) (docs/contract.md): the fp32 values at or above the
    limit, those the dtype rounds to hi or above, are moved to lo (rounded to the dtype)."""
    limit = half_open_limit(hi, dtype)
    moved = max(0.0, (hi - limit) / (hi - lo))
    lo_rounded = float(torch.tensor(lo, dtype=torch.float32).to(dtype).double())
    base = stats.uniform(loc=lo, scale=hi - lo).cdf
    return lambda t: base(np.minimum(t, limit)) + moved * (np.asarray(t) >= lo_rounded)


def normal_cdf(mean: float, std: float):
    return stats.norm(loc=mean, scale=std).cdf


def truncnorm_cdf(mean: float, std: float, a: float, b: float):
    return stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std).cdf


# ----------------------------------------------------------------------------------------------
# Random cases (fixed seeds, so the ids and values are the same in every run)
# ----------------------------------------------------------------------------------------------


def random_shape(rng: np.random.Generator, ndim: int, min_numel: int = N_MAIN) -> tuple:
    """A shape of `ndim` dims with random fans and min_numel <= numel < 2 * min_numel."""
    receptive = [int(v) for v in rng.integers(1, 6, size=ndim - 2)]
    dim1 = int(rng.integers(4, 300))
    rest = dim1 * math.prod(receptive)
    dim0 = math.ceil(min_numel / rest) + int(rng.integers(0, 3))
    return (dim0, dim1, *receptive)


def fans(shape) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def shape_id(shape) -> str:
    return "x".join(str(s) for s in shape)


def seed_of(*parts) -> int:
    """A fixed per-case seed (stable across runs, unlike hash())."""
    return zlib.crc32(repr(parts).encode())


_rng = np.random.default_rng(20240611)

BASIC_DTYPES = [FP32, BF16, FP16, FP64]


def _basic_cases():
    cases = []
    for dtype in BASIC_DTYPES:
        for ndim in (2, 3, 4, 5):
            shape = random_shape(_rng, ndim)
            cases.append((dtype, shape))
    return cases


BASIC_CASES = _basic_cases()


def _uniform_params(rng):
    a = float(rng.uniform(-5, 5))
    return a, a + float(rng.choice([0.01, 0.5, 2.0, 10.0]) * rng.uniform(0.5, 1.0))


UNIFORM_CASES = [
    pytest.param(dtype, shape, *_uniform_params(_rng), id=f"{DTYPE_IDS[dtype]}-{shape_id(shape)}")
    for dtype, shape in BASIC_CASES
]


@pytest.mark.parametrize("dtype, shape, a, b", UNIFORM_CASES)
def test_uniform_ks(dtype, shape, a, b):
    t = fastinit.uniform_(torch.empty(shape, dtype=dtype), a, b, seed=seed_of("u", shape))
    if dtype in (FP16, BF16):
        assert_ks(t, half_open_uniform_cdf(a, b, dtype), f"uniform_({a:.4g}, {b:.4g})")
        assert t.double().max().item() < b  # the half-open range holds after the rounding
    else:
        assert_ks(t, uniform_cdf(a, b), f"uniform_({a:.4g}, {b:.4g})")
    # within [a, b) up to the final rounding into the dtype (torch's uniform_ behaves the same)
    ulp = float(np.spacing(np.float32(max(abs(a), abs(b))))) if dtype == FP32 else 0.0
    if dtype in (FP32, FP64):
        assert t.min().item() >= a - ulp and t.max().item() <= b + ulp


def test_uniform_default_is_unit_interval():
    t = fastinit.uniform_(torch.empty(500, 400))
    assert_ks(t, uniform_cdf(0.0, 1.0), "uniform_ default")
    assert 0.0 <= t.min().item() and t.max().item() < 1.0


def test_uniform_degenerate_interval_is_constant():
    t = fastinit.uniform_(torch.empty(64, 64), 0.75, 0.75)
    assert (t == 0.75).all()


def _normal_params(rng):
    return float(rng.uniform(-3, 3)), float(10 ** rng.uniform(-3, 0.7))


NORMAL_CASES = [
    pytest.param(dtype, shape, *_normal_params(_rng), id=f"{DTYPE_IDS[dtype]}-{shape_id(shape)}")
    for dtype, shape in BASIC_CASES
]


@pytest.mark.parametrize("dtype, shape, mean, std", NORMAL_CASES)
def test_normal_ks(dtype, shape, mean, std):
    t = fastinit.normal_(torch.empty(shape, dtype=dtype), mean, std, seed=seed_of("n", shape))
    assert_ks(t, normal_cdf(mean, std), f"normal_({mean:.4g}, {std:.4g})")


def test_normal_default_is_standard():
    t = fastinit.normal_(torch.empty(500, 400))
    assert_ks(t, normal_cdf(0.0, 1.0), "normal_ default")


def test_normal_zero_std_is_mean():
    t = fastinit.normal_(torch.empty(64, 64), 0.25, 0.0)
    assert (t == 0.25).all()


def _trunc_params(rng):
    mean = float(rng.uniform(-1, 1))
    std = float(10 ** rng.uniform(-2, 0.5))
    lo = float(rng.uniform(-2.5, 0.5))  # in units of std, relative to the mean
    hi = lo + float(rng.uniform(0.3, 4.0))
    return mean, std, mean + lo * std, mean + hi * std


TRUNC_CASES = [
    pytest.param(dtype, shape, *_trunc_params(_rng), id=f"{DTYPE_IDS[dtype]}-{shape_id(shape)}")
    for dtype, shape in BASIC_CASES
]


@pytest.mark.parametrize("dtype, shape, mean, std, a, b", TRUNC_CASES)
def test_trunc_normal_ks(dtype, shape, mean, std, a, b):
    t = fastinit.trunc_normal_(
        torch.empty(shape, dtype=dtype), mean, std, a, b, seed=seed_of("t", shape)
    )
    x = _as_numpy(t)
    assert np.isfinite(x).all()
    assert x.min() >= a and x.max() <= b
    assert_ks(t, truncnorm_cdf(mean, std, a, b), f"trunc_normal_({mean:.3g}, {std:.3g}, {a:.3g}, {b:.3g})")


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=DTYPE_IDS.get)
def test_trunc_normal_default(dtype):
    t = fastinit.trunc_normal_(torch.empty(500, 400, dtype=dtype))
    assert_ks(t, truncnorm_cdf(0.0, 1.0, -2.0, 2.0), "trunc_normal_ default")


# ----------------------------------------------------------------------------------------------
# Xavier, Kaiming, LeCun
# ----------------------------------------------------------------------------------------------


def _gains_cases():
    out = []
    for dtype in (FP32, BF16):
        for ndim in (2, 3, 4, 5):
            shape = random_shape(_rng, ndim)
            gain = float(_rng.choice([1.0, math.sqrt(2.0), 5.0 / 3, float(_rng.uniform(0.1, 3.0))]))
            out.append(pytest.param(dtype, shape, gain, id=f"{DTYPE_IDS[dtype]}-{shape_id(shape)}-g{gain:.3f}"))
    return out


XAVIER_CASES = _gains_cases()


@pytest.mark.parametrize("dtype, shape, gain", XAVIER_CASES)
def test_xavier_uniform_ks(dtype, shape, gain):
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    t = fastinit.xavier_uniform_(torch.empty(shape, dtype=dtype), gain=gain, seed=seed_of("xu", shape))
    assert_ks(t, uniform_cdf(-bound, bound), "xavier_uniform_")


@pytest.mark.parametrize("dtype, shape, gain", XAVIER_CASES)
def test_xavier_normal_ks(dtype, shape, gain):
    fan_in, fan_out = fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    t = fastinit.xavier_normal_(torch.empty(shape, dtype=dtype), gain=gain, seed=seed_of("xn", shape))
    assert_ks(t, normal_cdf(0.0, std), "xavier_normal_")


def _quadrature_gain(f) -> float:
    """1 / sqrt(E[f(z)^2]), z ~ N(0, 1), by adaptive quadrature (independent of fastinit)."""
    integrand = lambda z: f(z) ** 2 * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    pieces = [(-40.0, -5.0), (-5.0, 0.0), (0.0, 5.0), (5.0, 40.0)]
    m2 = sum(integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-13, limit=200)[0] for lo, hi in pieces)
    return 1.0 / math.sqrt(m2)


def _gelu(z):
    return z * special.ndtr(z)


def _silu(z):
    return z * special.expit(z)


def expected_gain(nonlinearity: str, param) -> float:
    """The gain the test expects, computed without fastinit."""
    if nonlinearity == "prelu":
        slope = 0.25 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "gelu":
        return _quadrature_gain(_gelu)
    if nonlinearity == "silu":
        return _quadrature_gain(_silu)
    return torch.nn.init.calculate_gain(nonlinearity, param)


NONLINEARITIES = [
    ("leaky_relu", 0),
    ("leaky_relu", 0.2),
    ("leaky_relu", math.sqrt(5)),
    ("relu", None),
    ("selu", None),
    ("tanh", None),
    ("linear", None),
    ("prelu", None),
    ("prelu", 0.25),
    ("prelu", 0.1),
    ("gelu", None),
    ("silu", None),
]


def _kaiming_cases():
    out = []
    ndims = [2, 3, 4, 5]
    i = 0
    for mode in ("fan_in", "fan_out"):
        for nl, param in NONLINEARITIES:
            dtype = BF16 if i % 3 == 2 else FP32
            shape = random_shape(_rng, ndims[i % 4])
            i += 1
            pid = f"{mode}-{nl}" + ("" if param is None else f"{param:.3g}") + f"-{DTYPE_IDS[dtype]}-{shape_id(shape)}"
            out.append(pytest.param(mode, nl, param, dtype, shape, id=pid))
    return out


KAIMING_CASES = _kaiming_cases()


def _kaiming_std(shape, mode, nl, param):
    fan_in, fan_out = fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    # kaiming's `a` (default 0, as in torch) is the slope handed to calculate_gain, for
    # "leaky_relu" and for fastinit's "prelu" alike: without `a`, the slope is 0, not 0.25.
    return expected_gain(nl, 0 if param is None else param) / math.sqrt(fan)


@pytest.mark.parametrize("mode, nonlinearity, param, dtype, shape", KAIMING_CASES)
def test_kaiming_uniform_ks(mode, nonlinearity, param, dtype, shape):
    bound = math.sqrt(3.0) * _kaiming_std(shape, mode, nonlinearity, param)
    kwargs = {} if param is None else {"a": param}
    t = fastinit.kaiming_uniform_(
        torch.empty(shape, dtype=dtype), mode=mode, nonlinearity=nonlinearity, seed=seed_of("ku", shape), **kwargs
    )
    assert_ks(t, uniform_cdf(-bound, bound), "kaiming_uniform_")


@pytest.mark.parametrize("mode, nonlinearity, param, dtype, shape", KAIMING_CASES)
def test_kaiming_normal_ks(mode, nonlinearity, param, dtype, shape):
    std = _kaiming_std(shape, mode, nonlinearity, param)
    kwargs = {} if param is None else {"a": param}
    t = fastinit.kaiming_normal_(
        torch.empty(shape, dtype=dtype), mode=mode, nonlinearity=nonlinearity, seed=seed_of("kn", shape), **kwargs
    )
    assert_ks(t, normal_cdf(0.0, std), "kaiming_normal_")


def test_kaiming_defaults_are_leaky_relu_zero_slope_fan_in():
    shape = (400, 600)
    t = fastinit.kaiming_uniform_(torch.empty(shape))
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 600)
    assert_ks(t, uniform_cdf(-bound, bound), "kaiming_uniform_ defaults")
    t = fastinit.kaiming_normal_(torch.empty(shape))
    assert_ks(t, normal_cdf(0.0, math.sqrt(2.0 / 600)), "kaiming_normal_ defaults")


LECUN_CASES = [
    pytest.param(dtype, shape, id=f"{DTYPE_IDS[dtype]}-{shape_id(shape)}")
    for dtype in (FP32, BF16)
    for shape in (random_shape(_rng, 2), random_shape(_rng, 4), random_shape(_rng, 5))
]


@pytest.mark.parametrize("dtype, shape", LECUN_CASES)
def test_lecun_uniform_ks(dtype, shape):
    fan_in, _ = fans(shape)
    bound = math.sqrt(3.0 / fan_in)
    t = fastinit.lecun_uniform_(torch.empty(shape, dtype=dtype), seed=seed_of("lu", shape))
    assert_ks(t, uniform_cdf(-bound, bound), "lecun_uniform_")


@pytest.mark.parametrize("dtype, shape", LECUN_CASES)
def test_lecun_normal_ks(dtype, shape):
    fan_in, _ = fans(shape)
    sigma = math.sqrt(1.0 / fan_in)
    inner = sigma / TRUNC_CORRECTION
    t = fastinit.lecun_normal_(torch.empty(shape, dtype=dtype), seed=seed_of("ln", shape))
    assert_ks(t, truncnorm_cdf(0.0, inner, -2 * inner, 2 * inner), "lecun_normal_")
    x = _as_numpy(t)
    assert np.abs(x).max() <= 2 * inner
    assert x.std() == pytest.approx(sigma, rel=0.02)


# ----------------------------------------------------------------------------------------------
# variance_scaling_ (JAX / Keras semantics)
# ----------------------------------------------------------------------------------------------


def test_truncated_normal_correction_is_std_of_unit_normal_on_pm2():
    assert stats.truncnorm(-2, 2).std() == pytest.approx(TRUNC_CORRECTION, rel=1e-13)
    assert fastinit.nn_init.TRUNCATED_NORMAL_STD_CORRECTION == TRUNC_CORRECTION


def _vs_cases():
    out = []
    i = 0
    for mode in ("fan_in", "fan_out", "fan_avg"):
        for dist in ("truncated_normal", "normal", "uniform"):
            for dtype in (FP32, BF16):
                shape = random_shape(_rng, 2 + i % 4)
                scale = float(_rng.choice([1.0, 2.0, 1.0 / 3, float(_rng.uniform(0.1, 4.0))]))
                i += 1
                pid = f"{mode}-{dist}-{DTYPE_IDS[dtype]}-s{scale:.3f}-{shape_id(shape)}"
                out.append(pytest.param(mode, dist, dtype, scale, shape, id=pid))
    return out


def _vs_sigma(shape, mode, scale):
    fan_in, fan_out = fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return math.sqrt(scale / max(1.0, n))


@pytest.mark.parametrize("mode, distribution, dtype, scale, shape", _vs_cases())
def test_variance_scaling_ks(mode, distribution, dtype, scale, shape):
    sigma = _vs_sigma(shape, mode, scale)
    t = fastinit.variance_scaling_(
        torch.empty(shape, dtype=dtype), scale, mode, distribution, seed=seed_of("vs", shape, mode)
    )
    x = _as_numpy(t)
    if distribution == "truncated_normal":
        inner = sigma / TRUNC_CORRECTION  # the normal's std before truncation
        bound = 2.0 * inner  # bounds at +-2 of the uncorrected-divided std
        assert_ks(t, truncnorm_cdf(0.0, inner, -bound, bound), "variance_scaling_ truncated_normal")
        assert np.abs(x).max() <= bound
        assert np.abs(x).max() > 0.98 * bound  # the bounds really are at +-2 inner std
        # JAX semantics: the *resulting* std is sqrt(scale / n).
        assert x.std() == pytest.approx(sigma, rel=0.02)
    elif distribution == "normal":
        assert_ks(t, normal_cdf(0.0, sigma), "variance_scaling_ normal")
    else:
        limit = math.sqrt(3.0) * sigma
        assert_ks(t, uniform_cdf(-limit, limit), "variance_scaling_ uniform")
        assert np.abs(x).max() <= limit * (1 + 2**-7)


def test_variance_scaling_untruncated_normal_alias():
    shape = (500, 450)
    t = fastinit.variance_scaling_(torch.empty(shape), 2.0, "fan_avg", "untruncated_normal", seed=3)
    assert_ks(t, normal_cdf(0.0, math.sqrt(2.0 / 475)), "variance_scaling_ untruncated_normal")


def test_variance_scaling_defaults_are_lecun_normal():
    """Both are trunc_normal_ with std sqrt(1 / fan_in) / 0.8796... truncated at +-2 std."""
    std = math.sqrt(1.0 / 700) / 0.87962566103423978
    expected = fastinit.trunc_normal_(torch.empty(300, 700), 0.0, std, -2 * std, 2 * std, seed=11)
    a = fastinit.variance_scaling_(torch.empty(300, 700), seed=11)
    b = fastinit.lecun_normal_(torch.empty(300, 700), seed=11)
    assert torch.equal(a, expected) and torch.equal(b, expected)


# ----------------------------------------------------------------------------------------------
# Negative controls: the KS thresholds above reject a 5% wrong std / bound
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=DTYPE_IDS.get)
def test_negative_control_uniform_bound(dtype):
    shape = (500, 400)
    bound = math.sqrt(3.0 / 400)  # lecun_uniform_ / variance_scaling uniform, fan_in 400
    t = fastinit.kaiming_uniform_(torch.empty(shape, dtype=dtype), nonlinearity="linear", seed=5)
    assert_ks(t, uniform_cdf(-bound, bound), "kaiming_uniform_ linear")
    assert_ks_rejects(t, uniform_cdf(-bound * WRONG, bound * WRONG), "bound * 1.05")
    assert_ks_rejects(t, uniform_cdf(-bound / WRONG, bound / WRONG), "bound / 1.05")


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=DTYPE_IDS.get)
def test_negative_control_normal_std(dtype):
    t = fastinit.normal_(torch.empty(N_CONTROL, dtype=dtype), 0.5, 0.02, seed=6)
    assert_ks(t, normal_cdf(0.5, 0.02), "normal_")
    assert_ks_rejects(t, normal_cdf(0.5, 0.02 * WRONG), "std * 1.05")
    assert_ks_rejects(t, normal_cdf(0.5, 0.02 / WRONG), "std / 1.05")
    assert_ks_rejects(t, normal_cdf(0.5 + 0.05 * 0.02, 0.02), "mean + 0.05 std")


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=DTYPE_IDS.get)
def test_negative_control_trunc_normal_std(dtype):
    t = fastinit.trunc_normal_(torch.empty(N_CONTROL, dtype=dtype), 0.0, 0.02, -0.04, 0.04, seed=7)
    assert_ks(t, truncnorm_cdf(0.0, 0.02, -0.04, 0.04), "trunc_normal_")
    assert_ks_rejects(t, truncnorm_cdf(0.0, 0.02 * WRONG, -0.04, 0.04), "std * 1.05")
    assert_ks_rejects(t, truncnorm_cdf(0.0, 0.02 / WRONG, -0.04, 0.04), "std / 1.05")


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=DTYPE_IDS.get)
def test_negative_control_trunc_normal_wide(dtype):
    """timm's and Hugging Face's trunc_normal_(std=0.02) (bounds +-2, i.e. +-100 std): the wide
    interval's Box-Muller path."""
    t = fastinit.trunc_normal_(torch.empty(N_CONTROL, dtype=dtype), 0.0, 0.02, seed=9)
    assert_ks(t, truncnorm_cdf(0.0, 0.02, -2.0, 2.0), "trunc_normal_(std=0.02)")
    assert_ks_rejects(t, truncnorm_cdf(0.0, 0.02 * WRONG, -2.0, 2.0), "std * 1.05")
    assert_ks_rejects(t, truncnorm_cdf(0.05 * 0.02, 0.02, -2.0, 2.0), "mean + 0.05 std")


def test_negative_control_trunc_normal_tail():
    with pytest.warns(UserWarning, match="mean is more than 2 std"):
        t = fastinit.trunc_normal_(torch.empty(N_CONTROL), 0.0, 1.0, 4.0, 5.0, seed=8)
    assert_ks(t, truncnorm_cdf(0.0, 1.0, 4.0, 5.0), "trunc_normal_ [4, 5]")
    assert_ks_rejects(t, truncnorm_cdf(0.0, WRONG, 4.0, 5.0), "tail with std * 1.05")


def test_negative_control_variance_scaling_uncorrected():
    """Without the 0.8796 correction (std sqrt(scale/n), bounds +-2 of it) the KS rejects."""
    shape = (500, 400)
    sigma = math.sqrt(1.0 / 400)
    t = fastinit.variance_scaling_(torch.empty(shape), 1.0, "fan_in", "truncated_normal", seed=9)
    inner = sigma / TRUNC_CORRECTION
    assert_ks(t, truncnorm_cdf(0.0, inner, -2 * inner, 2 * inner), "variance_scaling_")
    assert_ks_rejects(t, truncnorm_cdf(0.0, sigma, -2 * sigma, 2 * sigma), "uncorrected")
    assert_ks_rejects(t, truncnorm_cdf(0.0, inner * WRONG, -2 * inner, 2 * inner), "std * 1.05")


def test_negative_control_kaiming_gain():
    """A 5% wrong gain (e.g. the wrong nonlinearity slope) is caught."""
    t = fastinit.kaiming_normal_(torch.empty(500, 400), a=0.2, seed=10)
    std = torch.nn.init.calculate_gain("leaky_relu", 0.2) / math.sqrt(400)
    assert_ks(t, normal_cdf(0.0, std), "kaiming_normal_")
    assert_ks_rejects(t, normal_cdf(0.0, std * WRONG), "gain * 1.05")


# ----------------------------------------------------------------------------------------------
# Truncated normal: far tails, tiny std, reduced precision
# ----------------------------------------------------------------------------------------------

TAIL_CASES = [
    ("tail_4_5", 0.0, 1.0, 4.0, 5.0),
    ("tail_-6_-5", 0.0, 1.0, -6.0, -5.0),
    ("tail_-8_-7.5", 0.0, 1.0, -8.0, -7.5),
    ("tail_2_3", 0.0, 1.0, 2.0, 3.0),
    ("std0.001_pm2", 0.0, 0.001, -2.0, 2.0),
    ("std0.01_pm2std", 0.0, 0.01, -0.02, 0.02),
    ("std0.01_pm2abs", 0.0, 0.01, -2.0, 2.0),
    ("std0.01_tail", 0.0, 0.01, 0.04, 0.05),
    ("mean1_onesided", 1.0, 0.5, 1.0, 3.0),
]
N_TAIL = 200_000


def _round_inward(a: float, b: float, dtype: torch.dtype) -> tuple[float, float]:
    lo = torch.tensor(a, dtype=FP64).to(dtype)
    hi = torch.tensor(b, dtype=FP64).to(dtype)
    if lo.item() < a:
        lo = torch.nextafter(lo, torch.tensor(math.inf, dtype=dtype))
    if hi.item() > b:
        hi = torch.nextafter(hi, torch.tensor(-math.inf, dtype=dtype))
    return lo.item(), hi.item()


@pytest.mark.parametrize("dtype", BASIC_DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("name, mean, std, a, b", TAIL_CASES, ids=[c[0] for c in TAIL_CASES])
def test_trunc_normal_tails(name, mean, std, a, b, dtype):
    t = torch.empty(N_TAIL, dtype=dtype)
    far = (mean < a - 2 * std) or (mean > b + 2 * std)
    with pytest.warns(UserWarning, match="mean is more than 2 std") if far else _no_warning():
        fastinit.trunc_normal_(t, mean, std, a, b, seed=seed_of(name, DTYPE_IDS[dtype]))
    x = _as_numpy(t)
    # no nan / inf, nothing outside [a, b]
    assert np.isfinite(x).all()
    assert x.min() >= a and x.max() <= b, (x.min(), x.max())
    cdf = truncnorm_cdf(mean, std, a, b)
    # no pile-up at the bounds: the count of values equal to a (b) rounded inward is at most
    # what the distribution puts in the one-ulp-wide bin at that bound, plus Poisson slack.
    lo, hi = _round_inward(a, b, dtype)
    lo_next = _neighbour(np.array([lo]), dtype, up=True)[0]
    hi_prev = _neighbour(np.array([hi]), dtype, up=False)[0]
    for bound, count, mass in (
        ("a", int((x == lo).sum()), float(cdf(lo_next)) - float(cdf(a))),
        ("b", int((x == hi).sum()), 1.0 - float(cdf(hi_prev))),
    ):
        expected = N_TAIL * mass
        allowed = expected + 5 * math.sqrt(expected) + 10
        assert count <= allowed, f"pile-up at {bound}: {count} values, one-ulp bin holds {expected:.1f}"
    assert_ks(t, cdf, f"trunc_normal_{name}")


@contextlib.contextmanager
def _no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_trunc_normal_tail_fp32_is_not_collapsed():
    """The [-8, -7.5] case that collapses onto -7.5 with fp32 math alone spreads over the range."""
    with pytest.warns(UserWarning, match="mean is more than 2 std"):
        t = fastinit.trunc_normal_(torch.empty(N_TAIL), 0.0, 1.0, -8.0, -7.5, seed=12)
    x = _as_numpy(t)
    assert len(np.unique(x)) > N_TAIL // 4
    assert x.mean() == pytest.approx(stats.truncnorm(-8, -7.5).mean(), abs=2e-3)


# ----------------------------------------------------------------------------------------------
# orthogonal_
# ----------------------------------------------------------------------------------------------

ORTHO_SHAPES = [(64, 256), (256, 64), (100, 100), (24, 8, 3, 3), (300, 4, 2), (1, 50), (50, 1)]
ORTHO_TOL = {FP32: 2e-5, FP64: 1e-12, BF16: 2e-2}


def _gram(t: torch.Tensor) -> torch.Tensor:
    """Q Q^T for rows <= cols, else Q^T Q, in fp64 on the flattened matrix."""
    flat = t.detach().reshape(t.shape[0], -1).to(FP64)
    return flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0), 0.5], ids=lambda g: f"gain{g:.3g}")
@pytest.mark.parametrize("dtype", [FP32, FP64, BF16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("shape", ORTHO_SHAPES, ids=shape_id)
def test_orthogonal_is_orthonormal(shape, dtype, gain):
    t = fastinit.orthogonal_(torch.empty(shape, dtype=dtype), gain=gain, seed=seed_of("o", shape))
    gram = _gram(t)
    eye = torch.eye(gram.shape[0], dtype=FP64)
    tol = ORTHO_TOL[dtype] * gain**2
    torch.testing.assert_close(gram, gain**2 * eye, atol=tol, rtol=0)
    # negative control: a 5% wrong gain is outside the tolerance
    assert not torch.allclose(gram, (WRONG * gain) ** 2 * eye, atol=tol, rtol=0)


@pytest.mark.parametrize("rows, cols", [(128, 512), (512, 128), (256, 256)], ids=lambda v: str(v))
def test_orthogonal_haar_marginal(rows, cols):
    """Entries of a Haar (semi-)orthogonal matrix: q^2 ~ Beta(1/2, (max(rows, cols) - 1) / 2)."""
    gain = 1.5
    t = fastinit.orthogonal_(torch.empty(rows, cols), gain=gain, seed=13)
    q = t.double().numpy() / gain
    dist = stats.beta(0.5, (max(rows, cols) - 1) / 2)
    p = stats.kstest(q.ravel() ** 2, dist.cdf).pvalue
    assert p > P_MIN
    wrong = stats.beta(0.5, (max(rows, cols) * WRONG**2 - 1) / 2)  # entries 5% too large
    assert stats.kstest(q.ravel() ** 2, wrong.cdf).pvalue < P_MIN


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)], ids=shape_id)
def test_orthogonal_corner_sign_is_symmetric(shape):
    """Without torch's diag(R) sign fix, Householder QR makes Q[0, 0] (almost) always negative."""
    positive = sum(
        fastinit.orthogonal_(torch.empty(shape), seed=1000 + i)[0, 0].item() > 0 for i in range(100)
    )
    assert 25 < positive < 75  # Binomial(100, 1/2): mean 50, sd 5; without the fix: 0


def test_orthogonal_sign_fix_matches_torch_construction():
    """fastinit's Q = QR of its own normal fill with torch's sign fix (same seed, same stream)."""
    rows, cols = 40, 90
    t = fastinit.orthogonal_(torch.empty(rows, cols), seed=21)
    g = fastinit.normal_(torch.empty(rows, cols), seed=21).t()
    q, r = torch.linalg.qr(g)
    q = (q * torch.diag(r).sign()).t()
    torch.testing.assert_close(t, q, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# sparse_
# ----------------------------------------------------------------------------------------------

SPARSE_CASES = [
    (1000, 250, 0.1, 0.01),
    (200, 1000, 0.5, 0.02),
    (10, 20_000, 0.3, 1.0),  # 0.3 * 10 = 3.0000000000000004 -> ceil = 4, as torch
    (37, 5000, 0.77, 0.05),
    (64, 3000, 0.0, 0.01),
    (64, 300, 1.0, 0.01),
]


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize(
    "rows, cols, sparsity, std", SPARSE_CASES, ids=[f"{r}x{c}-s{s}-std{d}" for r, c, s, d in SPARSE_CASES]
)
def test_sparse_zeros_and_values(rows, cols, sparsity, std, dtype):
    t = fastinit.sparse_(torch.empty(rows, cols, dtype=dtype), sparsity, std, seed=seed_of("s", rows, cols))
    num_zeros = math.ceil(sparsity * rows)
    zeros_per_col = (t == 0).sum(dim=0)
    assert (zeros_per_col == num_zeros).all(), zeros_per_col.unique()
    nonzero = t[t != 0]
    assert nonzero.numel() == rows * cols - num_zeros * cols
    if nonzero.numel() >= 20_000:
        assert_ks(nonzero, normal_cdf(0.0, std), "sparse_ nonzeros")
        # negative control
        if nonzero.numel() >= N_CONTROL and dtype == FP32:
            assert_ks_rejects(nonzero, normal_cdf(0.0, std * WRONG), "std * 1.05")


def test_sparse_zero_count_matches_torch():
    for rows, cols, sparsity in [(10, 30, 0.3), (7, 40, 0.5), (33, 20, 0.1), (5, 9, 0.99)]:
        ours = fastinit.sparse_(torch.empty(rows, cols), sparsity, seed=1)
        theirs = torch.nn.init.sparse_(torch.empty(rows, cols), sparsity)
        assert torch.equal((ours == 0).sum(0), (theirs == 0).sum(0)), (rows, cols, sparsity)


def test_sparse_zero_positions_are_deterministic_and_seeded():
    shape, sparsity = (50, 400), 0.4
    a = fastinit.sparse_(torch.empty(shape), sparsity, seed=77) == 0
    b = fastinit.sparse_(torch.empty(shape), sparsity, seed=77) == 0
    c = fastinit.sparse_(torch.empty(shape), sparsity, seed=78) == 0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    d = fastinit.sparse_(torch.empty(shape), sparsity) == 0
    torch.manual_seed(5)
    e = fastinit.sparse_(torch.empty(shape), sparsity) == 0
    assert torch.equal(d, e)
    # the zero positions do not depend on std or dtype (stream 1 of the same seed)
    f = fastinit.sparse_(torch.empty(shape, dtype=BF16), sparsity, std=3.0, seed=77) == 0
    assert torch.equal(a, f)


def test_sparse_zero_positions_are_uniform_over_rows():
    rows, cols, sparsity = 20, 20_000, 0.25
    t = fastinit.sparse_(torch.empty(rows, cols), sparsity, seed=31)
    per_row = (t == 0).sum(dim=1).numpy()
    expected = np.full(rows, cols * math.ceil(sparsity * rows) / rows)
    p = stats.chisquare(per_row, expected).pvalue
    assert p > P_MIN, per_row
    # and across columns the zeroed row sets differ
    assert len({tuple(np.flatnonzero(col)) for col in (t == 0).T[:200].numpy()}) > 150


# ----------------------------------------------------------------------------------------------
# calculate_gain
# ----------------------------------------------------------------------------------------------

TORCH_GAIN_CASES = [
    *[(name, None) for name in (
        "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "sigmoid", "tanh", "relu", "selu", "leaky_relu",
    )],
    ("leaky_relu", 0),
    ("leaky_relu", 0.2),
    ("leaky_relu", 1),
    ("leaky_relu", 3),
    ("leaky_relu", -0.5),
    ("leaky_relu", math.sqrt(5)),
    ("tanh", 0.3),  # param ignored
]


@pytest.mark.parametrize("nonlinearity, param", TORCH_GAIN_CASES, ids=lambda v: str(v))
def test_calculate_gain_torch_names_exact(nonlinearity, param):
    ours = fastinit.calculate_gain(nonlinearity, param)
    theirs = torch.nn.init.calculate_gain(nonlinearity, param)
    assert ours == theirs
    assert type(ours) is type(theirs)


def test_calculate_gain_prelu():
    assert fastinit.calculate_gain("prelu") == pytest.approx(math.sqrt(2.0 / (1 + 0.25**2)), abs=1e-15)
    assert fastinit.calculate_gain("prelu", 0.1) == pytest.approx(math.sqrt(2.0 / 1.01), abs=1e-15)
    assert fastinit.calculate_gain("prelu", 0.25) == fastinit.calculate_gain("leaky_relu", 0.25)


@pytest.mark.parametrize(
    "fn, expected",
    [
        pytest.param(lambda z: z, lambda: torch.nn.init.calculate_gain("linear"), id="identity"),
        pytest.param(torch.relu, lambda: torch.nn.init.calculate_gain("relu"), id="torch.relu"),
        pytest.param(
            lambda z: torch.where(z > 0, z, 0.2 * z),
            lambda: torch.nn.init.calculate_gain("leaky_relu", 0.2),
            id="leaky_lambda_0.2",
        ),
        pytest.param(
            lambda z: torch.nn.functional.leaky_relu(z, 0.3),
            lambda: torch.nn.init.calculate_gain("leaky_relu", 0.3),
            id="F.leaky_relu_0.3",
        ),
        pytest.param(
            torch.nn.functional.leaky_relu,
            lambda: torch.nn.init.calculate_gain("leaky_relu"),
            id="F.leaky_relu_default",
        ),
        pytest.param(lambda z: max(z, 0.0), lambda: math.sqrt(2.0), id="python_float_relu"),
        pytest.param(torch.nn.ReLU(), lambda: math.sqrt(2.0), id="nn.ReLU_module"),
    ],
)
def test_calculate_gain_quadrature_matches_torch(fn, expected):
    assert fastinit.calculate_gain(fn) == pytest.approx(expected(), abs=1e-12, rel=0)


@pytest.mark.parametrize(
    "name, param, f",
    [
        pytest.param("gelu", None, _gelu, id="gelu"),
        pytest.param("silu", None, _silu, id="silu"),
        pytest.param("elu", None, lambda z: z if z > 0 else math.expm1(z), id="elu"),
        pytest.param("elu", 0.5, lambda z: z if z > 0 else 0.5 * math.expm1(z), id="elu0.5"),
        pytest.param(
            "mish", None, lambda z: z * math.tanh(math.log1p(math.exp(z))) if z < 30 else z, id="mish"
        ),
        pytest.param(
            "softplus", None, lambda z: math.log1p(math.exp(-abs(z))) + max(z, 0.0), id="softplus"
        ),
    ],
)
def test_calculate_gain_extra_names(name, param, f):
    assert fastinit.calculate_gain(name, param) == pytest.approx(_quadrature_gain(f), rel=1e-9)


def _tanh_gelu(z: float) -> float:
    return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


def test_calculate_gain_callables_and_tanh_gelu_match_quadrature():
    """torch's F.gelu / F.silu given as callables, and the "tanh" GELU by name, against
    quadrature of their textbook formulas in plain Python."""
    F = torch.nn.functional
    assert fastinit.calculate_gain(F.gelu) == pytest.approx(_quadrature_gain(_gelu), rel=1e-9)
    assert fastinit.calculate_gain(F.silu) == pytest.approx(_quadrature_gain(_silu), rel=1e-9)
    tanh_gelu = fastinit.calculate_gain("gelu", "tanh")
    assert tanh_gelu == pytest.approx(_quadrature_gain(_tanh_gelu), rel=1e-9)
    assert tanh_gelu != pytest.approx(fastinit.calculate_gain("gelu"), rel=1e-9)


def test_calculate_gain_selu_is_torch_empirical_value():
    assert fastinit.calculate_gain("selu") == 0.75
