"""From a pair score to a three-way verdict with a calibrated probability."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

from workers.calibration import Calibrator
from workers.similarity import PairScore

Kind = Literal["duplicate", "near_duplicate", "unique"]


def default_calibrator() -> Calibrator:
    ref = resources.files("workers") / "assets" / "calibration.json"
    with resources.as_file(ref) as path:
        return Calibrator.load(path)


@dataclass(kw_only=True)
class DecisionPolicy:
    """Documented cut-offs.

    * ``copy`` when the calibrated P(copy) of the fused score is at least ``p_copy_min``
      (default 0.5, i.e. the max-F1 score threshold the calibrator was fitted with);
    * a copy is a ``duplicate`` (the same picture: re-encode, resize, light recolour) when the
      bytes are identical, or the un-transformed PDQ distance is at most ``duplicate_pdq_max``,
      ``Sv >= duplicate_visual_min`` and at most ``duplicate_changed_max`` of the picture differs
      beyond a global brightness/contrast change (same aspect ratio); every other copy is a
      ``near_duplicate`` (an edited copy: crop, flip/rotation, overlay, framing, objects added
      or removed);
    * ``review`` when P(copy) is within ``review_margin`` of ``p_copy_min``.
    """

    calibrator: Calibrator
    p_copy_min: float = 0.5
    duplicate_pdq_max: int = 64
    duplicate_visual_min: float = 0.85
    duplicate_changed_max: float = 0.003
    review_margin: float = 0.15

    def p_copy(self, score: PairScore) -> float:
        if score.exact:
            return 1.0
        return float(self.calibrator(score.fused))

    def decide(self, score: PairScore) -> tuple[Kind, float, bool]:
        """(verdict, P(verdict is right), review flag)."""
        p = self.p_copy(score)
        review = abs(p - self.p_copy_min) < self.review_margin and not score.exact
        if p < self.p_copy_min:
            return "unique", 1.0 - p, review
        same_picture = score.exact or (
            score.pdq_variant == 0
            and score.pdq_distance <= self.duplicate_pdq_max
            and score.visual >= self.duplicate_visual_min
            and score.changed_area is not None
            and score.changed_area <= self.duplicate_changed_max
        )
        return ("duplicate" if same_picture else "near_duplicate"), p, review
