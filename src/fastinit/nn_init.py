"""The drop-in API: every public function of ``torch.nn.init`` with the same signature, errors
and warnings, plus a keyword-only ``seed=``; and LeCun and variance-scaling initialisers.

The functions live by kind in init_basic (one distribution, its parameters given), init_scaled
(scaled by the tensor's fans) and init_structured (eye, dirac, orthogonal, sparse); each is an
entry of the registry (registry.py) and runs through dispatch.py. This module gathers them, with
torch.nn.init's deprecated names.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from .gains import calculate_gain
from .init_basic import (constant_, normal_, ones_, trunc_normal_, trunc_normal_tf_, uniform_,
                         zeros_)
from .init_scaled import (kaiming_normal_, kaiming_uniform_, lecun_normal_, lecun_uniform_,
                          variance_scaling_, xavier_normal_, xavier_uniform_)
from .init_structured import dirac_, eye_, orthogonal_, sparse_
from .planners import (TRUNCATED_NORMAL_STD_CORRECTION, VARIANCE_SCALING_DISTRIBUTIONS,
                       VARIANCE_SCALING_MODES, warn_at_caller)

_F = TypeVar("_F", bound=Callable)


def _make_deprecate(meth: _F) -> _F:
    new_name = meth.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args, **kwargs):
        warn_at_caller(
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

