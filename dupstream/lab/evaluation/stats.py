"""Statistics: bootstrap 95 % confidence intervals and McNemar's test (scipy)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import binomtest, chi2


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, *, resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``stat(indices)`` over ``resamples`` resamplings of ``range(n)``
    with replacement (NaN results, e.g. a resample with one class for AUC, are dropped)."""
    rng = np.random.default_rng(seed)
    vals = np.asarray([stat(rng.integers(0, n, n)) for _ in range(resamples)], np.float64)
    vals = vals[~np.isnan(vals)]
    if len(vals) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def mcnemar(labels, pred_a, pred_b) -> dict[str, float]:
    """McNemar's test of two classifiers on the same pairs. ``b``: A right and B wrong, ``c``:
    the reverse. p-value: exact two-sided binomial test of b vs c; also the continuity-corrected
    chi-square statistic and its p-value."""
    y = np.asarray(labels, bool)
    ra = np.asarray(pred_a, bool) == y
    rb = np.asarray(pred_b, bool) == y
    b = int(np.sum(ra & ~rb))
    c = int(np.sum(~ra & rb))
    if b + c == 0:
        return {"b": b, "c": c, "chi2": 0.0, "p_chi2": 1.0, "p_exact": 1.0}
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    return {"b": b, "c": c, "chi2": float(stat), "p_chi2": float(chi2.sf(stat, 1)),
            "p_exact": float(binomtest(b, b + c, 0.5).pvalue)}
