"""The drop-in initialisers of one distribution with its parameters given: ``uniform_``,
``normal_``, ``trunc_normal_``, ``trunc_normal_tf_``, ``constant_``, ``ones_`` and ``zeros_``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .contract import DTYPE_CODES
from . import backends
from .dispatch import check_target_storage, drop_in, fill_random, writes_nothing
from .fused import active_recorder, submit
from .plan import PLAIN_TENSOR_TYPES, make_fill
from .planners import check_constant_fits, trunc_normal_plan
from .registry import INITIALISERS
from .sharding import local_tensor

_PLAN = {name: entry.plan for name, entry in INITIALISERS.items()}


def trunc_normal_checked(fn_name, tensor, mean, std, a, b, generator, seed, warn=True) -> Tensor:
    """trunc_normal_'s fill, its messages naming `fn_name`; `warn` False: the caller has warned
    about a mean far from [a, b]."""
    plan = trunc_normal_plan(fn_name, tensor, mean, std, a, b, warn=warn)
    return fill_random(tensor, *plan, generator, seed)


@drop_in
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
    return fill_random(tensor, *_PLAN["uniform_"](tensor, a, b), generator, seed)


@drop_in
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
    return fill_random(tensor, *_PLAN["normal_"](tensor, mean, std), generator, seed)


@drop_in
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
    return trunc_normal_checked("trunc_normal_", tensor, mean, std, a, b, generator, seed)


@drop_in
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
    return fill_random(tensor, *_PLAN["trunc_normal_tf_"](tensor, mean, std, a, b), generator, seed)


@drop_in
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
    return _constant(tensor, val)


def _constant(tensor: Tensor, val) -> Tensor:
    """constant_'s fill, for constant_, ones_ and zeros_: a whole plain contiguous CPU tensor of a
    floating dtype outside a fused() block in one native call, any other one as torch's fill_ or
    a submitted fill."""
    if type(tensor) in PLAIN_TENSOR_TYPES and active_recorder() is None \
            and not tensor.is_meta and tensor.numel() and tensor.is_contiguous():
        dist, params = _PLAN["constant_"](tensor, val)  # (its checks come first)
        if backends.fill_whole_natively(tensor, dist, params, 0):
            return tensor
    if writes_nothing(tensor):
        return tensor
    check_constant_fits("constant_", tensor, val)
    if tensor.numel() == 0:
        return tensor
    check_target_storage(tensor)
    if tensor.dtype not in DTYPE_CODES or torch._debug_has_internal_overlap(local_tensor(tensor)) == 1:
        # Integer, bool and complex tensors and expanded views: torch's own fill is the
        # general path (every element gets the same value, so nothing depends on indices).
        with torch.no_grad():
            local_tensor(tensor).fill_(val)
            return tensor
    submit([make_fill(tensor, *_PLAN["constant_"](tensor, val), 0)])
    return tensor


@drop_in
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
    return _constant(tensor, 1.0)


@drop_in
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
    return _constant(tensor, 0.0)

