"""Fitting the decision layer: the max-F1 threshold and the calibration of the fused score."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, precision_recall_curve

from dupstream.workers.calibration import Calibrator


def max_f1_threshold(scores, labels) -> tuple[float, float]:
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1[:-1]))
    return float(thresholds[i]), float(f1[i])


def fit_calibrator(train_scores, train_labels, val_scores, val_labels, *, meta=None) -> Calibrator:
    """Platt and isotonic fitted on train; the one with lower validation log-loss wins."""
    threshold, f1 = max_f1_threshold(train_scores, train_labels)
    best = None
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(train_scores, train_labels, method=method, threshold=threshold)
        p = np.clip(cal(np.asarray(val_scores)), 1e-6, 1 - 1e-6)
        loss = float(log_loss(val_labels, p, labels=[0, 1]))
        if best is None or loss < best[0]:
            best = (loss, cal)
    loss, cal = best
    cal.meta = {**(meta or {}), "val_log_loss": round(loss, 5), "train_max_f1": round(f1, 5)}
    return cal


def score_pairs(extractor, pairs) -> tuple[np.ndarray, np.ndarray]:
    """Fused scores and labels of labelled pairs (images encoded as high-quality JPEG)."""
    from dupstream.lab.data.edits import encode
    from dupstream.workers.similarity import score_pair

    scores, labels = [], []
    for p in pairs:
        fa, fb = extractor.extract([encode(p.a, "JPEG", 95), encode(p.b, "JPEG", 95)])
        scores.append(score_pair(fb, fa).fused)
        labels.append(p.label)
    return np.asarray(scores), np.asarray(labels)


def calibrate_on_packaged_photos(extractor, *, seed: int = 0) -> Calibrator:
    """Fit the calibrator on pairs made from the packaged photos (train/val split by source)."""
    from dupstream.lab.data.pairs import make_pairs, split_sources
    from dupstream.lab.data.photos import load_photos

    photos = load_photos()
    splits = split_sources(list(photos), seed=seed, fractions=(0.6, 0.4, 0.0))
    sets = {}
    for name in ("train", "val"):
        subset = {k: photos[k] for k in splits[name]}
        sets[name] = score_pairs(extractor, make_pairs(subset, seed=seed))
    meta = {
        "seed": seed,
        "data": "packaged photos (dupstream.lab.data.photos), every edit in "
        "dupstream.lab.data.edits, "
        "source-level 60/40 train/val split",
        "embedder": extractor.embedder.name,
        "n_train": int(len(sets["train"][1])),
        "n_val": int(len(sets["val"][1])),
    }
    return fit_calibrator(*sets["train"], *sets["val"], meta=meta)


# -- the decision layer fitted by ``dupstream eval``: alpha, cut-offs, difficulty offsets --------
ALPHAS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def fuse_columns(visual, semantic, alpha: float) -> np.ndarray:
    """S = alpha*Sv + (1 - alpha)*Ss, Sv alone where there is no semantic evidence (NaN)."""
    v = np.asarray(visual, np.float64)
    s = np.asarray(semantic, np.float64)
    return np.where(np.isnan(s), v, alpha * v + (1.0 - alpha) * np.nan_to_num(s))


def max_f1_cut(scores, labels) -> tuple[float, float]:
    """(cut, F1): the max-F1 decision rule ``score >= cut`` with the cut half-way between the
    lowest score it accepts and the next lower score (so it generalises, not sits on a point)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64)
    if y.sum() == 0:
        return float(s.max() + 1e-6), 0.0
    precision, recall, thresholds = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1[:-1]))
    cut = float(thresholds[i])
    lower = s[s < cut]
    if len(lower):
        cut = (cut + float(lower.max())) / 2
    return cut, float(f1[i])


def grid_alpha(visual, semantic, labels, alphas=ALPHAS) -> tuple[float, float, float]:
    """(alpha, cut, F1) with the best validation F1 over the alpha grid (ties: alpha nearest
    0.5). Without any semantic evidence every alpha gives Sv: alpha is reported as 1.0."""
    if np.all(np.isnan(np.asarray(semantic, np.float64))):
        cut, f1 = max_f1_cut(visual, labels)
        return 1.0, cut, f1
    best = None
    for a in alphas:
        cut, f1 = max_f1_cut(fuse_columns(visual, semantic, a), labels)
        key = (round(f1, 9), -abs(a - 0.5))
        if best is None or key > best[0]:
            best = (key, a, cut, f1)
    _, a, cut, f1 = best
    return float(a), cut, f1


def cut_for_precision(p, labels, target: float = 0.99) -> float | None:
    """The lowest cut-off whose validation precision is at least ``target`` (None if none)."""
    precision, _, thresholds = precision_recall_curve(labels, p)
    ok = np.nonzero(precision[:-1] >= target)[0]
    return float(thresholds[ok[0]]) if len(ok) else None


def cut_for_recall(p, labels, target: float = 0.99) -> float | None:
    """The highest cut-off whose validation recall is at least ``target``."""
    _, recall, thresholds = precision_recall_curve(labels, p)
    ok = np.nonzero(recall[:-1] >= target)[0]
    return float(thresholds[ok[-1]]) if len(ok) else None


def fit_cutoffs(p, labels, keys=None, *, target: float = 0.99, shrink: float = 50.0,
                min_pairs: int = 10):
    """Cut-offs on calibrated P(copy) from validation pairs: balanced (max F1), precision- and
    recall-preferring, and per difficulty key an offset (that key's max-F1 cut minus the global
    one, shrunk by n / (n + shrink); keys with fewer than ``min_pairs`` pairs or one class get
    none)."""
    from dupstream.workers.decision import Cutoffs

    p = np.asarray(p, np.float64)
    y = np.asarray(labels, np.int64)
    balanced, _ = max_f1_cut(p, y)
    prec, rec = cut_for_precision(p, y, target), cut_for_recall(p, y, target)
    out = Cutoffs(balanced=balanced,  # a preference never moves the cut the wrong way
                  precision=None if prec is None else max(prec, balanced),
                  recall=None if rec is None else min(rec, balanced))
    if keys is not None:
        keys = np.asarray(keys)
        for k in sorted(set(keys.tolist())):
            m = keys == k
            n = int(m.sum())
            if n < min_pairs or y[m].min() == y[m].max():
                continue
            cut_k, _ = max_f1_cut(p[m], y[m])
            out.difficulty[k] = round(n / (n + shrink) * (cut_k - balanced), 6)
    return out
