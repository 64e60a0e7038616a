"""Host side of the random-number contract (docs/contract.md): seeds, streams and the per-tensor
parameters every backend receives. The device side is csrc/fastinit/*.h (C++ and CUDA),
src/fastinit/kernels/ (Triton) and backends/reference.py (NumPy, the executable form of the contract).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import struct
import threading
import weakref
from enum import IntEnum
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .errors import InitValueError

from . import contract_numbers as _numbers
from .normal_tail import interval_exponent

PHILOX_M0 = _numbers.PHILOX["M0"]
PHILOX_M1 = _numbers.PHILOX["M1"]
PHILOX_W0 = _numbers.PHILOX["W0"]
PHILOX_W1 = _numbers.PHILOX["W1"]

# Below this mirrored upper bound, Giles' fp32 erfinv is outside its fitted range (p < ~1e-8).
FP32_TRUNC_NORMAL_MIN_BETA = float(_numbers.F64["FP32_TRUNC_NORMAL_MIN_BETA"])
# The planner's thresholds for extreme parameters (docs/contract.md, "Extreme parameters").
PLAN_LIMITS = {name: math.ldexp(1.0, e) for name, e in _numbers.PLAN_EXPONENTS.items()}
FP32_MAX = float(np.finfo(np.float32).max)

U64_MASK = (1 << 64) - 1

Distribution = IntEnum("Distribution", {**_numbers.DISTRIBUTIONS, **_numbers.HOST_DISTRIBUTIONS},
                       module=__name__)
Distribution.__doc__ = "Distribution codes of a fill descriptor."
DType = IntEnum("DType", _numbers.DTYPES, module=__name__)
DType.__doc__ = "dtype codes of a fill descriptor."


DTYPE_CODES = {
    torch.float32: DType.FLOAT32,
    torch.float64: DType.FLOAT64,
    torch.float16: DType.FLOAT16,
    torch.bfloat16: DType.BFLOAT16,
}


def elements_per_block(dist: int, dtype: torch.dtype) -> int:
    """Contract elements per Philox call: 4 with fp32 math, 2 with fp64 math."""
    if dtype == torch.float64 or dist in (Distribution.TRUNC_NORMAL_FP64,
                                          Distribution.TRUNC_NORMAL_TAIL):
        return 2
    return 4


def stream_for_name(name: str) -> int:
    """Whole-model stream of a parameter or buffer: blake2b-64 of its fully qualified name.

    Args:
        name: the fully qualified name, e.g. ``"layers.3.mlp.up_proj.weight"``.

    Returns:
        The stream, an int in [0, 2**64).
    """
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= U64_MASK:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


# Python has no access to an accelerator generator's own mutex, so fastinit serialises its
# draws from each such generator with a lock of its own (one per generator, created on first use).
_generator_locks: "weakref.WeakKeyDictionary[torch.Generator, threading.Lock]" = \
    weakref.WeakKeyDictionary()
_generator_locks_guard = threading.Lock()


def _generator_lock(generator: torch.Generator) -> threading.Lock:
    """fastinit's lock of `generator`, the same object for every call with that generator."""
    with _generator_locks_guard:
        lock = _generator_locks.get(generator)
        if lock is None:
            lock = _generator_locks[generator] = threading.Lock()
        return lock


def check_generator(generator) -> None:
    """Raise TypeError, as torch does, unless `generator` is None or a torch.Generator."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"argument 'generator' must be torch.Generator, not {type(generator).__name__}"
        )


class _SeedSource(threading.local):
    """Per thread: the generator `seeds_from` set (a class default, so that reading it where
    none is set raises and catches no AttributeError)."""
    generator: torch.Generator | None = None


_seed_source = _SeedSource()


@contextlib.contextmanager
def seeds_from(generator: torch.Generator) -> Iterator[None]:
    """Inside the block, this thread's drop-in calls without a `generator` draw their seeds from
    `generator` instead of torch's default CPU generator (which is left untouched)."""
    previous = _seed_source.generator
    _seed_source.generator = generator
    try:
        yield
    finally:
        _seed_source.generator = previous


