"""Which spec each tensor gets: PyTorch's default init of every standard layer, by layer type,
and user rules (layer types and name patterns)."""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from .. import spec
from ..errors import InitValueError
from ..gains import _calculate_fan_in_and_fan_out
from .names import lookup, named_tensors, plain_attribute, walk


SQRT5 = math.sqrt(5.0)
Rules = Mapping[Union[type, str], Union[spec.Spec, Mapping[str, spec.Spec]]]


def _fan_in_bound(weight: torch.Tensor) -> float:
    fan_in, _ = _calculate_fan_in_and_fan_out(weight)
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


_LINEAR_WEIGHT = spec.kaiming_uniform(a=SQRT5)


def _linear_like(m) -> dict:
    bias = getattr(m, "bias", None)
    if bias is None:
        return {"weight": _LINEAR_WEIGHT}
    bound = _fan_in_bound(m.weight)
    return {"weight": _LINEAR_WEIGHT, "bias": spec.uniform(-bound, bound)}


def _bilinear(m) -> dict:
    bound = 1.0 / math.sqrt(m.weight.size(1)) if m.weight.size(1) > 0 else 0.0
    return {"weight": spec.uniform(-bound, bound), "bias": spec.uniform(-bound, bound)}


def _affine(m) -> dict:
    return {"weight": spec.ones(), "bias": spec.zeros()}


def _norm_with_stats(m) -> dict:
    return {**_affine(m), "running_mean": spec.zeros(), "running_var": spec.ones(),
            "num_batches_tracked": spec.zeros()}


def _embedding(m) -> dict:
    return {"weight": spec.normal(0.0, 1.0)}


def _recurrent(m) -> dict:
    stdv = 1.0 / math.sqrt(m.hidden_size) if m.hidden_size > 0 else 0.0
    return {name: spec.uniform(-stdv, stdv) for name, _ in m.named_parameters(recurse=False)}


