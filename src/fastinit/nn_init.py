"""The drop-in API: every public function of ``torch.nn.init`` with the same signature, errors
and warnings, plus a keyword-only ``seed=``; and LeCun and variance-scaling initialisers.

Each random function validates its input completely, then draws its seed (``seed=`` or one draw
from ``generator`` / the default CPU generator, whatever the tensor's device), then fills the
tensor through the selected backend under the random-number contract, stream 0.
"""
from __future__ import annotations

import functools
import inspect
import math
import sys
import warnings
from typing import (Callable, Literal, NamedTuple, Optional, TypeVar, get_args,
                    get_origin, get_type_hints)

import torch
from torch import Tensor

from .fused import TORCH_INIT_FUNCTIONS, records_meta, run_now, submit
from .contract import (
    Distribution,
    U64_MASK,
    check_generator,
    check_seed,
    constant_params,
    draw_seed,
    normal_fill_params,
    normal_params,
    trunc_normal_params,
    trunc_normal_standard_params,
    uniform_params,
)
from .errors import InitValueError, NotATensorError, UnsupportedLayoutError, ZeroStdError
from .sharding import check_unsharded, local_tensor
from .gains import _calculate_correct_fan, _calculate_fan_in_and_fan_out, calculate_gain
from .qr import qr_on_one_thread
from .plan import (
    DTYPE_CODES,
    check_finite,
    check_float_dtype,
    check_no_internal_overlap,
    check_storage,
    has_real_storage,
    make_fill,
)

_NonlinearityType = Literal[
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
]
_FanMode = Literal["fan_in", "fan_out"]

# JAX / Keras: the std of a standard normal truncated to [-2, 2].
TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978

_F = TypeVar("_F", bound=Callable)


def _warn_at_caller(message: str, category: type = UserWarning) -> None:
    """Warn at the first frame outside fastinit, as torch.nn.init's warnings name the caller."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "fastinit":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _torch_fills_layout(tensor: Tensor) -> bool:
    """True for the tensors torch.nn.init fills and fastinit leaves to it: sparse, nested,
    mkldnn and quantized tensors (fastinit writes strided dense memory only)."""
    return (tensor.layout != torch.strided or tensor.is_nested or tensor.is_mkldnn
            or tensor.is_quantized)


def _delegate_to_torch(fn_name: str, tensor: Tensor, args: tuple, kwargs: dict) -> Tensor:
    torch_fn = TORCH_INIT_FUNCTIONS.get(fn_name)
    if torch_fn is None:
        raise UnsupportedLayoutError(
            f"{fn_name}: cannot fill a tensor of layout {tensor.layout}"
            f"{' (nested)' if tensor.is_nested else ''}{' (quantized)' if tensor.is_quantized else ''}; "
            "fastinit fills strided dense tensors, and torch.nn.init has no such function")
    seed = kwargs.pop("seed", None)
    bound = inspect.signature(torch_fn).bind(tensor, *args, **kwargs)
    if seed is not None:  # torch's generator, seeded with `seed`, in place of a draw
        generator = torch.Generator(device=tensor.device)
        bound.arguments["generator"] = generator.manual_seed(check_seed(seed))
    return torch_fn(*bound.args, **bound.kwargs)


class _TracedOp(NamedTuple):
    """The custom op a drop-in function is traced as under torch.compile."""
    op: Callable
    arguments: tuple  # (name, schema type, default) of the op's arguments after the tensor
    random: bool  # it takes a `seed` (the op's keyword) or draws one from a generator
    parameters: tuple  # the names of the function's parameters after the tensor
    positional: int  # how many of them can be passed positionally


_TRACED_OPS: dict = {}  # the drop-in function's name -> its _TracedOp
_SCHEMA_TYPES = {float: "float", int: "int", str: "str"}


def _op_arguments(fn: Callable, parameters: list) -> tuple:
    """(name, schema type, default) of `fn`'s `parameters` less `generator` and `seed`, the
    types read from the annotations (a Literal is its values' type)."""
    hints = get_type_hints(fn)
    arguments = []
    for param in parameters:
        if param.name in ("generator", "seed"):
            continue
        hint = hints[param.name]
        if get_origin(hint) is Literal:
            hint = type(get_args(hint)[0])
        arguments.append((param.name, _SCHEMA_TYPES[hint], param.default))
    return tuple(arguments)


def _schema_default(kind: str, default) -> str:
    if default is inspect.Parameter.empty:
        return ""
    if kind == "str":
        return f'="{default}"'
    return f"={float(default)!r}" if kind == "float" else f"={default}"


def _fits_schema(value, kind: str) -> bool:
    """`value` passes as the op's `kind` argument unchanged: no bool, no int past 64 bits, and
    as a float only an int the float holds exactly."""
    if isinstance(value, bool):
        return False
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, int):
        return -(1 << 63) <= value < (1 << 63) and (kind == "int" or float(value) == value)
    return kind == "float" and isinstance(value, float)


