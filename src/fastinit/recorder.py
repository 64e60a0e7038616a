"""The pending fills and the write log of a `fused()` block, indexed by the bytes they touch.

A tensor's footprint is the byte range of its storage it spans, so that writes through views of
any dtype are compared in one unit. Pending fills are indexed per storage, sorted by first byte:
a cover, overlap or read query looks at the fills of one storage near the queried range
(O(log n) plus the fills it finds), never at the whole pending list. Writes are appended to a
log as they are made and indexed, per storage by width class and first byte, when the log is
first queried after them (`wrote`, `by_fastinit`, `describe`), so a query looks only at the
writes near the queried range, and recording a write costs one append.

A recorded fill is one object, its `Pending`: footprint, fill, pass phase and log entry at once
(a whole plain CPU tensor's footprint, seed and memory come from one native call,
`backends.record_whole_natively`), so a block of thousands of fills allocates few objects for
the garbage collector to track.
"""
from __future__ import annotations

import sys
from typing import Iterable, Optional, Sequence

import torch

from . import backends
from .contract import describe_fill
from .plan import PLAIN_TENSOR_TYPES, Fill, fill_params
from .sharding import is_dtensor, local_tensor
from .storage_index import StorageFills, StorageWrites

# In-place operations that overwrite every element of their first argument without reading it.
OVERWRITE_OPS = frozenset({"copy_", "fill_", "zero_"})

_DisableTorchFunction = torch._C.DisableTorchFunction
_CPU = torch.device("cpu")  # the device of the storage keys of natively recorded fills


def storage_key(t: torch.Tensor):
    """The memory a tensor lives in: (device, address of its storage), or the storage object
    on meta; None for a tensor of no elements."""
    t = local_tensor(t)
    with _DisableTorchFunction():  # our own look at the memory: not a user's access
        if t.is_meta:
            return ("meta", t.untyped_storage()._cdata)
        if t.numel() == 0:
            return None
        return (t.device, t.data_ptr() - t.storage_offset() * t.element_size())


class Footprint:
    """The bytes [lo, hi) of its storage a tensor spans; dense when it writes every one of them.

    Attributes:
        key: the storage (see `storage_key`).
        lo: the first byte, counted from the start of the storage.
        hi: one past the last byte.
        dense: every byte in [lo, hi) is an element of the tensor, each once.
    """

    __slots__ = ("key", "lo", "hi", "dense")

    def __init__(self, key, lo: int, hi: int, dense: bool) -> None:
        self.key, self.lo, self.hi, self.dense = key, lo, hi, dense

    @classmethod
    def of(cls, t: torch.Tensor) -> Optional["Footprint"]:
        if type(t) not in PLAIN_TENSOR_TYPES:
            t = local_tensor(t)
        with _DisableTorchFunction():
            return _footprint(t)

    def covers(self, other: "Footprint") -> bool:
        return self.dense and self.key == other.key and self.lo <= other.lo and other.hi <= self.hi

    def overlaps(self, other: "Footprint") -> bool:
        return self.key == other.key and self.lo < other.hi and other.lo < self.hi


def _footprint(t: torch.Tensor) -> Optional[Footprint]:
    """`Footprint.of` a plain (local) tensor, with torch functions disabled by the caller."""
    n = t.numel()
    if n == 0:
        return None
    item = t.element_size()
    offset = t.storage_offset()
    if t.is_contiguous():
        lo, hi, dense = offset, offset + n, True
    else:
        lo = hi = offset
        for size, stride in zip(t.shape, t.stride()):
            if stride < 0:
                lo += (size - 1) * stride
            else:
                hi += (size - 1) * stride
        hi += 1
        dense = hi - lo == n and torch._debug_has_internal_overlap(t) == 0
    if t.is_meta:
        key = ("meta", t.untyped_storage()._cdata)
    else:
        key = (t.device, t.data_ptr() - offset * item)
    return Footprint(key, lo * item, hi * item, dense)


def _alias(t: torch.Tensor) -> torch.Tensor:
    """A tensor of the same memory as `t` (its local shard for a DTensor), made by the
    recorder: it keeps that memory, and so the storage keys of the log, valid."""
    if type(t) not in PLAIN_TENSOR_TYPES:
        t = local_tensor(t)
    with _DisableTorchFunction():
        return t.detach()


