"""The init a constructor does, recorded under `meta_init()` and replayed by `materialize`.

Under `meta_init()` a `TorchFunctionMode` (per thread, nothing patched) records how each tensor
the constructors make gets its values, as a `Recipe`:

* a creation op (``torch.zeros``, ``ones``, ``full``, ``empty``, ``randn``, ``arange``,
  ``tensor``, ... and the ``*_like`` / ``new_*`` forms) is the recipe's `make`;
* an op computing a new tensor from recorded ones (``torch.ones(d) * 1e-6``) is a `make` whose
  arguments are snapshots of those;
* every in-place op on it or on a view of it (``nn.init.*``, ``Tensor.normal_``, ``.data.zero_()``,
  ``w[0].fill_(0)``, ``mul_``) is a `Step`, with the chain of view ops that led to its target.

A parameter registered in the block (moved to meta) takes the recipe of the tensor it was made
from, and later steps on it are added. The steps a standard layer's own `reset_parameters` makes
(its torch default) are not kept: the recipe says `default`, and `materialize` gives that tensor
fastinit's default fill (stream by name) before any later step. `materialize` replays the other
recipes, in fastinit's fused pass, on the allocated tensors, with every draw from its seed.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.overrides import TorchFunctionMode

from .rules import default_layer_type

# Creation ops: a new tensor from sizes and values alone (the `*_like` / `new_*` forms read only
# their argument's metadata).
FACTORIES = frozenset({
    "empty", "zeros", "ones", "full", "rand", "randn", "randint", "normal", "arange", "linspace",
    "logspace", "eye", "tensor", "as_tensor", "empty_like", "zeros_like", "ones_like",
    "full_like", "rand_like", "randn_like", "randint_like", "new_empty", "new_zeros", "new_ones",
    "new_full", "new_tensor",
})
# Factories whose result holds no values: a recipe made by one is replayed in place.
EMPTY_FACTORIES = frozenset({"empty", "empty_like", "new_empty"})
# In-place methods that change no element.
NOT_WRITES = frozenset({"requires_grad_", "retain_grad", "share_memory_", "_set_grad_enabled"})
# The methods by which a standard layer applies its torch default.
DEFAULT_RESETS = frozenset({"reset_parameters", "_reset_parameters", "reset_running_stats"})
FRAMES_TO_SEARCH = 12  # a layer's reset -> init function -> torch's plumbing -> this mode


class NotReplayable(Exception):
    """A recipe reads a value the recording does not have (a meta tensor made elsewhere)."""


@dataclass
class Snapshot:
    """The value of a recorded tensor at one moment: its base's recipe then, and the view ops
    that lead from the base to it."""

    recipe: "Recipe"
    path: tuple


@dataclass
class Step:
    """An in-place op on (a view of) the recipe's tensor: `func(view, *args, **kwargs)`."""

    path: tuple
    func: object
    args: tuple
    kwargs: dict


@dataclass
class Recipe:
    """How a tensor gets its values: `make` (a call creating it; None: unknown, `value`: a real
    tensor given as is), then `steps`; `default`: a standard layer's torch default first."""

    make: Optional[tuple] = None
    value: Optional[torch.Tensor] = None
    steps: list = field(default_factory=list)
    default: bool = False

    def copy(self) -> "Recipe":
        return Recipe(self.make, self.value, list(self.steps), self.default)

    @property
    def makes_values(self) -> bool:
        """Whether replaying it writes the tensor (rather than leaving it to the layer default)."""
        if self.steps:
            return True
        if self.default:
            return False
        if self.value is not None:
            return True
        return self.make is not None and _name(self.make[0]) not in EMPTY_FACTORIES

    def replay(self, target: torch.Tensor) -> None:
        """Write the recipe's values into `target` (allocated, of the recorded shape)."""
        if self.value is not None:
            target.copy_(self.value)
        elif self.make is not None and _name(self.make[0]) not in EMPTY_FACTORIES and not self.default:
            target.copy_(_call(self.make, target.device))
        for step in self.steps:
            _apply_step(step, target)

    def evaluate(self, device) -> torch.Tensor:
        """The recipe's values as a new tensor on `device`."""
        if self.value is not None:
            out = self.value.to(device, copy=True)
        elif self.make is None or self.default:
            raise NotReplayable("a tensor made outside the recording")
        else:
            out = _call(self.make, device)
        for step in self.steps:
            _apply_step(step, out)
        return out


def _name(func) -> str:
    return getattr(func, "__name__", "")


def _view(base: torch.Tensor, path: tuple) -> torch.Tensor:
    for func, args, kwargs in path:
        base = func(base, *args, **kwargs)
    return base


def _resolve(x, device):
    if isinstance(x, Snapshot):
        return _view(x.recipe.evaluate(device), x.path)
    if isinstance(x, (list, tuple)):
        return type(x)(_resolve(y, device) for y in x)
    if isinstance(x, dict):
        return {k: _resolve(v, device) for k, v in x.items()}
    if isinstance(x, torch.Tensor) and x.is_meta:
        raise NotReplayable("a meta tensor made outside the recording")
    return x


