"""Recall per edit type and false-positive rate per negative kind, on the test split.

For each pair kind (the edit for positives, the negative kind for negatives) and each decision
(the product as shipped: ``workers/assets`` calibration and cut-offs with the set's domain; the
product refitted on this run's train/validation splits; SSCD alone at its validation cut), the
share of test pairs called a copy: recall for positive kinds, FPR for negative kinds. Intervals:
percentile bootstrap over the kind's pairs (95 %), and the exact Clopper-Pearson interval, which
stays informative when every pair is right (the bootstrap interval then collapses to a point).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from dupstream.lab.evaluation.stats import bootstrap_ci

#: negative kinds grouped for the verdict the issue asks about
NEGATIVE_GROUPS = {"different": "other photo", "same_class": "hard negative (same class)",
                   "same_scene": "same scene", "scene_part": "same scene",
                   "trap_caption": "overlay trap",
                   "trap_watermark": "overlay trap", "trap_border": "overlay trap",
                   "trap_frame": "overlay trap"}


def rate(hits: np.ndarray, *, resamples: int, seed: int) -> dict:
    """Share of ``hits`` with its bootstrap and exact 95 % intervals."""
    hits = np.asarray(hits, bool)
    n, k = len(hits), int(hits.sum())
    if n == 0:
        return {"n": 0, "k": 0, "rate": float("nan"), "ci": [float("nan")] * 2,
                "exact_ci": [float("nan")] * 2}
    lo, hi = bootstrap_ci(lambda i: float(hits[i].mean()), n, resamples=resamples, seed=seed)
    ex = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"n": n, "k": k, "rate": k / n, "ci": [lo, hi], "exact_ci": [float(ex.low),
                                                                         float(ex.high)]}


def per_kind_table(kinds: np.ndarray, labels: np.ndarray, preds: dict[str, np.ndarray], *,
                   resamples: int = 1000, seed: int = 0) -> dict:
    """{kind: {"label": 0|1, "measure": "recall"|"FPR", <decision>: rate(...)}} over the pairs
    given (all of one split); also the pooled groups ``any edit``, ``overlay trap (all)``."""
    out: dict[str, dict] = {}
    kinds = np.asarray(kinds)
    labels = np.asarray(labels)
    groups = [(k, kinds == k) for k in sorted(set(kinds.tolist()),
                                              key=lambda k: (-int(labels[kinds == k][0]), k))]
    groups.append(("overlay trap (all)", np.char.startswith(kinds.astype(str), "trap_")))
    groups.append(("hard negatives (same class + same scene)",
                   np.isin(kinds, ["same_class", "same_scene", "scene_part"])))
    # two frames of a static camera that the scene rule calls one picture are copies, not edits
    groups.append(("any edit", (labels == 1) & (kinds != "static_frames")))
    for name, mask in groups:
        if not mask.any():
            continue
        lab = int(labels[mask][0])
        row = {"label": lab, "measure": "recall" if lab == 1 else "FPR"}
        for d, pred in preds.items():
            row[d] = rate(np.asarray(pred, bool)[mask], resamples=resamples, seed=seed)
        out[name] = row
    return out


def save(tables: dict, path: Path) -> None:
    path.write_text(json.dumps(tables, indent=1))


def load(path: str | Path | None) -> dict | None:
    if not path:
        return None
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else None
