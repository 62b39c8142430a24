"""The named feature set of a pair: every signal the engine computes, for a learned decision.

``pair_features(score, query, reference)`` -> ``dict[str, float]`` with stable names (``NAMES``):
global and content-region visual similarity, PDQ distance and transform, thumbnail changed area,
the fused and semantic scores, object and graph similarities, the verification stage's outputs
(``Registration.features``; zeros and ``reg_ran = 0`` when it did not run), object changes through
the registration, and image-level descriptors of both images (``descriptors.NAMES``, prefixed
``q_`` / ``r_``) so photos, digits and CCTV frames are told apart without a domain flag. Missing
values are NaN (gradient-boosted trees handle them natively).
"""

from __future__ import annotations

import math

import numpy as np

from dupstream.workers.descriptors import NAMES as DESCRIPTOR_NAMES
from dupstream.workers.features import ImageFeatures
from dupstream.workers.similarity import PairScore
from dupstream.workers.verify import register

_NAN = float("nan")
_REG_NAMES = tuple(register(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
                   .features())

NAMES: tuple[str, ...] = (
    "visual", "content_visual", "visual_best", "fused", "pdq_distance", "pdq_identity",
    "pdq_flip", "pdq_rotation", "thumb_changed_area", "same_aspect", "semantic", "jaccard",
    "semantic_cosine", "graph", "objects_both", "objects_added_n", "objects_missing_n",
    "log_area_ratio", "reg_ran", *_REG_NAMES, "obj_matched_n", "obj_added_n", "obj_removed_n",
    "obj_moved_n",
    *(f"q_{n}" for n in DESCRIPTOR_NAMES), *(f"r_{n}" for n in DESCRIPTOR_NAMES),
)


#: the object / semantic / graph features (the paper's semantic branch): a decision reading none
#: of them lets the cascade find objects only where a verdict or a policy needs them
OBJECT_NAMES: tuple[str, ...] = (
    "fused", "semantic", "jaccard", "semantic_cosine", "graph", "objects_both",
    "objects_added_n", "objects_missing_n", "obj_matched_n", "obj_added_n", "obj_removed_n",
    "obj_moved_n",
)


def _f(v) -> float:
    return _NAN if v is None else float(v)


def pair_features(score: PairScore, query: ImageFeatures, reference: ImageFeatures
                  ) -> dict[str, float]:
    sem = score.semantic or {}
    added = sem.get("objects_added") or []
    missing = sem.get("objects_missing") or []
    out: dict[str, float] = {
        "visual": score.visual,
        "content_visual": _f(score.content),
        "visual_best": score.visual_best,
        "fused": score.fused,
        "pdq_distance": score.pdq_distance / 256.0,
        "pdq_identity": float(score.pdq_variant == 0),
        "pdq_flip": float(score.pdq_variant in (4, 5, 6, 7)),
        "pdq_rotation": float(score.pdq_variant in (1, 2, 3)),
        "thumb_changed_area": _f(score.changed_area),
        "same_aspect": float(score.changed_area is not None),
        "semantic": _f(sem.get("semantic")),
        "jaccard": _f(sem.get("jaccard")),
        "semantic_cosine": _f(sem.get("semantic_cosine")),
        "graph": _f(sem.get("graph")),
        "objects_both": float(sem.get("jaccard") is not None),
        "objects_added_n": float(len(added)),
        "objects_missing_n": float(len(missing)),
        "log_area_ratio": math.log((query.width * query.height)
                                   / max(1, reference.width * reference.height)),
    }
    reg = score.registration
    out["reg_ran"] = float(reg is not None)
    rf = reg.features() if reg is not None else {}
    for name in _REG_NAMES:
        out[name] = float(rf.get(name, 0.0))
    ch = score.object_changes
    for key in ("matched", "added", "removed", "moved"):
        out[f"obj_{key}_n"] = _NAN if ch is None else float(len(ch[key]))
    for prefix, feat in (("q_", query), ("r_", reference)):
        d = feat.descriptors
        for i, n in enumerate(DESCRIPTOR_NAMES):
            out[prefix + n] = _NAN if d is None else float(d[i])
    return out


def feature_vector(features: dict[str, float]) -> np.ndarray:
    """(len(NAMES),) float64 in ``NAMES`` order."""
    return np.array([features.get(n, _NAN) for n in NAMES], np.float64)