def _write_nothing(tensor, *args, **seed) -> None:
    """The ops' fake implementation: a fake tensor has no memory to write. (The real call
    validates the arguments when it runs, so a compiled call raises an eager call's errors.)"""


# The ops' kernels for negative and conjugate views (kept alive: a registration lasts as long as
# its library).
_MATH_BIT_KERNELS = torch.library.Library("fastinit", "IMPL")


def _through_plain_tensor(op: Callable) -> Callable:
    """`op`'s kernel for a negative or conjugate view (the Negative and Conjugate dispatch keys):
    the op fills a plain tensor, which torch copies into the view, so the view reads the values
    a plain tensor gets. (torch's fallback for those keys needs an op that returns its tensor.)"""

    def kernel(tensor, *args, **kwargs):
        plain = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        op(plain, *args, **kwargs)
        with torch.no_grad():
            tensor.copy_(plain)

    return kernel


def _register_traced_op(fn: Callable) -> None:
    """fastinit::<name>: a custom op that mutates its tensor and runs the call eagerly (see
    _eager_call); its fake implementation writes nothing, and a negative or conjugate view is
    filled through a plain tensor. The op takes `fn`'s leading arguments (all but `generator`
    and `seed`), with their defaults, positionally as arg0, arg1, ... (torch reserves some names,
    such as `mode`), and a random function's seed as the keyword `seed`."""
    name = fn.__name__
    parameters = list(inspect.signature(fn).parameters.values())[1:]  # after the tensor
    names = tuple(p.name for p in parameters)
    arguments = _op_arguments(fn, parameters)
    assert names[:len(arguments)] == tuple(a for a, _, _ in arguments), names  # see _traced_call
    random = "seed" in names
    schema = "".join(f", {kind} arg{i}{_schema_default(kind, default)}"
                     for i, (_, kind, default) in enumerate(arguments))
    schema = f"(Tensor(a!) tensor{schema}{', *, int seed' if random else ''}) -> ()"

    def run(tensor, *args, **seed):
        if random:  # the op's int is signed 64-bit; the seed is unsigned 64-bit
            seed["seed"] &= U64_MASK
        _eager_call(fn, tensor, args, seed)

    op_name = name.rstrip("_")
    op = torch.library.custom_op(f"fastinit::{op_name}", run, mutates_args=("tensor",),
                                 schema=schema)
    op.register_fake(_write_nothing)
    for math_bit in ("Negative", "Conjugate"):
        _MATH_BIT_KERNELS.impl(op_name, _through_plain_tensor(op), math_bit)
    positional = sum(p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)
    _TRACED_OPS[name] = _TracedOp(op, arguments, random, names, positional)


