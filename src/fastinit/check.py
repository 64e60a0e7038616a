"""Do a model's initialised values follow the distributions its init prescribes? One
Kolmogorov-Smirnov statistic per randomly initialised parameter or buffer (what
`fastinit explain TARGET --plot FILE.png` draws and reports)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.special import ndtr

from .contract import Distribution
from .model.rules import collect, default_rules_for

# Kolmogorov's asymptotic critical value at significance 0.001 is KS_CRITICAL_C / sqrt(n).
KS_CRITICAL_C = 1.949
DEFAULT_MAX_SAMPLES = 100_000


@dataclass
class DensityCheck:
    """One parameter's values against the distribution its contract plan describes.

    `params` is the plan's parameter list (see fastinit.contract): [hi - lo, lo] for uniform,
    [mean, std] for normal, [mean, +-std, p_alpha, dp, alpha, beta, a, b] for trunc_normal.
    `sample` holds the checked values (every element, or an evenly strided subset), sorted.
    """

    name: str
    distribution: Distribution
    params: list
    numel: int
    sample: torch.Tensor
    ks: float = float("nan")

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """The distribution's CDF at `x` (float64)."""
        p = self.params
        if self.distribution == Distribution.UNIFORM:
            return ((x - p[1]) / p[0]).clamp(0.0, 1.0)
        if self.distribution == Distribution.NORMAL:
            return ndtr((x - p[0]) / p[1])
        mean, std, a, b = p[0], abs(p[1]), p[6], p[7]
        lo, hi = ndtr(torch.tensor((a - mean) / std)), ndtr(torch.tensor((b - mean) / std))
        return ((ndtr((x.clamp(a, b) - mean) / std) - lo) / (hi - lo)).clamp(0.0, 1.0)

    def pdf(self, x: torch.Tensor) -> torch.Tensor:
        """The distribution's density at `x` (float64)."""
        p = self.params
        if self.distribution == Distribution.UNIFORM:
            inside = (x >= p[1]) & (x <= p[1] + p[0])
            return inside.double() / p[0]
        mean, std = p[0], abs(p[1])
        density = torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        if self.distribution == Distribution.NORMAL:
            return density
        a, b = p[6], p[7]
        mass = float(ndtr(torch.tensor((b - mean) / std)) - ndtr(torch.tensor((a - mean) / std)))
        return torch.where((x >= a) & (x <= b), density / mass, torch.zeros_like(x))

    @property
    def critical(self) -> float:
        """The KS statistic above which the sample is rejected at significance 0.001."""
        return KS_CRITICAL_C / math.sqrt(self.sample.numel())

    @property
    def ok(self) -> bool:
        return self.ks <= self.critical


def ks_statistic(sorted_sample: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov statistic sup |F_n(x) - F(x)| of a sorted float64 sample.

    Args:
        sorted_sample: the sample, sorted ascending.
        cdf: the hypothesised CDF, a function of a float64 tensor.

    Returns:
        The statistic, in [0, 1].
    """
    n = sorted_sample.numel()
    f = cdf(sorted_sample)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def density_checks(module: nn.Module, max_samples: int = DEFAULT_MAX_SAMPLES) -> list[DensityCheck]:
    """Check each randomly initialised tensor of `module` against its default init.

    `module` must already hold the values of fastinit's default init (reset_parameters or
    materialize without rules). Constant, structured (orthogonal, eye, dirac) and
    module-initialised tensors are skipped.

    Args:
        module: the initialised model.
        max_samples: at most this many values per tensor, evenly strided, are checked.

    Returns:
        One DensityCheck per random tensor, its `ks` set.

    Raises:
        ValueError: `module` still has meta tensors (materialise it first).
    """
    inits, _ = collect(module, "", lambda mod, _: default_rules_for(mod))
    checks = []
    for ti in inits:
        if ti.tensor.is_meta:
            raise ValueError(f"{ti.name} is on the meta device: materialise the model first")
        plan = ti.spec.plan(ti.tensor, ti.name)
        if plan is None or plan[0] == Distribution.CONSTANT:
            continue
        flat = ti.tensor.detach().reshape(-1)
        sample = flat[:: max(1, -(-flat.numel() // max_samples))].double().cpu().sort().values
        check = DensityCheck(ti.name, Distribution(plan[0]), list(plan[1]), flat.numel(), sample)
        check.ks = ks_statistic(sample, check.cdf)
        checks.append(check)
    return checks


def format_verdict(checks: list[DensityCheck]) -> str:
    """One line: the tensor with the highest D / critical value (a tensor's critical value
    depends on its n, so D alone does not rank tensors), its figures, and whether every tensor
    passes."""
    worst = max(checks, key=lambda c: c.ks / c.critical)
    failed = [c for c in checks if not c.ok]
    verdict = "ok" if not failed else f"{len(failed)} FAILED"
    return (f"Kolmogorov-Smirnov check of {len(checks)} random tensors at p = 0.001: highest "
            f"D / critical {worst.ks / worst.critical:.2f} ({worst.name}: D = {worst.ks:.4f}, "
            f"n = {worst.sample.numel():,}, critical {worst.critical:.4f}): {verdict}")
