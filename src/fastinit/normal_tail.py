"""A standard normal truncated to an interval in its lower tail, in the tail's own coordinates
(docs/contract.md, "trunc_normal in tail coordinates"): the fp64 math of the host-only
distribution TRUNC_NORMAL_TAIL.

The interval is [-(L + D), -L] with L >= 0 (mirrored so), and t = -z in [L, L + D] has density
proportional to exp(-t^2 / 2). The unknown is d = t - L, the distance from the near end. With
M(t) = Q(t) / phi(t), Mills' ratio (Q the upper-tail probability of the standard normal),

    Q(L + d) / Q(L) = exp(-h(d)),   h(d) = integral over [L, L + d] of dt / M(t)
                                         = d L + d^2 / 2 + log M(L) - log M(L + d),

so the quantile at fraction u of the interval's mass, counted from its far end, solves
h(d) = -log(1 - (1 - u) r), with r = 1 - exp(-h(D)) the interval's share of Q(L). Nothing here forms
Phi(-L), which leaves fp64's range beyond L = 38, nor a difference of probabilities, which loses
a narrow interval: every quantity is relative to the near end.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
# Gauss-Legendre on [-1, 1] for h(d) with d <= QUADRATURE_MAX_D: 1 / M is analytic with its
# nearest poles (zeros of erfc) 2.8 away from the real axis, so 8 nodes on an interval of
# length <= 1 are exact to rounding.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(8)
QUADRATURE_MAX_D = 1.0
# Newton steps from the upper estimate of d (h is convex and increasing, so they decrease
# monotonically to the root). An element stops after a step below 2^-50 of its d (its own
# criterion: its value never depends on the other elements of a call), at the latest after
# MAX_NEWTON_STEPS (1 to 4 steps for L from 0 to 1e300, tests/test_extremes.py).
MAX_NEWTON_STEPS = 8
NEWTON_TOLERANCE = 2.0**-50


def mills_ratio(t: np.ndarray) -> np.ndarray:
    """M(t) = Q(t) / phi(t) = sqrt(pi / 2) erfcx(t / sqrt(2)) of float64 values t >= 0."""
    scaled = np.array(t, dtype=np.float64, ndmin=1) * math.sqrt(0.5)
    return SQRT_HALF_PI * torch.special.erfcx(torch.from_numpy(scaled)).numpy()


def tail_exponent(L: float, d: np.ndarray) -> np.ndarray:
    """h(d) = -log(Q(L + d) / Q(L)) of float64 offsets d >= 0: by quadrature of 1 / M for
    d <= 1, where the closed form would cancel (h ~ d L against log M of size log L), and by
    the closed form above, a sum of non-negative terms, for larger d."""
    d = np.asarray(d, dtype=np.float64)
    out = np.empty(d.shape, dtype=np.float64)
    short = np.abs(d) <= QUADRATURE_MAX_D
    ds = d[short]
    t = L + ds[:, None] * ((_NODES + 1.0) * 0.5)
    out[short] = ds * 0.5 * (_WEIGHTS / mills_ratio(t)).sum(axis=-1)
    dl = d[~short]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_ratio = np.log(mills_ratio(L)) - np.log(mills_ratio(L + dl))
        out[~short] = dl * L + dl * dl * 0.5 + log_ratio
    return out


def interval_exponent(L: float, D: float) -> float:
    """h(D) = -log(Q(L + D) / Q(L)) of the whole interval (+inf for an unbounded one)."""
    if not math.isfinite(D):
        return math.inf
    return float(tail_exponent(L, np.array([D]))[0])


def tail_offsets(L: float, D: float, h_d: float, u: np.ndarray) -> np.ndarray:
    """The offsets d in [0, D] from the near end of the elements with fractions u in [0, 1) of
    the interval's mass counted from the far end (u = 0: the far end); h_d = h(D). Newton's
    method on h(d) = y, y = -log(1 - (1 - u) r) with r = 1 - exp(-h_d), taken as
    -log1p(-(1 - u) r) near the near end and -log(u + (1 - u) exp(-h_d)) near the far end (no
    cancellation at either), from the upper estimate d0 = 2y / (L + sqrt(L^2 + 2y))
    (1 / M(t) >= t)."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        share = (1.0 - u) * -math.expm1(-h_d)
        y = np.where(share <= 0.5, -np.log1p(-share), -np.log(u + (1.0 - u) * math.exp(-h_d)))
        d = 2.0 * y / (L + np.hypot(L, np.sqrt(2.0 * y)))
    far = ~np.isfinite(y)  # u = 0 of an unbounded interval: the far end
    d[far] = D
    active = np.nonzero((d > 0.0) & ~far)[0]
    for _ in range(MAX_NEWTON_STEPS):
        if active.size == 0:
            break
        da = d[active]
        step = (tail_exponent(L, da) - y[active]) * mills_ratio(L + da)
        d[active] = da - step
        active = active[np.abs(step) > NEWTON_TOLERANCE * da]
    return np.clip(d, 0.0, D)
