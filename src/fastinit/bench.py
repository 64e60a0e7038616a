"""`fastinit bench`: every distribution of every available backend against torch.nn.init and
against `fill_` on this machine, in one run (medians; CUDA events on a GPU); and the sweep over
tensor sizes that `fastinit bench --plot` draws."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TextIO

import torch

from . import backends, nn_init
from .progress import Progress

DISTRIBUTIONS: dict[str, tuple[Callable, Callable]] = {
    # name: (fastinit call, torch.nn.init call), both on a 2-D tensor
    "uniform_": (lambda t: nn_init.uniform_(t, -1.0, 1.0), lambda t: torch.nn.init.uniform_(t, -1.0, 1.0)),
    "normal_": (lambda t: nn_init.normal_(t, 0.0, 0.02), lambda t: torch.nn.init.normal_(t, 0.0, 0.02)),
    "trunc_normal_": (lambda t: nn_init.trunc_normal_(t, std=0.02),
                      lambda t: torch.nn.init.trunc_normal_(t, std=0.02)),
    "kaiming_uniform_": (lambda t: nn_init.kaiming_uniform_(t, a=5**0.5),
                         lambda t: torch.nn.init.kaiming_uniform_(t, a=5**0.5)),
    "xavier_normal_": (nn_init.xavier_normal_, torch.nn.init.xavier_normal_),
    "constant_": (lambda t: nn_init.constant_(t, 0.5), lambda t: torch.nn.init.constant_(t, 0.5)),
}


@dataclass
class Row:
    device: str
    backend: str
    dtype: str
    distribution: str
    numel: int
    seconds: float
    torch_seconds: float
    fill_seconds: float

    @property
    def speedup(self) -> float:
        return self.torch_seconds / self.seconds

    @property
    def fill_fraction(self) -> float:
        return self.fill_seconds / self.seconds

    @property
    def gelems(self) -> float:
        return self.numel / self.seconds / 1e9


def _seconds(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Wall time of `calls` back-to-back calls of `fn` (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0


def interleaved_medians(fns: list[Callable[[], object]], device: torch.device, repeats: int,
                        min_sample_seconds: float = 0.0) -> list[float]:
    """Median seconds per call of each of `fns`, their samples taken in turn (round robin), so
    that a slow spell of a shared machine hits every arm alike.

    Args:
        fns: the calls to compare.
        device: where they run (CUDA is timed with events).
        repeats: samples per call; the medians are returned.
        min_sample_seconds: each sample repeats its call enough times to last about this long,
            so that microsecond calls are not lost in the timer's resolution.

    Returns:
        Seconds per call, one per function of `fns`.
    """
    # The warm-up call (first-touch page faults, kernel compilation) also sizes the samples.
    calls = [max(1, min(10_000, round(min_sample_seconds / max(_seconds(fn, device, 1), 1e-7))))
             for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, n, out in zip(fns, calls, samples):
            out.append(_seconds(fn, device, n) / n)
    return [statistics.median(times) for times in samples]


def shape_for(numel: int) -> tuple[int, int]:
    """A 2-D shape of about `numel` elements, rows of up to 4096 (so fans are realistic)."""
    cols = min(4096, numel)
    return (max(1, numel // cols), cols)


def runs_on(backend: str, device: torch.device) -> bool:
    """Whether `backend` (a name, or "auto") is available here and fills `device`'s tensors."""
    if backend == "auto":
        return True
    return (backend in backends.backend_info()["available"]
            and backends._module(backend).supports(device))


def bench_backends(device: torch.device, backend_names: Optional[Sequence[str]] = None
                   ) -> list[str]:
    """The backends `fastinit bench` times on `device`: those of `backend_names` that run
    there; by default every one that does but ``reference`` (the contract's executable
    statement in NumPy, slow by design)."""
    if backend_names is None:
        backend_names = [b for b in backends.BACKENDS if b != "reference"]
    return [b for b in backend_names if runs_on(b, device)]


def run_bench(device: str = "cpu", dtypes=("float32", "bfloat16"), numel: int = 16 * 2**20,
              repeats: int = 5, reference_numel: int = 2**20,
              progress: Optional[TextIO] = None,
              backend_names: Optional[Sequence[str]] = None) -> list[Row]:
    """Time every distribution of each backend that runs on `device` against torch.nn.init.

    Args:
        device: where the tensors live.
        dtypes: dtype names to run.
        numel: elements per tensor (rounded down to whole rows of shape_for).
        repeats: timed calls per measurement; the median is kept.
        reference_numel: elements per tensor for the NumPy reference backend.
        progress: a stream for a one-line progress counter, or None.
        backend_names: the backends to time, those of them that run here; None: every
            available backend but ``reference`` (the contract's executable statement, slow by
            design).

    Returns:
        One Row per (dtype, backend, distribution).
    """
    dev = torch.device(device)
    rows: list[Row] = []
    previous = backends.get_backend()
    runnable = bench_backends(dev, backend_names)
    counter = Progress(f"bench {dev}", len(dtypes) * len(runnable) * len(DISTRIBUTIONS), progress)
    try:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for backend in runnable:
                n = reference_numel if backend == "reference" else numel
                t = torch.empty(shape_for(n), dtype=dtype, device=dev)
                n = t.numel()
                backends.set_backend(backend)
                for name, (ours, theirs) in DISTRIBUTIONS.items():
                    fill_s, ours_s, torch_s = interleaved_medians(
                        [lambda: t.fill_(1.0), lambda: ours(t), lambda: theirs(t)], dev, repeats)
                    rows.append(Row(str(dev), backend, dtype_name, name, n, ours_s, torch_s, fill_s))
                    counter.step(f"{dtype_name} {backend} {name}")
    finally:
        counter.close()
        backends.set_backend(previous)
    return rows


