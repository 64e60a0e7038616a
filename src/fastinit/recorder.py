"""The pending fills and the write log of a `fused()` block, indexed by the bytes they touch.

A tensor's footprint is the byte range of its storage it spans, so that writes through views of
any dtype are compared in one unit. Pending fills are indexed per storage, sorted by first byte:
a cover, overlap or read query looks at the fills of one storage near the queried range
(O(log n) plus the fills it finds), never at the whole pending list. The write log is indexed
per storage by width class and first byte, so its queries (`wrote`, `by_fastinit`, `describe`)
look only at the writes near the queried range too.
"""
from __future__ import annotations

import bisect
import dataclasses
import sys
from typing import Iterable, Optional, Sequence

import torch

from . import backends
from .contract import describe_fill
from .plan import Fill
from .sharding import is_dtensor, local_tensor


def storage_key(t: torch.Tensor):
    """The memory a tensor lives in: (device, address of its storage), or the storage object
    on meta; None for a tensor of no elements."""
    t = local_tensor(t)
    with torch._C.DisableTorchFunction():  # our own look at the memory: not a user's access
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
        t = local_tensor(t)
        with torch._C.DisableTorchFunction():
            n = t.numel()
            if n == 0:
                return None
            item = t.element_size()
            lo = t.storage_offset()
            if t.is_contiguous():
                hi, dense = lo + n - 1, True
            else:
                hi = lo
                for size, stride in zip(t.shape, t.stride()):
                    if stride < 0:
                        lo += (size - 1) * stride
                    else:
                        hi += (size - 1) * stride
                dense = hi - lo + 1 == n and torch._debug_has_internal_overlap(t) == 0
            if t.is_meta:
                key = ("meta", t.untyped_storage()._cdata)
            else:
                key = (t.device, t.data_ptr() - t.storage_offset() * item)
        return cls(key, lo * item, (hi + 1) * item, dense)

    def covers(self, other: "Footprint") -> bool:
        return self.dense and self.key == other.key and self.lo <= other.lo and other.hi <= self.hi

    def overlaps(self, other: "Footprint") -> bool:
        return self.key == other.key and self.lo < other.hi and other.lo < self.hi


class Pending:
    """A recorded fill waiting for the pass; `phase` orders it after the pending fills of the
    memory it overlaps (fills of one phase never overlap, so each phase is one fused pass).
    `memory` is an alias of the fill's tensor made when it was recorded: the fill writes that
    memory even if the tensor is later moved elsewhere (``set_``, ``.data =``)."""

    __slots__ = ("fill", "footprint", "phase", "order", "memory")

    def __init__(self, fill: Fill, footprint: Footprint, phase: int, order: int) -> None:
        self.fill, self.footprint, self.phase, self.order = fill, footprint, phase, order
        t = fill.tensor
        if is_dtensor(t):
            self.memory = None  # a DTensor's memory is its local shard's, tracked by it
        else:
            with torch._C.DisableTorchFunction():
                self.memory = t.detach()

    def fill_of_recorded_memory(self) -> Optional[Fill]:
        """The fill of the memory it was recorded for, when its tensor has since moved."""
        if self.memory is None or storage_key(self.fill.tensor) == self.footprint.key:
            return None
        return dataclasses.replace(self.fill, tensor=self.memory)


class _FillWords:
    """A recorded fill's `describe_fill` words, formatted only when read."""

    __slots__ = ("dist", "params")

    def __init__(self, dist: int, params: Sequence[float]) -> None:
        self.dist, self.params = dist, params

    def __str__(self) -> str:
        return describe_fill(self.dist, self.params)


