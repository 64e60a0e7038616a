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
storage and are tracked through it, so making them does not flush. Covering, overlapping and
reading are decided in bytes of the storage, so a write through a view of another dtype drops
or runs exactly the fills of the bytes it writes.

A tensor whose memory is replaced after a write (``p.data = F.pad(p.data, ...)``, ``set_``)
keeps the record of that write. A recorded fill is skipped only when no one can ever read its
memory: torch's own allocation, shared with no other tensor and referred to by nothing but the
block (an initialised weight replaced by a tied one); memory from numpy, DLPack, a file or
shared memory is always written.

The block is made of `recorder.Recorder` (the pending fills, indexed by storage and byte),
`interceptor.Interceptor` (the mode) and `routines` (torch's and timm's routines it
recognises).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Optional, Sequence

import torch

from . import backends
from .contract import describe_fill
from .interceptor import Interceptor
from .plan import Fill
from .recorder import Footprint, Recorder
from .registry import TORCH_INIT_FUNCTIONS
from .sharding import indexed_mirrors

class _ThreadState(threading.local):
    recorder: Optional[Recorder] = None  # this thread's open block (a class default: no block)


_local = _ThreadState()


def active_recorder() -> Optional[Recorder]:
    return _local.recorder


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
        footprint = Footprint.of(target)
        if footprint is not None:
            recorder.overwrite(footprint)
        recorder.recorded += 1
        if not recorder.dry_run:
            recorder.execute(fills)
        recorder.log_write(target, what, by_fastinit=True)
        return
    backends.execute(fills)


def submit(fills: Sequence[Fill]) -> None:
    """Run validated fills now, or record them inside a `fused()` block. (A fill of an indexed
    DTensor with mirrors runs at once: its mirrors are memory the block does not track.)"""
    recorder = active_recorder()
    if recorder is None:
        backends.execute(fills)
    else:
        for f in fills:
            if indexed_mirrors(f.tensor):
                run_now([f], f.tensor, describe_fill(f.dist, f.params))
            else:
                recorder.add([f])


def _fastinit_functions() -> tuple[dict[Callable, Callable], dict[str, Callable]]:
    """What the interceptor records torch's calls as: torch.nn.init's functions -> fastinit's,
    and the fastinit function of each recognised routine. (The drop-in functions are the layer
    above this module, which records their fills: they are looked up when a block opens.)"""
    from . import nn_init
    from .init_basic import trunc_normal_checked
    init_functions = {fn: getattr(nn_init, name) for name, fn in TORCH_INIT_FUNCTIONS.items()
                      if hasattr(nn_init, name)}

    def trunc_normal_(tensor, mean, std, a, b, generator=None):
        # the routine has warned about a mean far from [a, b] already
        return trunc_normal_checked("trunc_normal_", tensor, mean, std, a, b, generator, None,
                                    warn=False)

    routine_functions = {"trunc_normal_": trunc_normal_, "trunc_normal_tf_": nn_init.trunc_normal_tf_,
                         "sparse_": nn_init.sparse_}
    return init_functions, routine_functions


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

    On a sharded DTensor (FSDP2, ``Shard`` placements), a basic index that narrows a sharded
    dim (``w[padding_idx]``, ``w.data[i]``, ``w[3:9]``) gives, with no collective, a DTensor
    that is ``Partial`` over that mesh dim: where one shard holds the elements, its local
    tensor on that rank is a view of the shard (the other ranks hold -0.0, so reading it sums
    to the values); where they span several shards, each rank holds its own copy of its part.
    The fills made on it (``init.zeros_(w[i])``, ``w[i].zero_()``, ``normal_``, ...), and
    ``w[index] = value`` with a scalar value for any basic index, write each rank's own part
    of the shards, with no collective; another in-place operation on a slice that spans shards
    raises `InitValueError` (its write could reach no shard). Outside a block, DTensor indexes
    as torch does (a gathered copy: writes to it are lost).

    An exception raised inside the block does not lose the recorded fills: they run at the
    block's exit as on a normal exit, so every tensor recorded before the exception holds its
    values, and then the exception propagates unchanged.

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
        with Interceptor(recorder, *_fastinit_functions()):
            yield recorder
    except BaseException as error:
        _local.recorder = None
        try:  # every recorded tensor holds its values before the exception propagates
            recorder.flush()
        except Exception as pass_error:
            error.add_note(f"fastinit.fused: the recorded fills could not run: {pass_error!r}")
        raise
    _local.recorder = None
    recorder.flush()
