"""`materialize`: allocate a model built on meta and initialise every tensor once, fused."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ..contract import seeds_from
from ..errors import InitValueError
from ..fused import active_recorder, fused
from .executor import InitResult, resolve_seed, run_pass
from .names import lookup, named_tensors, tied_aliases, walk
from .hugging_face import is_hugging_face_model
from .own_init import InitArg, select_model_init
from .recipes import NotReplayable
from .rules import Rules, collect, default_rules_for, user_rules


def _empty_on(t: torch.Tensor, device) -> torch.Tensor:
    """`torch.empty_like(t, device=device)`; a plain dense tensor without empty_like's layout
    logic (on meta, a Python decomposition)."""
    if type(t) in (torch.Tensor, nn.Parameter) and t.layout == torch.strided and t.is_contiguous():
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    return torch.empty_like(t, device=device)


def _allocate(module: nn.Module, modules: list, tensors: dict[str, torch.Tensor], device,
              dtype: Optional[torch.dtype], reinit: bool) -> list[str]:
    """Allocate every meta tensor (and with `reinit` every parameter) uninitialised on `device`
    (what to_empty does); a tensor that already holds a value moves there and keeps it.
    `modules`: `walk(module)`; `tensors`: `named_tensors(module)` as it is now. Returns the kept
    tensors' names."""
    if dtype is not None:
        module.to(dtype)  # on meta: only metadata changes (buffers are new tensors)
        tensors = named_tensors(module, "", modules)
    missing = (lambda t: t.is_meta or isinstance(t, nn.Parameter)) if reinit else \
        (lambda t: t.is_meta)
    kept = [name for name, t in tensors.items() if not missing(t)]
    if not _allocate_directly(modules, device, missing):
        aliases = tied_aliases(module)
        module._apply(lambda t: _empty_on(t, device) if missing(t) else t.to(device))
        for owner, slot, local, first in aliases:  # _apply unties tied tensors: tie them again
            getattr(owner, slot)[local] = lookup(module, first)
    return kept


_MODULE_APPLY = nn.Module._apply


def _allocate_directly(modules: list, device, missing: Callable[[torch.Tensor], bool]) -> bool:
    """What `module._apply(lambda t: _empty_on(t, device) if missing(t) else t.to(device))`
    does to a model (`modules`: its `walk`) whose missing tensors are all plain meta tensors and
    parameters without gradients and whose other tensors are plain ones already on `device`
    (which `.to` leaves as they are), without _apply's per-tensor layers, tied tensors kept
    tied. Where any module has an `_apply` of its own (an RNN's flattens its weights), a tensor
    is of another type or elsewhere, or torch's conversion futures (`torch.__future__`:
    overwrite or swap module params) are set, it changes nothing and returns False.

    Returns:
        Whether the tensors were allocated."""
    if torch.__future__.get_overwrite_module_params_on_conversion() or \
            torch.__future__.get_swap_module_params_on_conversion():
        return False
    target = torch.device(device)
    slots = []
    for _, mod in modules:
        if type(mod)._apply is not _MODULE_APPLY:
            return False
        for holder, kind in ((mod._parameters, nn.Parameter), (mod._buffers, torch.Tensor)):
            for local, t in holder.items():
                if t is None:
                    continue
                if type(t) is not kind or (kind is nn.Parameter and t.grad is not None):
                    return False
                if missing(t):
                    if not t.is_meta:
                        return False
                    slots.append((holder, local, t))
                elif t.device != target:
                    return False
    allocated: dict[int, torch.Tensor] = {}  # id(meta tensor) -> its allocation (ties kept)
    for slot, local, t in slots:
        new = allocated.get(id(t))
        if new is None:
            new = _empty_on(t, device)
            if type(t) is nn.Parameter:  # as _apply makes it
                new = nn.Parameter(new, t.requires_grad)
            allocated[id(t)] = new
        slot[local] = new
    return True