def thread_generator() -> torch.Generator | None:
    """The generator `seeds_from` gives this thread's drop-in calls, or None (torch's default CPU
    generator)."""
    return _seed_source.generator


_seed_buffers = threading.local()


def _seed_buffer() -> torch.Tensor:
    """This thread's one-element int64 CPU tensor that single seed draws are written into."""
    buffer = getattr(_seed_buffers, "buffer", None)
    if buffer is None:
        with torch._C.DisableTorchFunction():
            buffer = _seed_buffers.buffer = torch.empty(1, dtype=torch.int64, device="cpu")
    return buffer


def draw_seed(generator: torch.Generator | None) -> int:
    """The seed of one drop-in call, drawn from `generator` (default: the CPU generator, or the
    one `seeds_from` gives this thread).

    Without a generator the draw always comes from that CPU generator, whatever the ambient
    ``torch.device(...)`` context (meta, cuda) says. Callers have checked `generator`'s type.
    """
    if generator is None:
        generator = thread_generator()
    if (generator is None or (type(generator) is torch.Generator
                              and generator.device.type == "cpu")) \
            and torch._C._get_dispatch_mode(_FAKE_MODE) is None:
        # draw_seeds' draw of one seed (torch.randint's: random_ of an empty tensor), into a
        # tensor allocated once
        with torch._C.DisableTorchFunction():
            return _seed_buffer().random_(0, 2**63 - 1, generator=generator).item()
    return draw_seeds(generator, 1)[0]


_FAKE_MODE = torch._C._TorchDispatchModeKey.FAKE


def draw_seeds(generator: torch.Generator | None, count: int) -> list[int]:
    """The seeds of `count` drop-in calls in one draw: the seeds, and the generator state after,
    of `count` calls of `draw_seed` one after another (tests/test_seeds.py)."""
    check_generator(generator)
    if count <= 0:
        return []
    if generator is None:
        generator = thread_generator()
    if generator is None or generator.device.type == "cpu":
        # a real draw even inside FakeTensorMode (whole-model init of fake tensors draws its
        # seed as it does for meta tensors; drop-in fills of fake tensors draw none)
        if torch._C._get_dispatch_mode(_FAKE_MODE) is None:
            drawn = torch.randint(0, 2**63 - 1, (count,), generator=generator, device="cpu")
        else:
            with unset_fake_temporarily():
                drawn = torch.randint(0, 2**63 - 1, (count,), generator=generator, device="cpu")
        return drawn.tolist()
    # An explicit accelerator generator: no device sync; derive from (initial seed, offset) and
    # advance the offset by one Philox block per seed, as torch's own kernels do. Reading and
    # advancing the offset is one step under the generator's lock, so two threads never draw
    # one seed.
    with _generator_lock(generator):
        offset = generator.get_offset()
        generator.set_offset(offset + 4 * count)
    initial = generator.initial_seed().to_bytes(8, "little")
    return [int.from_bytes(hashlib.blake2b(initial + int(offset + 4 * k).to_bytes(8, "little"),
                                           digest_size=8).digest(), "little") >> 1
            for k in range(count)]


