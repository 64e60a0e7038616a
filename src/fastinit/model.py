"""Whole-model init: PyTorch's default init of every standard layer (or user rules) for every
parameter and buffer of a module, in one fused pass per (device, dtype).

Each tensor gets stream = blake2b-64 of its fully qualified name (docs/contract.md), so its values do
not depend on the order, on which other tensors are in the call, on the device or backend.
Tied parameters are initialised once, under their first name.
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Union

import torch
from torch import nn

from . import spec
from .fused import fused, run_now, submit
from .registry import BY_SPEC_KIND
from .contract import (Distribution, check_seed, describe_parameters, distribution_name,
                       draw_seed, seeds_from, stream_for_name)
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


def _default_rules_for(module: nn.Module) -> Optional[dict]:
    """The default rules of `module`'s layer type; None when its class overrides that type's
    reset_parameters (a subclass with its own init: its reset_parameters runs instead)."""
    for cls in type(module).__mro__:
        if cls in DEFAULT_RULES:
            if getattr(type(module), "reset_parameters", None) is not \
                    getattr(cls, "reset_parameters", None):
                return None
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
    model_init: list = field(default_factory=list)     # tensors the model's own init wrote
    kept: list = field(default_factory=list)           # buffers that kept their value (materialize)

    def __repr__(self) -> str:
        return (f"InitResult(seed={self.seed}, fused={len(self.fused)} tensors, structured="
                f"{self.structured}, not_fused={self.not_fused}, model_init="
                f"{len(self.model_init)} tensors, kept={self.kept}, untouched={self.untouched})")


def _lookup(module: nn.Module, local: str):
    obj = module
    for part in local.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _named_tensors(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every parameter and buffer by its first fully qualified name (tied tensors once)."""
    return dict(list(module.named_parameters(prefix=prefix)) + list(module.named_buffers(prefix=prefix)))


def _collect(module: nn.Module, prefix: str, rules_for: Callable[[nn.Module, str], dict]
             ) -> tuple[list[TensorInit], dict[str, torch.Tensor]]:
    """Every (name, tensor, spec) of the pass; tied tensors once, under their first name."""
    tensors = _named_tensors(module, prefix)
    first_name = {id(t): name for name, t in tensors.items()}
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
        elif ti.tensor.dtype not in DTYPE_CODES and ti.plan[0] == Distribution.CONSTANT:
            int_constants.append(ti)  # integer, bool and complex constants: torch's fill_
        else:
            fills.append(make_fill(ti.tensor, ti.plan[0], ti.plan[1], seed, stream_for_name(ti.name)))
        (result.structured if ti.plan is None else result.fused).append(ti.name)
    submit(fills)
    with torch.no_grad():
        for ti in int_constants:
            ti.tensor.fill_(ti.plan[1][0])
        for ti in structured:
            BY_SPEC_KIND[ti.spec.kind].execute(ti.tensor, seed, stream_for_name(ti.name), run_now,
                                               **ti.spec.kwargs)
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
         own_first: bool = False, initialised: frozenset = frozenset()) -> InitResult:
    """`initialised`: ids of tensors that already hold their values (the pass skips them)."""
    result = InitResult(seed=_resolve_seed(seed))
    inits, tensors = _collect(module, prefix, rules_for)
    inits = [ti for ti in inits if id(ti.tensor) not in initialised]
    _plan_all(inits)  # every error is raised here, before anything is written
    covered = {id(ti.tensor) for ti in inits} | initialised
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

    A layer whose class overrides `reset_parameters` runs its own, as torch would.

    Args:
        module: the model; its tensors may be on any device, meta (no-op) or sharded (DTensor).
        seed: the seed of the pass (each tensor's stream is its name's blake2b-64); default:
            one draw from torch's default CPU generator.
        prefix: the module's name inside a larger model: a submodule initialised with its
            prefix gets exactly the values it gets when the whole model is initialised.

    Returns:
        InitResult: which tensors the fused pass wrote (`fused`), which ran after it
        (`structured`, `not_fused`) and which nothing covers (`untouched`).

    Raises:
        InitValueError: a layer's default cannot apply (e.g. a sharded tensor needing the whole
            matrix); raised before anything is written.
        TypeError: `seed` is not an int.
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

    Args:
        module: the model.
        rules: layer types to {parameter name: spec}, and fully qualified name patterns to a
            spec (see above).
        seed: the seed of the pass; default: one draw from torch's default CPU generator.
        prefix: the module's name inside a larger model (see `reset_parameters`).

    Returns:
        InitResult: as for `reset_parameters`; only the tensors the rules cover are written.

    Raises:
        InitValueError: a rule key that is neither a type nor a pattern, a pattern matching no
            tensor, a parameter name the layer lacks, or a spec that cannot apply.
        TypeError: `seed` is not an int.
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