@contextlib.contextmanager
def _set_aside(module: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Inside the block the module holds meta stand-ins of `params` (tied ones stay tied), so
    that the model's own init and the modules' reset_parameters write nothing to them; the
    parameters themselves return at exit."""
    stand_in = {id(p): nn.Parameter(torch.empty_like(p, device="meta"),
                                    requires_grad=p.requires_grad) for p in params}
    swapped = []
    for mod in module.modules(remove_duplicate=False) if stand_in else ():
        for local, t in mod._parameters.items():
            if t is not None and id(t) in stand_in:
                swapped.append((mod, local, t))
    for mod, local, t in swapped:
        mod._parameters[local] = stand_in[id(t)]
    try:
        yield
    finally:
        for mod, local, t in swapped:
            mod._parameters[local] = t


@contextlib.contextmanager
def _generators_from(seed: int, device) -> Iterator[None]:
    """Every draw inside the block comes from `seed`: fastinit's seeds (`seeds_from`) and
    torch's own default generators of the CPU and of `device` (for code that draws from torch
    directly: a module's reset_parameters on a tensor fastinit does not fill, `randperm`),
    which are restored at exit, so the caller's generator state is untouched."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        with seeds_from(torch.Generator().manual_seed(seed)):
            yield


def _replay_constructors(module: nn.Module, tensors: dict[str, torch.Tensor], recipes: dict,
                         seed: int) -> tuple[list, list]:
    """Replay the constructor init recorded under `meta_init()` on the allocated tensors
    (`tensors`: `named_tensors(module)`), in one fused block of its own. A recipe that starts
    from its layer's default gets fastinit's default fill first. Returns (replayed names, names
    that could not be replayed)."""
    todo = {n: r for n, r in recipes.items() if n in tensors and r.makes_values}
    replayed, failed = [], []
    if not todo:
        return replayed, failed
    with fused():
        first = {id(tensors[n]) for n, r in todo.items() if r.default}
        if first:
            run_pass(module, seed, "", lambda mod, _: default_rules_for(mod), call_own=False,
                     initialised=frozenset(id(t) for t in tensors.values()) - first)
        for name, recipe in todo.items():
            try:
                recipe.replay(tensors[name])
                replayed.append(name)
            except NotReplayable:
                failed.append(name)
    return replayed, failed


def materialize(module: nn.Module, device=None, dtype: Optional[torch.dtype] = None, *,
                seed: Optional[int] = None, init: InitArg = "auto", rules: Optional[Rules] = None,
                allow_uninitialized: bool = False, reinit: bool = False) -> InitResult:
    r"""Allocate a model built on the meta device and initialise every tensor once, fused.

    Only what is missing is initialised (Hugging Face's `from_pretrained` semantics): the meta
    tensors are allocated uninitialised on `device` (as `to_empty` does); a parameter or buffer
    that already holds values (loaded or set by the user, or a buffer computed in a constructor
    under `fastinit.meta_init()`) is moved to `device` and `dtype`, keeps its values and is
    listed in `result.kept` (`reinit=True` initialises real parameters as well). The missing
    tensors are written in this order, inside one `fastinit.fused()` block, under
    `torch.no_grad()` (`requires_grad` is kept):

    1. the model's own init (`init`):

       * ``"auto"`` (the default): a Hugging Face `PreTrainedModel`'s `init_weights()` (every
         module's `_init_weights`, which recomputes rotary and position buffers too), else the
         model's `init_weights()` or `init_states()` method (the torchtitan pattern), else none;
       * a callable: `init(module)`;
       * ``"reset_parameters"``: none;

    2. `rules` (see `init_module`), which win over the model's own init;
    3. for every tensor neither wrote: PyTorch's default init of its layer (as in
       `reset_parameters`), or its module's own `reset_parameters()`.

    Everything the block runs draws from `seed`: the fastinit passes use `seed` with each
    tensor's name as stream; the model's own init and the modules' own `reset_parameters()`
    draw their seeds from a generator seeded with `seed` (`seeds_from`, this thread only), and
    what draws from torch's default generator itself (`torch.randperm`, a fill fastinit does not
    make) draws from it seeded with `seed` and restored afterwards: the caller's generator state
    is untouched and does not change the result. A kept parameter holds meta data while the
    model's own init and the modules' `reset_parameters()` run, so they cannot write it; a kept
    buffer may be written again by the model's own init (Hugging Face's leaves it alone). Tied
    parameters stay tied. Peak memory is the parameters themselves.

    Args:
        module: the model, built under ``torch.device("meta")`` or `fastinit.meta_init()`, or
            partly real.
        device: where to allocate; default CUDA if present, else CPU.
        dtype: a floating dtype for floating tensors (default: keep theirs).
        seed: default: one draw from torch's default generator.
        init: ``"auto"``, ``"reset_parameters"`` or a callable taking the model.
        rules: init_module rules, applied after the model's own init.
        allow_uninitialized: leave tensors that nothing writes uninitialised, with a warning,
            instead of raising.
        reinit: initialise the parameters that already hold values too (buffers that hold
            values are kept either way).

    Returns:
        InitResult: `model_init` names what the model's own init wrote, `kept` the parameters
        and buffers that kept their values, `fused` / `structured` / `not_fused` what the fastinit passes did.

    Raises:
        InitValueError: a bad `init` or rule, a tensor the model's init left on meta, or
            (unless `allow_uninitialized`) tensors that no rule, no `reset_parameters` and no
            model init writes, named; the pending fills of the pass are then dropped, but the
            module is already allocated.
    """
    model_init = select_model_init(module, init)
    rules_for = None if rules is None else user_rules(rules, module, "")
    seed = resolve_seed(seed)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    modules = walk(module)  # allocating changes tensors, not modules
    before = named_tensors(module, "", modules)
    recorded = {n: getattr(t, "_fastinit_recipe", None) for n, t in before.items() if t.is_meta}
    kept_names = _allocate(module, modules, before, device, dtype, reinit)
    tensors = named_tensors(module, "", modules)
    kept = frozenset(id(tensors[name]) for name in kept_names)
    kept_params = [t for t in tensors.values() if id(t) in kept and isinstance(t, nn.Parameter)]
    recipes = {n: r for n, r in recorded.items() if r is not None and id(tensors[n]) not in kept}
    with torch.no_grad(), _generators_from(seed, device):
        replayed, not_replayable = _replay_constructors(module, tensors, recipes, seed)
    own_block = active_recorder() is None  # not inside a block of the caller's
    with fused() as recorder, torch.no_grad(), _generators_from(seed, device):
        written = kept | {id(tensors[n]) for n in replayed}
        model_written: list[str] = []
        if model_init is not None:
            with _set_aside(module, kept_params):
                model_init([t for t in tensors.values() if id(t) in kept])
            allocated = {id(t) for t in tensors.values()}
            tensors = named_tensors(module)  # a tensor the init made anew holds its values
            on_meta = [n for n, t in tensors.items() if t.is_meta]
            if on_meta:
                raise InitValueError(f"materialize: the model's init left {on_meta} on the meta "
                                     "device")
            model_written = [n for n, t in tensors.items()
                             if id(t) not in allocated or recorder.wrote(t)]
            written = written | {id(tensors[n]) for n in model_written}
        rule_covered = frozenset() if rules_for is None else \
            frozenset(id(ti.tensor) for ti in collect(module, "", rules_for)[0])
        with _set_aside(module, kept_params):  # a module's own reset_parameters may hold kept ones
            result = run_pass(module, seed, "", lambda mod, _: default_rules_for(mod),
                              call_own=True, initialised=written | rule_covered,
                              own_block=own_block)
        # the pass saw the kept parameters' stand-ins, which nothing needs to write
        kept_set = set(kept_names)
        result.untouched = [n for n in result.untouched if n not in kept_set]
        by_default = result.fused + result.structured
        if rules_for is not None:  # after the defaults: the rules win over a module's own reset
            by_rules = run_pass(module, seed, "", rules_for, call_own=False, initialised=kept,
                                own_block=own_block)
            result.fused += by_rules.fused
            result.structured += by_rules.structured
        result.model_init = [n for n in model_written if id(tensors[n]) not in kept]
        result.kept = kept_names
        result.replayed = [n for n in replayed if n not in result.model_init]
        if result.untouched and not allow_uninitialized:
            raise InitValueError(
                f"materialize: nothing initialises {result.untouched}: no rule, no "
                "reset_parameters and no model init writes them. Give them rules=, build the "
                "model under fastinit.meta_init() if they are buffers computed in the "
                "constructor, or pass allow_uninitialized=True to leave them uninitialised")
    if result.untouched:
        warnings.warn(f"materialize: nothing initialises {result.untouched}; their memory is "
                      "uninitialised", stacklevel=2)
    if init != "reset_parameters" and not is_hugging_face_model(module):
        _warn_layer_defaults(by_default, result.not_fused, tensors,
                             {n for n, r in recorded.items() if r is None} | set(not_replayable))
    return result


def _warn_layer_defaults(by_default: list, own_reset: list, tensors: dict, unrecorded: set) -> None:
    """Warn, naming them, about the tensors that got their layer's default because their
    constructor init, if any, was not recorded (a model built on meta without `meta_init()`)."""
    own = set(own_reset)
    by_default = by_default + [n for n in tensors if n.rpartition(".")[0] in own]
    names = [n for n in by_default if n in unrecorded]
    if names:
        shown = names if len(names) <= 20 else names[:20] + [f"... ({len(names)} in all)"]
        warnings.warn(
            f"materialize: {shown} get their layers' default init: the model was built on the "
            "meta device without fastinit.meta_init(), so init done in its constructor cannot "
            "be replayed. Build it under fastinit.meta_init() to replay that init, or pass "
            "init='reset_parameters' to ask for the layer defaults", stacklevel=3)
