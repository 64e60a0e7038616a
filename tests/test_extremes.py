"""Extreme parameters (docs/contract.md, "Extreme parameters"): trunc_normal far in a tail, on
either side and at any std; std far larger than the interval; normal without intermediate
overflow; bounds outside a 16-bit dtype's range; orthogonal_ across thread counts. Statistics
are held to exact values (60-digit mpmath) with fixed seeds and bounds a wrong distribution
fails, and every backend to the reference."""
import math
import threading
import warnings

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

import fastinit
from fastinit import backends, contract, normal_tail
from fastinit.backends import cpu, reference
from fastinit.contract import Distribution, normal_fill_params, trunc_normal_params
from fastinit.plan import make_fill, pack_descriptors

from conftest import poisoned

N = 2**16
SEED = 0x5EED_0F_E47E4E5


def exact_moments(mean, std, a, b):
    """Mean and standard deviation of N(mean, std^2) truncated to [a, b] (finite), in 60-digit
    arithmetic, taken on the side of the interval's near end so nothing cancels."""
    with mpmath.workdps(60):
        m, s, a, b = (mpmath.mpf(v) for v in (mean, std, a, b))
        sign = 1
        if (a - m) + (b - m) > 0:  # upper tail: mirror, so the normal CDF stays small
            m, a, b, sign = -m, -b, -a, -1
        alpha, beta = (a - m) / s, (b - m) / s
        z = mpmath.ncdf(beta) - mpmath.ncdf(alpha)
        mean_z = (mpmath.npdf(alpha) - mpmath.npdf(beta)) / z
        var_z = 1 + (alpha * mpmath.npdf(alpha) - beta * mpmath.npdf(beta)) / z - mean_z**2
        return float(sign * (m + s * mean_z)), float(s * mpmath.sqrt(var_z))


def assert_truncated_normal(x, mean, std, a, b, label=""):
    """All values in [a, b]; sample mean within 6 standard errors of the exact mean and sample
    std within 4% of the exact one (a wrong side, a bound everywhere, a uniform instead of a
    tail all fail by orders of magnitude)."""
    x = x.double().reshape(-1)
    assert torch.isfinite(x).all(), label
    assert (x >= a).all() and (x <= b).all(), f"{label}: values outside [{a}, {b}]"
    exact_mean, exact_std = exact_moments(mean, std, a, b)
    n = x.numel()
    assert abs(float(x.mean()) - exact_mean) <= 6 * exact_std / math.sqrt(n) + 1e-12 * abs(
        exact_mean), f"{label}: mean {float(x.mean())!r}, exact {exact_mean!r}"
    assert abs(float(x.std()) / exact_std - 1) < 0.04, \
        f"{label}: std {float(x.std())!r}, exact {exact_std!r}"


# (mean, std, a, b): intervals 40 std and more from the mean, on either side, and at any std
FAR_TAILS = [
    (100.0, 1.0, -2.0, 2.0),       # below the mean: values pile up at b = 2 (torch: mean 1.99)
    (-100.0, 1.0, -2.0, 2.0),      # above the mean: at a = -2
    (0.0, 1.0, 40.0, 41.0),        # upper tail (torch: mean 40.025)
    (0.0, 1.0, -41.0, -40.0),      # lower tail
    (0.0, 1.0, 1000.0, 1001.0),
    (0.0, 0.02, -3.0, -1.0),       # 50 to 150 std out
    (1e20, 1e10, -2.0, 2.0),       # 1e10 std out, interval 4e-10 std wide: b - Exp(1)
    (-1e20, 1e10, -2.0, 2.0),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mean, std, a, b", FAR_TAILS, ids=str)
def test_far_tail_is_the_truncated_normal(mean, std, a, b, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "mean is more than 2 std from [a, b]"
        x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), mean, std, a, b, seed=SEED)
    assert_truncated_normal(x, mean, std, a, b, f"{mean}, {std}, [{a}, {b}] {dtype}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_far_tail_in_16_bit_dtypes(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), 100.0, 1.0, -2.0, 2.0, seed=3)
    # about 2 - Exp(1) / 98: all near 2 (P(below 1.75) = 2e-11 each), none at -2
    assert (x <= 2.0).all() and (x.double() >= 1.75).all()
    assert float(x.double().mean()) > 1.97


def test_tf_variant_far_tail():
    """trunc_normal_tf_: standardised bounds 40 to 41, then mean + std * z."""
    x = fastinit.trunc_normal_tf_(torch.empty(N, dtype=torch.float64), 1.0, 2.0, 40.0, 41.0,
                                  seed=9)
    assert_truncated_normal(x, 1.0, 2.0, 81.0, 83.0, "tf [40, 41]")


@pytest.mark.parametrize("dtype, std", [
    (torch.float32, 1e7), (torch.float32, 1e8), (torch.float32, 1e30),
    (torch.float64, 1e15), (torch.float64, 1e16), (torch.float64, 1e200),
    (torch.float16, 1e5), (torch.bfloat16, 1e8),
], ids=str)
def test_std_far_larger_than_the_interval_is_uniform(dtype, std):
    x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), 0.0, std, -2.0, 2.0, seed=SEED)
    x = x.double()
    assert (x >= -2).all() and (x <= 2).all()
    assert abs(float(x.mean())) < 6 * (4 / math.sqrt(12)) / math.sqrt(N)
    assert abs(float(x.std()) / (4 / math.sqrt(12)) - 1) < 0.01
    ks = stats.kstest(x.numpy(), "uniform", args=(-2.0, 4.0)).statistic
    assert ks < 1.95 / math.sqrt(N), f"KS {ks} against U(-2, 2)"