class Write(Footprint):
    """A write in the log that is not a recorded fill: an operation's (`what` its name), or a
    fill run at once (`what` its words). `ours`: fastinit's; `memory`: an alias of the
    written memory, which keeps it, and so the storage key, valid while the block lasts."""

    __slots__ = ("what", "ours", "memory")

    def __init__(self, footprint: Footprint, what, ours: bool, memory) -> None:
        Footprint.__init__(self, footprint.key, footprint.lo, footprint.hi, footprint.dense)
        self.what, self.ours, self.memory = what, ours, memory


class Pending(Footprint):
    """A recorded fill, and its entry in the write log: its footprint, the fill (`tensor`,
    `dist`, `params`, `seed`, `stream`, `first_index`, `layout`, as in `plan.Fill`), and
    `phase`, which orders it after the pending fills of the memory it overlaps (fills of one
    phase never overlap, so each phase is one fused pass). `memory` holds the memory the fill
    was recorded for (an alias of a plain tensor or of a DTensor's local shard, or the native
    record's holder, `backends.memory_tensor`): the fill writes that memory even if the tensor
    is later moved elsewhere (``set_``, ``.data =``), and it keeps the storage key valid.
    `tensor` is None once the fill has run or been dropped (the log needs only its
    footprint and words).

    A storage with one pending fill is indexed by that fill itself (see `StorageFills`)."""

    __slots__ = ("tensor", "dist", "params", "seed", "stream", "first_index", "layout",
                 "phase", "order", "memory")
    ours = True  # a fastinit fill

    def __init__(self, key, lo: int, hi: int, dense: bool, tensor, dist, params: tuple,
                 seed: int, stream: int, first_index: int, layout, memory) -> None:
        self.key, self.lo, self.hi, self.dense = key, lo, hi, dense
        self.tensor, self.dist, self.params, self.seed, self.stream = \
            tensor, dist, params, seed, stream
        self.first_index, self.layout, self.memory = first_index, layout, memory

    @property
    def what(self) -> tuple:
        """The fill in words, unformatted (see `_words`)."""
        return self.dist, self.params

    def overlapping(self, fp: Footprint) -> list["Pending"]:
        """As `StorageFills.overlapping`, for a storage of this fill alone."""
        return [self] if self.overlaps(fp) else []

    def tensor_to_run(self) -> torch.Tensor:
        """The tensor of the memory it was recorded for (the tensor may have moved since);
        torch functions are disabled by the caller."""
        t = self.tensor
        if type(t) not in PLAIN_TENSOR_TYPES or t.data_ptr() == self.key[1] + self.lo:
            return t
        memory = self.memory
        return memory if isinstance(memory, torch.Tensor) else backends.memory_tensor(memory)

    def fill_to_run(self) -> Fill:
        return Fill(self.tensor_to_run(), self.dist, self.params, self.seed, self.stream,
                    self.first_index, self.layout)


def _with_memory(items: Sequence, tensor_of) -> tuple[list, int]:
    """The items whose tensor (`tensor_of(item)`; a DTensor's local shard) is not on meta, and
    how many elements those tensors hold; torch functions are disabled by the caller."""
    kept, elements = [], 0
    for item in items:
        t = tensor_of(item)
        local = t if type(t) in PLAIN_TENSOR_TYPES else local_tensor(t)
        if not local.is_meta:
            kept.append(item)
            elements += local.numel()
    return kept, elements


def _fills_of(index) -> list[Pending]:
    """The pending fills of a storage's index (a `StorageFills`, or one `Pending`)."""
    return index.fills if type(index) is StorageFills else [index]


def _words(what) -> str:
    """A logged write in words: an operation's name, or a fill's (dist, params), formatted
    only when read."""
    return what if isinstance(what, str) else describe_fill(*what)