# The model's own init method, by name (torchtitan's Transformer.init_weights(), init_states()).
OWN_INIT_METHODS = ("init_weights", "init_states")
InitArg = Union[str, Callable[[nn.Module], object]]


def _is_hugging_face_model(module: nn.Module) -> bool:
    return any(cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers.")
               for cls in type(module).__mro__)


def _hugging_face_init(model: nn.Module, kept: list[torch.Tensor]) -> None:
    """`PreTrainedModel.init_weights()` on fresh tensors: every module's `_init_weights` (which
    also recomputes rotary and position buffers), then `tie_weights`. As in a model built on a
    real device, a tied parameter (`lm_head.weight`) is initialised as its source alone (the
    target is set aside on meta, where init writes nothing) and tied again by `tie_weights`.
    The model's `_is_hf_initialized` flags from an earlier build are cleared, and kept buffers
    are flagged, so that HF's init leaves them alone as it does loaded weights."""
    for m in model.modules():
        m.__dict__.pop("_is_hf_initialized", None)
    for t in kept:
        t._is_hf_initialized = True
    for target in getattr(model, "all_tied_weights_keys", None) or {}:
        owner_name, _, local = target.rpartition(".")
        owner = model.get_submodule(owner_name)
        tied = getattr(owner, local)
        setattr(owner, local, nn.Parameter(torch.empty_like(tied, device="meta"),
                                           requires_grad=tied.requires_grad))
    model.init_weights()


def _model_init(module: nn.Module, init: InitArg) -> Optional[Callable[[list], object]]:
    """The model's own init that `init` selects, called with the kept buffers; None for
    fastinit's reset_parameters rules alone."""
    if callable(init):
        return lambda kept: init(module)
    if init == "reset_parameters":
        return None
    if init != "auto":
        raise InitValueError(f"init must be 'auto', 'reset_parameters' or a callable taking the "
                             f"model, got {init!r}")
    if _is_hugging_face_model(module):
        return lambda kept: _hugging_face_init(module, kept)
    for name in OWN_INIT_METHODS:
        method = getattr(module, name, None)
        if callable(method):
            return lambda kept: method()
    return None


_meta_init_state = threading.local()
_meta_init_lock = threading.Lock()
_meta_init_depth = 0  # threads inside meta_init(): register_parameter is wrapped while > 0
_register_parameter = nn.Module.register_parameter


def _register_parameter_on_meta(self: nn.Module, name: str, param) -> None:
    if getattr(_meta_init_state, "active", False) and param is not None and not param.is_meta:
        param = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
    _register_parameter(self, name, param)


