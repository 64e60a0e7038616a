"""Planners: a tensor and an initialiser's arguments in, the contract's (distribution,
parameters) out, every argument checked with torch.nn.init's exception types and messages.

Pure scalar work on the tensor's metadata: nothing is drawn or written here. The drop-in
functions, the whole-model specs and the registry of initialisers call these.
"""
from __future__ import annotations

import math
import sys
import warnings

import torch
from torch import Tensor

from .contract import (
    Distribution,
    constant_params,
    normal_fill_params,
    trunc_normal_params,
    trunc_normal_standard_params,
    uniform_params,
)
from .errors import InitValueError, ZeroStdError
from .gains import _calculate_correct_fan, _calculate_fan_in_and_fan_out, calculate_gain
from .plan import (DTYPE_CODES, PLAIN_TENSOR_TYPES, check_finite, check_float_dtype,
                   check_no_internal_overlap)

# JAX / Keras: the std of a standard normal truncated to [-2, 2].
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978

VARIANCE_SCALING_MODES = ("fan_in", "fan_out", "fan_avg")
VARIANCE_SCALING_DISTRIBUTIONS = ("truncated_normal", "normal", "untruncated_normal", "uniform")

# The C++ type names of the floating dtypes, which torch's "... out of bounds for <name>" uses.
_CPP_TYPE_NAMES = {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
                   torch.bfloat16: "c10::BFloat16"}


def warn_at_caller(message: str, category: type = UserWarning) -> None:
    """Warn at the first frame outside fastinit, as torch.nn.init's warnings name the caller."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "fastinit":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_FINFO: dict = {}


def _finfo(dtype: torch.dtype):
    """torch.finfo of a dtype, looked up once."""
    finfo = _FINFO.get(dtype)
    if finfo is None:
        finfo = _FINFO[dtype] = torch.finfo(dtype)
    return finfo


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_random_target(tensor: Tensor, fn_name: str, allow_complex: bool = False) -> torch.dtype:
    """A random fill's target: a dtype the contract fills, no elements sharing memory. Returns
    its dtype."""
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        dtype = tensor.dtype
        if dtype not in DTYPE_CODES:
            check_float_dtype(tensor, fn_name, allow_complex)
        if type(tensor) in PLAIN_TENSOR_TYPES and tensor.is_contiguous():
            return dtype  # (no DTensor placements to check, and dense memory overlaps nothing)
    check_no_internal_overlap(tensor, fn_name)
    return dtype


def uniform_plan(fn_name, tensor, a, b) -> tuple[Distribution, list]:
    """Validate a uniform fill of `tensor` on [a, b); return its contract parameters. A complex
    tensor gets real and imaginary parts each in U(a, b), as torch's uniform_."""
    dtype = check_random_target(tensor, fn_name, allow_complex=True)
    if not (type(a) is float and type(b) is float and math.isfinite(a) and math.isfinite(b)):
        for name, side, bound in (("a", "from", a), ("b", "to", b)):
            # torch's wording ("from/to is out of bounds for <dtype>") for nan and inf bounds
            if isinstance(bound, (int, float)) and not math.isfinite(bound):
                raise InitValueError(
                    f"{fn_name}: {name} must be finite, got {name}={bound}: "
                    f"{side} is out of bounds for {tensor.dtype}"
                )
        check_finite(fn_name, a=a, b=b)
        a, b = float(a), float(b)
    if a > b:
        raise InitValueError(
            f"uniform_ expects to return a [from, to) range, but found from={_fmt(a)} > to={_fmt(b)}"
        )
    finfo = _finfo(dtype)
    for side, bound in (("from", a), ("to", b)):
        if not finfo.min <= bound <= finfo.max:
            raise InitValueError(
                f"{fn_name}: {side} is out of bounds for {dtype}, got {side}={_fmt(bound)}"
            )
    if b - a > finfo.max:
        raise InitValueError(
            f"{fn_name}: uniform_ expects to-from <= {_fmt(finfo.max)} for {dtype}, but "
            f"found to={_fmt(b)} and from={_fmt(a)} which result in to-from to exceed the limit"
        )
    return Distribution.UNIFORM, uniform_params(a, b, dtype)


