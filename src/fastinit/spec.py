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

from .contract import Distribution
from .errors import InitValueError
from .registry import BY_SPEC_KIND


@dataclass(frozen=True)
class Spec:
    kind: str
    kwargs: dict = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"fastinit.spec.{self.kind}({args})"

    @property
    def structured(self) -> bool:
        return BY_SPEC_KIND[self.kind].structured

    def plan(self, tensor: torch.Tensor, name: str) -> Optional[tuple[Distribution, list]]:
        try:
            return BY_SPEC_KIND[self.kind].spec_plan(tensor, **self.kwargs)
        except (ValueError, TypeError, NotImplementedError, ZeroDivisionError) as exc:
            raise type(exc)(f"{self!r} cannot initialise {name!r} of shape "
                            f"{tuple(tensor.shape)}: {exc}") from exc

    def gain(self) -> Optional[float]:
        """The gain this spec applies, for explain()."""
        return BY_SPEC_KIND[self.kind].gain(**self.kwargs)


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