TABLE_LEGEND = [
    "G/s: 10^9 elements written per second, median of the repeats; speedup: torch.nn.init's "
    "time over fastinit's",
    "of fill_: fastinit's rate as a share of torch's fill_ on the same tensor (writing memory "
    "once, the rate a fill aims at); above 100%: fastinit wrote faster than fill_ did in this "
    "run (fill_ is torch's kernel, not a hard limit, and a busy machine makes samples vary)",
]


def format_table(rows: list[Row]) -> str:
    """The rows as a text table, its legend (a line per term) first."""
    header = (f"{'device':<7}{'backend':<11}{'dtype':<10}{'distribution':<18}{'elements':>11}"
              f"{'fastinit G/s':>14}{'torch G/s':>11}{'speedup':>9}{'of fill_':>10}")
    lines = [*TABLE_LEGEND, header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.device:<7}{r.backend:<11}{r.dtype:<10}{r.distribution:<18}{r.numel:>11}"
            f"{r.gelems:>14.3f}{r.numel / r.torch_seconds / 1e9:>11.3f}{r.speedup:>8.1f}x"
            f"{100 * r.fill_fraction:>9.0f}%"
        )
    return "\n".join(lines)


@dataclass
class SweepPoint:
    """Throughput of one distribution at one tensor size, in 10^9 elements per second."""

    distribution: str
    numel: int
    fastinit_gelems: float
    torch_gelems: float
    fill_gelems: float


def plot_sizes(max_numel: int = 256 * 2**20, min_numel: int = 1024) -> list[int]:
    """Tensor sizes of the sweep: `min_numel` times powers of 4 below `max_numel`, then
    `max_numel` itself, each as the tensor of shape_for holds it (``--max-numel 4M`` ends at
    3,997,696 = 976 x 4096 elements, ``4Mi`` at 4,194,304)."""
    sizes = [min(min_numel, max_numel)]
    while sizes[-1] * 4 < max_numel:
        sizes.append(sizes[-1] * 4)
    if sizes[-1] < max_numel:
        sizes.append(max_numel)
    return list(dict.fromkeys(rows * cols for rows, cols in map(shape_for, sizes)))


def run_sweep(device, dtype_name: str, sizes: list[int], repeats: int = 5,
              progress: Optional[TextIO] = None) -> list[SweepPoint]:
    """Throughput of fastinit (the selected backend), torch.nn.init and fill_ at every size.

    For each size and distribution, fill_, fastinit and torch.nn.init are sampled in turn on
    the same tensor, `repeats` samples of at least 50 ms each, and their medians kept; the
    fill_ rate of a size is the median over all its distributions' fill_ samples.

    Args:
        device: where the tensors live.
        dtype_name: e.g. "float32".
        sizes: elements per tensor, e.g. plot_sizes().
        repeats: samples per measurement.
        progress: a stream for a one-line progress counter, or None.

    Returns:
        One SweepPoint per (size, distribution).
    """
    dev = torch.device(device)
    dtype = getattr(torch, dtype_name)
    points = []
    counter = Progress(f"sweep {dev} {dtype_name}", len(sizes) * len(DISTRIBUTIONS), progress)
    try:
        for numel in sizes:
            t = torch.empty(shape_for(numel), dtype=dtype, device=dev)
            fills, measured = [], []
            for name, (ours, theirs) in DISTRIBUTIONS.items():
                fill_s, ours_s, torch_s = interleaved_medians(
                    [lambda: t.fill_(1.0), lambda: ours(t), lambda: theirs(t)], dev, repeats,
                    min_sample_seconds=0.05)
                fills.append(fill_s)
                measured.append((name, ours_s, torch_s))
                counter.step(f"{numel:,} elements, {name}")
            fill_g = t.numel() / statistics.median(fills) / 1e9
            points += [SweepPoint(name, t.numel(), t.numel() / ours_s / 1e9,
                                  t.numel() / torch_s / 1e9, fill_g)
                       for name, ours_s, torch_s in measured]
            del t
    finally:
        counter.close()
    return points
