"""The fused pass over a model's tensors: every tensor its spec, in one fused pass per
(device, dtype), then the structured fills and the modules' own reset_parameters.

Each tensor gets stream = blake2b-64 of its name (docs/contract.md), without the segments of
torch's wrappers (`names.stream_name`), so its values do not depend on the order, on which other
tensors are in the call, on the device or backend, or on torch.compile, activation
checkpointing or FSDP1 wrapping the model. Tied parameters
are initialised once, under their first name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..contract import Distribution, check_seed, draw_seed, stream_for_name
from ..fused import run_now, submit
from ..registry import BY_SPEC_KIND
from ..plan import DTYPE_CODES, make_fill
from ..sharding import local_index, local_tensor
from .names import named_tensors, own_tensors, stream_name
from .rules import Rules, TensorInit, collect, default_rules_for, user_rules


@dataclass
class InitResult:
    """What a whole-model call did."""

    seed: int
    fused: list = field(default_factory=list)          # names filled in the fused pass
    structured: list = field(default_factory=list)     # orthogonal / eye / dirac, after it
    not_fused: list = field(default_factory=list)      # modules whose own reset_parameters ran
    untouched: list = field(default_factory=list)      # tensors no rule covers
    model_init: list = field(default_factory=list)     # tensors the model's own init wrote
    kept: list = field(default_factory=list)           # tensors that kept their values (materialize)
    replayed: list = field(default_factory=list)       # constructor init replayed (meta_init)

    def __repr__(self) -> str:
        return (f"InitResult(seed={self.seed}, fused={len(self.fused)} tensors, structured="
                f"{self.structured}, not_fused={self.not_fused}, model_init="
                f"{len(self.model_init)} tensors, replayed={len(self.replayed)} tensors, "
                f"kept={self.kept}, untouched={self.untouched})")


def plan_all(inits: list[TensorInit]) -> None:
    for ti in inits:
        ti.plan = ti.spec.plan(ti.tensor, ti.name)


def _stream(ti: TensorInit) -> int:
    """A tensor's stream: blake2b-64 of its name without torch's wrapper segments."""
    return stream_for_name(stream_name(ti.name))


def execute_inits(inits: list[TensorInit], seed: int, result: InitResult) -> None:
    fills, structured, int_constants = [], [], []
    with torch._C.DisableTorchFunction():  # fastinit's own look at the tensors' metadata
        for ti in inits:
            if ti.tensor.is_meta:
                continue
            if ti.plan is None:
                structured.append(ti)
            elif ti.tensor.dtype not in DTYPE_CODES and ti.plan[0] == Distribution.CONSTANT:
                int_constants.append(ti)  # integer, bool and complex constants: torch's fill_
            else:
                fills.append(make_fill(ti.tensor, ti.plan[0], ti.plan[1], seed, _stream(ti)))
            (result.structured if ti.plan is None else result.fused).append(ti.name)
    submit(fills)
    with torch.no_grad():
        for ti in int_constants:
            ti.tensor.fill_(ti.plan[1][0])
        for ti in structured:
            BY_SPEC_KIND[ti.spec.kind].execute(ti.tensor, seed, _stream(ti), run_now,
                                               **ti.spec.kwargs)
        for ti in inits:
            if not isinstance(ti.owner, (nn.Embedding, nn.EmbeddingBag)):
                continue
            padding_idx = ti.owner.padding_idx
            if padding_idx is not None and ti.tensor is ti.owner.weight and not ti.tensor.is_meta:
                row = local_index(ti.tensor, 0, padding_idx)  # a shard may not hold the row
                if row is not None:
                    local_tensor(ti.tensor)[row].fill_(0)


def resolve_seed(seed: Optional[int]) -> int:
    return draw_seed(None) if seed is None else check_seed(seed)


def own_init_modules(module: nn.Module, prefix: str, covered: set[int]) -> list[tuple[str, nn.Module]]:
    """Modules no rule covers that hold tensors of their own and can reset them."""
    out = []
    for name, mod in module.named_modules(prefix=prefix):
        own = own_tensors(mod)
        if own and any(id(t) not in covered for t in own) and callable(getattr(mod, "reset_parameters", None)):
            out.append((name, mod))
    return out


def run_pass(module: nn.Module, seed: Optional[int], prefix: str, rules_for, call_own: bool,
         own_first: bool = False, initialised: frozenset = frozenset()) -> InitResult:
    """`initialised`: ids of tensors that already hold their values (the pass skips them)."""
    result = InitResult(seed=resolve_seed(seed))
    with torch._C.DisableTorchFunction():  # fastinit's own look at the tensors' metadata
        inits, tensors = collect(module, prefix, rules_for)
        inits = [ti for ti in inits if id(ti.tensor) not in initialised]
        plan_all(inits)  # every error is raised here, before anything is written
        covered = {id(ti.tensor) for ti in inits} | initialised
        own = own_init_modules(module, prefix, covered) if call_own else []

    def call_own_resets():
        for name, mod in own:
            mod.reset_parameters()
            result.not_fused.append(name or type(mod).__name__)

    if own_first:  # materialize with rules: the rules' values win over a module's own reset
        call_own_resets()
    execute_inits(inits, result.seed, result)
    if not own_first:
        call_own_resets()
    covered |= {id(t) for _, mod in own for t in named_tensors(mod).values()}
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
        seed: the seed of the pass (each tensor's stream is the blake2b-64 of its name, without
            the segments of torch's wrappers); default: one draw from torch's default CPU
            generator.
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
    return run_pass(module, seed, prefix, lambda mod, _: default_rules_for(mod), call_own=True)


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
    return run_pass(module, seed, prefix, user_rules(rules, module, prefix), call_own=False)