def _traced_call(fn: Callable, tensor: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """A drop-in call met by torch.compile: its custom op when the call's arguments bind to the
    function's parameters, are plain numbers / strings and, for a random function, include a
    `seed=`; otherwise eager, outside the graph (a graph break), so that a draw from the
    generator, or an error, happens exactly as it would without compile."""
    traced = _TRACED_OPS[fn.__name__]
    values = [args[i] if i < len(args) else kwargs.get(arg, default)
              for i, (arg, _, default) in enumerate(traced.arguments)]
    seed = kwargs.get("seed")
    binds = len(args) <= traced.positional and all(  # else eager raises Python's TypeError
        k in traced.parameters and k not in traced.parameters[:len(args)] for k in kwargs)
    traceable = binds and all(_fits_schema(v, kind)
                              for v, (_, kind, _) in zip(values, traced.arguments))
    if not traceable or (traced.random and seed is None):
        # (torch.compiler.disable here, not as a decorator: it imports torch._dynamo, which
        # is loaded anyway while compiling but would cost `import fastinit` a second)
        return torch.compiler.disable(_eager_call)(fn, tensor, args, kwargs)
    seed_kwargs = {}
    if traced.random:
        seed = check_seed(seed)
        seed_kwargs["seed"] = seed - (1 << 64) if seed >= (1 << 63) else seed
    traced.op(tensor, *values, **seed_kwargs)
    return tensor


def _eager_call(fn: Callable, tensor: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """A drop-in call run eagerly: refuses a non-tensor as torch does, hands the layouts it does
    not fill to torch.nn.init, refuses a freed or shrunk storage, then runs `fn`."""
    if not isinstance(tensor, Tensor):
        raise NotATensorError(
            f"{fn.__name__}: expected a torch.Tensor, got {type(tensor).__module__}."
            f"{type(tensor).__qualname__} (not a tensor)")
    if _torch_fills_layout(tensor):
        return _delegate_to_torch(fn.__name__, tensor, args, kwargs)
    if has_real_storage(tensor):
        check_storage(tensor)  # a freed (FSDP) or shrunk storage: torch's error, no write
    return fn(tensor, *args, **kwargs)


def _drop_in(fn: Callable) -> Callable:
    """The public form of a drop-in function: eager (see _eager_call), and under torch.compile
    one custom op (see _traced_call)."""

    @functools.wraps(fn)
    def drop_in(tensor, *args, **kwargs):
        if torch.compiler.is_compiling():
            return _traced_call(fn, tensor, args, kwargs)
        return _eager_call(fn, tensor, args, kwargs)

    _register_traced_op(fn)
    return drop_in


def _resolve_seed(generator, seed) -> int:
    """`seed`, else one draw from `generator` (callers have checked its type)."""
    return draw_seed(generator) if seed is None else seed


def _writes_nothing(tensor: Tensor) -> bool:
    """A tensor without memory (meta, fake, functional), unless a dry-run fused() block records
    fills of meta tensors."""
    return not has_real_storage(tensor) and not (tensor.is_meta and records_meta())


def _fill_random(tensor, dist, params, generator, seed) -> Tensor:
    check_generator(generator)
    if _writes_nothing(tensor) or tensor.numel() == 0:
        return tensor
    seed = _resolve_seed(generator, seed)
    with torch._C.DisableTorchFunction():
        negated_half_open = tensor.is_neg() and dist == Distribution.UNIFORM and math.isfinite(params[2])
    if negated_half_open:
        # a half-open fp16 / bf16 uniform has no exactly negated parameters (docs/contract.md):
        # a plain tensor gets the values, and torch copies them into the negative view
        with torch._C.DisableTorchFunction():
            plain = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        run_now([make_fill(plain, dist, params, seed)], tensor, "uniform (negative view)")
        with torch.no_grad(), torch._C.DisableTorchFunction():
            tensor.copy_(plain)
        return tensor
    submit([make_fill(tensor, dist, params, seed)])
    return tensor


def _check_random_target(tensor: Tensor, fn_name: str, allow_complex: bool = False) -> None:
    check_float_dtype(tensor, fn_name, allow_complex)
    check_no_internal_overlap(tensor, fn_name)


def _fmt(x: float) -> str:
    return f"{x:g}"


# The C++ type names of the floating dtypes, which torch's "... out of bounds for <name>" uses.
_CPP_TYPE_NAMES = {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
                 torch.bfloat16: "c10::BFloat16"}


def _uniform_plan(fn_name, tensor, a, b) -> tuple[Distribution, list]:
    """Validate a uniform fill of `tensor` on [a, b); return its contract parameters. A complex
    tensor gets real and imaginary parts each in U(a, b), as torch's uniform_."""
    _check_random_target(tensor, fn_name, allow_complex=True)
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
    finfo = torch.finfo(tensor.dtype)
    for side, bound in (("from", a), ("to", b)):
        if not finfo.min <= bound <= finfo.max:
            raise InitValueError(
                f"{fn_name}: {side} is out of bounds for {tensor.dtype}, got {side}={_fmt(bound)}"
            )
    if b - a > finfo.max:
        raise InitValueError(
            f"{fn_name}: uniform_ expects to-from <= {_fmt(finfo.max)} for {tensor.dtype}, but "
            f"found to={_fmt(b)} and from={_fmt(a)} which result in to-from to exceed the limit"
        )
    return Distribution.UNIFORM, uniform_params(a, b, tensor.dtype)


def _uniform_checked(fn_name, tensor, a, b, generator, seed) -> Tensor:
    return _fill_random(tensor, *_uniform_plan(fn_name, tensor, a, b), generator, seed)


def _normal_plan(fn_name, tensor, mean, std) -> tuple[Distribution, list]:
    """Validate a normal fill of `tensor`; return its contract parameters. A complex tensor gets
    independent real and imaginary parts, each N(mean, std^2 / 2), as torch's normal_."""
    _check_random_target(tensor, fn_name, allow_complex=True)
    check_finite(fn_name, mean=mean, std=std)
    if std < 0:
        raise InitValueError(f"normal expects std >= 0.0, but found std {_fmt(std)}")
    if tensor.is_complex():
        std = float(std) / math.sqrt(2)
    return normal_fill_params(mean, std, tensor.dtype)


def _normal_checked(fn_name, tensor, mean, std, generator, seed) -> Tensor:
    return _fill_random(tensor, *_normal_plan(fn_name, tensor, mean, std), generator, seed)


def _trunc_normal_plan(fn_name, tensor, mean, std, a, b, warn=True,
                       standard_bounds=False) -> tuple[Distribution, list]:
    """Validate a truncated normal fill of `tensor`; return its contract parameters.

    With `standard_bounds`, [a, b] bounds the standard normal before it is scaled by `std` and
    shifted by `mean` (TF / JAX semantics); otherwise it bounds the values themselves."""
    _check_random_target(tensor, fn_name)
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
        _warn_at_caller(
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
        _uniform_plan(fn_name, tensor, a, b)  # its check of b - a against the dtype's range
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


def _trunc_normal_checked(fn_name, tensor, mean, std, a, b, generator, seed, warn=True) -> Tensor:
    plan = _trunc_normal_plan(fn_name, tensor, mean, std, a, b, warn=warn)
    return _fill_random(tensor, *plan, generator, seed)


def _trunc_normal_tf_checked(fn_name, tensor, mean, std, a, b, generator, seed) -> Tensor:
    plan = _trunc_normal_plan(fn_name, tensor, mean, std, a, b, standard_bounds=True)
    return _fill_random(tensor, *plan, generator, seed)


@_drop_in
def uniform_(
    tensor: Tensor,
    a: float = 0.0,
    b: float = 1.0,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from the uniform distribution :math:`\mathcal{U}(a, b)`.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        a: the lower bound of the uniform distribution
        b: the upper bound of the uniform distribution
        generator: the torch Generator the call's seed is drawn from, with one
            ``torch.randint`` whatever the tensor's device (default: None, torch's default CPU
            generator, so ``torch.manual_seed`` makes the call reproducible). Every other
            function with a ``generator`` argument takes it in this sense.
        seed: keyword-only; a seed in [0, 2**64) to use instead of drawing one (default:
            None, draw it). The generator is then left untouched, and the values depend only on
            (seed, element index): the same on every backend and device, whole or sharded.
            Every other function with a ``seed`` argument takes it in this sense.

    Returns:
        `tensor`, filled (a meta tensor is returned as is).

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `a > b`, or a bound that is not finite or not representable in the dtype,
            or `tensor` is an expanded view whose elements share memory (also a ValueError and a
            RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.uniform_(w)
    """
    return _uniform_checked("uniform_", tensor, a, b, generator, seed)


@_drop_in
def normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from the normal distribution :math:`\mathcal{N}(\text{mean}, \text{std}^2)`.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        mean: the mean of the normal distribution
        std: the standard deviation of the normal distribution
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `std < 0`, or a mean or std that is not finite, or `tensor` is an expanded
            view whose elements share memory (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.normal_(w)
    """
    return _normal_checked("normal_", tensor, mean, std, generator, seed)


@_drop_in
def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from a truncated normal distribution.

    The values are effectively drawn from :math:`\mathcal{N}(\text{mean}, \text{std}^2)` with
    values outside :math:`[a, b]` excluded, by inverse-CDF sampling in one pass (no rejection
    loop): exact in the far tails too, e.g. ``a=4, b=5``. Every value lies in ``[a, b]`` after
    rounding to the tensor's dtype.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        mean: the mean of the normal distribution
        std: the standard deviation of the normal distribution
        a: the minimum cutoff value
        b: the maximum cutoff value
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `std < 0`, `a > b`, a nan bound, or a mean or std that is not finite,
            [a, b] holds no finite value of the dtype, a bound is outside the dtype's range
            where [a, b] holds at most 0.3 of the mass (torch's uniform_ branch), or `tensor`
            is an expanded view whose elements share memory (also a ValueError and a
            RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ZeroStdError: `std == 0` (also a ZeroDivisionError, as torch raises).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.trunc_normal_(w, std=0.02)
    """
    return _trunc_normal_checked("trunc_normal_", tensor, mean, std, a, b, generator, seed)


@_drop_in
def trunc_normal_tf_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input Tensor with a truncated normal in TensorFlow / JAX semantics.

    A standard normal truncated to :math:`[a, b]` is scaled by ``std`` and shifted by
    ``mean``, so the values lie in :math:`[\text{mean} + a\,\text{std},
    \text{mean} + b\,\text{std}]` (timm's ``trunc_normal_tf_``, JAX's
    ``truncated_normal``). :func:`trunc_normal_` instead bounds the values themselves.

    Args:
        tensor: an n-dimensional `torch.Tensor` of a floating-point dtype
        mean: the mean the standard truncated normal is shifted by
        std: the factor the standard truncated normal is scaled by (> 0)
        a: the lower cutoff, in standard deviations
        b: the upper cutoff, in standard deviations
        generator: the generator the seed is drawn from; see :func:`uniform_`
        seed: use this seed instead of drawing one; see :func:`uniform_`

    Returns:
        ``tensor``, filled.

    Raises:
        InitValueError: ``std`` is negative, a bound is nan or ``a > b``.
        ZeroStdError: ``std`` is 0.
        UnsupportedDtypeError: ``tensor`` is not floating point.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.trunc_normal_tf_(w, std=0.02)
    """
    return _trunc_normal_tf_checked("trunc_normal_tf_", tensor, mean, std, a, b, generator, seed)


@_drop_in
def constant_(tensor: Tensor, val: float) -> Tensor:
    r"""Fill the input Tensor with the value :math:`\text{val}`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (any dtype)
        val: the value to fill the tensor with

    Returns:
        `tensor`, filled.

    Raises:
        InitValueError: `val` overflows the tensor's floating-point dtype.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.constant_(w, 0.3)
    """
    if _writes_nothing(tensor):
        return tensor
    if tensor.dtype in DTYPE_CODES and isinstance(val, (int, float)) and math.isfinite(val):
        if abs(val) > torch.finfo(tensor.dtype).max:  # torch's fill_ refuses to overflow too
            raise InitValueError(
                f"constant_: value cannot be converted to type {tensor.dtype} without overflow, "
                f"got val={val}"
            )
    if tensor.numel() == 0:
        return tensor
    if tensor.dtype not in DTYPE_CODES or torch._debug_has_internal_overlap(local_tensor(tensor)) == 1:
        # Integer, bool and complex tensors and expanded views: torch's own fill is the
        # general path (every element gets the same value, so nothing depends on indices).
        with torch.no_grad():
            local_tensor(tensor).fill_(val)
            return tensor
    submit([make_fill(tensor, Distribution.CONSTANT, constant_params(val, tensor.dtype), 0)])
    return tensor


@_drop_in
def ones_(tensor: Tensor) -> Tensor:
    r"""Fill the input Tensor with the scalar value `1`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (any dtype)

    Returns:
        `tensor`, filled.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.ones_(w)
    """
    return constant_(tensor, 1.0)


@_drop_in
def zeros_(tensor: Tensor) -> Tensor:
    r"""Fill the input Tensor with the scalar value `0`.

    Args:
        tensor: an n-dimensional `torch.Tensor` (any dtype)

    Returns:
        `tensor`, filled.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.zeros_(w)
    """
    return constant_(tensor, 0.0)


def _check_eye_shape(tensor: Tensor) -> None:
    if tensor.ndimension() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")


def _check_dirac_shape(tensor: Tensor, groups: int) -> None:
    if tensor.ndimension() not in [3, 4, 5]:
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if tensor.size(0) % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")


def _check_orthogonal_shape(tensor: Tensor) -> None:
    if tensor.ndimension() < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")


@_drop_in
def eye_(tensor: Tensor) -> Tensor:
    r"""Fill the 2-dimensional input `Tensor` with the identity matrix.

    Preserves the identity of the inputs in `Linear` layers, where as many inputs are preserved
    as possible.

    Args:
        tensor: a 2-dimensional `torch.Tensor`

    Returns:
        `tensor`, filled.

    Raises:
        ValueError: `tensor` is not 2-dimensional.
        InitValueError: `tensor` is sharded (a DTensor with a Shard placement).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.eye_(w)
    """
    _check_eye_shape(tensor)
    check_unsharded(tensor, "eye_")
    local = local_tensor(tensor)
    with torch.no_grad():
        torch.eye(*local.shape, out=local, requires_grad=local.requires_grad)
    return tensor


@_drop_in
def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    r"""Fill the {3, 4, 5}-dimensional input `Tensor` with the Dirac delta function.

    Preserves the identity of the inputs in convolutional layers, as many input channels as
    possible; with ``groups > 1`` each group of channels preserves identity.

    Args:
        tensor: a {3, 4, 5}-dimensional `torch.Tensor`
        groups: number of groups in the conv layer (default: 1)

    Returns:
        `tensor`, filled.

    Raises:
        ValueError: `tensor` is not 3-, 4- or 5-dimensional, or its dim 0 is not divisible by
            `groups`.
        InitValueError: `tensor` is sharded (a DTensor with a Shard placement).

    Examples:
        >>> w = torch.empty(3, 24, 5, 5)
        >>> fastinit.dirac_(w, 3)
    """
    _check_dirac_shape(tensor, groups)
    sizes = tensor.size()
    if not has_real_storage(tensor):
        return tensor
    check_unsharded(tensor, "dirac_")
    local = local_tensor(tensor)
    out_chans_per_grp = sizes[0] // groups
    min_dim = min(out_chans_per_grp, sizes[1])
    centre = tuple(s // 2 for s in sizes[2:])
    with torch.no_grad():
        local.zero_()
        for g in range(groups):
            for d in range(min_dim):
                local[(g * out_chans_per_grp + d, d) + centre] = 1
    return tensor


@_drop_in
def xavier_uniform_(
    tensor: Tensor,
    gain: float = 1.0,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values using a Xavier uniform distribution.

    :math:`\mathcal{U}(-a, a)` with
    :math:`a = \text{gain} \times \sqrt{\frac{6}{\text{fan\_in} + \text{fan\_out}}}`
    (Glorot, X. & Bengio, Y. 2010).

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        gain: an optional scaling factor
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: a negative or non-finite gain, or `tensor` is an expanded view whose
            elements share memory (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: `tensor` has fewer than 2 dimensions (no fan_in and fan_out).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.xavier_uniform_(w, gain=fastinit.calculate_gain("relu"))
    """
    return _fill_random(tensor, *_xavier_plan(tensor, gain, uniform=True), generator, seed)


@_drop_in
def xavier_normal_(
    tensor: Tensor,
    gain: float = 1.0,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values using a Xavier normal distribution.

    :math:`\mathcal{N}(0, \text{std}^2)` with
    :math:`\text{std} = \text{gain} \times \sqrt{\frac{2}{\text{fan\_in} + \text{fan\_out}}}`.

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        gain: an optional scaling factor
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: a negative or non-finite gain, or `tensor` is an expanded view whose
            elements share memory (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: `tensor` has fewer than 2 dimensions (no fan_in and fan_out).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.xavier_normal_(w)
    """
    return _fill_random(tensor, *_xavier_plan(tensor, gain, uniform=False), generator, seed)


def _xavier_plan(tensor: Tensor, gain: float, uniform: bool) -> tuple[Distribution, list]:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    if uniform:
        a = math.sqrt(3.0) * std
        return _uniform_plan("xavier_uniform_", tensor, -a, a)
    return _normal_plan("xavier_normal_", tensor, 0.0, std)


def _kaiming_plan(tensor: Tensor, a, mode, nonlinearity, uniform: bool) -> tuple[Distribution, list]:
    if 0 in tensor.shape:  # torch warns and writes nothing (and divides by no zero fan)
        _warn_at_caller("Initializing zero-element tensors is a no-op")
        return Distribution.CONSTANT, [0.0]
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    if uniform:
        bound = math.sqrt(3.0) * std
        return _uniform_plan("kaiming_uniform_", tensor, -bound, bound)
    return _normal_plan("kaiming_normal_", tensor, 0.0, std)


@_drop_in
def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: _FanMode = "fan_in",
    nonlinearity: _NonlinearityType = "leaky_relu",
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values using a Kaiming uniform distribution.

    :math:`\mathcal{U}(-\text{bound}, \text{bound})` with
    :math:`\text{bound} = \text{gain} \times \sqrt{\frac{3}{\text{fan\_mode}}}` (He, K. et al.
    2015). ``nonlinearity`` also takes fastinit's extra names ("prelu", "gelu", "silu", ...) and
    callables, see :func:`calculate_gain`.

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        a: the negative slope of the rectifier used after this layer (only used with
            ``'leaky_relu'`` and ``'prelu'``)
        mode: either ``'fan_in'`` (default) or ``'fan_out'``. ``'fan_in'`` preserves the
            magnitude of the variance of the weights in the forward pass, ``'fan_out'`` in the
            backward pass.
        nonlinearity: the non-linear function (`nn.functional` name or callable), recommended
            to use only with ``'relu'`` or ``'leaky_relu'`` (default)
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled (a zero-element tensor is returned as is, with a warning).

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: a slope or gain that is not finite, or `tensor` is an expanded view whose
            elements share memory (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: an unknown `mode` or `nonlinearity`, or `tensor` has fewer than 2
            dimensions.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")
    """
    plan = _kaiming_plan(tensor, a, mode, nonlinearity, uniform=True)
    return _fill_random(tensor, *plan, generator, seed)


@_drop_in
def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: _FanMode = "fan_in",
    nonlinearity: _NonlinearityType = "leaky_relu",
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values using a Kaiming normal distribution.

    :math:`\mathcal{N}(0, \text{std}^2)` with
    :math:`\text{std} = \frac{\text{gain}}{\sqrt{\text{fan\_mode}}}`.

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        a: the negative slope of the rectifier used after this layer (only used with
            ``'leaky_relu'`` and ``'prelu'``)
        mode: either ``'fan_in'`` (default) or ``'fan_out'``, as in :func:`kaiming_uniform_`
        nonlinearity: the non-linear function (`nn.functional` name or callable), as in
            :func:`kaiming_uniform_`
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled (a zero-element tensor is returned as is, with a warning).

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: a slope or gain that is not finite, or `tensor` is an expanded view whose
            elements share memory (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: an unknown `mode` or `nonlinearity`, or `tensor` has fewer than 2
            dimensions.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    """
    plan = _kaiming_plan(tensor, a, mode, nonlinearity, uniform=False)
    return _fill_random(tensor, *plan, generator, seed)


@_drop_in
def orthogonal_(
    tensor: Tensor,
    gain: float = 1,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the input `Tensor` with a (semi) orthogonal matrix (Saxe, A. et al. 2013).

    The matrix is the Q of the QR factorisation of a contract-generated standard normal matrix
    (computed in fp32, fp64 for fp64 tensors, on the tensor's device), with torch's sign fix.
    Dimensions beyond the first are flattened.

    Args:
        tensor: an n-dimensional `torch.Tensor`, where :math:`n \geq 2`
        gain: optional scaling factor
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: a gain that is not finite, or a sharded `tensor` (a DTensor with a Shard
            placement), or `tensor` is an expanded view whose elements share memory (also a
            ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: `tensor` has fewer than 2 dimensions.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.orthogonal_(w)
    """
    _check_orthogonal_shape(tensor)
    check_generator(generator)
    if tensor.numel() == 0 or not has_real_storage(tensor):
        return tensor
    check_float_dtype(tensor, "orthogonal_")
    check_no_internal_overlap(tensor, "orthogonal_")
    check_unsharded(tensor, "orthogonal_")
    check_finite("orthogonal_", gain=gain)
    _orthogonal_fill(tensor, gain, _resolve_seed(generator, seed), stream=0)
    return tensor


def _orthogonal_fill(tensor: Tensor, gain: float, seed: int, stream: int) -> Tensor:
    """Q of the QR of the contract's standard normal (seed, stream) matrix, times gain."""
    tensor = local_tensor(tensor)  # a Replicate DTensor: every rank computes the same matrix
    rows = tensor.size(0)
    cols = tensor.numel() // rows
    work_dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    flattened = torch.empty((rows, cols), dtype=work_dtype, device=tensor.device)
    run_now([make_fill(flattened, Distribution.NORMAL, normal_params(0.0, 1.0), seed, stream)],
            tensor, f"orthogonal(gain={gain:g})")
    if rows < cols:
        flattened.t_()
    q, r = qr_on_one_thread(flattened)
    q *= torch.diag(r, 0).sign()
    if rows < cols:
        q.t_()
    with torch.no_grad():
        tensor.copy_(q.reshape(tensor.shape))
        tensor.mul_(gain)
    return tensor


@_drop_in
def sparse_(
    tensor: Tensor,
    sparsity: float,
    std: float = 0.01,
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Fill the 2D input `Tensor` as a sparse matrix (Martens, J. 2010).

    Non-zero elements are drawn from :math:`\mathcal{N}(0, \text{std}^2)` (stream 0); in each
    column the ``ceil(sparsity * rows)`` rows with the smallest contract-uniform keys (stream 1 of
    the same seed) are set to zero, so the zero positions are a function of the seed too.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        sparsity: the fraction of elements in each column to be set to zero
        std: the standard deviation of the normal distribution used to generate the non-zero
            values
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `sparsity` outside [0, 1], `std < 0`, a value that is not finite, or a
            sharded `tensor`, or `tensor` is an expanded view whose elements share memory (also a
            ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: `tensor` is not 2-dimensional.

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.sparse_(w, sparsity=0.1)
    """
    if tensor.ndimension() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    check_generator(generator)
    if not has_real_storage(tensor):
        return tensor
    check_finite("sparse_", sparsity=sparsity)
    if not 0.0 <= sparsity <= 1.0:
        raise InitValueError(f"sparse_: sparsity must be in [0, 1], got sparsity={sparsity}")
    _check_random_target(tensor, "sparse_")
    check_unsharded(tensor, "sparse_")
    check_finite("sparse_", std=std)
    if std < 0:
        raise InitValueError(f"normal expects std >= 0.0, but found std {_fmt(std)}")
    if tensor.numel() == 0:
        return tensor
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    seed = _resolve_seed(generator, seed)
    keys = torch.empty((rows, cols), dtype=torch.float32)
    run_now(  # the keys are read at once, and the zeros written into the normal values
        [
            make_fill(tensor, Distribution.NORMAL, normal_params(0.0, std), seed, stream=0),
            make_fill(keys, Distribution.UNIFORM, uniform_params(0.0, 1.0), seed, stream=1),
        ],
        tensor, f"sparse(sparsity={sparsity:g}, std={std:g})",
    )
    if num_zeros:
        zero_rows = keys.argsort(dim=0, stable=True)[:num_zeros].to(tensor.device)
        with torch.no_grad():
            local_tensor(tensor).scatter_(0, zero_rows, 0.0)
    return tensor


@_drop_in
def lecun_uniform_(
    tensor: Tensor, generator: Optional[torch.Generator] = None, *, seed: Optional[int] = None
) -> Tensor:
    r"""LeCun uniform: :math:`\mathcal{U}(-\sqrt{3 / \text{fan\_in}}, \sqrt{3 / \text{fan\_in}})`,
    i.e. ``variance_scaling_(tensor, 1.0, "fan_in", "uniform")`` (JAX ``lecun_uniform``).

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `tensor` is an expanded view whose elements share memory
            (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.lecun_uniform_(w)
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", generator, seed=seed)


@_drop_in
def lecun_normal_(
    tensor: Tensor, generator: Optional[torch.Generator] = None, *, seed: Optional[int] = None
) -> Tensor:
    r"""LeCun normal: a normal truncated to two standard deviations with variance
    :math:`1 / \text{fan\_in}`, i.e. ``variance_scaling_(tensor, 1.0, "fan_in",
    "truncated_normal")`` (JAX and Keras ``lecun_normal``, used with SELU).

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `tensor` is an expanded view whose elements share memory
            (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).

    Examples:
        >>> w = torch.empty(3, 5)
        >>> fastinit.lecun_normal_(w)
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator, seed=seed)


VARIANCE_SCALING_MODES = ("fan_in", "fan_out", "fan_avg")
VARIANCE_SCALING_DISTRIBUTIONS = ("truncated_normal", "normal", "untruncated_normal", "uniform")


@_drop_in
def variance_scaling_(
    tensor: Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    generator: Optional[torch.Generator] = None,
    *,
    seed: Optional[int] = None,
) -> Tensor:
    r"""Variance scaling with JAX / Keras semantics, on torch's fans (dim 1 in, dim 0 out).

    With :math:`n` = fan_in, fan_out or (fan_in + fan_out) / 2 for ``mode`` = "fan_in",
    "fan_out", "fan_avg", and :math:`\sigma^2 = \text{scale} / \max(1, n)`:

    * "truncated_normal": a normal of std :math:`\sigma / 0.87962566103423978` truncated to
      :math:`\pm 2` of its std, so the result has std :math:`\sigma`;
    * "normal" (or "untruncated_normal"): :math:`\mathcal{N}(0, \sigma^2)`;
    * "uniform": :math:`\mathcal{U}(-\sqrt{3}\sigma, \sqrt{3}\sigma)`.

    Args:
        tensor: an n-dimensional `torch.Tensor`, n >= 2
        scale: the variance scale, positive
        mode: ``"fan_in"`` (default), ``"fan_out"`` or ``"fan_avg"``
        distribution: ``"truncated_normal"`` (default), ``"normal"`` (or
            ``"untruncated_normal"``) or ``"uniform"``
        generator: as in :func:`uniform_`
        seed: as in :func:`uniform_`

    Returns:
        `tensor`, filled.

    Raises:
        UnsupportedDtypeError: `tensor` is not floating point (also a TypeError and a
            NotImplementedError, as torch raises).
        InitValueError: `scale <= 0` or not finite, or `tensor` is an expanded view whose elements
            share memory (also a ValueError and a RuntimeError).
        TypeError: `seed` is not an int, or a value is not a real number.
        ValueError: `seed` is outside [0, 2**64).
        ValueError: an unknown `mode` or `distribution`, or `tensor` has fewer than 2
            dimensions.

    Examples:
        >>> w = torch.empty(256, 128)
        >>> fastinit.variance_scaling_(w, 2.0, "fan_in", "truncated_normal")  # He normal, JAX style
    """
    plan = _variance_scaling_plan(tensor, scale, mode, distribution)
    return _fill_random(tensor, *plan, generator, seed)


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


def _variance_scaling_plan(tensor, scale, mode, distribution):
    _check_variance_scaling_names(mode, distribution)
    check_finite("variance_scaling_", scale=scale)
    if scale <= 0:
        raise InitValueError(f"variance_scaling_: scale must be positive, got scale={scale}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, n)
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / TRUNCATED_NORMAL_STD_CORRECTION
        return _trunc_normal_plan(
            "variance_scaling_", tensor, 0.0, std, -2.0 * std, 2.0 * std
        )
    if distribution in ("normal", "untruncated_normal"):
        return _normal_plan("variance_scaling_", tensor, 0.0, math.sqrt(variance))
    limit = math.sqrt(3.0 * variance)
    return _uniform_plan("variance_scaling_", tensor, -limit, limit)


def _make_deprecate(meth: _F) -> _F:
    new_name = meth.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args, **kwargs):
        _warn_at_caller(
            f"`fastinit.{old_name}` is now deprecated in favor of `fastinit.{new_name}`.",
            FutureWarning,
        )
        return meth(*args, **kwargs)

    deprecated_init.__doc__ = (
        f"\n    {old_name}(...)\n\n    .. warning::\n        This method is now deprecated in favor "
        f"of :func:`fastinit.{new_name}`.\n\n    See :func:`~fastinit.{new_name}` for details."
    )
    deprecated_init.__name__ = old_name
    return deprecated_init


uniform = _make_deprecate(uniform_)
normal = _make_deprecate(normal_)
constant = _make_deprecate(constant_)
eye = _make_deprecate(eye_)
dirac = _make_deprecate(dirac_)
xavier_uniform = _make_deprecate(xavier_uniform_)
xavier_normal = _make_deprecate(xavier_normal_)
kaiming_uniform = _make_deprecate(kaiming_uniform_)
kaiming_normal = _make_deprecate(kaiming_normal_)
orthogonal = _make_deprecate(orthogonal_)
sparse = _make_deprecate(sparse_)
