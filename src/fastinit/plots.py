"""Figures for the command line (`fastinit bench --plot`, `fastinit explain --plot`), drawn
with matplotlib, an optional dependency (the ``plot`` extra: ``pip install ".[plot]"`` from a
clone, or ``pip install matplotlib``)."""
from __future__ import annotations

import math

import torch

from .bench import SweepPoint
from .check import DensityCheck, format_verdict

MAX_DENSITY_PANELS = 24


def require_matplotlib():
    """matplotlib.pyplot, on the file-only Agg backend.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(f"plots need matplotlib ({exc}): pip install matplotlib, or "
                          f"pip install '.[plot]' in a clone of fastinit") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(count: int) -> tuple[int, int]:
    cols = min(count, 3 if count <= 6 else 4)
    return math.ceil(count / cols), cols


def plot_sweep(points: list[SweepPoint], path: str, title: str) -> None:
    """Throughput against tensor size, one log-log panel per distribution, saved to `path`.

    Args:
        points: from fastinit.bench.run_sweep.
        path: the image file to write (PNG, SVG, PDF: by its extension).
        title: the figure's title (say which machine and when).
    """
    plt = require_matplotlib()
    names = list(dict.fromkeys(p.distribution for p in points))
    rows, cols = _grid(len(names))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, name in zip(axes.flat, names):
        mine = [p for p in points if p.distribution == name]
        sizes = [p.numel for p in mine]
        ax.plot(sizes, [p.fill_gelems for p in mine], "k--", label="fill_ (write roofline)")
        ax.plot(sizes, [p.fastinit_gelems for p in mine], "o-", label="fastinit")
        ax.plot(sizes, [p.torch_gelems for p in mine], "s-", label="torch.nn.init")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("elements per tensor")
    for ax in axes[:, 0]:
        ax.set_ylabel("10^9 elements / s")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_density_checks(checks: list[DensityCheck], path: str, title: str) -> None:
    """Each tensor's histogram against its density, with its KS statistic, saved to `path`.

    The panels are ranked by D / critical value, largest first: a tensor's critical value
    depends on how many of its values were checked (n), so D alone does not compare tensors.
    Each panel shows D, n and the critical value; with more than 24 tensors the first 24 of
    the ranking are drawn. The first in the ranking is named in the figure's title.

    Args:
        checks: from fastinit.check.density_checks.
        path: the image file to write.
        title: the first line of the figure's title (the model).
    """
    plt = require_matplotlib()
    shown = sorted(checks, key=lambda c: c.ks / c.critical, reverse=True)[:MAX_DENSITY_PANELS]
    rows, cols = _grid(len(shown))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, check in zip(axes.flat, shown):
        values = check.sample
        lo, hi = float(values[0]), float(values[-1])
        ax.hist(values.numpy(), bins=60, density=True, color="C0", alpha=0.6)
        x = torch.linspace(lo, hi, 400, dtype=torch.float64)
        ax.plot(x.numpy(), check.pdf(x).numpy(), "C3-", lw=1.2)
        ax.set_title(f"{check.name}, {check.distribution.name.lower()}\n"
                     f"n = {check.sample.numel():,}: D = {check.ks:.4f}, critical "
                     f"{check.critical:.4f}", fontsize="small",
                     color="black" if check.ok else "red")
        ax.tick_params(labelsize="x-small")
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    shown_of = ("" if len(shown) == len(checks)
                else f"; the first {len(shown)} of {len(checks)} shown")
    fig.suptitle(f"{title}\n{format_verdict(checks)}\npanels ranked by D / critical value "
                 f"(p = 0.001), largest first{shown_of}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
