"""The registry of initialisers: one entry per drop-in function, the one place that says what
each is.

An entry holds the function's name, the torch.nn.init function it stands for, its planner
(tensor and arguments in; the contract's distribution and parameters out, every argument
checked), its whole-model spec (``fastinit.spec.<kind>``), the gain a spec applies (for
``explain``) and, for the structured initialisers, the executor that does what is more than one
fill. The drop-in functions, the whole-model specs, the executor of whole-model init, the
interceptor of ``fused()``, the custom ops and the parity tests all read this table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import planners as p
from . import structured
from .gains import calculate_gain
from .contract import DTYPE_CODES, Distribution, constant_params
from .plan import check_no_internal_overlap
from .sharding import check_unsharded

# torch.nn.init's functions as torch defines them, by name: taken at import, before any code
# (Hugging Face's guard while it initialises) replaces them in the module
TORCH_INIT_FUNCTIONS = {name: getattr(torch.nn.init, name) for name in torch.nn.init.__all__}


@dataclass(frozen=True)
class Initialiser:
    """What one drop-in initialiser is.

    Attributes:
        name: the drop-in function's name (``"kaiming_uniform_"``); its custom op is
            ``fastinit::<name without the trailing underscore>``.
        torch_name: the torch.nn.init function it stands for, or None for a fastinit-only one.
        plan: ``plan(tensor, *args, **kwargs)`` with the function's arguments less `generator`
            and `seed`: checks them and returns the contract's (distribution, parameters), or
            None for a structured initialiser (its executor writes the tensor).
        spec_kind: the ``fastinit.spec`` kind that plans it in whole-model init, or None.
        spec_plan: ``spec_plan(tensor, **spec kwargs)``, as `plan` (its messages name the spec
            kind); a structured one checks what can be checked before the fused pass.
        gain: ``gain(**spec kwargs)``: the gain the spec applies, or None.
        execute: structured only: ``execute(tensor, seed, stream, run, **kwargs)``.
        note: why an entry has no torch counterpart or no spec.
    """

    name: str
    torch_name: Optional[str]
    plan: Callable
    spec_kind: Optional[str] = None
    spec_plan: Optional[Callable] = None
    gain: Optional[Callable] = None
    execute: Optional[Callable] = None
    note: str = ""

    @property
    def structured(self) -> bool:
        return self.execute is not None


def _no_gain(**kwargs) -> None:
    return None


def _gain_argument(gain: float = 1.0, **kwargs) -> float:
    return float(gain)


def _kaiming_gain(a=0, mode="fan_in", nonlinearity="leaky_relu") -> float:
    return float(calculate_gain(nonlinearity, a))


def _spec_constant(tensor, val):
    """A spec's constant: checked for a floating tensor, torch's fill_ for the others."""
    if tensor.dtype in DTYPE_CODES:
        check_no_internal_overlap(tensor, "constant")
        return Distribution.CONSTANT, constant_params(val, tensor.dtype)
    return Distribution.CONSTANT, [float(val)]


def _structured_spec(kind: str, check_shape: Callable) -> Callable:
    """Spec planner of a structured kind: its shape checks, and a sharded tensor refused (the
    executor needs the whole matrix) before the pass writes anything; None: run after it."""
    def plan(tensor, **kwargs):
        check_shape(tensor, **kwargs)
        if not tensor.is_meta:
            check_unsharded(tensor, f"{kind}_")
        return None

    return plan


def _structured_plan(check_shape: Callable) -> Callable:
    def plan(tensor, *args, **kwargs):
        check_shape(tensor, *args, **kwargs)
        return None

    return plan


# Planners that serve the drop-in function and its whole-model spec alike (their messages do not
# name the function).
def _xavier_uniform(t, gain=1.0):
    return p.xavier_plan(t, gain, uniform=True)


def _xavier_normal(t, gain=1.0):
    return p.xavier_plan(t, gain, uniform=False)


def _kaiming_uniform(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    return p.kaiming_plan(t, a, mode, nonlinearity, uniform=True)


def _kaiming_normal(t, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    return p.kaiming_plan(t, a, mode, nonlinearity, uniform=False)


def _lecun_uniform(t):
    return p.variance_scaling_plan(t, 1.0, "fan_in", "uniform")


def _lecun_normal(t):
    return p.variance_scaling_plan(t, 1.0, "fan_in", "truncated_normal")


def _variance_scaling(t, scale=1.0, mode="fan_in", distribution="truncated_normal"):
    return p.variance_scaling_plan(t, scale, mode, distribution)


_FASTINIT_ONLY = "fastinit-only (JAX / Keras semantics); torch.nn.init has no such function"

INITIALISERS: dict[str, Initialiser] = {e.name: e for e in (
    Initialiser(
        "uniform_", "uniform_",
        lambda t, a=0.0, b=1.0: p.uniform_plan("uniform_", t, a, b),
        "uniform", lambda t, a=0.0, b=1.0: p.uniform_plan("uniform", t, a, b), _no_gain),
    Initialiser(
        "normal_", "normal_",
        lambda t, mean=0.0, std=1.0: p.normal_plan("normal_", t, mean, std),
        "normal", lambda t, mean=0.0, std=1.0: p.normal_plan("normal", t, mean, std), _no_gain),
    Initialiser(
        "trunc_normal_", "trunc_normal_",
        lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0, warn=True: p.trunc_normal_plan(
            "trunc_normal_", t, mean, std, a, b, warn=warn),
        "trunc_normal", lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: p.trunc_normal_plan(
            "trunc_normal", t, mean, std, a, b), _no_gain),
    Initialiser(
        "trunc_normal_tf_", None,
        lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: p.trunc_normal_plan(
            "trunc_normal_tf_", t, mean, std, a, b, standard_bounds=True),
        note="fastinit-only (timm's trunc_normal_tf_, TF / JAX semantics); no spec: "
             "spec.variance_scaling covers its whole-model uses"),
    Initialiser(
        "constant_", "constant_", lambda t, val: p.constant_plan("constant_", t, val),
        "constant", _spec_constant, _no_gain),
    Initialiser(
        "ones_", "ones_", lambda t: p.constant_plan("constant_", t, 1.0),
        note="its spec is spec.ones(), a spec.constant"),
    Initialiser(
        "zeros_", "zeros_", lambda t: p.constant_plan("constant_", t, 0.0),
        note="its spec is spec.zeros(), a spec.constant"),
    Initialiser(
        "eye_", "eye_", _structured_plan(p.check_2d_shape),
        "eye", _structured_spec("eye", lambda t: p.check_2d_shape(t)), _no_gain,
        structured.eye_fill),
    Initialiser(
        "dirac_", "dirac_", _structured_plan(p.check_dirac_shape),
        "dirac", _structured_spec("dirac", lambda t, groups=1: p.check_dirac_shape(t, groups)),
        _no_gain, structured.dirac_fill),
    Initialiser("xavier_uniform_", "xavier_uniform_", _xavier_uniform, "xavier_uniform",
                _xavier_uniform, _gain_argument),
    Initialiser("xavier_normal_", "xavier_normal_", _xavier_normal, "xavier_normal",
                _xavier_normal, _gain_argument),
    Initialiser("kaiming_uniform_", "kaiming_uniform_", _kaiming_uniform, "kaiming_uniform",
                _kaiming_uniform, _kaiming_gain),
    Initialiser("kaiming_normal_", "kaiming_normal_", _kaiming_normal, "kaiming_normal",
                _kaiming_normal, _kaiming_gain),
    Initialiser(
        "orthogonal_", "orthogonal_",
        _structured_plan(lambda t, gain=1.0: p.check_orthogonal_shape(t)),
        "orthogonal", _structured_spec("orthogonal", lambda t, gain=1.0: p.check_orthogonal_shape(t)),
        _gain_argument, structured.orthogonal_fill),
    Initialiser(
        "sparse_", "sparse_",
        _structured_plan(lambda t, sparsity, std=0.01: p.check_2d_shape(t)),
        execute=structured.sparse_fill,
        note="no spec: a sparse matrix's zeros are per column of the whole matrix"),
    Initialiser("lecun_uniform_", None, _lecun_uniform, "lecun_uniform", _lecun_uniform, _no_gain,
                note=_FASTINIT_ONLY),
    Initialiser("lecun_normal_", None, _lecun_normal, "lecun_normal", _lecun_normal, _no_gain,
                note=_FASTINIT_ONLY),
    Initialiser("variance_scaling_", None, _variance_scaling, "variance_scaling",
                _variance_scaling, _no_gain, note=_FASTINIT_ONLY),
)}

# The entries by whole-model spec kind.
BY_SPEC_KIND: dict[str, Initialiser] = {e.spec_kind: e for e in INITIALISERS.values()
                                        if e.spec_kind is not None}


def initialiser(name: str) -> Initialiser:
    """The entry of drop-in function `name` (``"uniform_"``).

    Raises:
        KeyError: `name` is not a registered initialiser.
    """
    return INITIALISERS[name]
