"""The `TorchFunctionMode` of a `fused()` block: what it intercepts and what it does with it.

Each torch function is classified once, when the block first sees it, into a handler; later
calls of it cost one lookup plus that handler. An operation that only reads metadata runs at
once with no handler; any other that is not a fill and touches no pending memory runs at once
too: the recorder is asked about its tensors only while fills are pending, one dict lookup per
tensor. A constant fill of a plain dense tensor (a BatchNorm's buffers and affine parameters) is
recorded as fastinit's ``constant_`` records it, with no call of the drop-in function.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Optional

import torch
from torch.overrides import TorchFunctionMode

from .contract import DTYPE_CODES, Distribution, constant_params
from .errors import InitValueError
from .plan import PLAIN_TENSOR_TYPES, Fill, check_storage
from .qr import qr_on_one_thread
from .recorder import OVERWRITE_OPS, Footprint, Recorder
from .routines import ONE_THREAD_QR_ROUTINES, SKIPPED, follow_up, recognise, routine
from .sharding import index_part, indexed, indexed_mirrors, is_dtensor, is_sharded, spans_shards

# Operations that read only metadata (shape, dtype, strides, device, property getters such as
# `.data`, which makes a tracked alias) or make a new tensor from the metadata alone never flush.
METADATA_OPS = frozenset({
    "__get__", "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_contiguous", "element_size", "is_floating_point", "is_complex", "__len__",
    "_debug_has_internal_overlap", "get_device", "__hash__", "__format__", "_is_view",
    "detach", "view", "view_as", "requires_grad_", "new_tensor", "new_empty", "new_zeros",
    "new_ones", "new_full", "empty_like", "zeros_like", "ones_like", "full_like", "_set_grad_enabled",
})

# Factories of a new tensor whose values a fill gives: the torch.nn.init function of that fill.
FACTORIES = {torch.randn: "normal_", torch.rand: "uniform_", torch.zeros: "zeros_",
             torch.ones: "ones_"}

# The value of each constant fill by the name of its torch.nn.init function (constant_ takes it).
CONSTANT_FILLS = {"zeros_": 0.0, "ones_": 1.0, "constant_": None}

# The largest finite value of each dtype fastinit fills (a constant beyond it is an error).
_FINITE_MAX = {dtype: torch.finfo(dtype).max for dtype in DTYPE_CODES}

# The parameters of the common constant fills, 0 and 1, by (value, dtype).
_COMMON_CONSTANTS = {(value, dtype): tuple(map(float, constant_params(value, dtype)))
                     for value in (0.0, 1.0) for dtype in DTYPE_CODES}

# The entry of the operations that run with no handler (METADATA_OPS, property getters).
_PASS_THROUGH = None

# Frames between the code that made an operation and the handler that sees it: torch's
# function-mode plumbing (a `torch.device` context inside the block, `handle_torch_function`)
# and this module.
_PLUMBING_MODULES = frozenset({"torch.overrides", "torch.utils._device", __name__})


class Interceptor(TorchFunctionMode):
    """Records a block's init calls into `recorder` with fastinit's functions.

    Args:
        recorder: the block's recorder.
        init_functions: each torch.nn.init function (as torch defines it) -> the fastinit
            function that stands for it.
        routine_functions: the fastinit function each recognised routine becomes, by the
            names used in `routines.ROUTINES` / `OUTER_ROUTINES`.
    """

    def __init__(self, recorder: Recorder, init_functions: dict[Callable, Callable],
                 routine_functions: dict[str, Callable]) -> None:
        super().__init__()
        self.recorder = recorder
        self.init_functions = init_functions
        self.by_name = {fn.__name__: ours for fn, ours in init_functions.items()}
        self.routine_functions = routine_functions
        # func -> (handler, what the handler needs to know about func), or _PASS_THROUGH
        self._handlers: dict = {
            fn: (self._init_constant if fn.__name__ in CONSTANT_FILLS else self._init_function, ours)
            for fn, ours in init_functions.items()}
        self._handlers.update({
            torch.Tensor.normal_: (self._normal_, _Op("normal_")),
            torch.Tensor.uniform_: (self._uniform_, _Op("uniform_")),
            torch.Tensor.fill_: (self._fill_, _Op("fill_")),
            torch.Tensor.zero_: (self._zero_, _Op("zero_")),
            torch.linalg.qr: (self._qr, _Op("linalg_qr")),
            torch.empty: (self._empty, _Op("empty")),
        })
        self._handlers.update({fn: (self._factory, (fill_name, _Op(fn.__name__)))
                               for fn, fill_name in FACTORIES.items()})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        entry = self._handlers.get(func, self)
        if entry is _PASS_THROUGH:
            return func(*args, **kwargs) if kwargs else func(*args)
        if entry is self:
            entry = self._handlers[func] = self._classify(func)
            if entry is _PASS_THROUGH:
                return func(*args, **kwargs) if kwargs else func(*args)
        handler, info = entry
        return handler(func, info, args, kwargs or {})

    def _classify(self, func):
        name = getattr(func, "__name__", "")
        if name in self.by_name:
            return self._maybe_replaced, _Op(name)
        if name == "__get__":
            # a view or alias is tracked through its storage
            return (self._is_meta_get, None) if _property_name(func) == "is_meta" else _PASS_THROUGH
        if name == "__set__" and _property_name(func) == "data":
            return self._set_data, None
        if name in METADATA_OPS:
            return _PASS_THROUGH
        if name == "__getitem__":
            return self._getitem, _Op(name)
        if name == "__setitem__":
            return self._setitem, _Op(name)
        return self._other, _Op(name)

    # -- handlers: (func, info, args, kwargs) -> result --------------------------------------
    def _init_function(self, func, ours, args, kwargs):
        return ours(*args, **kwargs)

    def _init_constant(self, func, ours, args, kwargs):
        """torch.nn.init's zeros_, ones_ and constant_: see `_record_constant`."""
        value = CONSTANT_FILLS[func.__name__]
        if args and (value is not None or len(args) == 2) and not kwargs:
            if self._record_constant(args[0], args[1] if value is None else value):
                return args[0]
        return ours(*args, **kwargs)

    def _maybe_replaced(self, func, op, args, kwargs):
        """torch.nn.init's functions dispatch with the function their module holds *now*: when
        a wrapper has replaced it there (Hugging Face's guard while it initialises), that
        wrapper arrives here and stands for torch's function of the same name."""
        if getattr(torch.nn.init, op.name, None) is func:
            return self.by_name[op.name](*args, **kwargs)
        return self._other(func, op, args, kwargs)

    def _is_meta_get(self, func, info, args, kwargs):
        if self.recorder.dry_run and args:
            # torch's trunc_normal_ returns at once on a meta tensor: a dry run records it there
            self._routine_fill(_caller_frame(), args[0])
        return func(*args, **kwargs)

    def _getitem(self, func, op, args, kwargs):
        if _is_basic_index(args[1]):
            if is_sharded(args[0]):
                # e.g. an embedding's padding row: a view of the shard that holds it, not
                # DTensor's gathered copy (a write to that copy would be lost)
                made = indexed(args[0], args[1])
                if made is not None:
                    return made
            return func(*args, **kwargs)  # a view
        return self._other(func, op, args, kwargs)

    def _setitem(self, func, op, args, kwargs):
        """``t[index] = value`` on a sharded DTensor, with a basic index and a scalar value:
        each rank fills the part of its shard the index selects, with no collective."""
        t, index, value = args[0], args[1], args[2] if len(args) > 2 else None
        if is_sharded(t) and _is_basic_index(index) and _fill_value(value):
            ip = index_part(t, index)
            if ip is not None:
                if ip.part is not None:  # the part, and its mirrors in an indexed DTensor
                    for part in (ip.part, *(m[ip.local_items] for m in indexed_mirrors(t))):
                        self._other(torch.Tensor.fill_, _Op("fill_"), (part, value), {})
                return None
        return self._other(func, op, args, kwargs)

    def _set_data(self, func, info, args, kwargs):
        """``t.data = new``: `t` now lives in `new`'s memory and keeps the record of its writes;
        its old memory is not read."""
        old = Footprint.of(args[0])
        result = func(*args, **kwargs)
        self.recorder.moved(args[0], old)
        return result

    def _empty(self, func, op, args, kwargs):
        """``torch.empty``: new memory, no tensor read; with ``out=`` it writes that tensor."""
        if "out" in kwargs:
            return self._other(func, op, args, kwargs)
        return func(*args, **kwargs)

    def _qr(self, func, op, args, kwargs):
        if routine(_caller_frame(), ONE_THREAD_QR_ROUTINES):
            # torch's orthogonal_: its QR on one thread, as fastinit's orthogonal_ takes it
            self._flush_touched(args, kwargs)
            return qr_on_one_thread(*args, **kwargs)
        return self._other(func, op, args, kwargs)

    def _other(self, func, op, args, kwargs):
        rec = self.recorder
        if rec.done_routines:
            target = self._done_target(_caller_frame())
            if target is not None:
                done = follow_up(target, op.name, args)
                if done is not None:
                    return None if done is SKIPPED else done
        out = kwargs.get("out") if kwargs else None
        if isinstance(out, torch.Tensor):
            target = out
        elif op.in_place and args and isinstance(args[0], torch.Tensor):
            target = args[0]
        else:
            target = None
        if target is not None and spans_shards(target):
            raise InitValueError(
                f"fastinit.fused: {op.name} would write a slice of a sharded DTensor whose "
                f"elements span several shards (shape {tuple(target.shape)}); inside fused() such "
                "a slice is written only by fills (fastinit and torch.nn.init functions, normal_, "
                "uniform_, fill_, zero_, or `t[index] = number`), each rank its own part. Write "
                "the full tensor's shards instead, e.g. with `t.to_local()`")
        if rec._by_storage:
            # what the operation reads (an in-place target, `out=` included) runs first; a
            # target it overwrites whole is not read
            self._flush_touched(args[1:] if op.overwrites else args, kwargs)
            if op.overwrites and target is not None:
                footprint = Footprint.of(target)
                if footprint is not None:
                    rec.overwrite(footprint)
        if target is None:
            return func(*args, **kwargs)
        if op.name == "set_":  # new memory for the target: no element written
            old = Footprint.of(target)
            result = func(*args, **kwargs)
            rec.moved(target, old)
            return result
        result = func(*args, **kwargs)
        rec.log_write(target, op.name)
        return result

    def _flush_touched(self, args, kwargs) -> None:
        rec = self.recorder
        if rec._by_storage:
            touched = rec.touched(args)
            if kwargs:
                touched |= rec.touched(kwargs.values())
            if touched:
                rec.flush(touched)

    # -- tensor methods ----------------------------------------------------------------------
    def _normal_(self, func, op, args, kwargs):
        if not _is_fillable(args[0]):
            return self._other(func, op, args, kwargs)
        return self._normal(_caller_frame(), *args, **kwargs)

    def _normal(self, caller, t, mean=0.0, std=1.0, *, generator=None):
        if self._routine_fill(caller, t):
            return t
        return self.by_name["normal_"](t, mean, std, generator)

    def _uniform_(self, func, op, args, kwargs):
        if not _is_fillable(args[0]):
            return self._other(func, op, args, kwargs)
        return self._uniform(_caller_frame(), *args, **kwargs)

    def _uniform(self, caller, t, *args, generator=None, **kwargs):
        if self._routine_fill(caller, t):
            return t
        if self._done_target(caller) is not None:
            # torch's narrow-interval trunc_normal_ draws an acceptance buffer after its first
            # fill; with the target already final, accept everything: u = 0, log u = -inf.
            with torch.no_grad():
                return t.zero_()
        a = kwargs.get("from", args[0] if args else 0.0)
        b = kwargs.get("to", args[1] if len(args) > 1 else 1.0)
        return self.by_name["uniform_"](t, a, b, generator)

    def _fill_(self, func, op, args, kwargs):
        if not _is_fillable(args[0]):
            return self._other(func, op, args, kwargs)
        t, value = args[0], args[1] if len(args) > 1 else kwargs["value"]
        if not _scalar(value) or not math.isfinite(value):
            return self._other(func, op, args, kwargs)
        if self._record_constant(t, value):
            return t
        return self.by_name["constant_"](t, value)

    def _zero_(self, func, op, args, kwargs):
        if not _is_fillable(args[0]):
            return self._other(func, op, args, kwargs)
        if self._record_constant(args[0], 0.0):
            return args[0]
        return self.by_name["zeros_"](args[0])

    def _record_constant(self, t, value) -> bool:
        """Record fastinit's constant fill of `t` as ``fastinit.constant_(t, value)`` would,
        without its drop-in call, when `t` is a plain tensor of a floating dtype fastinit fills,
        with real memory and elements (any strides on the CPU, where one native call checks and
        records it; else contiguous), and `value` a number it holds; else record nothing and
        return False (the drop-in function records it, or raises its error).

        Raises:
            UnsafeTargetError: `t`'s storage is freed or too small (torch's words), as the
                drop-in call raises.
        """
        if type(t) not in PLAIN_TENSOR_TYPES or not (
                type(value) is float or (type(value) is int and abs(value) <= 1 << 53)):
            return False
        with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
            dtype = t.dtype
            limit = _FINITE_MAX.get(dtype)
            if limit is None or not abs(value) <= limit:
                return False
            if value == 1 or (value == 0 and math.copysign(1.0, value) > 0):
                params = _COMMON_CONSTANTS[(float(value), dtype)]
            else:
                params = tuple(map(float, constant_params(value, dtype)))
            # a whole plain CPU tensor: its storage checked and its record made in one call
            if self.recorder.record_whole(t, Distribution.CONSTANT, params, 0, None):
                return True
            if (t.layout != torch.strided or not t.numel() or not t.is_contiguous() or t.is_meta
                    or t.is_neg() or torch._is_functional_tensor(t)):
                return False
            check_storage(t)
        self.recorder.add([Fill(t, Distribution.CONSTANT, params, 0)])
        return True

    # -- routines made of tensor operations --------------------------------------------------
    def _done_target(self, frame) -> Optional[torch.Tensor]:
        """The target of a recognised routine running in `frame` whose fill is recorded."""
        for done, target in self.recorder.done_routines:
            if done is frame:
                return target
        return None

    def _routine_fill(self, caller, t) -> bool:
        """If `caller` is a known routine making its first fill of its target `t`, make the
        equivalent fastinit call and remember the routine's frames: their later operations on
        `t` are part of that call."""
        if self._done_target(caller) is not None:
            return False
        found = recognise(caller, t)
        if found is None:
            return False
        name, kwargs, frames = found
        self.routine_functions[name](t, **kwargs)
        # Only the latest routine can still be running: hold its frames alone (their identity
        # stays unique while held; an older routine's scratch tensors are released).
        self.recorder.done_routines = [(frame, t) for frame in frames]
        return True

    # -- factories ---------------------------------------------------------------------------
    def _factory(self, func, info, args, kwargs):
        fill_name, op = info
        made = self._made_by_fill(fill_name, args, kwargs)
        if made is not None:
            return made
        return self._other(func, op, args, kwargs)

    def _made_by_fill(self, fill_name, args, kwargs):
        """A constructor's ``torch.randn(...)``: an empty tensor with a recorded fill, or None
        where the call is not one fastinit makes alike."""
        if set(kwargs) - {"dtype", "device", "requires_grad", "generator"}:
            return None
        size = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
        if not all(isinstance(s, int) for s in size):
            return None
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        if dtype not in DTYPE_CODES:
            return None
        generator = kwargs.get("generator")
        if generator is not None and fill_name not in ("normal_", "uniform_"):
            return None
        t = torch.empty(tuple(size), dtype=dtype, device=kwargs.get("device"))
        value = CONSTANT_FILLS.get(fill_name)
        if value is None or not self._record_constant(t, value):
            fill = self.by_name[fill_name]
            with torch.no_grad():
                fill(t, generator=generator) if generator is not None else fill(t)
        if kwargs.get("requires_grad"):
            t.requires_grad_(True)
        return t


