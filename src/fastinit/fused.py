"""`with fastinit.fused():` records the initialisation done inside it and runs it at exit in one
fused pass per (device, dtype).

Nothing is patched: the block pushes a `TorchFunctionMode`, which is per thread, so a thread
outside any block sees plain torch and a block in one thread never touches another. The mode
records, with fastinit's values (the values of the drop-in function given the same arguments):

* every torch.nn.init function however it is reached (``torch.nn.init.normal_``, a name
  imported from it, a captured copy such as Hugging Face's ``TORCH_INIT_FUNCTIONS`` or a guard
  wrapper around one): the functions that dispatch through ``__torch_function__`` arrive as
  themselves; the others arrive as the tensor methods they call;
* the in-place tensor methods init code uses: ``Tensor.normal_``, ``uniform_``, ``fill_`` and
  ``zero_``, called directly or through ``.data``;
* the truncated-normal routines of torch.nn.init and timm (``trunc_normal_``,
  ``trunc_normal_tf_`` and so ``lecun_normal_`` / ``variance_scaling_``), which are recognised
  by the function that issues their first tensor operation and become one
  ``fastinit.trunc_normal_`` / ``fastinit.trunc_normal_tf_`` fill;
* ``torch.randn``, ``torch.rand``, ``torch.zeros`` and ``torch.ones`` creating a new tensor
  (a constructor's ``nn.Parameter(torch.randn(...))``): an empty tensor with a recorded fill.

Each call is validated and draws its seed when it is made, exactly as it would alone. A recorded
fill that a later write covers entirely before anything reads it is dropped (its seed draw has
happened, so every value and the generator state are those of running the calls one by one),
so every element is written once. Any other operation that reads a pending tensor, or lets its
memory escape torch (``data_ptr``, ``untyped_storage``, ``type``, ``numpy``, serialisation),
first runs the fills pending in the memory it touches, so it sees the values it would have seen;
fills of other memory stay pending. Views and aliases
made by torch operations (``.data``, ``view``, ``nn.Parameter``) share the pending tensor's
storage and are tracked through it, so making them does not flush.
"""
from __future__ import annotations

import collections
import contextlib
import math
import sys
import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch.overrides import TorchFunctionMode

from . import backends
from .contract import DTYPE_CODES, Distribution, describe_fill
from .plan import Fill
from .qr import qr_on_one_thread
from .registry import TORCH_INIT_FUNCTIONS
from .sharding import is_dtensor, local_tensor

# Operations that read only metadata (shape, dtype, strides, device, property getters such as
# `.data`, which makes a tracked alias) or make a new tensor from the metadata alone never flush.
METADATA_OPS = frozenset({
    "__get__", "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_contiguous", "element_size", "is_floating_point", "is_complex", "__len__",
    "_debug_has_internal_overlap", "get_device", "__hash__", "__format__", "_is_view",
    "detach", "view", "view_as", "requires_grad_", "new_tensor", "new_empty", "new_zeros",
    "new_ones", "new_full", "empty_like", "zeros_like", "ones_like", "full_like", "_set_grad_enabled",
})

# In-place operations that overwrite every element of their first argument without reading it.
OVERWRITE_OPS = frozenset({"copy_", "fill_", "zero_"})

_local = threading.local()


def _storage_key(t: torch.Tensor):
    """The memory a tensor lives in: (device, address), or the storage object on meta."""
    t = local_tensor(t)
    with torch._C.DisableTorchFunction():  # our own look at the memory: not a user's access
        storage = t.untyped_storage()
    if t.is_meta:
        return ("meta", storage._cdata)
    if t.numel() == 0:
        return None
    return (t.device, storage.data_ptr())


@dataclass
class _Footprint:
    """The element range [lo, hi] of its storage a tensor spans; dense when it covers it all."""

    key: object
    lo: int
    hi: int
    dense: bool

    @classmethod
    def of(cls, t: torch.Tensor) -> Optional["_Footprint"]:
        t = local_tensor(t)
        if t.numel() == 0:
            return None
        lo = hi = t.storage_offset()
        for size, stride in zip(t.shape, t.stride()):
            (lo, hi) = (lo + (size - 1) * stride, hi) if stride < 0 else (lo, hi + (size - 1) * stride)
        dense = hi - lo + 1 == t.numel() and torch._debug_has_internal_overlap(t) == 0
        return cls(_storage_key(t), lo, hi, dense)

    def covers(self, other: "_Footprint") -> bool:
        return self.dense and self.key == other.key and self.lo <= other.lo and other.hi <= self.hi

    def overlaps(self, other: "_Footprint") -> bool:
        return self.key == other.key and self.lo <= other.hi and other.lo <= self.hi