@contextlib.contextmanager
def meta_init() -> Iterator[None]:
    """Build a model with its parameters on the meta device and its buffers real.

    Inside the block, every parameter a module registers is moved to the meta device, while
    buffers stay where the constructor computed them (a rotary `inv_freq`, `position_ids`):
    `materialize` then keeps their constructor values and initialises the parameters. Only the
    calling thread is affected. Constructors still allocate each parameter on the CPU before it
    moves (untouched memory, freed at once).

    Example::

        with fastinit.meta_init():
            model = MyModel()
        fastinit.materialize(model, "cuda", seed=0)   # buffers: the constructor's values

    Returns:
        A context manager; a block nested in another joins it.
    """
    global _meta_init_depth
    if getattr(_meta_init_state, "active", False):
        yield
        return
    with _meta_init_lock:
        if _meta_init_depth == 0:
            nn.Module.register_parameter = _register_parameter_on_meta
        _meta_init_depth += 1
    _meta_init_state.active = True
    try:
        yield
    finally:
        _meta_init_state.active = False
        with _meta_init_lock:
            _meta_init_depth -= 1
            if _meta_init_depth == 0:
                nn.Module.register_parameter = _register_parameter


def _allocate(module: nn.Module, device, dtype: Optional[torch.dtype]) -> list[str]:
    """Allocate every meta tensor, and every parameter, uninitialised on `device` (to_empty); a
    buffer that already holds a value moves there and keeps it. Returns the kept buffers' names."""
    if dtype is not None:
        module.to(dtype)  # on meta: only metadata changes
    kept = [name for name, b in module.named_buffers() if not b.is_meta]
    aliases = _tied_aliases(module)
    module._apply(lambda t: torch.empty_like(t, device=device)  # what to_empty does
                  if t.is_meta or isinstance(t, nn.Parameter) else t.to(device))
    for owner, slot, local, first in aliases:  # _apply unties tied tensors: tie them again
        getattr(owner, slot)[local] = _lookup(module, first)
    return kept


def materialize(module: nn.Module, device=None, dtype: Optional[torch.dtype] = None, *,
                seed: Optional[int] = None, init: InitArg = "auto", rules: Optional[Rules] = None,
                allow_uninitialized: bool = False) -> InitResult:
    r"""Allocate a model built on the meta device and initialise every tensor once, fused.

    The tensors are allocated uninitialised on `device` (as `to_empty` does) and written in
    this order, inside one `fastinit.fused()` block:

    1. the model's own init (`init`):

       * ``"auto"`` (the default): a Hugging Face `PreTrainedModel`'s `init_weights()` (every
         module's `_init_weights`, which recomputes rotary and position buffers too), else the
         model's `init_weights()` or `init_states()` method (the torchtitan pattern), else none;
       * a callable: `init(module)`;
       * ``"reset_parameters"``: none;

    2. `rules` (see `init_module`), which win over the model's own init;
    3. for every tensor neither wrote: PyTorch's default init of its layer (as in
       `reset_parameters`), or its module's own `reset_parameters()`.

    The model's own init draws its seeds from a generator seeded with `seed` (`seeds_from`,
    this thread only): torch's default generator is not consumed, unless the init draws from it
    itself rather than through a call fastinit records (`torch.randperm`, `bernoulli_`). The
    fastinit passes use `seed` with each tensor's name as stream. A buffer that already holds a
    value (a model built under `fastinit.meta_init()`, whose buffers keep their constructor
    values) is moved to `device` and keeps it; only the model's own init may write it again
    (Hugging Face's leaves it alone). Tied parameters stay tied. Peak memory is the parameters
    themselves.

    Args:
        module: the model, built under ``torch.device("meta")`` or `fastinit.meta_init()`.
        device: where to allocate; default CUDA if present, else CPU.
        dtype: a floating dtype for floating tensors (default: keep theirs).
        seed: default: one draw from torch's default generator.
        init: ``"auto"``, ``"reset_parameters"`` or a callable taking the model.
        rules: init_module rules, applied after the model's own init.
        allow_uninitialized: leave tensors that nothing writes uninitialised, with a warning,
            instead of raising.

    Returns:
        InitResult: `model_init` names what the model's own init wrote, `kept` the buffers that
        kept their values, `fused` / `structured` / `not_fused` what the fastinit passes did.

    Raises:
        InitValueError: a bad `init` or rule, a tensor the model's init left on meta, or
            (unless `allow_uninitialized`) tensors that no rule, no `reset_parameters` and no
            model init writes, named; the pending fills of the pass are then dropped, but the
            module is already allocated.
    """
    model_init = _model_init(module, init)
    rules_for = None if rules is None else _rules_for_user(rules, module, "")
    seed = _resolve_seed(seed)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kept_names = _allocate(module, device, dtype)
    tensors = _named_tensors(module)
    kept = frozenset(id(tensors[name]) for name in kept_names if name in tensors)
    with fused() as recorder:
        written = kept
        model_written: list[str] = []
        if model_init is not None:
            with seeds_from(torch.Generator().manual_seed(seed)):
                model_init([t for t in tensors.values() if id(t) in kept])
            allocated = {id(t) for t in tensors.values()}
            tensors = _named_tensors(module)  # a tensor the init made anew holds its values
            on_meta = [n for n, t in tensors.items() if t.is_meta]
            if on_meta:
                raise InitValueError(f"materialize: the model's init left {on_meta} on the meta "
                                     "device")
            model_written = [n for n, t in tensors.items()
                             if id(t) not in allocated or recorder.wrote(t)]
            written = written | {id(tensors[n]) for n in model_written}
        rule_covered = frozenset() if rules_for is None else \
            frozenset(id(ti.tensor) for ti in _collect(module, "", rules_for)[0])
        result = _run(module, seed, "", lambda mod, _: _default_rules_for(mod), call_own=True,
                      initialised=written | rule_covered)
        if rules_for is not None:  # after the defaults: the rules win over a module's own reset
            by_rules = _run(module, seed, "", rules_for, call_own=False, initialised=kept)
            result.fused += by_rules.fused
            result.structured += by_rules.structured
        result.model_init = [n for n in model_written if id(tensors[n]) not in kept]
        result.kept = kept_names
        if result.untouched and not allow_uninitialized:
            raise InitValueError(
                f"materialize: nothing initialises {result.untouched}: no rule, no "
                "reset_parameters and no model init writes them. Give them rules=, build the "
                "model under fastinit.meta_init() if they are buffers computed in the "
                "constructor, or pass allow_uninitialized=True to leave them uninitialised")
    if result.untouched:
        warnings.warn(f"materialize: nothing initialises {result.untouched}; their memory is "
                      "uninitialised", stacklevel=2)
    return result