@pytest.mark.parametrize("dtype, std", [(torch.float32, 1e3), (torch.float32, 1e5),
                                        (torch.float64, 1e9)], ids=str)
def test_std_large_against_the_interval_before_it_is_flat(dtype, std):
    """Between the ordinary formulas and the flat uniform: fp64 math (fp32 outputs) with
    enough resolution in Phi."""
    x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), 0.0, std, -2.0, 2.0, seed=SEED)
    assert_truncated_normal(x, 0.0, std, -2.0, 2.0, f"std {std}")
    assert x.double().unique().numel() > N // 2  # not a few levels of a coarse Phi grid


@pytest.mark.parametrize("mean, std, a, b, dtype", [
    (0.0, 1.0, -1e-4, 1e-4, torch.float32),       # flat: a uniform
    (0.0, 1.0, 0.5, 0.5 + 1e-3, torch.float32),   # fp64 math
    (0.0, 1.0, -5.0 - 1e-12, -5.0, torch.float64),  # too narrow for fp64 Phi: tail coordinates
    (0.0, 1.0, 6.0, 6.0 + 1e-12, torch.float64),
], ids=str)
def test_narrow_intervals(mean, std, a, b, dtype):
    x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), mean, std, a, b, seed=SEED)
    lo, hi = contract.round_inward(a, b, dtype)
    assert_truncated_normal(x.clamp(lo, hi), mean, std, a, b, f"[{a}, {b}]")
    assert float(x.min()) - lo < 0.01 * (hi - lo) and hi - float(x.max()) < 0.01 * (hi - lo)


def test_plans_of_extreme_and_ordinary_parameters():
    """Which formula the planner takes: the criteria of docs/contract.md, and ordinary
    parameters keep theirs."""
    f32, f64 = torch.float32, torch.float64
    plan = lambda *args: trunc_normal_params(*args)[0]  # noqa: E731
    assert plan(0.0, 1.0, -2.0, 2.0, f32) == Distribution.TRUNC_NORMAL
    assert plan(0.0, 0.02, -2.0, 2.0, f32) == Distribution.TRUNC_NORMAL  # wide
    assert plan(0.0, 1.0, -8.0, -7.5, f32) == Distribution.TRUNC_NORMAL_FP64
    assert plan(0.0, 1.0, -2.0, 2.0, f64) == Distribution.TRUNC_NORMAL_FP64
    assert plan(0.0, 1.0, -37.0, -36.0, f64) == Distribution.TRUNC_NORMAL_FP64
    assert plan(0.0, 1.0, -38.0, -37.7, f64) == Distribution.TRUNC_NORMAL_TAIL
    assert plan(0.0, 1e7, -2.0, 2.0, f32) == Distribution.UNIFORM
    assert plan(0.0, 1e3, -2.0, 2.0, f32) == Distribution.TRUNC_NORMAL_FP64
    assert plan(0.0, 1e7, -2.0, 2.0, f64) == Distribution.TRUNC_NORMAL_FP64
    assert plan(0.0, 1e15, -2.0, 2.0, f64) == Distribution.UNIFORM
    assert normal_fill_params(0.0, 2.0**125, f32)[0] == Distribution.NORMAL
    assert normal_fill_params(0.0, 3e38, f32)[0] == Distribution.TRUNC_NORMAL_FP64
    assert normal_fill_params(0.0, 3e38, f64)[0] == Distribution.NORMAL