class _StorageFills:
    """The pending fills of one storage, sorted by first byte. `widest` bounds the length of
    every fill held, so the fills that can overlap [lo, hi) start in (lo - widest, hi)."""

    __slots__ = ("fills", "los", "widest")

    def __init__(self) -> None:
        self.fills: list[Pending] = []
        self.los: list[int] = []
        self.widest = 0

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
    """The writes logged on one storage: (footprint, text, by_fastinit) in the order they were
    made, indexed by width class (a write of w bytes is in class w.bit_length(), so it is
    narrower than 2**class) and, in each class, sorted by first byte: the writes that can
    overlap [lo, hi) start in (lo - 2**class, hi)."""

    __slots__ = ("writes", "by_class")

    def __init__(self) -> None:
        self.writes: list[tuple[Footprint, str, bool]] = []
        self.by_class: dict[int, tuple[list[int], list[int]]] = {}  # class -> (los, positions)

    def append(self, footprint: Footprint, text: str, by_fastinit: bool) -> None:
        los, positions = self.by_class.setdefault((footprint.hi - footprint.lo).bit_length(), ([], []))
        i = bisect.bisect_right(los, footprint.lo)
        los.insert(i, footprint.lo)
        positions.insert(i, len(self.writes))
        self.writes.append((footprint, text, by_fastinit))

    def overlapping(self, fp: Footprint) -> list[tuple[Footprint, str, bool]]:
        """The writes that overlap `fp`, in the order they were made."""
        found = []
        for width_class, (los, positions) in self.by_class.items():
            start = bisect.bisect_right(los, fp.lo - (1 << width_class))
            end = bisect.bisect_left(los, fp.hi)
            found += [i for i in positions[start:end] if self.writes[i][0].overlaps(fp)]
        found.sort()
        return [self.writes[i] for i in found]


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
        self._writes: dict[object, _StorageWrites] = {}
        self.elements_filled = 0  # elements fastinit's fills wrote
        self.unreachable = 0      # fills skipped: no one can read their memory
        self.elements_other = 0   # elements other in-place operations wrote
        self._keep_alive: list[torch.Tensor] = []  # keys stay valid while the block lasts
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
        for f in fills:
            footprint = Footprint.of(f.tensor)
            if footprint is None:
                continue
            self._drop_covered(footprint)
            index = self._by_storage.get(footprint.key)
            if index is None:
                index = self._by_storage[footprint.key] = _StorageFills()
                phase = 0
            else:
                # a fill over part of a pending one (an Embedding's padding row) runs after it,
                # in a later phase of the same pass
                phase = 1 + max((p.phase for p in index.overlapping(footprint)), default=-1)
            p = Pending(f, footprint, phase, self._order)
            self._order += 1
            self._pending[p.order] = p
            index.insert(p)
            self._log(f.tensor, footprint, _FillWords(f.dist, f.params), by_fastinit=True)
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

    def _log(self, tensor: torch.Tensor, footprint: Footprint, text: str, by_fastinit: bool) -> None:
        self._storage_writes(footprint.key).append(footprint, text, by_fastinit)
        self._keep_alive.append(tensor)

    def _storage_writes(self, key) -> _StorageWrites:
        log = self._writes.get(key)
        if log is None:
            log = self._writes[key] = _StorageWrites()
        return log

    def _overlapping_writes(self, footprint: Footprint) -> list[tuple[Footprint, str, bool]]:
        log = self._writes.get(footprint.key)
        return [] if log is None else log.overlapping(footprint)

    def log_write(self, tensor: torch.Tensor, text: str, by_fastinit: bool = False) -> None:
        footprint = Footprint.of(tensor)
        if footprint is not None:
            self._log(tensor, footprint, text, by_fastinit)
            if not by_fastinit and footprint.key[0] != "meta":
                self.elements_other += local_tensor(tensor).numel()

    def moved(self, tensor: torch.Tensor, old: Optional[Footprint]) -> None:
        """`tensor`'s memory was replaced (``.data = ``, ``set_``): what was written to it stays
        its record, carried to the new memory unless something wrote the new memory already."""
        new = Footprint.of(tensor)
        if old is None or new is None or new.key == old.key or self._written_over(new):
            return
        for fp, text, ours in self._overlapping_writes(old):
            self._storage_writes(new.key).append(new, text if fp.covers(old) else f"{text} on part",
                                                 ours)
        self._keep_alive.append(tensor)

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
            for phase in sorted({p.phase for p in run}):  # one fused pass per phase
                self.execute([p.fill_of_recorded_memory() or p.fill for p in run if p.phase == phase])
            self.flushes += 1

    def _reachable(self, run: list) -> list:
        """The fills of `run` whose memory anyone can still read. A fill is skipped only when
        that is provably safe: its tensor's storage was allocated by torch's own allocator (so
        torch owns the memory: not numpy's, a DLPack producer's, a file's or shared memory),
        no other tensor or storage shares it, and nothing but this recorder refers to the
        tensor. That memory is freed with the recorder, unread (a head weight replaced by a
        tied embedding after its init)."""
        ours: dict[int, int] = {}
        for t in (p.fill.tensor for p in run):
            ours[id(t)] = ours.get(id(t), 0) + 1
        for p in self._pending.values():
            ours[id(p.fill.tensor)] = ours.get(id(p.fill.tensor), 0) + 1
        for t in self._keep_alive:
            ours[id(t)] = ours.get(id(t), 0) + 1
        for _, t in self.done_routines:
            ours[id(t)] = ours.get(id(t), 0) + 1
        kept = []
        for p in run:
            t = p.fill.tensor
            # getrefcount: its argument, `t`, and the recorder's own references
            if sys.getrefcount(t) - 2 - ours[id(t)] == 0 and _owned_by_torch_alone(t) \
                    and storage_key(t) == p.footprint.key:
                self.unreachable += 1
                continue
            kept.append(p)
        return kept

    def execute(self, fills: Sequence[Fill]) -> None:
        fills = [f for f in fills if not local_tensor(f.tensor).is_meta]
        backends.execute(fills)
        self.elements_filled += sum(local_tensor(f.tensor).numel() for f in fills)

    # -- queries -----------------------------------------------------------------------------
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
        for fp, _, ours in self._overlapping_writes(footprint):
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
        for fp, what, _ in self._overlapping_writes(footprint):
            if fp.covers(footprint):
                text = str(what)
            else:
                text = f"{text}; then {what} on part" if text else f"{what} on part"
        return text


def _owned_by_torch_alone(t: torch.Tensor) -> bool:
    """Whether `t`'s memory was allocated by torch for this storage alone: a resizable storage
    (its data is the allocator's, not borrowed from numpy, DLPack, a buffer or a file), not
    in shared memory, referred to by at most `t` and the recorder's alias of it (the storage
    object made here is one more use)."""
    if is_dtensor(t) or t.is_meta:
        return False
    with torch._C.DisableTorchFunction():
        storage = t.untyped_storage()
        return storage.resizable() and not (storage.device.type == "cpu" and storage.is_shared()) \
            and torch._C._storage_Use_Count(storage._cdata) <= 3