class Recorder:
    """The pending fills and the write log of one `fused()` block (one thread).

    Attributes:
        recorded: how many fills were recorded.
        elements_filled: elements written by fastinit's fills (the block's runs so far).
        elements_other: elements written by other in-place operations seen in the block.
        dropped: how many recorded fills a later write covered before anything read them.
        flushes: how many times pending fills ran before the block's end.
        unreachable: fills not run because no one can ever read their memory (see
            `_reachable`).
        dry_run: record only: fills (meta tensors included) are logged, never run.
    """

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self._pending: dict[int, Pending] = {}         # by order of recording
        # storage key -> its pending fills: one Pending, or a StorageFills of several
        self._by_storage: dict[object, object] = {}
        self._order = 0
        self.recorded = 0
        self.dropped = 0
        self.flushes = 0
        # every write, in the order made: the Pending of a recorded fill, a Write of the others
        self._log: list[Footprint] = []
        self._writes: dict[object, StorageWrites] = {}  # the log indexed, up to _indexed
        self._indexed = 0
        self.elements_filled = 0  # elements fastinit's fills wrote
        self.unreachable = 0      # fills skipped: no one can read their memory
        self.elements_other = 0   # elements other in-place operations wrote
        # (frame, target) of the latest recognised routine whose call is recorded (ROUTINES)
        self.done_routines: list[tuple[object, torch.Tensor]] = []

    @property
    def pending(self) -> list[Pending]:
        """The fills recorded and not yet run, in the order they were recorded."""
        return list(self._pending.values())

    def has_pending(self, key) -> bool:
        return key in self._by_storage

    # -- recording ---------------------------------------------------------------------------
    def add(self, fills: Sequence[Fill]) -> None:
        """Record checked fills whose seeds are drawn (see `_record`). A whole plain CPU tensor's
        footprint and memory come from the native record (`backends.record_whole_natively`,
        with the fill's seed: no draw)."""
        for f in fills:
            t = f.tensor
            if type(t) in PLAIN_TENSOR_TYPES and f.layout is None and not f.first_index and \
                    self._record_natively(t, f.dist, f.params, f.seed, f.stream, None):
                continue
            local = t if type(t) in PLAIN_TENSOR_TYPES else local_tensor(t)
            with _DisableTorchFunction():
                fp = _footprint(local)
                if fp is None:
                    continue
                memory = local.detach()
            self._record(Pending(fp.key, fp.lo, fp.hi, fp.dense, t, f.dist, f.params, f.seed,
                                 f.stream, f.first_index, f.layout, memory))

    def record_whole(self, tensor: torch.Tensor, dist, params, seed: Optional[int],
                     generator: Optional[torch.Generator]) -> bool:
        """Record a random fill of all of the plain `tensor` from contract index 0, stream 0,
        its storage checked and its seed drawn in one native call
        (`backends.record_whole_natively`), when that call takes the tensor.

        Args:
            dist, params: the planner's, every argument checked.
            seed: the fill's seed, checked; None: one draw from `generator`.

        Returns:
            Whether the fill was recorded; False: nothing was drawn or recorded (the caller
            records it through `plan.make_fill`).

        Raises:
            UnsafeTargetError: the tensor's elements lie outside its storage (torch's
                message); nothing is drawn or recorded.
        """
        dist, params = fill_params(dist, params)
        return self._record_natively(tensor, dist, tuple(params), seed, 0, generator)

    def _record_natively(self, tensor: torch.Tensor, dist, params: tuple, seed: Optional[int],
                         stream: int, generator: Optional[torch.Generator]) -> bool:
        """Record the fill of all of the plain `tensor` from contract index 0, its footprint,
        memory and seed (`seed`, else one draw from `generator`) from one native call
        (`backends.record_whole_natively`); False, with nothing drawn or recorded, when that
        call does not take it."""
        found = backends.record_whole_natively(tensor, seed, generator)
        if found is None:
            return False
        storage, lo, hi, dense, seed, memory = found
        self._record(Pending((_CPU, storage), lo, hi, dense, tensor, dist, params, seed,
                             stream, 0, None, memory))
        return True

    def _record(self, p: Pending) -> None:
        """Index and log the recorded fill `p`: the pending fills it covers are dropped."""
        by_storage = self._by_storage
        index = by_storage.get(p.key)
        if index is not None and p.dense:
            self._drop_covered(p)
            index = by_storage.get(p.key)
        if index is None:
            p.phase = 0
            by_storage[p.key] = p
        else:
            # a fill over part of a pending one (an Embedding's padding row) runs after it, in
            # a later phase of the same pass
            p.phase = 1 + max((q.phase for q in index.overlapping(p)), default=-1)
            if type(index) is Pending:
                index = by_storage[p.key] = StorageFills(index)
            index.insert(p)
        p.order = self._order
        self._order += 1
        self._pending[p.order] = p
        self._log.append(p)
        self.recorded += 1

    def _drop_covered(self, footprint: Footprint) -> None:
        by_storage = self._by_storage
        index = by_storage.get(footprint.key)
        if index is None or not footprint.dense:
            return
        if type(index) is Pending:
            dropped = [index] if footprint.covers(index) else []
            if dropped:
                del by_storage[footprint.key]
        else:
            dropped = index.drop_covered(footprint)
            if not index.fills:
                del by_storage[footprint.key]
        for p in dropped:
            del self._pending[p.order]
            p.tensor = None
            self.dropped += 1

    def overwrite(self, footprint: Footprint) -> None:
        """Another operation is about to write every element of `footprint`: pending fills it
        covers are dropped; those it only overlaps run first."""
        self._drop_covered(footprint)
        index = self._by_storage.get(footprint.key)
        if index is not None and index.overlapping(footprint):
            self.flush({footprint.key})

    def log_write(self, tensor: torch.Tensor, what: str, by_fastinit: bool = False) -> None:
        """Log a write of all of `tensor` by the operation `what`."""
        footprint = Footprint.of(tensor)
        if footprint is not None:
            self._log.append(Write(footprint, what, by_fastinit, _alias(tensor)))
            if not by_fastinit and footprint.key[0] != "meta":
                self.elements_other += local_tensor(tensor).numel()

    def moved(self, tensor: torch.Tensor, old: Optional[Footprint]) -> None:
        """`tensor`'s memory was replaced (``.data = ``, ``set_``): what was written to it stays
        its record, carried to the new memory unless something wrote the new memory already."""
        new = Footprint.of(tensor)
        if old is None or new is None or new.key == old.key or self._written_over(new):
            return
        alias = _alias(tensor)
        for i in self._overlapping_writes(old):
            w = self._log[i]
            self._log.append(Write(new, w.what if w.covers(old) else f"{_words(w.what)} on part",
                                   w.ours, alias))

    # -- reading -----------------------------------------------------------------------------
    def touched(self, tensors: Iterable) -> set:
        """The storage keys of pending fills that the tensors in `tensors` (nested in lists,
        tuples and dicts) live in."""
        found = set()
        for x in tensors:
            if isinstance(x, torch.Tensor):
                key = storage_key(x)
                if key in self._by_storage:
                    found.add(key)
            elif isinstance(x, (list, tuple)):
                found |= self.touched(x)
            elif isinstance(x, dict):
                found |= self.touched(x.values())
        return found

    def flush(self, keys: Optional[set] = None) -> None:
        """Run the pending fills now: those in the storages `keys`, or all (in a dry run:
        forget them). Fills of other storages stay pending: they touch other memory."""
        if not self._pending:
            return
        if keys is None:
            popped = list(self._pending.values())
            self._pending.clear()
            self._by_storage.clear()
        else:
            popped = []
            for key in keys:
                index = self._by_storage.pop(key, None)
                if index is not None:
                    popped += _fills_of(index)
            for p in popped:
                del self._pending[p.order]
            popped.sort(key=lambda p: p.order)
        run = self._reachable(popped)
        if run and not self.dry_run:
            with _DisableTorchFunction():
                if all(p.phase == 0 for p in run):  # one fused pass
                    self._run(run)
                else:
                    for phase in sorted({p.phase for p in run}):  # one fused pass per phase
                        self._run([p for p in run if p.phase == phase])
            self.flushes += 1
        for p in popped:  # the log keeps their footprint and words, not the tensor
            p.tensor = None

    def _run(self, run: list) -> None:
        """Run pending fills of one phase (torch functions disabled by the caller): whole
        tensors from contract index 0 as rows (`backends.execute_whole`), else as Fills."""
        if any(p.layout is not None or p.first_index for p in run):
            self.execute([p.fill_to_run() for p in run])
            return
        rows, elements = _with_memory([(p.tensor_to_run(), p.dist, p.params, p.seed, p.stream)
                                       for p in run], lambda row: row[0])
        backends.execute_whole(rows)
        self.elements_filled += elements

    def _reachable(self, run: list) -> list:
        """The fills of `run` whose memory anyone can still read. A fill is skipped only when
        that is provably safe: its tensor's storage was allocated by torch's own allocator (so
        torch owns the memory: not numpy's, a DLPack producer's, a file's or shared memory),
        no other tensor or storage shares it, and nothing but this recorder refers to the
        tensor (its fills being run, a routine's target). That memory is freed with the
        recorder, unread (a head weight replaced by a tied embedding after its init).

        One reference count per fill; the storage is looked at only for a tensor nothing else
        refers to."""
        ours: dict[int, int] = {}
        for p in run:
            ours[id(p.tensor)] = ours.get(id(p.tensor), 0) + 1
        for _, t in self.done_routines:
            if id(t) in ours:
                ours[id(t)] += 1
        kept = []
        getrefcount = sys.getrefcount
        with _DisableTorchFunction():  # our own look at the memory: not a user's access
            for p in run:
                t = p.tensor
                # getrefcount: its argument, `t`, and the recorder's own references
                if getrefcount(t) - 2 - ours[id(t)] == 0 and _owned_by_torch_alone(t, p.key):
                    self.unreachable += 1
                    continue
                kept.append(p)
        return kept

    def execute(self, fills: Sequence[Fill]) -> None:
        with _DisableTorchFunction():
            fills, elements = _with_memory(fills, lambda f: f.tensor)
        backends.execute(fills)
        self.elements_filled += elements

    # -- queries -----------------------------------------------------------------------------
    def _overlapping_writes(self, footprint: Footprint) -> list[int]:
        """The positions in the log of the writes that overlap `footprint`, in order."""
        log = self._log
        for i in range(self._indexed, len(log)):  # index the writes logged since the last query
            w = log[i]
            writes = self._writes.get(w.key)
            if writes is None:
                writes = self._writes[w.key] = StorageWrites()
            writes.add(w, i)
        self._indexed = len(log)
        writes = self._writes.get(footprint.key)
        return [] if writes is None else writes.overlapping(footprint, log)

    def _written_over(self, footprint: Footprint) -> bool:
        return bool(self._overlapping_writes(footprint))

    def wrote(self, tensor: torch.Tensor) -> bool:
        """Whether anything in the block wrote (part of) `tensor`'s memory."""
        footprint = Footprint.of(tensor)
        return footprint is None or self._written_over(footprint)  # no elements: nothing to write

    def by_fastinit(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor`'s final values are all fastinit's: its last write covering it was a
        fastinit fill, and no other operation wrote part of it after."""
        footprint = Footprint.of(tensor)
        if footprint is None:
            return False
        result = False
        for i in self._overlapping_writes(footprint):
            w = self._log[i]
            if w.covers(footprint):
                result = w.ours
            elif not w.ours:
                result = False
        return result

    def describe(self, tensor: torch.Tensor) -> Optional[str]:
        """The last write that replaced all of `tensor`, followed by the later writes that
        build on it (to part of it, or an in-place operation that reads it, such as ``mul_``),
        e.g. "normal(mean=0, std=0.02); then mul_; then zero_ on part"; None when nothing
        wrote it."""
        footprint = Footprint.of(tensor)
        if footprint is None:
            return None
        text = None
        for i in self._overlapping_writes(footprint):
            w = self._log[i]
            if w.covers(footprint):
                reads = not w.ours and w.what not in OVERWRITE_OPS
                text = f"{text}; then {_words(w.what)}" if text and reads else _words(w.what)
            else:
                text = f"{text}; then {_words(w.what)} on part" if text else f"{_words(w.what)} on part"
        return text


def _owned_by_torch_alone(t: torch.Tensor, key) -> bool:
    """Whether `t` lives in the storage `key` (see `storage_key`), its memory allocated by torch
    for this storage alone: a resizable storage (its data is the allocator's, not borrowed from
    numpy, DLPack, a buffer or a file), not in shared memory, referred to by at most `t` and the
    recorder's holder of it (the storage object made here is one more use). Torch functions are
    disabled by the caller."""
    if (type(t) not in PLAIN_TENSOR_TYPES and is_dtensor(t)) or t.is_meta:
        return False
    storage = t.untyped_storage()
    return storage.data_ptr() == key[1] and storage.device == key[0] and storage.resizable() \
        and not (storage.device.type == "cpu" and storage.is_shared()) \
        and torch._C._storage_Use_Count(storage._cdata) <= 3
