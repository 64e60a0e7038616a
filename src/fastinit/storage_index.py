"""The per-storage indexes of a `fused()` block's recorder (recorder.py), in bytes of the storage:
its pending fills sorted by first byte, and its write log by width class and first byte. Each
entry is a `recorder.Footprint` (``lo``, ``hi``, ``overlaps``); a query looks only at the
entries near the queried bytes.
"""
from __future__ import annotations

import bisect


class StorageFills:
    """The pending fills of one storage that has more than one, sorted by first byte. `widest`
    bounds the length of every fill held, so the fills that can overlap [lo, hi) start in
    (lo - widest, hi)."""

    __slots__ = ("fills", "los", "widest")

    def __init__(self, p) -> None:
        self.fills: list = [p]
        self.los: list[int] = [p.lo]
        self.widest = p.hi - p.lo

    def insert(self, p) -> None:
        i = bisect.bisect_right(self.los, p.lo)
        self.los.insert(i, p.lo)
        self.fills.insert(i, p)
        self.widest = max(self.widest, p.hi - p.lo)

    def near(self, fp) -> tuple[int, int]:
        """The index range of the fills that may overlap `fp`."""
        return (bisect.bisect_right(self.los, fp.lo - self.widest),
                bisect.bisect_left(self.los, fp.hi))

    def overlapping(self, fp) -> list:
        start, end = self.near(fp)
        return [p for p in self.fills[start:end] if p.overlaps(fp)]

    def drop_covered(self, fp) -> list:
        """Remove and return the fills `fp` covers."""
        start, end = bisect.bisect_left(self.los, fp.lo), bisect.bisect_left(self.los, fp.hi)
        dropped = [p for p in self.fills[start:end] if p.hi <= fp.hi]
        if dropped:
            kept = [p for p in self.fills[start:end] if p.hi > fp.hi]
            self.fills[start:end] = kept
            self.los[start:end] = [p.lo for p in kept]
        return dropped


class StorageWrites:
    """The positions in the log of the writes on one storage, indexed by width class (a write
    of w bytes is in class w.bit_length(), so it is narrower than 2**class) and, in each class,
    sorted by first byte: the writes that can overlap [lo, hi) start in (lo - 2**class, hi)."""

    __slots__ = ("by_class",)

    def __init__(self) -> None:
        self.by_class: dict[int, tuple[list[int], list[int]]] = {}  # class -> (los, positions)

    def add(self, footprint, position: int) -> None:
        los, positions = self.by_class.setdefault((footprint.hi - footprint.lo).bit_length(), ([], []))
        i = bisect.bisect_right(los, footprint.lo)
        los.insert(i, footprint.lo)
        positions.insert(i, position)

    def overlapping(self, fp, log: list) -> list[int]:
        """The positions of the writes of `log` that overlap `fp`, in the order they were made."""
        found = []
        for width_class, (los, positions) in self.by_class.items():
            start = bisect.bisect_right(los, fp.lo - (1 << width_class))
            end = bisect.bisect_left(los, fp.hi)
            found += [i for i in positions[start:end] if log[i].overlaps(fp)]
        found.sort()
        return found