def normal_plan(fn_name, tensor, mean, std) -> tuple[Distribution, list]:
    """Validate a normal fill of `tensor`; return its contract parameters. A complex tensor gets
    independent real and imaginary parts, each N(mean, std^2 / 2), as torch's normal_."""
    dtype = check_random_target(tensor, fn_name, allow_complex=True)
    check_finite(fn_name, mean=mean, std=std)
    if std < 0:
        raise InitValueError(f"normal expects std >= 0.0, but found std {_fmt(std)}")
    if dtype.is_complex:
        std = float(std) / math.sqrt(2)
    return normal_fill_params(mean, std, dtype)


def trunc_normal_plan(fn_name, tensor, mean, std, a, b, warn=True,
                      standard_bounds=False) -> tuple[Distribution, list]:
    """Validate a truncated normal fill of `tensor`; return its contract parameters.

    With `standard_bounds`, [a, b] bounds the standard normal before it is scaled by `std` and
    shifted by `mean` (TF / JAX semantics); otherwise it bounds the values themselves."""
    check_random_target(tensor, fn_name)
    check_finite(fn_name, mean=mean, std=std)
    for name, bound in (("a", a), ("b", b)):
        if math.isnan(float(bound)):
            raise InitValueError(f"{fn_name}: {name} must not be nan")
    mean, std, a, b = float(mean), float(std), float(a), float(b)
    if std == 0:
        raise ZeroStdError(f"{fn_name}: std must be positive, got std=0 (float division by zero)")
    if std < 0:
        raise InitValueError(f"{fn_name}: std must be positive, got std={_fmt(std)}")
    if a > b:
        raise InitValueError(
            f"uniform_ expects to return a [from, to) range, but found from={_fmt(a)} > to={_fmt(b)}"
        )
    if standard_bounds:
        _check_trunc_normal_range(fn_name, tensor, mean + std * a, mean + std * b)
        return trunc_normal_standard_params(mean, std, a, b, tensor.dtype)
    if warn and ((mean < a - 2 * std) or (mean > b + 2 * std)):
        warn_at_caller(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect."
        )
    _check_trunc_normal_range(fn_name, tensor, a, b)
    # torch's trunc_normal_ samples its uniform_(a, b) (with rejection) where the interval holds
    # at most 0.3 of the normal's mass: that uniform_'s bound checks are its errors there.
    norm_cdf = lambda x: (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0  # noqa: E731 (torch's)
    if norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std) <= 0.3:
        finfo = torch.finfo(tensor.dtype)
        for side, bound in (("from", a), ("to", b)):
            if not finfo.min <= bound <= finfo.max:
                raise InitValueError(
                    f"{fn_name}: {side} is out of bounds for "
                    f"{_CPP_TYPE_NAMES[tensor.dtype]}, got {side}={_fmt(bound)}")
        uniform_plan(fn_name, tensor, a, b)  # its check of b - a against the dtype's range
    return trunc_normal_params(mean, std, a, b, tensor.dtype)


def _check_trunc_normal_range(fn_name, tensor, lo, hi) -> None:
    """Raise where [lo, hi] holds no finite value of the tensor's dtype (all above or all below
    its range): every value would be infinite. Torch's wording: from is checked first."""
    finfo = torch.finfo(tensor.dtype)
    if lo > finfo.max or hi < finfo.min:
        side = "from" if not finfo.min <= lo <= finfo.max else "to"
        raise InitValueError(
            f"{fn_name}: the interval [{_fmt(lo)}, {_fmt(hi)}] holds no finite value of "
            f"{tensor.dtype}: {side} is out of bounds for {_CPP_TYPE_NAMES[tensor.dtype]}")