@dataclass
class _Pending:
    """A recorded fill waiting for the pass; `phase` orders it after the pending fills of the
    memory it overlaps (fills of one phase never overlap, so each phase is one fused pass)."""

    fill: Fill
    footprint: _Footprint
    phase: int


class Recorder:
    """The pending fills and the write log of one `fused()` block (one thread).

    Attributes:
        pending: fills recorded and not yet run.
        recorded: how many fills were recorded.
        elements_filled: elements written by fastinit's fills (the block's runs so far).
        elements_other: elements written by other in-place operations seen in the block.
        dropped: how many recorded fills a later write covered before anything read them.
        flushes: how many times pending fills ran before the block's end.
        unreachable: fills not run because nothing outside the recorder could reach their
            tensor any more (see `_reachable`).
        dry_run: record only: fills (meta tensors included) are logged, never run.
    """

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.pending: list[_Pending] = []
        self._pending_keys: set = set()  # the storage keys of `pending`
        self.recorded = 0
        self.dropped = 0
        self.flushes = 0
        self._writes: dict[object, list[tuple[_Footprint, str, bool]]] = {}
        self.elements_filled = 0  # elements fastinit's fills wrote
        self.unreachable = 0      # fills skipped: nothing but the recorder could reach them
        self.elements_other = 0   # elements other in-place operations wrote
        self._keep_alive: list[torch.Tensor] = []  # keys stay valid while the block lasts
        # (frame, target) of the latest recognised routine whose call is recorded (ROUTINES)
        self._done_routines: list[tuple[object, torch.Tensor]] = []

    # -- recording ---------------------------------------------------------------------------
    def add(self, fills: Sequence[Fill]) -> None:
        for f in fills:
            footprint = _Footprint.of(f.tensor)
            if footprint is None:
                continue
            self._drop_covered(footprint)
            # a fill over part of a pending one (an Embedding's padding row) runs after it, in a
            # later phase of the same pass
            phase = 0 if footprint.key not in self._pending_keys else 1 + max(
                (p.phase for p in self.pending if p.footprint.overlaps(footprint)), default=-1)
            self.pending.append(_Pending(f, footprint, phase))
            self._pending_keys.add(footprint.key)
            self._log(f.tensor, footprint, describe_fill(f.dist, f.params), by_fastinit=True)
            self.recorded += 1

    def _drop_covered(self, footprint: _Footprint) -> None:
        if footprint.key not in self._pending_keys:
            return
        kept = [p for p in self.pending if not footprint.covers(p.footprint)]
        self.dropped += len(self.pending) - len(kept)
        self._set_pending(kept)

    def _set_pending(self, pending: list) -> None:
        self.pending = pending
        self._pending_keys = {p.footprint.key for p in pending}

    def overwrite(self, footprint: _Footprint) -> None:
        """Another operation is about to write every element of `footprint`: pending fills it
        covers are dropped; those it only overlaps run first."""
        self._drop_covered(footprint)
        if footprint.key in self._pending_keys and \
                any(p.footprint.overlaps(footprint) for p in self.pending):
            self.flush({footprint.key})

    def _log(self, tensor: torch.Tensor, footprint: _Footprint, text: str, by_fastinit: bool) -> None:
        self._writes.setdefault(footprint.key, []).append((footprint, text, by_fastinit))
        self._keep_alive.append(tensor)

    def log_write(self, tensor: torch.Tensor, text: str, by_fastinit: bool = False) -> None:
        footprint = _Footprint.of(tensor)
        if footprint is not None:
            self._log(tensor, footprint, text, by_fastinit)
            if not by_fastinit and footprint.key[0] != "meta":
                self.elements_other += local_tensor(tensor).numel()

    # -- reading -----------------------------------------------------------------------------
    def touched(self, args, kwargs) -> set:
        """The storage keys of pending fills that the tensors in `args` / `kwargs` live in."""
        if not self.pending:
            return set()
        found = set()

        def visit(x):
            if isinstance(x, torch.Tensor):
                key = _storage_key(x)
                if key in self._pending_keys:
                    found.add(key)
            elif isinstance(x, (list, tuple)):
                for y in x:
                    visit(y)
            elif isinstance(x, dict):
                for y in x.values():
                    visit(y)

        visit(args)
        visit(kwargs)
        return found

    def flush(self, keys: Optional[set] = None) -> None:
        """Run the pending fills now: those in the storages `keys`, or all (in a dry run:
        forget them). Fills of other storages stay pending: they touch other memory."""
        if not self.pending:
            return
        if keys is None:
            run = self.pending
            self._set_pending([])
        else:
            run = [p for p in self.pending if p.footprint.key in keys]
            self._set_pending([p for p in self.pending if p.footprint.key not in keys])
        run = self._reachable(run)
        if run and not self.dry_run:
            for phase in sorted({p.phase for p in run}):  # one fused pass per phase
                self._execute([p.fill for p in run if p.phase == phase])
            self.flushes += 1

    def _reachable(self, run: list) -> list:
        """The pending fills whose memory anything but this recorder can still reach. A tensor
        dropped before the pass (a head weight replaced by a tied embedding after its init) is
        not written: only the recorder refers to it and no other tensor shares its storage."""
        ours = collections.Counter(id(p.fill.tensor) for p in self.pending + run)
        ours.update(id(t) for t in self._keep_alive)
        ours.update(id(t) for _, t in self._done_routines)
        kept = []
        for p in run:
            t = p.fill.tensor
            # getrefcount: its argument, `t`, and the recorder's own references
            unreferenced = sys.getrefcount(t) - 2 - ours[id(t)] == 0
            if unreferenced and not is_dtensor(t) and not t.is_meta and \
                    torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2:
                self.unreachable += 1
                continue
            kept.append(p)
        return kept

    def _execute(self, fills: Sequence[Fill]) -> None:
        fills = [f for f in fills if not local_tensor(f.tensor).is_meta]
        backends.execute(fills)
        self.elements_filled += sum(local_tensor(f.tensor).numel() for f in fills)

    # -- queries -----------------------------------------------------------------------------
    def wrote(self, tensor: torch.Tensor) -> bool:
        """Whether anything in the block wrote (part of) `tensor`'s memory."""
        footprint = _Footprint.of(tensor)
        if footprint is None:
            return True  # nothing to write
        return any(fp.overlaps(footprint) for fp, _, _ in self._writes.get(footprint.key, ()))

    def by_fastinit(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor`'s final values are all fastinit's: its last write covering it was a
        fastinit fill, and no other operation wrote part of it after."""
        footprint = _Footprint.of(tensor)
        if footprint is None:
            return False
        result = False
        for fp, _, ours in self._writes.get(footprint.key, ()):
            if fp.covers(footprint):
                result = ours
            elif fp.overlaps(footprint) and not ours:
                result = False
        return result

    def describe(self, tensor: torch.Tensor) -> Optional[str]:
        """The last write that covered all of `tensor`, followed by any later partial writes,
        e.g. "normal(mean=0, std=0.02); then zero_ on part"; None when nothing wrote it."""
        footprint = _Footprint.of(tensor)
        if footprint is None:
            return None
        text = None
        for fp, what, _ in self._writes.get(footprint.key, ()):
            if fp.covers(footprint):
                text = what
            elif fp.overlaps(footprint):
                text = f"{text}; then {what} on part" if text else f"{what} on part"
        return text


def active_recorder() -> Optional[Recorder]:
    return getattr(_local, "recorder", None)


def records_meta() -> bool:
    """Inside `fused(dry_run=True)`: fills of meta tensors are recorded too."""
    recorder = active_recorder()
    return recorder is not None and recorder.dry_run


def run_now(fills: Sequence[Fill], target: torch.Tensor, what: str) -> None:
    """Run fills at once, also inside a block: for functions that read their own fills (the
    orthogonal_ and sparse_ scratch matrices). Pending fills that `target` covers are dropped,
    and the write of `target` is logged as `what`."""
    recorder = active_recorder()
    if recorder is not None:
        footprint = _Footprint.of(target)
        if footprint is not None:
            recorder.overwrite(footprint)
        recorder.recorded += 1
        if not recorder.dry_run:
            recorder._execute(fills)
        recorder.log_write(target, what, by_fastinit=True)
        return
    backends.execute(fills)


def submit(fills: Sequence[Fill]) -> None:
    """Run validated fills now, or record them inside a `fused()` block."""
    recorder = active_recorder()
    if recorder is None:
        backends.execute(fills)
    else:
        recorder.add(fills)


# --- what the mode intercepts ----------------------------------------------------------------

# Routines that make a distribution through a chain of tensor operations, by (module, function
# name): the fastinit function each one equals and the names of its arguments. The routine's
# first random fill of its target (its local `tensor`) becomes that fastinit call, with the
# arguments read from the routine's frame; the routine's later operations on the target are then
# already done (see `_FOLLOW_UPS`).
ROUTINES = {
    ("torch.nn.init", "_no_grad_trunc_normal_"): ("trunc_normal_", ("mean", "std", "a", "b", "generator")),
    ("torch.nn.init", "sparse_"): ("sparse_", ("sparsity", "std", "generator")),
    ("timm.layers.weight_init", "_trunc_normal_"): ("trunc_normal_", ("mean", "std", "a", "b")),
    ("timm.models.layers.weight_init", "_trunc_normal_"): ("trunc_normal_", ("mean", "std", "a", "b")),
}
# Routines whose QR runs on one thread, so that they equal fastinit's orthogonal_ bitwise.
ONE_THREAD_QR_ROUTINES = {("torch.nn.init", "orthogonal_"): "orthogonal_"}
# Callers of those routines that rescale the standard truncated normal (TF / JAX semantics):
# the whole caller is one fastinit call.
OUTER_ROUTINES = {
    ("timm.layers.weight_init", "trunc_normal_tf_"): ("trunc_normal_tf_", ("mean", "std", "a", "b")),
    ("timm.models.layers.weight_init", "trunc_normal_tf_"): ("trunc_normal_tf_", ("mean", "std", "a", "b")),
}


def _routine(frame, table):
    if frame is None:
        return None
    return table.get((frame.f_globals.get("__name__"), frame.f_code.co_name))


def _is_fillable(t) -> bool:
    """A tensor fastinit fills exactly as torch's in-place method would."""
    return (isinstance(t, torch.Tensor) and t.layout == torch.strided and t.dtype in DTYPE_CODES
            and not (torch.is_grad_enabled() and t.requires_grad))


def _fastinit():
    import fastinit
    return fastinit


def _scalar(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Interceptor(TorchFunctionMode):
    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder
        fi = _fastinit()
        self.init_functions = {fn: getattr(fi, name) for name, fn in TORCH_INIT_FUNCTIONS.items()
                               if hasattr(fi, name)}
        self.tensor_methods = {
            torch.Tensor.normal_: self._normal_,
            torch.Tensor.uniform_: self._uniform_,
            torch.Tensor.fill_: self._fill_,
            torch.Tensor.zero_: self._zero_,
        }
        self.factories = {torch.randn: "normal_", torch.rand: "uniform_",
                          torch.zeros: "zeros_", torch.ones: "ones_"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.recorder
        fastinit_fn = self.init_functions.get(func) or self._replaced_init_function(func)
        if fastinit_fn is not None:
            return fastinit_fn(*args, **kwargs)
        method = self.tensor_methods.get(func)
        name = getattr(func, "__name__", "")
        # the calling code's frame, for the routines made of tensor operations (ROUTINES)
        caller = _caller_frame() if method is not None or rec._done_routines or (
            rec.dry_run and name == "__get__") else None
        if method is not None and args and _is_fillable(args[0]):
            return method(caller, *args, **kwargs)
        if func in self.factories:
            made = self._factory(func, args, kwargs)
            if made is not None:
                return made
        if rec.dry_run and name == "__get__" and _property_name(func) == "is_meta" and args:
            # torch's trunc_normal_ returns at once on a meta tensor: a dry run records it there
            self._routine_fill(caller, args[0])
        if func is torch.linalg.qr and _routine(_caller_frame(), ONE_THREAD_QR_ROUTINES):
            # torch's orthogonal_: its QR on one thread, as fastinit's orthogonal_ takes it
            touched = rec.touched(args, kwargs)
            if touched:
                rec.flush(touched)
            return qr_on_one_thread(*args, **kwargs)
        if name in METADATA_OPS or (name == "__getitem__" and _is_basic_index(args[1])):
            return func(*args, **kwargs)  # a view is tracked through its storage
        done = self._follow_up(caller, name, args)
        if done is not None:
            return None if done is _SKIPPED else done
        target = _written_tensor(name, args, kwargs)
        # what the operation reads (an in-place target, `out=` included) runs first; a target
        # it overwrites whole is not read
        reads = args[1:] if name in OVERWRITE_OPS else args
        touched = rec.touched(reads, kwargs)
        if touched:
            rec.flush(touched)
        if name in OVERWRITE_OPS and target is not None:
            footprint = _Footprint.of(target)
            if footprint is not None:
                rec.overwrite(footprint)
        result = func(*args, **kwargs)
        if target is not None:
            rec.log_write(target, name)
        return result

    def _replaced_init_function(self, func):
        """torch.nn.init's functions dispatch with the function their module holds *now*: when
        a wrapper has replaced it there (Hugging Face's guard while it initialises), that
        wrapper arrives here and stands for torch's function of the same name."""
        name = getattr(func, "__name__", None)
        if name in TORCH_INIT_FUNCTIONS and getattr(torch.nn.init, name, None) is func:
            return getattr(_fastinit(), name, None)
        return None

    # -- tensor methods ----------------------------------------------------------------------
    def _normal_(self, caller, t, mean=0.0, std=1.0, *, generator=None):
        if self._routine_fill(caller, t):
            return t
        return _fastinit().normal_(t, mean, std, generator)

    def _uniform_(self, caller, t, *args, generator=None, **kwargs):
        if self._routine_fill(caller, t):
            return t
        if self._done_frame(caller) is not None:
            # torch's narrow-interval trunc_normal_ draws an acceptance buffer after its first
            # fill; with the target already final, accept everything: u = 0, log u = -inf.
            with torch.no_grad():
                return t.zero_()
        a = kwargs.get("from", args[0] if args else 0.0)
        b = kwargs.get("to", args[1] if len(args) > 1 else 1.0)
        return _fastinit().uniform_(t, a, b, generator)

    def _fill_(self, caller, t, value):
        if not _scalar(value) or not math.isfinite(value):
            return self._generic_fill(torch.Tensor.fill_, t, value)
        return _fastinit().constant_(t, value)

    def _zero_(self, caller, t):
        return _fastinit().zeros_(t)

    def _generic_fill(self, func, t, *args):
        touched = self.recorder.touched(args, {})
        if touched:
            self.recorder.flush(touched)
        footprint = _Footprint.of(t)
        if footprint is not None:
            self.recorder.overwrite(footprint)
        result = func(t, *args)
        self.recorder.log_write(t, func.__name__)
        return result

    # -- routines made of tensor operations --------------------------------------------------
    def _done_frame(self, frame):
        """The target of a recognised routine running in `frame` whose fill is recorded."""
        for done, target in self.recorder._done_routines:
            if done is frame:
                return target
        return None

    def _routine_fill(self, caller, t) -> bool:
        """If `caller` is a known routine making its first fill of its target `t`, make the
        equivalent fastinit call and remember the routine's frames: their later operations on
        `t` are part of that call."""
        routine = _routine(caller, ROUTINES)
        if routine is None or caller.f_locals.get("tensor") is not t or self._done_frame(caller) is not None:
            return False
        frames = [caller]
        outer = caller.f_back
        outer_routine = _routine(outer, OUTER_ROUTINES)
        if outer_routine is not None and outer.f_locals.get("tensor") is t:
            routine, values = outer_routine, outer.f_locals
            frames.append(outer)
        else:
            values = caller.f_locals
        name, arg_names = routine
        kwargs = {arg: values[arg] for arg in arg_names}
        if name == "trunc_normal_":
            # the routine has warned about a mean far from [a, b] already
            _fastinit().nn_init._trunc_normal_checked(
                name, t, kwargs["mean"], kwargs["std"], kwargs["a"], kwargs["b"],
                kwargs.get("generator"), None, warn=False)
        else:
            getattr(_fastinit(), name)(t, **kwargs)
        # Only the latest routine can still be running: hold its frames alone (their identity
        # stays unique while held; an older routine's scratch tensors are released).
        self.recorder._done_routines = [(frame, t) for frame in frames]
        return True

    def _follow_up(self, caller, name, args):
        """A done routine's later operation, already part of its recorded call: a result that
        stands for it without running it, or None when this is not one."""
        if not self.recorder._done_routines:
            return None
        target = self._done_frame(caller)
        if target is None:
            return None
        first = args[0] if args else None
        if first is target and name in ("erfinv_", "mul_", "add_", "clamp_"):
            return target
        if first is target and name in ("lt", "gt"):  # rejection test: all within [a, b]
            return torch.zeros((), dtype=torch.bool, device=target.device)
        if first is target and name == "__setitem__":  # sparse_'s zeros: part of the call
            return _SKIPPED
        if name == "copy_" and len(args) > 1 and args[1] is target:  # a scratch copy of it
            return first
        if name == "randperm":  # sparse_'s zero positions: drawn by the call already
            return torch.arange(args[0], device=target.device)
        return None

    # -- factories ---------------------------------------------------------------------------
    def _factory(self, func, args, kwargs):
        if set(kwargs) - {"dtype", "device", "requires_grad", "generator"}:
            return None
        size = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
        if not all(isinstance(s, int) for s in size):
            return None
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        if dtype not in DTYPE_CODES:
            return None
        generator = kwargs.get("generator")
        if generator is not None and func not in (torch.randn, torch.rand):
            return None
        t = torch.empty(tuple(size), dtype=dtype, device=kwargs.get("device"))
        fill = getattr(_fastinit(), self.factories[func])
        with torch.no_grad():
            fill(t, generator=generator) if generator is not None else fill(t)
        if kwargs.get("requires_grad"):
            t.requires_grad_(True)
        return t


_SKIPPED = object()


# Frames of torch's own function-mode plumbing between a call and the mode (a `torch.device`
# context inside the block, `handle_torch_function`).
_PLUMBING_MODULES = frozenset({"torch.overrides", "torch.utils._device"})


def _caller_frame():
    """The frame of the code that called the intercepted operation."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in _PLUMBING_MODULES:
        frame = frame.f_back
    return frame


def _property_name(getter) -> str:
    """The attribute a property getter (`Tensor.is_meta.__get__`) reads."""
    return getattr(getattr(getter, "__self__", None), "__name__", "")


def _is_basic_index(index) -> bool:
    """Indexing that makes a view (ints, slices, None, ...), reading no element."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice)
               or (isinstance(i, int) and not isinstance(i, bool)) for i in items)


def _key_or_none(t):
    return _storage_key(t) if isinstance(t, torch.Tensor) else None


def _written_tensor(name: str, args, kwargs) -> Optional[torch.Tensor]:
    """The tensor an operation writes in place: `out=`, an in-place method's self, or
    `__setitem__`'s target."""
    out = kwargs.get("out")
    if isinstance(out, torch.Tensor):
        return out
    if args and isinstance(args[0], torch.Tensor) and (
            name == "__setitem__" or (name.endswith("_") and not name.startswith("__"))
            or name.startswith("__i")):
        return args[0]
    return None


@contextlib.contextmanager
def fused(dry_run: bool = False) -> Iterator[Recorder]:
    """Record the initialisation done inside the block; run it in one fused pass at exit.

    Every torch.nn.init and fastinit call, the in-place tensor fills init code uses
    (``normal_``, ``uniform_``, ``fill_``, ``zero_``), torch's and timm's truncated normals
    and ``torch.randn`` / ``rand`` / ``zeros`` / ``ones`` are recorded with fastinit's values
    (see the module docstring for the rules); other code runs as usual and sees the values it
    would have seen. Only the calling thread is affected; nothing is patched.

    Args:
        dry_run: record only: fills of every tensor, meta tensors included, are logged and
            never run, and nothing is allocated for them (``fastinit.explain`` uses this).

    Returns:
        A context manager yielding the block's `Recorder` (``wrote(t)``, ``describe(t)``,
        ``by_fastinit(t)``, ``recorded``, ``dropped``, ``flushes``). A block nested in another
        joins it.

    Raises:
        InitValueError: a recorded call's bad argument, raised at that call (each call is
            validated when made, as alone); a fill that cannot run (e.g. freed storage) raises
            when the pass that holds it runs, at the latest at the block's end.

    Example::

        with fastinit.fused():
            model = MyModel()                 # every layer's init is recorded
            model.apply(my_weights_init)      # torch.nn.init calls in it too
        # here every parameter holds exactly what the calls one by one would have written
    """
    outer = active_recorder()
    if outer is not None:
        yield outer
        return
    recorder = Recorder(dry_run=dry_run)
    _local.recorder = recorder
    try:
        with _Interceptor(recorder):
            yield recorder
    finally:
        _local.recorder = None
    recorder.flush()
