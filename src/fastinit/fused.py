"""`with fastinit.fused():` records every fastinit and torch.nn.init call made inside it (an
existing `model.apply(weights_init)`, a module constructor) and runs them at exit in one fused
pass per (device, dtype).

Each call is validated and draws its seed when it is made, exactly as it would alone, so the
result is bitwise equal to running the calls one by one. A TorchFunctionMode watches every other
torch operation: one that touches the memory of a pending tensor (code that scales a weight
right after initialising it, Embedding zeroing its padding row) flushes the pending fills first,
so it sees the values it would have seen.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator, Sequence

import torch
from torch.overrides import TorchFunctionMode

from . import backends
from .plan import Fill
from .sharding import local_tensor

# Operations that read only metadata (shape, dtype, strides, property getters) never flush.
METADATA_OPS = frozenset({
    "__get__", "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_contiguous", "data_ptr", "element_size", "is_floating_point", "is_complex", "__len__",
    "_debug_has_internal_overlap", "untyped_storage", "get_device", "type", "__hash__",
    "__repr__", "__format__", "_is_view",
})

_local = threading.local()


def _storage_key(t: torch.Tensor):
    t = local_tensor(t)
    if t.is_meta or t.numel() == 0:
        return None
    return (t.device, t.untyped_storage().data_ptr())


class Recorder:
    """Pending fills of one `fused()` block."""

    def __init__(self) -> None:
        self.pending: list[Fill] = []
        self.storages: set = set()
        self.flushes = 0
        self.recorded = 0

    def add(self, fills: Sequence[Fill]) -> None:
        keys = {_storage_key(f.tensor) for f in fills} - {None}
        if keys & self.storages:
            self.flush()  # a tensor initialised twice: the earlier fill runs first
        self.pending.extend(fills)
        self.storages |= keys
        self.recorded += len(fills)

    def touches_pending(self, args, kwargs) -> bool:
        if not self.storages:
            return False
        found = False

        def visit(x):
            nonlocal found
            if isinstance(x, torch.Tensor):
                found = found or _storage_key(x) in self.storages
            elif isinstance(x, (list, tuple)):
                for y in x:
                    visit(y)

        visit(args)
        visit(tuple((kwargs or {}).values()))
        return found

    def flush(self) -> None:
        if self.pending:
            fills, self.pending, self.storages = self.pending, [], set()
            backends.execute(fills)
            self.flushes += 1


class _FlushOnAccess(TorchFunctionMode):
    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in METADATA_OPS and \
                self.recorder.touches_pending(args, kwargs):
            self.recorder.flush()
        return func(*args, **kwargs)


def active_recorder():
    return getattr(_local, "recorder", None)


def submit(fills: Sequence[Fill]) -> None:
    """Run validated fills now, or record them inside a `fused()` block."""
    recorder = active_recorder()
    if recorder is None:
        backends.execute(fills)
    else:
        recorder.add(fills)


@contextlib.contextmanager
def fused() -> Iterator[Recorder]:
    """Record fastinit and torch.nn.init calls; run them in one fused pass at exit.

    Example::

        with fastinit.fused():
            model = MyModel()                 # every layer's init is recorded
            model.apply(my_weights_init)      # torch.nn.init calls in it too
        # here every parameter holds exactly what the calls one by one would have written
    """
    if active_recorder() is not None:  # nested: join the outer block
        yield active_recorder()
        return
    import fastinit

    recorder = Recorder()
    originals = _bound_init_functions(fastinit)
    _local.recorder = recorder
    try:
        for module, name, _ in originals:
            setattr(module, name, getattr(fastinit, name))
        with _FlushOnAccess(recorder):
            yield recorder
    finally:
        for module, name, fn in reversed(originals):
            setattr(module, name, fn)
        _local.recorder = None
    recorder.flush()


def _bound_init_functions(fastinit) -> list:
    """(module, name, function) for each torch.nn.init function fastinit replaces: in
    torch.nn.init, and in every loaded torch.nn module that imported it by name
    (torch.nn.modules.activation and .transformer do `from torch.nn.init import xavier_uniform_`,
    so MultiheadAttention and Transformer would otherwise bypass the patch)."""
    current = {name: getattr(torch.nn.init, name) for name in torch.nn.init.__all__
               if hasattr(fastinit, name)}
    out = [(torch.nn.init, name, fn) for name, fn in current.items()]
    for module_name, module in list(sys.modules.items()):
        if module is None or module is torch.nn.init or not module_name.startswith("torch.nn."):
            continue
        namespace = getattr(module, "__dict__", {})
        out.extend((module, name, fn) for name, fn in current.items() if namespace.get(name) is fn)
    return out
