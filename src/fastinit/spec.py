"""Per-parameter initialisation specs for whole-model init: ``fastinit.spec.kaiming_normal(...)``.

A spec is a description, not an action: ``plan(tensor, name)`` validates it against one tensor
and returns the contract's (distribution, parameters), or ``None`` for the structured inits
(orthogonal, eye, dirac) that run after the fused pass. It raises, naming the parameter, when
the spec cannot apply (xavier on a 1-D bias, a bad mode), before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from . import nn_init
from .contract import Distribution, constant_params
from .errors import InitValueError
from .gains import calculate_gain
from .plan import DTYPE_CODES, check_no_internal_overlap
from .sharding import check_unsharded

STRUCTURED = ("orthogonal", "eye", "dirac")


@dataclass(frozen=True)
class Spec:
    kind: str
    kwargs: dict = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"fastinit.spec.{self.kind}({args})"

    @property
    def structured(self) -> bool:
        return self.kind in STRUCTURED

    def plan(self, tensor: torch.Tensor, name: str) -> Optional[tuple[Distribution, list]]:
        try:
            return _PLANNERS[self.kind](tensor, **self.kwargs)
        except (ValueError, TypeError, NotImplementedError, ZeroDivisionError) as exc:
            raise type(exc)(f"{self!r} cannot initialise {name!r} of shape "
                            f"{tuple(tensor.shape)}: {exc}") from exc

    def gain(self) -> Optional[float]:
        """The gain this spec applies, for explain()."""
        if self.kind in ("kaiming_uniform", "kaiming_normal"):
            return float(calculate_gain(self.kwargs.get("nonlinearity", "leaky_relu"),
                                        self.kwargs.get("a", 0)))
        if self.kind in ("xavier_uniform", "xavier_normal", "orthogonal"):
            return float(self.kwargs.get("gain", 1.0))
        return None


def _constant(tensor, val):
    if tensor.dtype in DTYPE_CODES:
        check_no_internal_overlap(tensor, "constant")
        return Distribution.CONSTANT, constant_params(val, tensor.dtype)
    return Distribution.CONSTANT, [float(val)]  # integer buffers: torch's fill_ at run time


def _structured(kind, check_shape):
    """Planner of orthogonal / eye / dirac: shape checks, and a sharded tensor refused (they
    need the whole matrix) before the pass writes anything; None = run after the fused pass."""
    def plan(tensor, **kwargs):
        check_shape(tensor, **kwargs)
        if not tensor.is_meta:
            check_unsharded(tensor, f"{kind}_")
        return None

    return plan


_PLANNERS = {
    "uniform": lambda t, a=0.0, b=1.0: nn_init._uniform_plan("uniform", t, a, b),
    "normal": lambda t, mean=0.0, std=1.0: nn_init._normal_plan("normal", t, mean, std),
    "trunc_normal": lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: nn_init._trunc_normal_plan(
        "trunc_normal", t, mean, std, a, b),
    "constant": _constant,
    "kaiming_uniform": lambda t, a=0, mode="fan_in", nonlinearity="leaky_relu": (
        nn_init._kaiming_plan(t, a, mode, nonlinearity, uniform=True)),
    "kaiming_normal": lambda t, a=0, mode="fan_in", nonlinearity="leaky_relu": (
        nn_init._kaiming_plan(t, a, mode, nonlinearity, uniform=False)),
    "xavier_uniform": lambda t, gain=1.0: nn_init._xavier_plan(t, gain, uniform=True),
    "xavier_normal": lambda t, gain=1.0: nn_init._xavier_plan(t, gain, uniform=False),
    "lecun_uniform": lambda t: nn_init._variance_scaling_plan(t, 1.0, "fan_in", "uniform"),
    "lecun_normal": lambda t: nn_init._variance_scaling_plan(t, 1.0, "fan_in", "truncated_normal"),
    "variance_scaling": lambda t, scale=1.0, mode="fan_in", distribution="truncated_normal": (
        nn_init._variance_scaling_plan(t, scale, mode, distribution)),
    "orthogonal": _structured("orthogonal", lambda t, gain=1.0: nn_init._check_orthogonal_shape(t)),
    "eye": _structured("eye", lambda t: nn_init._check_eye_shape(t)),
    "dirac": _structured("dirac", lambda t, groups=1: nn_init._check_dirac_shape(t, groups)),
}


def uniform(a: float = 0.0, b: float = 1.0) -> Spec:
    return Spec("uniform", dict(a=a, b=b))


def normal(mean: float = 0.0, std: float = 1.0) -> Spec:
    return Spec("normal", dict(mean=mean, std=std))


def trunc_normal(mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Spec:
    return Spec("trunc_normal", dict(mean=mean, std=std, a=a, b=b))


def constant(val: float) -> Spec:
    return Spec("constant", dict(val=val))


def zeros() -> Spec:
    return constant(0.0)


def ones() -> Spec:
    return constant(1.0)


def kaiming_uniform(a: float = 0, mode: str = "fan_in", nonlinearity="leaky_relu") -> Spec:
    return Spec("kaiming_uniform", dict(a=a, mode=mode, nonlinearity=nonlinearity))


def kaiming_normal(a: float = 0, mode: str = "fan_in", nonlinearity="leaky_relu") -> Spec:
    return Spec("kaiming_normal", dict(a=a, mode=mode, nonlinearity=nonlinearity))


def xavier_uniform(gain: float = 1.0) -> Spec:
    return Spec("xavier_uniform", dict(gain=gain))


def xavier_normal(gain: float = 1.0) -> Spec:
    return Spec("xavier_normal", dict(gain=gain))


def lecun_uniform() -> Spec:
    return Spec("lecun_uniform")


def lecun_normal() -> Spec:
    return Spec("lecun_normal")


def variance_scaling(scale: float = 1.0, mode: str = "fan_in",
                     distribution: str = "truncated_normal") -> Spec:
    return Spec("variance_scaling", dict(scale=scale, mode=mode, distribution=distribution))


def orthogonal(gain: float = 1.0) -> Spec:
    return Spec("orthogonal", dict(gain=gain))


def eye() -> Spec:
    return Spec("eye")


def dirac(groups: int = 1) -> Spec:
    return Spec("dirac", dict(groups=groups))


def as_spec(value) -> Spec:
    if isinstance(value, Spec):
        return value
    raise InitValueError(f"expected a fastinit.spec.* value, got {value!r}")