def phi(x: float) -> float:
    """Standard normal CDF, Phi(x) = erfc(-x / sqrt2) / 2 (accurate in the lower tail)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def round_to_dtype(value: float, dtype: torch.dtype) -> float:
    return torch.tensor(value, dtype=torch.float64).to(dtype).item()


def _step(value: float, dtype: torch.dtype, up: bool) -> float:
    """The representable neighbour of a representable `value` in `dtype`."""
    if dtype in (torch.float32, torch.float64):
        np_type = np.float32 if dtype == torch.float32 else np.float64
        return float(np.nextafter(np_type(value), np_type(np.inf if up else -np.inf)))
    bits = torch.tensor(value, dtype=dtype).view(torch.int16).item()
    if value == 0.0:
        bits = 0x0001 if up else -0x7FFF  # smallest subnormal of either sign (bit pattern 0x8001)
    elif (value > 0) == up:
        bits += 1
    else:
        bits -= 1
    return torch.tensor(bits, dtype=torch.int16).view(dtype).item()


def round_inward(a: float, b: float, dtype: torch.dtype) -> tuple[float, float]:
    """[a, b] shrunk to the nearest values of `dtype` inside it."""
    lo = round_to_dtype(a, dtype)
    if lo < a:
        lo = _step(lo, dtype, up=True)
    hi = round_to_dtype(b, dtype)
    if hi > b:
        hi = _step(hi, dtype, up=False)
    return lo, hi


def nearest_to_interval(a: float, b: float, dtype: torch.dtype) -> float:
    """The value of `dtype` nearest to [a, b], for an interval that holds none (ties: below)."""
    below = round_to_dtype(a, dtype)
    if below >= a:
        below = _step(below, dtype, up=False)
    above = _step(below, dtype, up=True)
    return below if a - below <= above - b else above


def half_open_limit(b: float, dtype: torch.dtype) -> float:
    """The smallest fp32 value that rounds to `b` or above in a 16-bit `dtype` (+inf for fp32
    and fp64): a uniform value at or above it is replaced by the lower bound, so the output
    stays in [a, b) (docs/contract.md)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return math.inf
    top = round_to_dtype(b, dtype)  # the smallest value of dtype >= b
    if top < b:
        top = _step(top, dtype, up=True)
    below = _step(top, dtype, up=False)
    midpoint = (top + below) / 2  # exact in fp32: one bit more than dtype's mantissa
    top_is_even = torch.tensor(top, dtype=dtype).view(torch.int16).item() % 2 == 0
    # fp32 -> dtype rounds to nearest, ties to even: the midpoint goes to `top` when it is even.
    return midpoint if top_is_even else float(np.nextafter(np.float32(midpoint), np.float32(np.inf)))


def uniform_params(a: float, b: float, dtype: torch.dtype = torch.float32) -> list[float]:
    """[scale, shift, limit] of a uniform on [a, b) for `dtype`: the difference is taken in
    fp64 on the host (fp32-math backends round both to fp32); limit: half_open_limit."""
    return [float(b) - float(a), float(a), half_open_limit(b, dtype)]


def normal_params(mean: float, std: float) -> list[float]:
    return [float(mean), float(std)]


def _fp64_math_dtype(dtype: torch.dtype) -> bool:
    """Outputs whose values are computed in fp64 (fp64, and complex128 through its real view)."""
    return dtype in (torch.float64, torch.complex128)


def normal_fill_params(mean: float, std: float, dtype: torch.dtype) -> tuple[int, list[float]]:
    """(distribution code, parameters) of a normal fill of `dtype`.

    The fp32-math normal forms ``r * std`` before its fma, which overflows for std > 2^125
    although the value ``r * std * cos + mean`` may not: such a normal (fp32, fp16, bf16
    outputs) is the fp64-math trunc_normal on (-inf, inf), whose only rounding into the output
    dtype is its last, so it overflows where the exact value does."""
    if not _fp64_math_dtype(dtype) and float(std) > PLAN_LIMITS["NORMAL_FP32_MAX_STD"]:
        inf = math.inf
        return Distribution.TRUNC_NORMAL_FP64, [float(mean), float(std), 0.0, 1.0, -inf, inf,
                                                -inf, inf]
    return Distribution.NORMAL, normal_params(mean, std)


def trunc_normal_params(
    mean: float, std: float, a: float, b: float, dtype: torch.dtype
) -> tuple[int, list[float]]:
    """(distribution code, parameters) of a truncated normal on [a, b] for `dtype`."""
    return _trunc_normal_params(mean, std, (a - mean) / std, (b - mean) / std, a, b,
                                (b - a) / std, dtype)


def trunc_normal_standard_params(
    mean: float, std: float, a: float, b: float, dtype: torch.dtype
) -> tuple[int, list[float]]:
    """(distribution code, parameters) of `mean + std * z`, z a standard normal truncated to
    [a, b] (TF / JAX semantics)."""
    return _trunc_normal_params(mean, std, a, b, mean + std * a, mean + std * b, b - a, dtype)