def _multihead_attention(m) -> dict:
    rules = {name: spec.xavier_uniform() for name in
             ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")}
    rules.update({"in_proj_bias": spec.zeros(), "out_proj.bias": spec.zeros(),
                  "bias_k": spec.xavier_normal(), "bias_v": spec.xavier_normal()})
    return rules


def _prelu(m) -> dict:
    return {"weight": spec.constant(m.init)}


# PyTorch's own default init (each layer's reset_parameters), by layer type.
DEFAULT_RULES: dict[type, Callable[[nn.Module], dict]] = {
    nn.Linear: _linear_like,
    nn.Bilinear: _bilinear,
    nn.modules.conv._ConvNd: _linear_like,
    nn.Embedding: _embedding,
    nn.EmbeddingBag: _embedding,
    nn.LayerNorm: _affine,
    nn.GroupNorm: _affine,
    nn.modules.batchnorm._NormBase: _norm_with_stats,
    nn.MultiheadAttention: _multihead_attention,
    nn.RNNBase: _recurrent,
    nn.RNNCellBase: _recurrent,
    nn.PReLU: _prelu,
}
if hasattr(nn, "RMSNorm"):
    DEFAULT_RULES[nn.RMSNorm] = _affine


def _no_inputs(m) -> tuple:
    return ()


def _weight_shape_and_bias(m) -> tuple:
    params = m._parameters
    cls = type(m)
    weight = params.get("weight") if plain_attribute(cls, "weight") else None
    if weight is None:
        weight = m.weight
    bias = params["bias"] if "bias" in params and plain_attribute(cls, "bias") else \
        getattr(m, "bias", None)
    return weight.shape, bias is None  # a torch.Size: hashed and compared as the tuple


# What each default rule reads of its module: modules of one layer type with equal inputs get
# the same rules, computed once (`default_rules_for`).
RULE_INPUTS: dict[Callable, Callable[[nn.Module], tuple]] = {
    _linear_like: _weight_shape_and_bias,
    _bilinear: lambda m: tuple(m.weight.shape),
    _affine: _no_inputs,
    _norm_with_stats: _no_inputs,
    _embedding: _no_inputs,
    _recurrent: lambda m: (m.hidden_size,
                           tuple((name, t is None) for name, t in m._parameters.items())),
    _multihead_attention: _no_inputs,
    _prelu: lambda m: (m.init,),
}
_RULES_CACHE_SIZE = 4096


# module class -> (its reset_parameters when it was looked up, its default layer type or None)
_layer_type_cache: dict[type, tuple[object, Optional[type]]] = {}


def default_layer_type(module: nn.Module) -> Optional[type]:
    """The layer type of DEFAULT_RULES whose default `module` gets; None when there is none or
    its class overrides that type's reset_parameters (a subclass with its own init: its
    reset_parameters runs instead)."""
    module_cls = type(module)
    reset = getattr(module_cls, "reset_parameters", None)
    cached = _layer_type_cache.get(module_cls)
    if cached is not None and cached[0] is reset:
        return cached[1]
    found = None
    for cls in module_cls.__mro__:
        if cls in DEFAULT_RULES:
            found = cls if reset is getattr(cls, "reset_parameters", None) else None
            break
    _layer_type_cache[module_cls] = (reset, found)
    return found


# (rule, its inputs) -> the rules: {local name: spec}, shared by every module they fit; read only
_rules_cache: dict[tuple, dict] = {}


def default_rules_for(module: nn.Module) -> Optional[dict]:
    """The default rules of `module`'s layer type (see `default_layer_type`), or None. The
    returned dict (and its specs) may be shared between modules: read it, do not change it."""
    cls = default_layer_type(module)
    if cls is None:
        return None
    rule = DEFAULT_RULES[cls]
    inputs = RULE_INPUTS.get(rule)
    if inputs is None:  # a rule of unknown inputs: computed for every module
        return rule(module)
    key = (rule, inputs(module))
    rules = _rules_cache.get(key)
    if rules is None:
        rules = rule(module)
        if len(_rules_cache) >= _RULES_CACHE_SIZE:
            _rules_cache.clear()
        _rules_cache[key] = rules
    return rules


@dataclass(slots=True)
class TensorInit:
    """One parameter or buffer of the pass: its name, tensor, spec and contract plan; `dense`:
    (dtype code, dist, params) when the C++ backend fills it whole in the pass's native call."""

    name: str
    tensor: torch.Tensor
    spec: spec.Spec
    plan: Optional[tuple] = None
    owner: Optional[nn.Module] = None
    dense: Optional[tuple] = None


def collect(module: nn.Module, prefix: str, rules_for: Callable[[nn.Module, str], dict],
            modules: Optional[list[tuple[str, nn.Module]]] = None
            ) -> tuple[list[TensorInit], dict[str, torch.Tensor]]:
    """Every (name, tensor, spec) of the pass; tied tensors once, under their first name.
    `modules`: `names.walk(module, prefix)`, when the caller has it."""
    if modules is None:
        modules = walk(module, prefix)
    tensors = named_tensors(module, prefix, modules)
    first_name = {id(t): name for name, t in tensors.items()}
    assigned: dict[str, TensorInit] = {}
    Spec = spec.Spec
    for mod_name, mod in modules:
        rules = rules_for(mod, mod_name)
        if rules is None:
            continue
        dot = mod_name + "." if mod_name else ""
        cls, params, attributes = type(mod), mod._parameters, mod.__dict__
        for local, sp in rules.items():
            t = params.get(local) if plain_attribute(cls, local) and local not in attributes \
                else None
            if t is None:
                t = lookup(mod, local)
                if not isinstance(t, torch.Tensor):
                    continue  # a missing bias (None) is fine
            name = first_name.get(id(t))
            if name is None:
                name = dot + local
            if name in assigned:
                continue  # an ancestor's rule (or a tied alias) already covers it
            assigned[name] = TensorInit(name, t, sp if type(sp) is Spec else spec.as_spec(sp),
                                        owner=mod)
    return list(assigned.values()), tensors


def user_rules(rules: Rules, module: nn.Module, prefix: str):
    type_rules = {k: v for k, v in rules.items() if isinstance(k, type)}
    name_rules = {k: spec.as_spec(v) for k, v in rules.items() if isinstance(k, str)}
    bad = [k for k in rules if not isinstance(k, (type, str))]
    if bad:
        raise InitValueError(f"rule keys must be module types or name patterns, got {bad!r}")
    names = [n for n, _ in module.named_parameters(prefix=prefix)] + \
            [n for n, _ in module.named_buffers(prefix=prefix)]
    for pattern in name_rules:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise InitValueError(f"rule {pattern!r} matches no parameter or buffer of the module")

    def rules_for(mod: nn.Module, mod_name: str):
        out = {}
        for cls in type(mod).__mro__:
            if cls in type_rules:
                per_param = type_rules[cls]
                if not isinstance(per_param, Mapping):
                    raise InitValueError(f"the rule for {cls.__name__} must map parameter names to "
                                         f"specs, got {per_param!r}")
                for local, sp in per_param.items():
                    if not hasattr(mod, local.split(".")[0]):
                        raise InitValueError(f"rule for {cls.__name__}: {mod_name or 'module'} has "
                                             f"no parameter or buffer {local!r}")
                    out.setdefault(local, sp)
        for full, _ in list(mod.named_parameters(prefix=mod_name, recurse=False)) + \
                list(mod.named_buffers(prefix=mod_name, recurse=False)):
            for pattern, sp in name_rules.items():
                if fnmatch.fnmatchcase(full, pattern):
                    out[full[len(mod_name) + 1:] if mod_name else full] = sp
        return out or None

    return rules_for
