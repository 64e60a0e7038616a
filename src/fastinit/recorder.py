"""The pending fills and the write log of a `fused()` block, indexed by the bytes they touch.

A tensor's footprint is the byte range of its storage it spans, so that writes through views of
any dtype are compared in one unit. Pending fills are indexed per storage, sorted by first byte:
a cover, overlap or read query looks at the fills of one storage near the queried range
(O(log n) plus the fills it finds), never at the whole pending list. Writes are appended to a
log as they are made and indexed, per storage by width class and first byte, when the log is
first queried after them (`wrote`, `by_fastinit`, `describe`), so a query looks only at the
writes near the queried range, and recording a write costs one append.
"""
from __future__ import annotations

import bisect
import dataclasses
import sys
from typing import Iterable, Optional, Sequence

import torch

from . import backends
from .contract import describe_fill
from .plan import PLAIN_TENSOR_TYPES, Fill
from .sharding import is_dtensor, local_tensor

_DisableTorchFunction = torch._C.DisableTorchFunction


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


class Pending:
    """A recorded fill waiting for the pass; `phase` orders it after the pending fills of the
    memory it overlaps (fills of one phase never overlap, so each phase is one fused pass).
    `memory` is an alias of the fill's tensor made when it was recorded (None for a DTensor,
    whose memory is its local shard's, tracked by it): the fill writes that memory even if the
    tensor is later moved elsewhere (``set_``, ``.data =``)."""

    __slots__ = ("fill", "footprint", "phase", "order", "memory")

    def __init__(self, fill: Fill, footprint: Footprint, phase: int, order: int, memory) -> None:
        self.fill, self.footprint, self.phase, self.order, self.memory = \
            fill, footprint, phase, order, memory

    def fill_to_run(self) -> Fill:
        """The fill of the memory it was recorded for (the tensor may have moved since);
        torch functions are disabled by the caller."""
        t, memory = self.fill.tensor, self.memory
        if memory is None or t is memory or t.data_ptr() == memory.data_ptr():
            return self.fill
        return dataclasses.replace(self.fill, tensor=memory)


class _StorageFills:
    """The pending fills of one storage, sorted by first byte. `widest` bounds the length of
    every fill held, so the fills that can overlap [lo, hi) start in (lo - widest, hi)."""

    __slots__ = ("fills", "los", "widest")

    def __init__(self, p: Pending) -> None:
        self.fills: list[Pending] = [p]
        self.los: list[int] = [p.footprint.lo]
        self.widest = p.footprint.hi - p.footprint.lo

    def insert(self, p: Pending) -> None:
        i = bisect.bisect_right(self.los, p.footprint.lo)
        self.los.insert(i, p.footprint.lo)
        self.fills.insert(i, p)
        self.widest = max(self.widest, p.footprint.hi - p.footprint.lo)

    def near(self, fp: Footprint) -> tuple[int, int]:
        """The index range of the fills that may overlap `fp`."""
        return (bisect.bisect_right(self.los, fp.lo - self.widest),
                bisect.bisect_left(self.los, fp.hi))

    def overlapping(self, fp: Footprint) -> list[Pending]:
        start, end = self.near(fp)
        return [p for p in self.fills[start:end] if p.footprint.overlaps(fp)]

    def drop_covered(self, fp: Footprint) -> list[Pending]:
        """Remove and return the fills `fp` covers."""
        start, end = bisect.bisect_left(self.los, fp.lo), bisect.bisect_left(self.los, fp.hi)
        dropped = [p for p in self.fills[start:end] if p.footprint.hi <= fp.hi]
        if dropped:
            kept = [p for p in self.fills[start:end] if p.footprint.hi > fp.hi]
            self.fills[start:end] = kept
            self.los[start:end] = [p.footprint.lo for p in kept]
        return dropped