@dataclass
class ExplainRow:
    """One parameter or buffer in `explain()`: what `materialize` writes to it, and why."""

    name: str
    shape: tuple
    dtype: str
    distribution: str
    fan_in: Optional[int]
    fan_out: Optional[int]
    gain: Optional[float]
    parameters: str  # describe_parameters: "lo, hi", "mean=0, std=0.02", ...; or "-"
    source: str = ""  # "rule", "default", "model init", "<Module>.reset_parameters()", "kept"


class Explanation(list):
    """The rows of `explain()`: a list of ExplainRow that prints as a table."""

    def __str__(self) -> str:
        return format_explain(self)

    __repr__ = __str__


NOT_INITIALISED = "NOT INITIALISED"


def _describe(plan, sp: spec.Spec) -> tuple[str, str]:
    """(distribution, parameters) of a spec's plan, in the words of `describe_fill`."""
    if plan is None:
        return sp.kind, f"gain={sp.kwargs.get('gain', 1.0):g}" if sp.kind == "orthogonal" else "-"
    return distribution_name(plan[0]), describe_parameters(*plan)


def _recorded_write(description: str) -> tuple[str, str]:
    """("normal", "mean=0, std=0.02") from a dry run's record "normal(mean=0, std=0.02)" (the
    form of `describe_fill`, or an operation's name such as "copy_"); later partial writes
    follow the detail ("...; then constant(0) on part")."""
    last_full, then, partial = description.partition("; then ")
    kind, _, args = last_full.partition("(")
    detail = args[:-1] if args.endswith(")") else "-"
    return kind, detail + then + partial