def _call(make: tuple, device) -> torch.Tensor:
    func, args, kwargs = make
    args, kwargs = _resolve(args, device), _resolve(kwargs, device)
    if _name(func) in FACTORIES:  # made where the target is
        kwargs = {**kwargs, "device": device}
    return func(*args, **kwargs)


def _apply_step(step: Step, target: torch.Tensor) -> None:
    device = target.device
    step.func(_view(target, step.path), *_resolve(step.args, device), **_resolve(step.kwargs, device))


def _base_and_path(t) -> Optional[tuple[torch.Tensor, tuple]]:
    """(the recorded tensor `t` is a view of, the view ops from it to `t`), or None."""
    if not isinstance(t, torch.Tensor):
        return None
    view = getattr(t, "_fastinit_view", None)
    if view is not None:
        return view
    if getattr(t, "_fastinit_recipe", None) is not None:
        return t, ()
    return None


def _snapshot(x):
    """`x` with every recorded tensor in it replaced by a Snapshot of its value now."""
    if isinstance(x, torch.Tensor):
        found = _base_and_path(x)
        if found is not None:
            return Snapshot(found[0]._fastinit_recipe.copy(), found[1])
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_snapshot(y) for y in x)
    if isinstance(x, dict):
        return {k: _snapshot(v) for k, v in x.items()}
    return x


def _storage_key(t: torch.Tensor):
    """The memory `t` lives in, or None for a tensor without a storage of its own (a sparse or
    wrapper subclass tensor): such tensors are not recorded."""
    if t.layout != torch.strided:
        return None
    with torch._C.DisableTorchFunction():
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            return None
        return ("meta", storage._cdata) if t.is_meta else (str(t.device), storage.data_ptr())


def _layout(t: torch.Tensor) -> tuple:
    with torch._C.DisableTorchFunction():  # the recorder's own look, not a recorded op
        return tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype


def _written(name: str, args, kwargs) -> Optional[torch.Tensor]:
    """The tensor an op writes in place: `out=`, an in-place method's or nn.init function's
    first argument, `__setitem__`'s target."""
    out = kwargs.get("out")
    if isinstance(out, torch.Tensor):
        return out
    if name in NOT_WRITES or not args or not isinstance(args[0], torch.Tensor):
        return None
    if name == "__setitem__" or (name.endswith("_") and not name.startswith("__")) or \
            (name.startswith("__i") and name.endswith("__")):
        return args[0]
    return None


# Random fills whose only effect on a meta tensor is the check of their arguments: (the names
# of their two parameters after the tensor, their defaults) per function. torch computes them on
# meta through a Python decomposition (normal_: about 0.3 ms a call, uniform_: 15 us).
_META_RANDOM_FILLS = {
    torch.Tensor.normal_: (("mean", "std"), (0.0, 1.0)),
    torch.nn.init.normal_: (("mean", "std"), (0.0, 1.0)),
    torch.Tensor.uniform_: (("from", "to"), (0.0, 1.0)),
    torch.nn.init.uniform_: (("a", "b"), (0.0, 1.0)),
}


def _meta_fill_is_checked(func, target: torch.Tensor, args, kwargs) -> bool:
    """Whether `func` is a random fill of the meta tensor `target` whose arguments are plain
    numbers that torch accepts (a finite mean and std >= 0; finite bounds from <= to, within
    the dtype): running it would change nothing, so the recorder skips it (materialize replays
    the recorded step on the real tensor). Anything else runs, and raises torch's error."""
    found = _META_RANDOM_FILLS.get(func)
    if found is None or not target.is_meta or not target.dtype.is_floating_point \
            or kwargs.get("generator") is not None:
        return False
    names, defaults = found
    values = [args[1 + i] if len(args) > 1 + i else kwargs.get(name, default)
              for i, (name, default) in enumerate(zip(names, defaults))]
    if not all(type(v) in (int, float) and math.isfinite(v) for v in values):
        return False
    limit = torch.finfo(target.dtype).max
    if names[1] == "std":
        return abs(values[0]) <= limit and 0 <= values[1] <= limit
    return -limit <= values[0] <= values[1] <= limit


def _in_layer_default() -> bool:
    """Whether the op comes from a standard layer's own reset (its torch default)."""
    frame = sys._getframe(2)
    for _ in range(FRAMES_TO_SEARCH):
        if frame is None:
            return False
        if frame.f_code.co_name in DEFAULT_RESETS:
            owner = frame.f_locals.get("self")
            if isinstance(owner, torch.nn.Module) and default_layer_type(owner) is not None:
                return True
        frame = frame.f_back
    return False


