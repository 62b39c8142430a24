"""Every compared method as a function of the per-pair signal columns (``signals``).

The full model falls back to Sv on pairs without semantic evidence (as the engine does).
Baselines: pHash (imagehash), PDQ (pdqhash, identity variant), SIFT + BoVW, and the visual
embedding alone (SSCD; the paper's Siamese / DeepRank stand-in). Ablations of ours: visual only,
semantic only, combined without graph, full (ours): S = alpha*Sv + (1 - alpha)*Ss with alpha
grid-searched on validation. Ss is the weighted mean of the object-set Jaccard, the semantic
cosine and the (non-negative) graph cosine with the production fusion weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dupstream.lab.fit import fuse_columns

Columns = dict[str, np.ndarray]


def fusion_weights() -> tuple[float, float, float]:
    """(w_jaccard, w_cosine, w_graph) of the production fusion, when the engine has one."""
    try:
        from dupstream.workers.similarity import default_fusion
    except ImportError:
        return 1.0, 1.0, 1.0
    f = default_fusion()
    return f.w_jaccard, f.w_cosine, f.w_graph


def semantic_score(cols: Columns, *, graph: bool = True) -> np.ndarray:
    """Ss per pair (NaN where either image has no objects)."""
    wj, wc, wg = fusion_weights()
    parts = [(wj, cols["jaccard"]), (wc, cols["semantic_cosine"])]
    if graph:
        parts.append((wg, np.maximum(cols["graph"], 0.0)))
    num = np.zeros(len(cols["visual"]))
    den = np.zeros(len(cols["visual"]))
    for w, v in parts:
        ok = ~np.isnan(v)
        num += np.where(ok, w * np.nan_to_num(v), 0.0)
        den += np.where(ok, w, 0.0)
    return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


@dataclass(frozen=True)
class Method:
    name: str
    group: str  # "baseline" | "ablation"
    score: Callable[[Columns, float], np.ndarray]
    needs_semantic: bool = False  # without semantic columns the row is "not available"
    uses_alpha: bool = False


def _col(name: str) -> Callable[[Columns, float], np.ndarray]:
    return lambda cols, alpha: np.asarray(cols[name], np.float64)


METHODS: tuple[Method, ...] = (
    Method("pHash", "baseline", _col("phash")),
    Method("PDQ", "baseline", _col("pdq")),
    Method("SIFT + BoVW", "baseline", _col("bovw")),
    Method("visual only (SSCD)", "ablation", _col("visual")),
    Method("semantic only", "ablation",
           lambda c, a: np.nan_to_num(semantic_score(c), nan=0.0), needs_semantic=True),
    Method("combined without graph", "ablation",
           lambda c, a: fuse_columns(c["visual"], semantic_score(c, graph=False), a),
           needs_semantic=True, uses_alpha=True),
    Method("full (ours)", "ablation",
           lambda c, a: fuse_columns(c["visual"], semantic_score(c), a), uses_alpha=True),
)
OURS = "full (ours)"
VISUAL = "visual only (SSCD)"


def by_name(name: str) -> Method:
    return next(m for m in METHODS if m.name == name)


def available(method: Method, cols: Columns) -> str | None:
    """None when the method can run on these columns, else why not."""
    if method.needs_semantic and np.all(np.isnan(cols["jaccard"])):
        if np.all(cols["n_objects_a"] < 0):
            return "not available yet: no detector in the feature extractor"
        return "no objects detected in any pair"
    return None


def caveat(method: Method, cols: Columns) -> str | None:
    """A note for a method that runs but is degraded on these columns."""
    if method.name == OURS and np.all(np.isnan(cols["jaccard"])):
        return "no semantic evidence: S = Sv (equals visual only)"
    if method.name == OURS and np.all(np.isnan(cols["graph"])):
        return "no graph embedding: Ss without the graph term"
    return None