def _flat_log_ratio(alpha: float, beta: float, width: float) -> float:
    """log(max / min) of the standard normal density on [alpha, beta] (mirrored: alpha + beta
    <= 0), from the width `width` = beta - alpha as the bounds give it (exact for an interval
    narrower than the rounding of alpha and beta)."""
    if beta <= 0.0:  # [-(L + D), -L]: (L + D)^2 / 2 - L^2 / 2, a sum of non-negative terms
        value = width * -beta + 0.5 * width * width
    else:  # holds 0, and |alpha| >= beta
        value = 0.5 * alpha * alpha
    return value if math.isfinite(value) else math.inf


def closed_uniform_params(lo: float, hi: float, dtype: torch.dtype) -> list[float] | None:
    """[scale, shift, limit] of the uniform formula whose values all lie in [lo, hi] (values
    of `dtype`), with no half-open mapping (limit +inf): the scale is hi - lo, lowered by ulps
    until the largest u (1 - 2^-24, or 1 - 2^-53 for fp64 outputs) lands at most on hi. None
    where fp32 math cannot hold hi - lo."""
    if _fp64_math_dtype(dtype):
        scale = hi - lo
        while scale > 0 and (1.0 - 2.0**-53) * scale + lo > hi:
            scale = float(np.nextafter(scale, 0.0))
        return [scale, lo, math.inf]
    scale = float(np.float32(hi - lo))
    if not math.isfinite(scale):
        return None
    top = Fraction(1) - Fraction(1, 2**24)
    while scale > 0 and top * Fraction(scale) + Fraction(lo) > Fraction(hi):
        scale = float(np.nextafter(np.float32(scale), np.float32(0.0)))
    return [scale, lo, math.inf]


def _trunc_normal_params(mean, std, alpha, beta, lo, hi, width, dtype) -> tuple[int, list[float]]:
    """A truncated normal with standardised bounds [alpha, beta] (`width` = beta - alpha, taken
    from the bounds themselves), its values clamped to [lo, hi] rounded inward to `dtype`.

    The ordinary formulas where they resolve the interval, else (docs/contract.md, "Extreme
    parameters"): a uniform where the density is flat across it to the output's precision;
    fp64 math where fp32 cannot resolve Phi over it; tail coordinates (TRUNC_NORMAL_TAIL, on
    the host) where fp64 cannot either."""
    sign = 1.0
    if alpha + beta > 0:
        alpha, beta, sign = -beta, -alpha, -1.0
    a_in, b_in = round_inward(lo, hi, dtype)
    if a_in > b_in:  # no value of `dtype` lies in [lo, hi]: the one nearest to it, everywhere
        return Distribution.CONSTANT, [nearest_to_interval(lo, hi, dtype)]
    fp64_out = _fp64_math_dtype(dtype)
    flat = PLAN_LIMITS["FLAT_LOG_RATIO_FP64" if fp64_out else "FLAT_LOG_RATIO_FP32"]
    if _flat_log_ratio(alpha, beta, width) <= flat:
        uniform = closed_uniform_params(a_in, b_in, dtype)
        if uniform is not None:
            return Distribution.UNIFORM, uniform
    p_alpha = phi(alpha)
    p_beta = phi(beta)
    dp = p_beta - p_alpha
    if beta <= 0.0 and (p_beta < PLAN_LIMITS["FP64_PHI_MIN"]
                        or dp < p_beta * PLAN_LIMITS["FP64_PHI_MIN_RELATIVE_WIDTH"]):
        near = float(hi if sign > 0 else lo)  # the bound at beta, the density's high end
        return Distribution.TRUNC_NORMAL_TAIL, [
            float(mean), sign * float(std), near, -beta, width, interval_exponent(-beta, width),
            a_in, b_in]
    dist = Distribution.TRUNC_NORMAL
    if (fp64_out or beta < FP32_TRUNC_NORMAL_MIN_BETA
            or dp < p_beta * PLAN_LIMITS["FP32_PHI_MIN_RELATIVE_WIDTH"]
            or not (abs(mean) <= FP32_MAX and abs(std) <= FP32_MAX)):
        dist = Distribution.TRUNC_NORMAL_FP64
    return dist, [float(mean), sign * float(std), p_alpha, dp, alpha, beta, a_in, b_in]


