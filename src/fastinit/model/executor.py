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
from itertools import chain
from typing import Callable, Optional, Union

import torch
from torch import nn

from ..contract import Distribution, check_seed, draw_seed, stream_for_name
from ..backends import HOST_DISTRIBUTIONS, dense_native_codes, execute
from ..fused import active_recorder, run_now, submit
from ..recorder import storage_key
from ..registry import BY_SPEC_KIND
from ..plan import DTYPE_CODES, make_fill
from ..sharding import local_index, local_tensor
from .names import named_tensors, stream_name, walk
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


# Spec kinds whose planning may warn about the tensor (a mean far from [a, b]): planned for
# every tensor, as alone, never taken from the plans of the pass.
_PLANNED_PER_TENSOR = frozenset({"trunc_normal"})
_STREAMS_CACHED = 1 << 16
_streams: dict[str, int] = {}  # tensor name -> its stream


def plan_all(inits: list[TensorInit], dense_ok: Union[bool, Callable[[torch.Tensor], bool]] = False
             ) -> None:
    """Every tensor's plan; every error is raised here, before anything is written.

    With `dense_ok` (True, or which tensors may go to the native call now), the tensors that
    `backends.dense_native_codes` accepts get `dense` too, planned once per (spec, shape, dtype)
    in the pass: for such a tensor the plan depends on nothing else."""
    codes = dense_native_codes([ti.tensor for ti in inits]) if dense_ok else None
    if codes is None:
        for ti in inits:
            ti.plan = ti.spec.plan(ti.tensor, ti.name)
        return
    plans: dict[tuple, tuple] = {}  # (id(spec), shape, dtype code) -> (plan, dense)
    for ti, code in zip(inits, codes):
        t = ti.tensor
        if code is None or (dense_ok is not True and not dense_ok(t)):
            ti.plan = ti.spec.plan(t, ti.name)
            continue
        key = (id(ti.spec), t.shape, code)
        planned = plans.get(key)
        if planned is None:
            plan = ti.spec.plan(t, ti.name)
            planned = (plan, _dense_row(t, plan))
            if ti.spec.kind not in _PLANNED_PER_TENSOR:
                plans[key] = planned
        ti.plan, ti.dense = planned


def _dense_row(tensor: torch.Tensor, plan: Optional[tuple]) -> Optional[tuple]:
    """(dist, params) of `tensor`'s plan as make_fill checks it, for the native call; None for a
    plan it does not take (a structured init, a host-only distribution)."""
    if plan is None or plan[0] in HOST_DISTRIBUTIONS:
        return None
    fill = make_fill(tensor, plan[0], plan[1], 0)
    return int(fill.dist), fill.params


def stream_of(name: str) -> int:
    """A tensor's stream: blake2b-64 of its name without torch's wrapper segments (the names of
    the latest passes kept, so that a model initialised again hashes none)."""
    stream = _streams.get(name)
    if stream is None:
        stream = stream_for_name(stream_name(name))
        if len(_streams) >= _STREAMS_CACHED:
            _streams.clear()
        _streams[name] = stream
    return stream


def execute_inits(inits: list[TensorInit], seed: int, result: InitResult) -> None:
    """Write every planned tensor: the dense ones (`plan_all`) in the pass's native call, now,
    with the fills of the others (run now or recorded by `fused()`), then the integer constants
    and structured inits."""
    fills, dense, structured, int_constants = [], [], [], []
    with torch._C.DisableTorchFunction():  # fastinit's own look at the tensors' metadata
        for ti in inits:
            if ti.dense is not None:
                dist, params = ti.dense
                dense.append((ti.tensor, dist, params, seed, stream_of(ti.name)))
                result.fused.append(ti.name)
                continue
            if ti.tensor.is_meta:
                continue
            if ti.plan is None:
                structured.append(ti)
            elif ti.tensor.dtype not in DTYPE_CODES and ti.plan[0] == Distribution.CONSTANT:
                int_constants.append(ti)  # integer, bool and complex constants: torch's fill_
            else:
                fills.append(make_fill(ti.tensor, ti.plan[0], ti.plan[1], seed, stream_of(ti.name)))
            (result.structured if ti.plan is None else result.fused).append(ti.name)
    if dense and active_recorder() is None:
        execute(fills, dense)
    else:
        if dense:
            execute((), dense)
        submit(fills)
    with torch.no_grad():
        for ti in int_constants:
            ti.tensor.fill_(ti.plan[1][0])
        for ti in structured:
            BY_SPEC_KIND[ti.spec.kind].execute(ti.tensor, seed, stream_of(ti.name), run_now,
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


def own_init_modules(modules: list[tuple[str, nn.Module]], covered: set[int]
                     ) -> list[tuple[str, nn.Module]]:
    """Of `modules` (`names.walk`), those no rule covers that hold tensors of their own and can
    reset them."""
    out = []
    for name, mod in modules:
        params, buffers = mod._parameters, mod._buffers
        if not params and not buffers:
            continue  # a container
        for t in chain(params.values(), buffers.values()):
            if t is not None and id(t) not in covered:
                if callable(getattr(mod, "reset_parameters", None)):
                    out.append((name, mod))
                break
    return out


def _dense_now(own_block: bool) -> Union[bool, Callable[[torch.Tensor], bool]]:
    """Which tensors the pass may write in its native call now: all (True) outside a `fused()`
    block; inside one the caller owns (`own_block`, not a dry run), those whose memory holds no
    pending fill (the block would write them later, in their order); else none (False: the
    block records every fill)."""
    recorder = active_recorder()
    if recorder is None:
        return True
    if not own_block or recorder.dry_run:
        return False
    if not recorder.pending:
        return True
    return lambda t: not recorder.has_pending(storage_key(t))


def run_pass(module: nn.Module, seed: Optional[int], prefix: str, rules_for, call_own: bool,
             initialised: frozenset = frozenset(), own_block: bool = False) -> InitResult:
    """`initialised`: ids of tensors that already hold their values (the pass skips them).
    `own_block`: the active `fused()` block is the caller's own, and nothing reads its record
    of the pass's writes (materialize), so the pass may write whole plain CPU tensors at once."""
    result = InitResult(seed=resolve_seed(seed))
    with torch._C.DisableTorchFunction():  # fastinit's own look at the tensors' metadata
        modules = walk(module, prefix)
        inits, tensors = collect(module, prefix, rules_for, modules)
        if initialised:
            inits = [ti for ti in inits if id(ti.tensor) not in initialised]
        plan_all(inits, _dense_now(own_block))  # every error is raised here, before anything is written
        covered = {id(ti.tensor) for ti in inits} | initialised
        own = own_init_modules(modules, covered) if call_own else []
    execute_inits(inits, result.seed, result)
    for name, mod in own:
        mod.reset_parameters()
        result.not_fused.append(name or type(mod).__name__)
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
