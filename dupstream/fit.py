"""Fitting the decision layer: the max-F1 threshold and the calibration of the fused score."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, precision_recall_curve

from workers.calibration import Calibrator


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
    from dupstream.data.edits import encode
    from workers.similarity import score_pair

    scores, labels = [], []
    for p in pairs:
        fa, fb = extractor.extract([encode(p.a, "JPEG", 95), encode(p.b, "JPEG", 95)])
        scores.append(score_pair(fb, fa).fused)
        labels.append(p.label)
    return np.asarray(scores), np.asarray(labels)


def calibrate_on_packaged_photos(extractor, *, seed: int = 0) -> Calibrator:
    """Fit the calibrator on pairs made from the packaged photos (train/val split by source)."""
    from dupstream.data.pairs import make_pairs, split_sources
    from dupstream.data.photos import load_photos

    photos = load_photos()
    splits = split_sources(list(photos), seed=seed, fractions=(0.6, 0.4, 0.0))
    sets = {}
    for name in ("train", "val"):
        subset = {k: photos[k] for k in splits[name]}
        sets[name] = score_pairs(extractor, make_pairs(subset, seed=seed))
    meta = {
        "seed": seed,
        "data": "packaged photos (dupstream.data.photos), every edit in dupstream.data.edits, "
        "source-level 60/40 train/val split",
        "embedder": extractor.embedder.name,
        "n_train": int(len(sets["train"][1])),
        "n_val": int(len(sets["val"][1])),
    }
    return fit_calibrator(*sets["train"], *sets["val"], meta=meta)