def constant_params(value: float, dtype: torch.dtype) -> list[float]:
    # Rounded once, here, exactly as torch's fill_ rounds it, so no backend rounds twice.
    if type(value) is float and math.isfinite(value):  # without a tensor: C's casts, as torch's
        if dtype == torch.float64:
            return [value]
        if dtype == torch.float32 and abs(value) <= FP32_MAX:
            return [_FP32.unpack(_FP32.pack(value))[0]]
    return [round_to_dtype(value, dtype)]


_FP32 = struct.Struct("<f")  # a double rounded to fp32 (round to nearest, ties to even)


def describe_parameters(dist: int, params: Sequence[float]) -> str:
    """A fill's parameters in words: "-0.1, 0.1" (uniform's bounds), "mean=0, std=0.02",
    "mean=0, std=0.02, a=-2, b=2" (trunc_normal), "0.25" (constant)."""
    if dist == Distribution.UNIFORM:
        return f"{params[1]:.6g}, {params[1] + params[0]:.6g}"
    if dist == Distribution.NORMAL:
        return f"mean={params[0]:.6g}, std={params[1]:.6g}"
    if dist == Distribution.CONSTANT:
        return f"{params[0]:.6g}"
    mean, std, lo, hi = params[0], abs(params[1]), params[6], params[7]
    return f"mean={mean:.6g}, std={std:.6g}, a={lo:.6g}, b={hi:.6g}"


def distribution_name(dist: int) -> str:
    """"uniform", "normal", "trunc_normal" (either math) or "constant"."""
    if dist in (Distribution.TRUNC_NORMAL_FP64, Distribution.TRUNC_NORMAL_TAIL):
        return "trunc_normal"
    return Distribution(dist).name.lower()


def describe_fill(dist: int, params: Sequence[float]) -> str:
    """A fill's distribution in words, e.g. "normal(mean=0, std=0.02)" (the form of
    `fused()`'s ``Recorder.describe``; `explain()` shows its two parts in two columns)."""
    return f"{distribution_name(dist)}({describe_parameters(dist, params)})"


def negated_params(dist: Distribution, params: list[float]) -> list[float]:
    """Parameters whose contract values are exactly the negatives of those of `params`.

    Every form is odd in its parameters under round-to-nearest: fma(u, -w, -lo) ==
    -fma(u, w, lo), fma(z, -s, -m) == -fma(z, s, m), and a clamp into [-hi, -lo] of a negated
    value is the negated clamp into [lo, hi]. A negative view (``tensor._neg_view()``,
    ``z.conj().imag``) is written through its plain view with these.
    """
    if dist == Distribution.CONSTANT:
        return [-params[0]]
    if dist == Distribution.UNIFORM:  # [scale, shift, limit]: a limit only bounds 16-bit values
        scale, shift, limit = params
        if math.isfinite(limit):
            raise InitValueError(
                "a half-open fp16 / bf16 uniform cannot be written negated exactly; "
                "fill a plain tensor and negate it")
        return [-scale, -shift, limit]
    if dist == Distribution.NORMAL:
        return [-params[0], -params[1]]
    if dist == Distribution.TRUNC_NORMAL_TAIL:  # [mean, +-std, near bound, L, D, h(D), a, b]
        mean, signed_std, near, tail_l, tail_d, h_d, a_in, b_in = params
        return [-mean, -signed_std, -near, tail_l, tail_d, h_d, -b_in, -a_in]
    mean, signed_std, p_alpha, dp, alpha, beta, a_in, b_in = params
    return [-mean, -signed_std, p_alpha, dp, alpha, beta, -b_in, -a_in]