class _StorageWrites:
    """The positions in the log of the writes on one storage, indexed by width class (a write
    of w bytes is in class w.bit_length(), so it is narrower than 2**class) and, in each class,
    sorted by first byte: the writes that can overlap [lo, hi) start in (lo - 2**class, hi)."""

    __slots__ = ("by_class",)

    def __init__(self) -> None:
        self.by_class: dict[int, tuple[list[int], list[int]]] = {}  # class -> (los, positions)

    def add(self, footprint: Footprint, position: int) -> None:
        los, positions = self.by_class.setdefault((footprint.hi - footprint.lo).bit_length(), ([], []))
        i = bisect.bisect_right(los, footprint.lo)
        los.insert(i, footprint.lo)
        positions.insert(i, position)

    def overlapping(self, fp: Footprint, log: list) -> list[int]:
        """The positions of the writes of `log` that overlap `fp`, in the order they were made."""
        found = []
        for width_class, (los, positions) in self.by_class.items():
            start = bisect.bisect_right(los, fp.lo - (1 << width_class))
            end = bisect.bisect_left(los, fp.hi)
            found += [i for i in positions[start:end] if log[i][0].overlaps(fp)]
        found.sort()
        return found


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
        self._by_storage: dict[object, _StorageFills] = {}
        self._order = 0
        self.recorded = 0
        self.dropped = 0
        self.flushes = 0
        # (footprint, what, by_fastinit, alias) of each write, in the order made; the alias
        # keeps its memory, and so the storage keys, valid while the block lasts
        self._log: list[tuple] = []
        self._writes: dict[object, _StorageWrites] = {}  # the log indexed, up to _indexed
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
        by_storage, pending, log = self._by_storage, self._pending, self._log
        for f in fills:
            t = f.tensor
            plain = type(t) in PLAIN_TENSOR_TYPES
            local = t if plain else local_tensor(t)
            with _DisableTorchFunction():
                footprint = _footprint(local)
                if footprint is None:
                    continue
                alias = local.detach()
            index = by_storage.get(footprint.key)
            if index is not None:
                self._drop_covered(footprint)
                index = by_storage.get(footprint.key)
            # a fill over part of a pending one (an Embedding's padding row) runs after it, in
            # a later phase of the same pass
            phase = 0 if index is None else \
                1 + max((p.phase for p in index.overlapping(footprint)), default=-1)
            p = Pending(f, footprint, phase, self._order, alias if plain else None)
            self._order += 1
            pending[p.order] = p
            if index is None:
                by_storage[footprint.key] = _StorageFills(p)
            else:
                index.insert(p)
            log.append((footprint, (f.dist, f.params), True, alias))
            self.recorded += 1

    def _drop_covered(self, footprint: Footprint) -> None:
        index = self._by_storage.get(footprint.key)
        if index is None or not footprint.dense:
            return
        for p in index.drop_covered(footprint):
            del self._pending[p.order]
            self.dropped += 1
        if not index.fills:
            del self._by_storage[footprint.key]

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
            self._log.append((footprint, what, by_fastinit, _alias(tensor)))
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
            fp, what, ours, _ = self._log[i]
            self._log.append((new, what if fp.covers(old) else f"{_words(what)} on part", ours,
                              alias))

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
            run = list(self._pending.values())
            self._pending.clear()
            self._by_storage.clear()
        else:
            run = []
            for key in keys:
                index = self._by_storage.pop(key, None)
                if index is not None:
                    run += index.fills
            for p in run:
                del self._pending[p.order]
            run.sort(key=lambda p: p.order)
        run = self._reachable(run)
        if run and not self.dry_run:
            with _DisableTorchFunction():
                if all(p.phase == 0 for p in run):  # one fused pass
                    self.execute([p.fill_to_run() for p in run])
                else:
                    for phase in sorted({p.phase for p in run}):  # one fused pass per phase
                        self.execute([p.fill_to_run() for p in run if p.phase == phase])
            self.flushes += 1

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
            ours[id(p.fill.tensor)] = ours.get(id(p.fill.tensor), 0) + 1
        for _, t in self.done_routines:
            if id(t) in ours:
                ours[id(t)] += 1
        kept = []
        getrefcount = sys.getrefcount
        for p in run:
            t = p.fill.tensor
            # getrefcount: its argument, `t`, and the recorder's own references
            if getrefcount(t) - 2 - ours[id(t)] == 0 and _owned_by_torch_alone(t) \
                    and storage_key(t) == p.footprint.key:
                self.unreachable += 1
                continue
            kept.append(p)
        return kept

    def execute(self, fills: Sequence[Fill]) -> None:
        elements, meta = 0, False
        with _DisableTorchFunction():
            for f in fills:
                t = f.tensor if type(f.tensor) in PLAIN_TENSOR_TYPES else local_tensor(f.tensor)
                if t.is_meta:
                    meta = True
                else:
                    elements += t.numel()
        if meta:
            fills = [f for f in fills if not local_tensor(f.tensor).is_meta]
        backends.execute(fills)
        self.elements_filled += elements

    # -- queries -----------------------------------------------------------------------------
    def _overlapping_writes(self, footprint: Footprint) -> list[int]:
        """The positions in the log of the writes that overlap `footprint`, in order."""
        log = self._log
        for i in range(self._indexed, len(log)):  # index the writes logged since the last query
            fp = log[i][0]
            writes = self._writes.get(fp.key)
            if writes is None:
                writes = self._writes[fp.key] = _StorageWrites()
            writes.add(fp, i)
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
            fp, _, ours, _ = self._log[i]
            if fp.covers(footprint):
                result = ours
            elif not ours:
                result = False
        return result

    def describe(self, tensor: torch.Tensor) -> Optional[str]:
        """The last write that covered all of `tensor`, followed by any later partial writes,
        e.g. "normal(mean=0, std=0.02); then zero_ on part"; None when nothing wrote it."""
        footprint = Footprint.of(tensor)
        if footprint is None:
            return None
        text = None
        for i in self._overlapping_writes(footprint):
            fp, what, _, _ = self._log[i]
            if fp.covers(footprint):
                text = _words(what)
            else:
                text = f"{text}; then {_words(what)} on part" if text else f"{_words(what)} on part"
        return text


def _owned_by_torch_alone(t: torch.Tensor) -> bool:
    """Whether `t`'s memory was allocated by torch for this storage alone: a resizable storage
    (its data is the allocator's, not borrowed from numpy, DLPack, a buffer or a file), not
    in shared memory, referred to by at most `t` and the recorder's alias of it (the storage
    object made here is one more use)."""
    if is_dtensor(t) or t.is_meta:
        return False
    with _DisableTorchFunction():
        storage = t.untyped_storage()
        return storage.resizable() and not (storage.device.type == "cpu" and storage.is_shared()) \
            and torch._C._storage_Use_Count(storage._cdata) <= 3
