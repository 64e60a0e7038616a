"""Whole-model init: PyTorch's default init of every standard layer (or user rules) for every
parameter and buffer of a module, in one fused pass per (device, dtype).

Each tensor gets stream = blake2b-64 of its fully qualified name (docs/contract.md), so its values do
not depend on the order, on which other tensors are in the call, on the device or backend.
Tied parameters are initialised once, under their first name.
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

from . import nn_init, spec
from .fused import submit
from .contract import Distribution, check_seed, draw_seed, stream_for_name
from .errors import InitValueError
from .gains import _calculate_fan_in_and_fan_out
from .plan import DTYPE_CODES, make_fill
from .sharding import local_index, local_tensor

SQRT5 = math.sqrt(5.0)
Rules = Mapping[Union[type, str], Union[spec.Spec, Mapping[str, spec.Spec]]]


def _fan_in_bound(weight: torch.Tensor) -> float:
    fan_in, _ = _calculate_fan_in_and_fan_out(weight)
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def _linear_like(m) -> dict:
    rules = {"weight": spec.kaiming_uniform(a=SQRT5)}
    if getattr(m, "bias", None) is not None:
        bound = _fan_in_bound(m.weight)
        rules["bias"] = spec.uniform(-bound, bound)
    return rules


def _bilinear(m) -> dict:
    bound = 1.0 / math.sqrt(m.weight.size(1))
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


def _default_rules_for(module: nn.Module) -> Optional[dict]:
    for cls in type(module).__mro__:
        if cls in DEFAULT_RULES:
            return DEFAULT_RULES[cls](module)
    return None


@dataclass
class TensorInit:
    """One parameter or buffer of the pass: its name, tensor, spec and contract plan."""

    name: str
    tensor: torch.Tensor
    spec: spec.Spec
    plan: Optional[tuple] = None
    owner: Optional[nn.Module] = None


@dataclass
class InitResult:
    """What a whole-model call did."""

    seed: int
    fused: list = field(default_factory=list)          # names filled in the fused pass
    structured: list = field(default_factory=list)     # orthogonal / eye / dirac, after it
    not_fused: list = field(default_factory=list)      # modules whose own reset_parameters ran
    untouched: list = field(default_factory=list)      # tensors no rule covers

    def __repr__(self) -> str:
        return (f"InitResult(seed={self.seed}, fused={len(self.fused)} tensors, structured="
                f"{self.structured}, not_fused={self.not_fused}, untouched={self.untouched})")


def _lookup(module: nn.Module, local: str):
    obj = module
    for part in local.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _collect(module: nn.Module, prefix: str, rules_for: Callable[[nn.Module, str], dict]
             ) -> tuple[list[TensorInit], dict[str, torch.Tensor]]:
    """Every (name, tensor, spec) of the pass; tied tensors once, under their first name."""
    tensors: dict[str, torch.Tensor] = {}  # first name -> tensor
    first_name: dict[int, str] = {}
    for name, t in list(module.named_parameters(prefix=prefix)) + list(module.named_buffers(prefix=prefix)):
        if id(t) not in first_name:
            first_name[id(t)] = name
            tensors[name] = t
    assigned: dict[str, TensorInit] = {}
    for mod_name, mod in module.named_modules(prefix=prefix):
        rules = rules_for(mod, mod_name)
        if rules is None:
            continue
        for local, sp in rules.items():
            t = _lookup(mod, local)
            if not isinstance(t, torch.Tensor):
                continue  # a missing bias (None) is fine
            name = first_name.get(id(t), f"{mod_name}.{local}" if mod_name else local)
            if name in assigned:
                continue  # an ancestor's rule (or a tied alias) already covers it
            assigned[name] = TensorInit(name, t, spec.as_spec(sp), owner=mod)
    return list(assigned.values()), tensors


def _plan_all(inits: list[TensorInit]) -> None:
    for ti in inits:
        ti.plan = ti.spec.plan(ti.tensor, ti.name)


def _execute(inits: list[TensorInit], seed: int, result: InitResult) -> None:
    fills, structured, int_constants = [], [], []
    for ti in inits:
        if ti.tensor.is_meta:
            continue
        if ti.plan is None:
            structured.append(ti)
        elif ti.tensor.dtype not in DTYPE_CODES:
            int_constants.append(ti)
        else:
            fills.append(make_fill(ti.tensor, ti.plan[0], ti.plan[1], seed, stream_for_name(ti.name)))
        (result.structured if ti.plan is None else result.fused).append(ti.name)
    submit(fills)
    with torch.no_grad():
        for ti in int_constants:
            ti.tensor.fill_(ti.plan[1][0])
        for ti in structured:
            kind, kw = ti.spec.kind, ti.spec.kwargs
            if kind == "orthogonal":
                nn_init._orthogonal_fill(ti.tensor, kw.get("gain", 1.0), seed, stream_for_name(ti.name))
            elif kind == "eye":
                nn_init.eye_(ti.tensor)
            else:
                nn_init.dirac_(ti.tensor, kw.get("groups", 1))
        for ti in inits:
            padding_idx = getattr(ti.owner, "padding_idx", None)
            if (isinstance(ti.owner, (nn.Embedding, nn.EmbeddingBag)) and padding_idx is not None
                    and ti.tensor is ti.owner.weight and not ti.tensor.is_meta):
                row = local_index(ti.tensor, 0, padding_idx)  # a shard may not hold the row
                if row is not None:
                    local_tensor(ti.tensor)[row].fill_(0)


def _resolve_seed(seed: Optional[int]) -> int:
    return draw_seed(None) if seed is None else check_seed(seed)


def _own_init_modules(module: nn.Module, prefix: str, covered: set[int]) -> list[tuple[str, nn.Module]]:
    """Modules no rule covers that hold tensors of their own and can reset them."""
    out = []
    for name, mod in module.named_modules(prefix=prefix):
        own = list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False))
        if own and any(id(t) not in covered for t in own) and callable(getattr(mod, "reset_parameters", None)):
            out.append((name, mod))
    return out


def _run(module: nn.Module, seed: Optional[int], prefix: str, rules_for, call_own: bool,
         own_first: bool = False) -> InitResult:
    result = InitResult(seed=_resolve_seed(seed))
    inits, tensors = _collect(module, prefix, rules_for)
    _plan_all(inits)  # every error is raised here, before anything is written
    covered = {id(ti.tensor) for ti in inits}
    own = _own_init_modules(module, prefix, covered) if call_own else []

    def call_own_resets():
        for name, mod in own:
            mod.reset_parameters()
            result.not_fused.append(name or type(mod).__name__)

    if own_first:  # materialize with rules: the rules' values win over a module's own reset
        call_own_resets()
    _execute(inits, result.seed, result)
    if not own_first:
        call_own_resets()
    covered |= {id(t) for _, mod in own for t in list(mod.parameters()) + list(mod.buffers())}
    result.untouched = [name for name, t in tensors.items() if id(t) not in covered]
    return result


def reset_parameters(module: nn.Module, *, seed: Optional[int] = None, prefix: str = "") -> InitResult:
    """PyTorch's default init for every parameter and buffer of `module`, fused.

    Standard layers (Linear, Bilinear, Conv*/ConvTranspose*, Embedding/EmbeddingBag with a zero
    padding row, LayerNorm, RMSNorm, GroupNorm, BatchNorm/InstanceNorm with running stats,
    MultiheadAttention, RNN/LSTM/GRU and their cells, PReLU) get their torch default in one fused
    pass per (device, dtype). A module of another type that holds tensors of its own and has a
    `reset_parameters` is called as is, after the pass, and listed in `result.not_fused`.

    `seed` defaults to one draw from torch's default generator. `prefix` is the module's name
    inside a larger model: a submodule initialised with its prefix gets exactly the values it
    gets when the whole model is initialised.
    """
    return _run(module, seed, prefix, lambda mod, _: _default_rules_for(mod), call_own=True)


def _rules_for_user(rules: Rules, module: nn.Module, prefix: str):
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


def init_module(module: nn.Module, rules: Rules, *, seed: Optional[int] = None,
                prefix: str = "") -> InitResult:
    """The `model.apply(weights_init)` pattern, fused.

    `rules` maps layer types to {parameter name: spec}, and fully qualified name patterns
    (fnmatch, e.g. "lm_head.weight", "*.bias") to a spec; a name rule wins over a type rule.
    Only the tensors the rules cover are written. Every rule is checked against the model
    (a pattern that matches nothing, a name the layer lacks, a spec that cannot apply) before
    anything is written; a missing bias (None) is fine.

    Example::

        fastinit.init_module(model, {
            nn.Conv2d: {"weight": fastinit.spec.kaiming_normal(mode="fan_out", nonlinearity="relu"),
                        "bias": fastinit.spec.zeros()},
            nn.BatchNorm2d: {"weight": fastinit.spec.ones(), "bias": fastinit.spec.zeros()},
            "fc.weight": fastinit.spec.normal(0, 0.01),
        }, seed=0)
    """
    return _run(module, seed, prefix, _rules_for_user(rules, module, prefix), call_own=False)


def _tied_aliases(module: nn.Module) -> list[tuple[nn.Module, str, str, str]]:
    """(owner module, "_parameters" or "_buffers", local name, first fully qualified name) of
    every later name of a tensor held under more than one name."""
    first: dict[int, str] = {}
    out = []
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for slot in ("_parameters", "_buffers"):
            for local, t in getattr(mod, slot).items():
                if t is None:
                    continue
                name = f"{mod_name}.{local}" if mod_name else local
                if id(t) not in first:
                    first[id(t)] = name
                elif first[id(t)] != name:
                    out.append((mod, slot, local, first[id(t)]))
    return out


def materialize(module: nn.Module, device=None, dtype: Optional[torch.dtype] = None, *,
                seed: Optional[int] = None, rules: Optional[Rules] = None) -> InitResult:
    """Allocate a model built on the meta device on `device` (default: CUDA if present, else
    CPU) and initialise it in one pass: the default init, or `rules` (see init_module).

    Peak memory is the parameters themselves: tensors are allocated uninitialised
    (`to_empty`) and written once. A buffer no rule derives is restored by its module's own
    `reset_parameters` when it has one; otherwise it is left uninitialised with a warning.
    Tied parameters stay tied (torch's `to_empty` alone would untie them).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is not None:
        module.to(dtype)  # on meta: only metadata changes
    aliases = _tied_aliases(module)
    module.to_empty(device=device)  # gives each module its own new tensor: unties tied ones
    for owner, slot, local, first in aliases:  # tie them again, to the first name's tensor
        getattr(owner, slot)[local] = _lookup(module, first)
    if rules is None:
        result = reset_parameters(module, seed=seed)
    else:
        # init_module's rules; then a module holding tensors no rule covers (rotary tables,
        # running statistics) restores them with its own reset_parameters, which runs first so
        # that the rule-covered tensors it may also reset end with the rules' values.
        result = _run(module, seed, "", _rules_for_user(rules, module, ""), call_own=True,
                      own_first=True)
    if result.untouched:
        warnings.warn(f"materialize: no rule or reset_parameters initialises {result.untouched}; "
                      "their memory is uninitialised", stacklevel=2)
    return result


@dataclass
class ExplainRow:
    name: str
    shape: tuple
    dtype: str
    distribution: str
    fan_in: Optional[int]
    fan_out: Optional[int]
    gain: Optional[float]
    bound_or_std: str


def _describe(plan, sp: spec.Spec) -> tuple[str, str]:
    if plan is None:
        return sp.kind, f"gain={sp.kwargs.get('gain', 1.0):g}" if sp.kind == "orthogonal" else "-"
    dist, params = plan
    if dist == Distribution.UNIFORM:
        lo, hi = params[1], params[1] + params[0]
        return "uniform", f"U({lo:.6g}, {hi:.6g})"
    if dist == Distribution.NORMAL:
        return "normal", f"mean={params[0]:g} std={params[1]:.6g}"
    if dist == Distribution.CONSTANT:
        return "constant", f"{params[0]:g}"
    return "trunc_normal", f"std={abs(params[1]):.6g} in [{params[6]:.6g}, {params[7]:.6g}]"


def explain(module: nn.Module, rules: Optional[Rules] = None, prefix: str = "") -> list[ExplainRow]:
    """One row per parameter and buffer: what the default init (or `rules`) gives it."""
    rules_for = (lambda mod, _: _default_rules_for(mod)) if rules is None else \
        _rules_for_user(rules, module, prefix)
    inits, tensors = _collect(module, prefix, rules_for)
    by_name = {ti.name: ti for ti in inits}
    rows = []
    for name, t in tensors.items():
        ti = by_name.get(name)
        fans = _calculate_fan_in_and_fan_out(t) if t.dim() >= 2 else (None, None)
        if ti is None:
            rows.append(ExplainRow(name, tuple(t.shape), str(t.dtype).replace("torch.", ""),
                                   "module's own init", *fans, None, "-"))
            continue
        dist, detail = _describe(ti.spec.plan(t, name), ti.spec)
        rows.append(ExplainRow(name, tuple(t.shape), str(t.dtype).replace("torch.", ""),
                               f"{dist} ({ti.spec.kind})" if ti.spec.kind != dist else dist,
                               *fans, ti.spec.gain(), detail))
    return rows


def format_explain(rows: list[ExplainRow]) -> str:
    header = ["name", "shape", "dtype", "distribution", "fan_in", "fan_out", "gain", "bound or std"]
    table = [header] + [[r.name, "x".join(map(str, r.shape)) or "scalar", r.dtype, r.distribution,
                         "" if r.fan_in is None else str(r.fan_in),
                         "" if r.fan_out is None else str(r.fan_out),
                         "" if r.gain is None else f"{r.gain:.6g}", r.bound_or_std] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
