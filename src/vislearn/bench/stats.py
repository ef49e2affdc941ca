"""Intervals for benchmark rows: Student-t over seeds, paired differences, item bootstrap.

Standard library (numpy only inside :func:`bootstrap_ci`, imported there to keep
``import vislearn.bench`` fast; no scipy): the Student-t quantile inverts the t CDF, written
with the regularised incomplete beta function (continued fraction, modified Lentz).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["bootstrap_ci", "mean_ci95", "paired_diff", "t_cdf", "t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with ``dof`` degrees of freedom."""
    tail = 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, dof: float) -> float:
    """The ``q`` quantile of Student's t (``t_quantile(0.975, 1) = 12.706``), by bisection."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    if dof <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {dof}")
    if q < 0.5:
        return -t_quantile(1.0 - q, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, dof) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci95(values: Sequence[float]) -> tuple[float, list[float] | None]:
    """Mean and two-sided 95 % Student-t interval (n - 1 dof) of ``values``; the interval is
    ``None`` for a single value."""
    x = [float(v) for v in values]
    if not x:
        raise ValueError("mean_ci95 needs at least one value")
    mean = statistics.fmean(x)
    if len(x) == 1:
        return mean, None
    half = t_quantile(0.975, len(x) - 1) * statistics.stdev(x) / math.sqrt(len(x))
    return mean, [mean - half, mean + half]


def paired_diff(
    a: Mapping[int, float] | Sequence[float], b: Mapping[int, float] | Sequence[float]
) -> dict:
    """Mean and 95 % t interval of ``a - b`` over paired seeds.

    ``a`` and ``b`` are ``{seed: value}`` mappings (paired on the seeds both have) or equally
    long sequences (paired by position). Returns ``{"mean", "ci95", "n"}``; ``ci95`` is
    ``None`` with one pair."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        seeds = sorted(set(a) & set(b))
        diffs = [a[s] - b[s] for s in seeds]
    else:
        if isinstance(a, Mapping) or isinstance(b, Mapping) or len(a) != len(b):
            raise ValueError("paired_diff needs two {seed: value} mappings or equal-length lists")
        diffs = [x - y for x, y in zip(a, b, strict=True)]
    if not diffs:
        raise ValueError("paired_diff: no common seeds")
    mean, ci = mean_ci95(diffs)
    return {"mean": mean, "ci95": ci, "n": len(diffs)}


def bootstrap_ci(
    values: Sequence[float],
    paired: Sequence[float] | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, list[float]]:
    """Percentile bootstrap over items (e.g. per-video or per-image scores).

    Returns the mean of ``values`` (or, with ``paired``, of the per-item differences
    ``values - paired``) and its ``level`` interval from ``n_boot`` resamples of the items,
    drawn with ``numpy.random.default_rng(seed)`` (deterministic)."""
    import numpy as np

    x = np.asarray(values, dtype=float).ravel()
    if paired is not None:
        y = np.asarray(paired, dtype=float).ravel()
        if y.shape != x.shape:
            raise ValueError(f"paired arrays differ in length: {x.size} vs {y.size}")
        x = x - y
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(x.mean()), [float(lo), float(hi)]