def _dry_run_model_init(module: nn.Module, model_init, tensors: dict[str, torch.Tensor]
                        ) -> dict[str, str]:
    """{name: the last write of the model's own init} for each tensor it writes, found by a dry
    run: nothing is executed or allocated, and torch's generator is restored afterwards."""
    kept = [t for t in module.buffers() if not t.is_meta]
    with seeds_from(torch.Generator()), fused(dry_run=True) as recorder:
        model_init(kept)
    return {name: d for name, t in tensors.items() if (d := recorder.describe(t)) is not None}


def explain(module: nn.Module, rules: Optional[Rules] = None, prefix: str = "", *,
            init: InitArg = "auto") -> Explanation:
    """What `materialize(module, init=init, rules=rules)` writes to each parameter and buffer.

    The model's own init is found by a dry run inside `fastinit.fused(dry_run=True)`, which
    records the writes without executing them (build the model on meta: nothing is allocated),
    and leaves torch's generator as it was; rules and PyTorch's layer defaults are read from
    their specs. A tensor nothing writes is listed as ``NOT INITIALISED`` (`materialize` would
    raise).

    Args:
        module: the model, usually built on the meta device.
        rules: init_module rules, as for `materialize`.
        prefix: the module's name inside a larger model.
        init: ``"auto"``, ``"reset_parameters"`` or a callable taking the model.

    Returns:
        Explanation: a list with one ExplainRow per tensor (tied ones once); `print()` shows it
        as a table.

    Raises:
        InitValueError: a bad `init` or rule, as `materialize` would raise it.
    """
    model_init = _model_init(module, init)
    tensors = _named_tensors(module, prefix)
    by_model = {} if model_init is None else _dry_run_model_init(module, model_init, tensors)
    by_rule = {} if rules is None else \
        {ti.name: ti for ti in _collect(module, prefix, _rules_for_user(rules, module, prefix))[0]}
    defaults = _collect(module, prefix, lambda mod, _: _default_rules_for(mod))[0]
    by_default = {ti.name: ti for ti in defaults}
    rows = Explanation()
    for name, t in tensors.items():
        fans = _calculate_fan_in_and_fan_out(t) if t.dim() >= 2 else (None, None)
        head = (name, tuple(t.shape), str(t.dtype).replace("torch.", ""))
        kept = not isinstance(t, nn.Parameter) and not t.is_meta  # a buffer with a value
        ti = None if kept else by_rule.get(name)
        if ti is None and name not in by_model and not kept:
            ti = by_default.get(name)
        if ti is not None:
            dist, detail = _describe(ti.spec.plan(t, name), ti.spec)
            label = f"{dist} ({ti.spec.kind})" if ti.spec.kind != dist else dist
            rows.append(ExplainRow(*head, label, *fans, ti.spec.gain(), detail,
                                   "rule" if name in by_rule else "default"))
        elif name in by_model:
            kind, detail = _recorded_write(by_model[name])
            rows.append(ExplainRow(*head, kind, *fans, None, detail, "model init"))
        elif kept:
            rows.append(ExplainRow(*head, "kept", *fans, None, "-", "kept"))
        else:
            owner = module.get_submodule(name[len(prefix) + 1 if prefix else 0:].rpartition(".")[0])
            if callable(getattr(owner, "reset_parameters", None)):
                rows.append(ExplainRow(*head, "module's own init", *fans, None, "-",
                                       f"{type(owner).__name__}.reset_parameters()"))
            else:
                rows.append(ExplainRow(*head, NOT_INITIALISED, *fans, None, "-", NOT_INITIALISED))
    return rows


def format_explain(rows: list[ExplainRow]) -> str:
    """The rows of `explain()` as an aligned text table."""
    header = ["name", "shape", "dtype", "distribution", "fan_in", "fan_out", "gain", "parameters",
              "source"]
    table = [header] + [[r.name, "x".join(map(str, r.shape)) or "scalar", r.dtype, r.distribution,
                         "" if r.fan_in is None else str(r.fan_in),
                         "" if r.fan_out is None else str(r.fan_out),
                         "" if r.gain is None else f"{r.gain:.6g}", r.parameters, r.source]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
