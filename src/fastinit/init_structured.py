"""The structured drop-in initialisers: ``eye_``, ``dirac_``, ``orthogonal_`` and ``sparse_``,
whose executors (the registry's) do more than one fill of the contract."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .contract import check_generator
from .dispatch import check_target_storage, drop_in, resolve_seed
from .errors import InitValueError
from .fused import run_now
from .plan import check_finite, has_real_storage
from .planners import check_random_target, check_sparse_args
from .registry import INITIALISERS as _ENTRY
from .sharding import check_unsharded


@drop_in
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
    _ENTRY["eye_"].plan(tensor)
    check_unsharded(tensor, "eye_")
    check_target_storage(tensor)
    return _ENTRY["eye_"].execute(tensor)


@drop_in
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
    _ENTRY["dirac_"].plan(tensor, groups)
    if not has_real_storage(tensor):
        return tensor
    check_unsharded(tensor, "dirac_")
    check_target_storage(tensor)
    return _ENTRY["dirac_"].execute(tensor, groups=groups)


@drop_in
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
    _ENTRY["orthogonal_"].plan(tensor, gain)
    check_generator(generator)
    if tensor.numel() == 0 or not has_real_storage(tensor):
        return tensor
    check_random_target(tensor, "orthogonal_")
    check_unsharded(tensor, "orthogonal_")
    check_finite("orthogonal_", gain=gain)
    check_target_storage(tensor)
    _ENTRY["orthogonal_"].execute(tensor, resolve_seed(generator, seed), 0, run_now, gain=gain)
    return tensor



@drop_in
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
    _ENTRY["sparse_"].plan(tensor, sparsity, std)
    check_generator(generator)
    if not has_real_storage(tensor):
        return tensor
    check_sparse_args(tensor, sparsity, std)
    check_unsharded(tensor, "sparse_")
    check_finite("sparse_", std=std)
    if std < 0:
        raise InitValueError(f"normal expects std >= 0.0, but found std {std:g}")
    if tensor.numel() == 0:
        return tensor
    check_target_storage(tensor)
    return _ENTRY["sparse_"].execute(tensor, resolve_seed(generator, seed), 0, run_now,
                                     sparsity=sparsity, std=std)