def check_constant_fits(fn_name, tensor, val) -> None:
    """torch's fill_ refuses a finite value that overflows a floating dtype, and so does this."""
    if tensor.dtype in DTYPE_CODES and isinstance(val, (int, float)) and math.isfinite(val) \
            and abs(val) > _finfo(tensor.dtype).max:
        raise InitValueError(
            f"{fn_name}: value cannot be converted to type {tensor.dtype} without overflow, "
            f"got val={val}"
        )


def constant_plan(fn_name, tensor, val) -> tuple[Distribution, list]:
    """A constant fill of a floating `tensor`: `val` rounded to its dtype, as torch's fill_
    rounds it (the integer, bool and complex tensors torch's fill_ writes get `val` as is)."""
    check_constant_fits(fn_name, tensor, val)
    if tensor.dtype not in DTYPE_CODES:
        return Distribution.CONSTANT, [val]
    return Distribution.CONSTANT, constant_params(val, tensor.dtype)


def xavier_plan(tensor: Tensor, gain: float, uniform: bool) -> tuple[Distribution, list]:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    if uniform:
        a = math.sqrt(3.0) * std
        return uniform_plan("xavier_uniform_", tensor, -a, a)
    return normal_plan("xavier_normal_", tensor, 0.0, std)


def kaiming_plan(tensor: Tensor, a, mode, nonlinearity, uniform: bool) -> tuple[Distribution, list]:
    if 0 in tensor.shape:  # torch warns and writes nothing (and divides by no zero fan)
        warn_at_caller("Initializing zero-element tensors is a no-op")
        return Distribution.CONSTANT, [0.0]
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    if uniform:
        bound = math.sqrt(3.0) * std
        return uniform_plan("kaiming_uniform_", tensor, -bound, bound)
    return normal_plan("kaiming_normal_", tensor, 0.0, std)


def _check_variance_scaling_names(mode, distribution) -> None:
    if mode not in VARIANCE_SCALING_MODES:
        raise ValueError(
            f"variance_scaling_: mode {mode!r} not supported, please use one of "
            f"{list(VARIANCE_SCALING_MODES)}"
        )
    if distribution not in VARIANCE_SCALING_DISTRIBUTIONS:
        raise ValueError(
            f"variance_scaling_: distribution {distribution!r} not supported, please use one of "
            f"{list(VARIANCE_SCALING_DISTRIBUTIONS)}"
        )


def variance_scaling_plan(tensor, scale, mode, distribution) -> tuple[Distribution, list]:
    _check_variance_scaling_names(mode, distribution)
    check_finite("variance_scaling_", scale=scale)
    if scale <= 0:
        raise InitValueError(f"variance_scaling_: scale must be positive, got scale={scale}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, n)
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / TRUNCATED_NORMAL_STD_CORRECTION
        return trunc_normal_plan(
            "variance_scaling_", tensor, 0.0, std, -2.0 * std, 2.0 * std
        )
    if distribution in ("normal", "untruncated_normal"):
        return normal_plan("variance_scaling_", tensor, 0.0, math.sqrt(variance))
    limit = math.sqrt(3.0 * variance)
    return uniform_plan("variance_scaling_", tensor, -limit, limit)


def check_2d_shape(tensor: Tensor) -> None:
    """eye_'s and sparse_'s shape: a matrix."""
    if tensor.ndimension() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")


def check_dirac_shape(tensor: Tensor, groups: int) -> None:
    if tensor.ndimension() not in [3, 4, 5]:
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if tensor.size(0) % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")


def check_orthogonal_shape(tensor: Tensor) -> None:
    if tensor.ndimension() < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")


def check_sparse_args(tensor: Tensor, sparsity, std) -> None:
    """sparse_'s argument checks, in torch's order, after its shape check."""
    check_finite("sparse_", sparsity=sparsity)
    if not 0.0 <= sparsity <= 1.0:
        raise InitValueError(f"sparse_: sparsity must be in [0, 1], got sparsity={sparsity}")
    check_random_target(tensor, "sparse_")