def test_flat_uniform_never_leaves_the_interval():
    """The uniform of a flat interval is closed: its scale is lowered until the largest u lands
    on b at most, even where b - a rounds up (fp32 and fp64 math)."""
    for dtype, (a, b) in [(torch.float32, (1.0, 1.0 + 2**-22)),
                          (torch.float32, (-3.0000002, 1e-30)),
                          (torch.float64, (1.0, 1.0 + 2**-51)),
                          (torch.float64, (-1.0000000000000002, 3e-300))]:
        dist, params = trunc_normal_params(0.0, 1e300, a, b, dtype)
        assert dist == Distribution.UNIFORM
        top = (1 - 2.0**-53) * params[0] + params[1] if dtype == torch.float64 else float(
            np.float32(reference.fma_f32(1 - 2.0**-24, np.float32(params[0]), params[1])))
        assert top <= b
        x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), 0.0, 1e300, a, b, seed=2)
        assert (x >= a).all() and (x <= b).all()


# ---------------------------------------------------------------------------------------------
# normal without intermediate overflow

@pytest.mark.parametrize("dtype, std, limit", [
    (torch.float32, 3e38, 2.0**128 - 2.0**103),   # torch: 25.7% infinities
    (torch.float32, 1e39, 2.0**128 - 2.0**103),   # std beyond fp32 itself
    (torch.bfloat16, 3e38, 2.0**128 - 2.0**119),
], ids=str)
def test_normal_overflows_where_the_value_does(dtype, std, limit):
    x = fastinit.normal_(torch.empty(2**18, dtype=dtype), 0.0, std, seed=SEED).double()
    expected = 2 * stats.norm.sf(limit / std)
    inf = torch.isinf(x)
    se = math.sqrt(expected * (1 - expected) / x.numel())
    assert abs(float(inf.double().mean()) - expected) < 6 * se, \
        f"{float(inf.double().mean())} infinities, exact {expected}"
    assert abs(int((x == math.inf).sum()) - int((x == -math.inf).sum())) < 6 * math.sqrt(
        int(inf.sum()))
    assert not torch.isnan(x).any()
    finite = x[~inf]
    assert float(finite.abs().max()) <= float(torch.finfo(dtype).max)


def test_normal_huge_std_against_torch():
    ours = fastinit.normal_(torch.empty(2**18), 0.0, 3e38, seed=1)
    torch.manual_seed(1)
    theirs = torch.nn.init.normal_(torch.empty(2**18), 0.0, 3e38)
    a, b = float(torch.isinf(ours).double().mean()), float(torch.isinf(theirs).double().mean())
    assert abs(a - b) < 0.005 and abs(a - 0.2567) < 0.005


def test_ordinary_normal_keeps_its_formula():
    """A normal below the overflow bound is the ordinary Box-Muller formula, bit for bit."""
    for std in (1.0, 0.02, 2.0**125):
        t = fastinit.normal_(torch.empty(4096), 0.5, std, seed=4)
        fill = make_fill(torch.empty(4096), Distribution.NORMAL, [0.5, std], 4)
        cpu.run([fill])
        assert torch.equal(t, fill.tensor)


# ---------------------------------------------------------------------------------------------
# bounds outside a dtype's range