class _Op:
    """What the interceptor needs to know about an operation, from its name."""

    __slots__ = ("name", "in_place", "overwrites")

    def __init__(self, name: str) -> None:
        self.name = name
        # writes its first argument: an in-place method, `__setitem__` or an augmented operator
        self.in_place = name == "__setitem__" or name.startswith("__i") or (
            name.endswith("_") and not name.startswith("__"))
        self.overwrites = name in OVERWRITE_OPS


def _caller_frame():
    """The frame of the code that made the intercepted operation."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in _PLUMBING_MODULES:
        frame = frame.f_back
    return frame


def _is_fillable(t) -> bool:
    """A tensor fastinit fills exactly as torch's in-place method would."""
    return (isinstance(t, torch.Tensor) and t.layout == torch.strided and t.dtype in DTYPE_CODES
            and not (torch.is_grad_enabled() and t.requires_grad))


def _scalar(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fill_value(value) -> bool:
    """A value `t[index] = value` writes as ``fill_(value)``: a number or a 0-dim plain tensor."""
    if isinstance(value, torch.Tensor):
        return not is_dtensor(value) and value.dim() == 0
    return isinstance(value, (int, float, bool))


def _property_name(getter) -> str:
    """The attribute a property getter or setter (`Tensor.is_meta.__get__`) stands for."""
    return getattr(getattr(getter, "__self__", None), "__name__", "")


def _is_basic_index(index) -> bool:
    """Indexing that makes a view (ints, slices, None, ...), reading no element."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice)
               or (isinstance(i, int) and not isinstance(i, bool)) for i in items)
