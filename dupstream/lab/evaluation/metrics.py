"""Metrics: precision / recall / F1, ROC + AUC, ranking mAP, ECE + reliability (scikit-learn
does the curves; nothing here re-implements them)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def prf(labels, predicted) -> tuple[float, float, float]:
    p, r, f, _ = precision_recall_fscore_support(labels, predicted, average="binary",
                                                 zero_division=0)
    return float(p), float(r), float(f)


def auc(labels, scores) -> float:
    y = np.asarray(labels)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, scores))


def roc(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def per_query_ap(query, scores, relevant) -> np.ndarray:
    """Average precision of each query's ranking of its candidates (queries with no relevant
    candidate are skipped); mAP is the mean."""
    query = np.asarray(query)
    scores = np.asarray(scores, np.float64)
    relevant = np.asarray(relevant, bool)
    order = np.argsort(query, kind="stable")
    q, s, r = query[order], scores[order], relevant[order]
    starts = np.r_[0, np.nonzero(q[1:] != q[:-1])[0] + 1, len(q)]
    aps = []
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        if r[lo:hi].any():
            aps.append(average_precision_score(r[lo:hi], s[lo:hi]))
    return np.asarray(aps, np.float64)


def reliability(labels, probs, bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins over [0, 1]: mean predicted P, observed frequency, count per bin."""
    y = np.asarray(labels, np.float64)
    p = np.clip(np.asarray(probs, np.float64), 0, 1)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    mean_p = np.bincount(idx, weights=p, minlength=bins) / np.maximum(count, 1)
    freq = np.bincount(idx, weights=y, minlength=bins) / np.maximum(count, 1)
    return {"mean_p": mean_p, "freq": freq, "count": count}


def ece(labels, probs, bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (share of pairs) x |mean P - frequency|."""
    r = reliability(labels, probs, bins)
    n = r["count"].sum()
    return float(np.sum(r["count"] / max(n, 1) * np.abs(r["mean_p"] - r["freq"])))
