"""`fastinit bench`: every distribution of every available backend against torch.nn.init and
against `fill_` on this machine, in one run (medians; CUDA events on a GPU)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import backends, nn_init

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


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first-touch page faults, kernel compilation
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shape_for(numel: int) -> tuple[int, int]:
    cols = 4096
    return (max(1, numel // cols), cols)


def run_bench(device: str = "cpu", dtypes=("float32", "bfloat16"), numel: int = 16 * 2**20,
              repeats: int = 5, reference_numel: int = 2**20) -> list[Row]:
    dev = torch.device(device)
    rows: list[Row] = []
    previous = backends.get_backend()
    try:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for backend in backends.backend_info()["available"]:
                module = backends._module(backend)
                if not module.supports(dev):
                    continue
                n = reference_numel if backend == "reference" else numel
                t = torch.empty(shape_for(n), dtype=dtype, device=dev)
                n = t.numel()
                fill_s = median_seconds(lambda: t.fill_(1.0), dev, repeats)
                backends.set_backend(backend)
                for name, (ours, theirs) in DISTRIBUTIONS.items():
                    ours_s = median_seconds(lambda: ours(t), dev, repeats)
                    torch_s = median_seconds(lambda: theirs(t), dev, repeats)
                    rows.append(Row(str(dev), backend, dtype_name, name, n, ours_s, torch_s, fill_s))
    finally:
        backends.set_backend(previous)
    return rows


def format_table(rows: list[Row]) -> str:
    header = (f"{'device':<7}{'backend':<11}{'dtype':<10}{'distribution':<18}{'elements':>11}"
              f"{'fastinit G/s':>14}{'torch G/s':>11}{'speedup':>9}{'of fill_':>10}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.device:<7}{r.backend:<11}{r.dtype:<10}{r.distribution:<18}{r.numel:>11}"
            f"{r.gelems:>14.3f}{r.numel / r.torch_seconds / 1e9:>11.3f}{r.speedup:>8.1f}x"
            f"{100 * r.fill_fraction:>9.0f}%"
        )
    return "\n".join(lines)
