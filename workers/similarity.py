"""Pair similarity: every signal that compares two images, and their fusion."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workers.features import ImageFeatures
from workers.hashing import DIHEDRAL


@dataclass
class PairScore:
    exact: bool
    visual: float  # Sv, cosine of the visual embeddings
    pdq_distance: int  # min over the query's dihedral variants
    pdq_variant: int  # which variant (0 = identity)
    fused: float  # S; equals Sv until the semantic signal takes part
    changed_area: float | None  # share of the picture that differs (None: geometry differs)
    semantic: dict = field(default_factory=dict)

    def evidence(self) -> dict:
        return {
            "exact_hash": self.exact,
            "visual": round(self.visual, 6),
            "pdq_distance": self.pdq_distance,
            "pdq_transform": DIHEDRAL[self.pdq_variant],
            "fused": round(self.fused, 6),
            "changed_area": None if self.changed_area is None else round(self.changed_area, 4),
            **self.semantic,
        }


def pdq_distance(query: ImageFeatures, ref: ImageFeatures) -> tuple[int, int]:
    """(distance, variant): closest of the query's dihedral PDQ variants to the reference."""
    xor = np.bitwise_xor(query.pdq.variants, ref.pdq.bits[None, :])
    dist = np.unpackbits(xor, axis=-1).sum(axis=-1)
    v = int(np.argmin(dist))
    return int(dist[v]), v


#: aspect ratios further apart than this mean the geometry was edited (crop, border, framing)
ASPECT_TOLERANCE = 0.03
#: a thumbnail pixel differs when its residual after a global gain/bias fit exceeds this
RESIDUAL_LEVEL = 24.0


def changed_area(query: ImageFeatures, ref: ImageFeatures) -> float | None:
    """Share of the picture that differs beyond a global brightness/contrast change.

    Near 0 for re-encodes, resizes and light recolours; the size of the edit for captions,
    watermarks and pasted objects; ``None`` when the aspect ratio changed.
    """
    qa, ra = query.width / query.height, ref.width / ref.height
    if abs(qa - ra) / ra > ASPECT_TOLERANCE:
        return None
    x = ref.thumb.astype(np.float64).ravel()
    y = query.thumb.astype(np.float64).ravel()
    design = np.stack([x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = np.abs(y - design @ coef)
    return float(np.mean(residual > RESIDUAL_LEVEL))


def score_pair(query: ImageFeatures, ref: ImageFeatures) -> PairScore:
    visual = float(np.clip(np.dot(query.vector, ref.vector), -1.0, 1.0))
    dist, variant = pdq_distance(query, ref)
    return PairScore(
        exact=query.digest == ref.digest,
        visual=visual,
        pdq_distance=dist,
        pdq_variant=variant,
        fused=visual,
        changed_area=changed_area(query, ref),
    )
