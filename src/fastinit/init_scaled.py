"""The drop-in initialisers whose scale comes from the tensor's fans: Xavier, Kaiming, LeCun
and variance scaling."""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from .dispatch import drop_in, fill_random
from .registry import INITIALISERS

_NonlinearityType = Literal[
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
]
_FanMode = Literal["fan_in", "fan_out"]

_PLAN = {name: entry.plan for name, entry in INITIALISERS.items()}


@drop_in
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
    return fill_random(tensor, *_PLAN["xavier_uniform_"](tensor, gain), generator, seed)


@drop_in
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
    return fill_random(tensor, *_PLAN["xavier_normal_"](tensor, gain), generator, seed)



@drop_in
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
    plan = _PLAN["kaiming_uniform_"](tensor, a, mode, nonlinearity)
    return fill_random(tensor, *plan, generator, seed)


@drop_in
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
    plan = _PLAN["kaiming_normal_"](tensor, a, mode, nonlinearity)
    return fill_random(tensor, *plan, generator, seed)



@drop_in
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
    return fill_random(tensor, *_PLAN["lecun_uniform_"](tensor), generator, seed)


@drop_in
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
    return fill_random(tensor, *_PLAN["lecun_normal_"](tensor), generator, seed)



@drop_in
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
    plan = _PLAN["variance_scaling_"](tensor, scale, mode, distribution)
    return fill_random(tensor, *plan, generator, seed)

