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