def _torch_error(dtype, mean, std, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.nn.init.trunc_normal_(torch.empty(64, dtype=dtype), mean, std, a, b)
        except RuntimeError as exc:
            return exc
    return None


# (torch's own rejection sampling never ends on fp32 [70000, 80000] at std 1: 16-bit only there)
@pytest.mark.parametrize("dtype, mean, std, a, b", [
    (dtype, *case) for dtype in (torch.float16, torch.bfloat16) for case in [
        (0.0, 1.0, 70000.0, 80000.0), (0.0, 1.0, -80000.0, -70000.0),
        (0.0, 1e5, 70000.0, 80000.0), (0.0, 1.0, 65500.0, 70000.0), (0.0, 1.0, 1e39, 1e40),
        (0.0, 1e5, -2.0, 70000.0)]
] + [(torch.float32, 0.0, 1.0, 1e39, 1e40), (torch.float32, 0.0, 1e38, -2.0, 1e39)], ids=str)
def test_bounds_out_of_range_raise_as_torch(dtype, mean, std, a, b):
    theirs = _torch_error(dtype, mean, std, a, b)
    target = poisoned((64,), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if theirs is None:
            fastinit.trunc_normal_(target, mean, std, a, b, seed=1)
            assert torch.isfinite(target).all()
            return
        with pytest.raises(RuntimeError) as ours:
            fastinit.trunc_normal_(target, mean, std, a, b, seed=1)
    phrase = str(theirs).split(" for ")[0]  # "from is out of bounds", "to is out of bounds"
    assert phrase in str(ours.value), f"fastinit: {ours.value}; torch: {theirs}"
    assert str(theirs).split(" for ")[1] in str(ours.value)  # c10::Half, c10::BFloat16, float
    assert torch.isnan(target).all(), "a failing call wrote into the tensor"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bounds_out_of_range_where_torch_takes_its_normal(dtype):
    """Mass above 0.3: torch samples its normal and keeps the call; so does fastinit."""
    assert _torch_error(dtype, 0.0, 1.0, -70000.0, 70000.0) is None
    x = fastinit.trunc_normal_(torch.empty(N, dtype=dtype), 0.0, 1.0, -70000.0, 70000.0, seed=1)
    assert torch.isfinite(x).all() and 0.95 < float(x.double().std()) < 1.05


def test_interval_without_a_finite_value_raises():
    """fp16 [70000, 80000] around its mean: torch writes inf everywhere, fastinit raises (the
    interval holds no finite fp16 value)."""
    target = poisoned((64,), torch.float16)
    with pytest.raises(RuntimeError, match="holds no finite value of torch.float16"):
        fastinit.trunc_normal_(target, 75000.0, 1000.0, 70000.0, 80000.0, seed=1)
    assert torch.isnan(target).all()


# ---------------------------------------------------------------------------------------------
# orthogonal_ across thread counts

@pytest.mark.parametrize("shape", [(300, 701), (701, 300), (64, 4, 3, 3)], ids=str)
def test_orthogonal_is_bitwise_across_thread_counts(shape):
    before = torch.get_num_threads()
    try:
        values = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            values.append(fastinit.orthogonal_(torch.empty(shape), seed=1))
            assert torch.get_num_threads() == threads  # restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(values[0], values[1]) and torch.equal(values[0], values[2])
    q = values[0].reshape(shape[0], -1)
    small = q @ q.t() if q.shape[0] <= q.shape[1] else q.t() @ q
    torch.testing.assert_close(small, torch.eye(small.shape[0]), atol=1e-5, rtol=0)


def test_orthogonal_from_threads_at_once():
    """Concurrent calls from several threads give the single-thread values and leave the
    thread count as it was."""
    before = torch.get_num_threads()
    expected = fastinit.orthogonal_(torch.empty(200, 333), seed=7)
    results = [None] * 4

    def work(i):
        results[i] = fastinit.orthogonal_(torch.empty(200, 333), seed=7)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, expected) for r in results)
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------------------
# The tail implementation against 60-digit arithmetic

@pytest.mark.parametrize("L, D", [(0.0, 1e-13), (0.5, 1e-12), (5.0, 1e-9), (5.0, 0.3),
                                  (37.7, 2.0), (98.0, 4.0), (1e5, 1e-4), (1e10, 4e-10)], ids=str)
def test_tail_offsets_against_mpmath(L, D):
    h_d = normal_tail.interval_exponent(L, D)
    u = np.array([0.0, 2.0**-53, 0.001, 0.23, 0.5, 0.7, 0.99, 1 - 2.0**-53])
    d = normal_tail.tail_offsets(L, D, h_d, u)
    with mpmath.workdps(60):
        q = lambda t: mpmath.erfc(t / mpmath.sqrt(2)) / 2  # noqa: E731
        ql, qh = q(mpmath.mpf(L)), q(mpmath.mpf(L) + mpmath.mpf(D))
        for ui, di in zip(u, d):
            target = qh + mpmath.mpf(ui) * (ql - qh)
            lo, hi = mpmath.mpf(0), mpmath.mpf(D)
            for _ in range(200):  # bisection: Q decreasing
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if q(L + mid) > target else (lo, mid)
            exact = (lo + hi) / 2
            assert abs(mpmath.mpf(di) - exact) <= 2e-15 * exact + 1e-300, (ui, di, exact)


# ---------------------------------------------------------------------------------------------
# Every backend gives the reference's values