# torch.nn.init routines that return at once on a meta tensor, by function name: the init
# function whose call they are and the names of its arguments in the routine's frame.
RETURNS_ON_META = {
    "_no_grad_trunc_normal_": (torch.nn.init.trunc_normal_, ("mean", "std", "a", "b")),
    "orthogonal_": (torch.nn.init.orthogonal_, ("gain",)),
    "sparse_": (torch.nn.init.sparse_, ("sparsity", "std")),
    "dirac_": (torch.nn.init.dirac_, ("groups",)),
}


def _returns_on_meta(tensor: torch.Tensor) -> tuple:
    """(target, step) when a torch.nn.init routine asks whether `tensor` is on meta (and so
    returns without writing): the routine's whole call, to replay; else (None, None)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == "torch.overrides":
        frame = frame.f_back
    if frame is None or frame.f_globals.get("__name__") != "torch.nn.init":
        return None, None
    routine = RETURNS_ON_META.get(frame.f_code.co_name)
    if routine is None or frame.f_locals.get("tensor") is not tensor:
        return None, None
    func, names = routine
    return tensor, (func, (), {k: frame.f_locals[k] for k in names})


class ConstructorRecorder(TorchFunctionMode):
    """Records the recipes of the tensors made inside `meta_init()` (this thread)."""

    def __init__(self):
        super().__init__()
        # storage key -> [(layout, base recipe, view path)] of the recorded tensors in it, to
        # find what a parameter was made from: nn.Parameter(x) is a new object sharing x's
        # storage, and x itself is often gone by then. Every new tensor the block makes
        # replaces the entries of its storage, so none outlives the memory it describes.
        self._by_storage: dict[object, list] = {}

    def _remember(self, t: torch.Tensor, new: bool) -> None:
        key = _storage_key(t)
        if key is None:
            return
        base, path = _base_and_path(t)
        entry = (_layout(t), base._fastinit_recipe, path)
        if new:
            self._by_storage[key] = [entry]
        else:
            self._by_storage.setdefault(key, []).append(entry)

    def recipe_of(self, t: torch.Tensor) -> Recipe:
        """The recipe of what `t` was made from (a new copy), or one that keeps `t`'s values."""
        found = _base_and_path(t)
        if found is not None:
            recipe, path = found[0]._fastinit_recipe, found[1]
        else:
            layout = _layout(t)
            recipe, path = next(((r, p) for lay, r, p in self._by_storage.get(_storage_key(t), ())
                                 if lay == layout), (None, ()))
        if recipe is None:
            return Recipe(value=None if t.is_meta else t.detach())
        if not path:
            return recipe.copy()
        return Recipe(make=(_view, (Snapshot(recipe.copy(), ()), path), {}))

    def adopt(self, param: torch.Tensor, recipe: Recipe) -> None:
        """`param` (registered on meta) has values made by `recipe`."""
        param._fastinit_recipe = recipe
        self._remember(param, new=True)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not args and isinstance(kwargs.get("tensor"), torch.Tensor):
            # torch.nn.init's functions dispatch with every argument by keyword
            kwargs = dict(kwargs)
            args = (kwargs.pop("tensor"),)
        name = _name(func)
        target = _written(name, args, kwargs)
        step = (func, tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "out"})
        if name == "__get__" and args and getattr(func, "__self__", None) is torch.Tensor.is_meta:
            target, step = _returns_on_meta(args[0])
        found = _base_and_path(target) if target is not None else None
        if found is not None:
            base, path = found
            recipe = base._fastinit_recipe
            if _in_layer_default():  # the layer's default rule (padding row included) does it
                if not path:
                    recipe.make, recipe.value, recipe.steps, recipe.default = None, None, [], True
            else:
                recipe.steps.append(Step(path, step[0], _snapshot(step[1]), _snapshot(step[2])))
        if target is not None and _meta_fill_is_checked(func, target, args, kwargs):
            return target
        result = func(*args, **kwargs)
        if target is not None or not isinstance(result, torch.Tensor) or \
                any(result is a for a in list(args) + list(kwargs.values())):
            return result
        if name in FACTORIES:
            if args and (name.endswith("_like") or name.startswith("new_")):
                # the first argument gives only its metadata
                args = (torch.empty_like(args[0], device="meta"),) + tuple(args[1:])
            result._fastinit_recipe = Recipe(make=(func, _snapshot(tuple(args)),
                                                   _snapshot(dict(kwargs))))
            self._remember(result, new=True)
            return result
        source = _base_and_path(args[0]) if args else None
        key = _storage_key(result)
        if source is not None and key is not None and key == _storage_key(args[0]):
            base, path = source  # a view: writes through it reach the base
            result._fastinit_view = (base, path + ((func, tuple(args[1:]), dict(kwargs)),))
            self._remember(result, new=False)
        elif any(_base_and_path(a) is not None for a in list(args) + list(kwargs.values())):
            result._fastinit_recipe = Recipe(make=(func, _snapshot(tuple(args)),
                                                   _snapshot(dict(kwargs))))
            self._remember(result, new=True)
        elif key is not None:
            self._by_storage.pop(key, None)  # new memory, made from nothing recorded
        return result