def _extreme_fills(dtype, n=4096):
    """(name, fill) of each extreme plan for `dtype` on a NaN tensor of n elements."""
    cases = {
        "tail_below": (100.0, 1.0, -2.0, 2.0), "tail_above": (0.0, 1.0, 40.0, 41.0),
        "tail_any_std": (1e20, 1e10, -2.0, 2.0), "flat": (0.0, 1e30, -2.0, 2.0),
        "fp64_math_narrow": (0.0, 1e3, -2.0, 2.0),
    }
    out = []
    for name, (mean, std, a, b) in cases.items():
        dist, params = trunc_normal_params(mean, std, a, b, dtype)
        out.append((name, make_fill(poisoned((n,), dtype), dist, params, SEED, 7, 3)))
    if dtype != torch.float64:
        dist, params = normal_fill_params(0.0, 3e38, dtype)
        out.append(("normal_overflow", make_fill(poisoned((n,), dtype), dist, params, SEED, 7)))
    return out


def _assert_same(out, ref, dist, label):
    """Bitwise for uniform and the host-only tail; fp64 libm math within an ulp of the output
    (the contract's rule), infinities at the same elements."""
    assert not torch.isnan(out).any(), f"{label}: an element was not written"
    if dist in (Distribution.UNIFORM, Distribution.TRUNC_NORMAL_TAIL):
        assert torch.equal(out, ref), f"{label}: not bitwise equal to the reference"
        return
    assert torch.equal(torch.isinf(out), torch.isinf(ref)) and torch.equal(
        out[torch.isinf(out)], ref[torch.isinf(ref)]), label
    finite = torch.isfinite(ref)
    # fp64 outputs: AS241 against torch's ndtri in the reference, 1e-12 as between libms
    rtol = 1e-12 if out.dtype == torch.float64 else 2 * torch.finfo(out.dtype).eps
    torch.testing.assert_close(out[finite].double(), ref[finite].double(), rtol=rtol, atol=0,
                               msg=label)


def _reference(fill):
    return reference.contract_values(fill).reshape(fill.tensor.shape)


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpu_backend_matches_reference(dtype):
    fastinit.set_backend("cpu")
    for name, fill in _extreme_fills(dtype):
        backends.execute([fill])
        _assert_same(fill.tensor, _reference(fill), fill.dist, f"cpu {name} {dtype}")


def test_host_only_plans_run_on_the_reference_whatever_the_backend():
    """The dispatcher sends TRUNC_NORMAL_TAIL to the reference; no kernel accepts its code."""
    (_, fill), *_ = _extreme_fills(torch.float32)
    assert fill.dist == Distribution.TRUNC_NORMAL_TAIL
    with pytest.raises(ValueError, match="unknown distribution code 5"):
        cpu.run([fill])
    assert torch.isnan(fill.tensor).all()
    for name in ("cpu", "reference"):
        fastinit.set_backend(name)
        fill.tensor.fill_(math.nan)
        backends.execute([fill])
        assert torch.equal(fill.tensor, _reference(fill))


def test_tail_values_follow_the_logical_index():
    """The tail formula is a function of the element's contract index, as every other: a
    transposed target gets the transposed values."""
    plain = fastinit.trunc_normal_(torch.empty(70, 90), 0.0, 1.0, 40.0, 41.0, seed=5)
    strided = torch.empty(90, 70).t()
    fastinit.trunc_normal_(strided, 0.0, 1.0, 40.0, 41.0, seed=5)
    assert torch.equal(plain, strided)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_backend_matches_reference(dtype):
    from conftest import triton_kernels_or_skip

    _, device = triton_kernels_or_skip()
    fastinit.set_backend("triton")
    for name, fill in _extreme_fills(dtype, n=1024):
        fill = make_fill(fill.tensor.to(device), fill.dist, fill.params, fill.seed,
                         fill.stream, fill.first_index)
        backends.execute([fill])
        _assert_same(fill.tensor.cpu(), _reference(fill).cpu(), fill.dist,
                     f"triton {name} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_kernel_code_matches_reference(dtype):
    """The CUDA kernels' per-thread code, run on the host (fastinit._cuda.emulate), for every
    plan a kernel runs (the host-only tail never reaches one)."""
    cuda_module = pytest.importorskip("fastinit._cuda",
                                      reason="fastinit._cuda is not built here (no nvcc)")
    for name, fill in _extreme_fills(dtype):
        if fill.dist == Distribution.TRUNC_NORMAL_TAIL:
            continue
        cuda_module.emulate(pack_descriptors([fill]), 0, by_value=False)
        _assert_same(fill.tensor, _reference(fill), fill.dist, f"cuda emulation {name} {dtype}")
