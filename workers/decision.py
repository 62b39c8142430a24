"""From a pair score to a three-way verdict with a calibrated probability.

The learned decision (``workers/assets/decision_model.json``, ``learned.LearnedModel``): a
gradient-boosted pair classifier over every signal the engine computes (``pairfeatures``), with a
strictly increasing calibration to P(copy) and one domain-free cut-off per preference. When it is
packaged, ``DecisionPolicy`` decides with it wherever the pair's image features are at hand (the
engine, ``compare``, ``scan``, the stream); without it (or without the features), with the
calibrated fused score below.

Two small artefacts of the fused-score decision, versioned with the model in ``workers/assets``:

* ``calibration.json``: the ``Calibrator`` that maps the fused score S to P(copy) (a domain
  can carry its own in ``decision.json``);
* ``decision.json`` (optional): the cut-offs on P(copy) fitted by ``dupstream eval`` on the
  validation splits - per preference (``balanced`` = max F1, ``precision`` = the lowest cut-off
  with validation precision >= 0.99, ``recall`` = the highest with recall >= 0.99), per domain
  (``photos``, ``digits``, ``cctv``; a tenant maps to a domain) and per difficulty (an offset per
  ``difficulty_key``: how many objects the query has, and whether the visual and semantic
  evidence agree).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from dupstream.workers.calibration import Calibrator
from dupstream.workers.descriptors import NAMES as DESCRIPTOR_NAMES
from dupstream.workers.features import ImageFeatures
from dupstream.workers.learned import LearnedModel
from dupstream.workers.pairfeatures import OBJECT_NAMES, pair_features
from dupstream.workers.similarity import PairScore, score_pair, verify_pair

Kind = Literal["duplicate", "near_duplicate", "unique"]
Preference = Literal["balanced", "precision", "recall"]
PREFERENCES = ("balanced", "precision", "recall")

#: visual and semantic similarity further apart than this: the two kinds of evidence disagree
SPREAD_LEVEL = 0.25
#: cut-offs are kept inside this range whatever the adjustments
CUT_RANGE = (0.02, 0.98)


def default_calibrator() -> Calibrator:
    ref = resources.files("dupstream.workers") / "assets" / "calibration.json"
    with resources.as_file(ref) as path:
        return Calibrator.load(path)


def difficulty_key(n_objects: int | None, visual: float, semantic: float | None) -> str:
    """``objects/spread``: objects in ``none`` (no detector, or none found), ``few`` (1-3),
    ``many`` (4+); spread ``agree`` unless |Sv - Ss| >= ``SPREAD_LEVEL`` (``disagree``)."""
    if not n_objects or n_objects <= 0:
        objects = "none"
    else:
        objects = "few" if n_objects <= 3 else "many"
    agree = semantic is None or semantic != semantic or abs(visual - semantic) < SPREAD_LEVEL
    return f"{objects}/{'agree' if agree else 'disagree'}"


def _count(names) -> int:
    total = 0
    for name in names or []:
        m = re.search(r" x(\d+)$", str(name))
        total += int(m.group(1)) if m else 1
    return total


def score_difficulty(score: PairScore) -> str:
    sem = score.semantic if isinstance(score.semantic, dict) else {}
    n = _count(sem.get("objects_matched")) + _count(sem.get("objects_added"))
    return difficulty_key(n if sem else None, score.visual, sem.get("semantic"))


@dataclass
class Cutoffs:
    """Cut-offs on P(copy) for one domain."""

    balanced: float = 0.5
    precision: float | None = None
    recall: float | None = None
    difficulty: dict[str, float] = field(default_factory=dict)  # key -> offset to the cut-off

    def cut(self, preference: str = "balanced", key: str | None = None, *,
            adaptive: bool = True) -> float:
        if preference not in PREFERENCES:
            raise ValueError(f"unknown preference {preference!r}; known: {PREFERENCES}")
        base = getattr(self, preference)
        base = self.balanced if base is None else base
        if adaptive and key is not None:
            base += self.difficulty.get(key, 0.0)
        return float(min(max(base, CUT_RANGE[0]), CUT_RANGE[1]))


@dataclass
class DecisionModel:
    """The ``decision.json`` artefact: default cut-offs, per-domain ones, how they were fitted."""

    default: Cutoffs = field(default_factory=Cutoffs)
    domains: dict[str, Cutoffs] = field(default_factory=dict)
    #: per-domain calibrators (``Calibrator`` JSON objects); the default is calibration.json
    calibrators: dict[str, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def for_domain(self, domain: str | None) -> Cutoffs:
        return self.domains.get(domain, self.default) if domain else self.default

    def calibrator(self, domain: str | None) -> Calibrator | None:
        d = self.calibrators.get(domain) if domain else None
        if d is None:
            return None
        return Calibrator(method=d["method"], params=d["params"], threshold=d["threshold"],
                          meta=d.get("meta", {}))

    def to_json(self) -> str:
        return json.dumps({"default": asdict(self.default),
                           "domains": {k: asdict(v) for k, v in self.domains.items()},
                           "calibrators": self.calibrators, "meta": self.meta}, indent=1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, d: dict) -> DecisionModel:
        return cls(default=Cutoffs(**d.get("default", {})),
                   domains={k: Cutoffs(**v) for k, v in d.get("domains", {}).items()},
                   calibrators=d.get("calibrators", {}), meta=d.get("meta", {}))

    @classmethod
    def load(cls, path: str | Path) -> DecisionModel:
        return cls.from_dict(json.loads(Path(path).read_text()))


def default_decision_model() -> DecisionModel | None:
    ref = resources.files("dupstream.workers") / "assets" / "decision.json"
    if not ref.is_file():
        return None
    return DecisionModel.from_dict(json.loads(ref.read_text()))


@dataclass(frozen=True)
class Decision:
    """One pair's decision: the verdict, P(the verdict is right), the review flag, P(copy) and
    the cut-off it was compared with."""

    kind: Kind
    probability: float
    review: bool
    p_copy: float
    cut: float


_FLAT = DESCRIPTOR_NAMES.index("flat_share")


def pdq_quality(feat: ImageFeatures | None) -> int:
    """The picture's PDQ quality (100 when unknown: no features, an old record without it)."""
    if feat is None or feat.pdq is None:
        return 100
    return int(feat.pdq.quality)


def flat_share(feat: ImageFeatures | None) -> float:
    """The share of flat cells of the picture's 128-px thumbnail (0 when unknown)."""
    if feat is None or feat.descriptors is None:
        return 0.0
    return float(feat.descriptors[_FLAT])


@dataclass(kw_only=True)
class DecisionPolicy:
    """Documented cut-offs.

    * ``copy`` when the calibrated P(copy) of the fused score is at least the cut-off: without a
      ``DecisionModel``, ``p_copy_min`` (default 0.5, the max-F1 score threshold the calibrator
      was fitted with); with one, the cut-off of the tenant's domain (``tenant_domains``, else
      ``domain``, else the default) for the tenant's preference (``tenant_preferences``, else
      ``preference``), moved by the offset of the pair's difficulty when ``adaptive``;
    * a copy is a ``duplicate`` (the same picture: re-encode, resize, light recolour) when the
      bytes are identical, or the un-transformed PDQ distance is at most ``duplicate_pdq_max``,
      ``Sv >= duplicate_visual_min`` and at most ``duplicate_changed_max`` of the picture differs
      beyond a global brightness/contrast change (same aspect ratio); every other copy is a
      ``near_duplicate`` (an edited copy: crop, flip/rotation, overlay, framing, objects added
      or removed);
    * ``review`` when P(copy) is within ``review_margin`` of the cut-off (humans in the loop).

    With a ``learned`` model and the pair's image features (``query`` / ``reference``): P(copy)
    is the learned model's calibrated probability over ``pairfeatures.pair_features`` (the
    verification evidence is among its features: no rule-based overrides), and the cut-off is
    the model's for the tenant's preference, the same for every domain. The three-way split, the
    scene-change rule and the review band are the same as above.
    """

    calibrator: Calibrator
    p_copy_min: float = 0.5
    duplicate_pdq_max: int = 64
    duplicate_visual_min: float = 0.85
    duplicate_changed_max: float = 0.003
    review_margin: float = 0.15
    #: verification (issue 12): registration runs where ``needs_verification``; a verified pair
    #: is a copy with P(copy) >= ``verified_p_copy``; a same-scene pair is unique with
    #: P(unique) >= ``same_scene_p_unique``; a registered identity covering both pictures with
    #: at most ``duplicate_reg_changed_max`` changed is the same picture
    verify_min_visual: float = 0.3
    #: a query whose registration verified with at least this P(copy) is placed: its less similar
    #: open candidates are not registered (``engine.verification``; > 1: register up to the
    #: bound). On the retrieval bench it halves the registration time per query (43.7 -> 21.7
    #: ms) and changes 3 of 670 matches, each to another image of the same picture (2 from the
    #: original to a copy of it, 1 the other way); no verdict kind changes
    verify_stop_p_copy: float = 0.9
    #: SIFT (the dearest registration step, where ORB finds no fit) only for pairs at least
    #: this similar (``visual_best``); 0: always
    sift_min_visual: float = 0.0
    clear_pdq_max: int = 16
    verified_p_copy: float = 0.95
    same_scene_p_unique: float = 0.9
    #: ``same_scene`` evidence also for a sparse registration whose content matches across the
    #: picture (at least this many inliers over at least this share of its cells) but did not
    #: verify: too much changed inside the overlap (a stereo view of the scene). Evidence only
    #: (never a model feature); on the photo pair tables (recipe v5, table format 6) it adds
    #: the evidence to 1 of 390 same-scene pairs and to none of 16,700 other negatives
    scene_evidence_min_inliers: int = 20
    scene_evidence_min_support: float = 0.4
    duplicate_overlap_min: float = 0.97
    #: a caption of a few words changes ~1 % of the picture: it must stay a near_duplicate
    duplicate_reg_changed_max: float = 0.002
    #: a picture with too little content to tell apart (at least this share of its 128-px
    #: thumbnail flat, ``descriptors.flat_share``: a nearly black frame, a blank page) is a copy
    #: only when near-identical by PDQ (at most ``clear_pdq_max`` in any orientation): two such
    #: pictures look alike to the embedding, PDQ and the registration whatever their few details
    #: (HMA / ThreatExchange drop low-quality PDQ hashes for the same reason). Otherwise its
    #: P(copy) is scaled by ``low_information_p_scale``: among the photo pair tables' pairs of
    #: this kind (recipe v5, table format 4) 11 of 147 are copies, all edited copies of a
    #: blank tile. 1.0 switches the rule off
    low_information_flat_min: float = 0.95
    low_information_p_scale: float = 0.1
    #: ... and a picture whose PDQ quality is at most this is one as well, and its PDQ proves
    #: nothing: PDQ gives quality 0 and an all-zero hash to a uniform picture, a 1-px line or a
    #: 2 x 3000 strip, so any two of them are "PDQ-identical". Such a picture is a copy only by its
    #: bytes. (ThreatExchange drops hashes below quality 50 for matching; 0 here keeps the nearly
    #: black corner tiles at 9-10 matchable by PDQ. No picture of the eval or the retrieval bench
    #: has quality 0; MNIST digits have >= 96)
    low_information_pdq_quality: int = 0
    cutoffs: DecisionModel | None = None
    domain: str | None = None
    preference: str = "balanced"
    adaptive: bool = True
    tenant_domains: dict[str, str] = field(default_factory=dict)
    tenant_preferences: dict[str, str] = field(default_factory=dict)
    #: domains (and tenants) whose policy is that an object entering the scene breaks the
    #: duplicate (CCTV: a new person in an otherwise identical frame is an event to keep)
    scene_change_domains: frozenset[str] = frozenset({"cctv"})
    scene_change_tenants: frozenset[str] = frozenset()
    #: the learned pair classifier (``decision_model.json``); None: the fused-score decision
    learned: LearnedModel | None = None

    @property
    def reads_objects(self) -> bool:
        """Does the decision read object evidence? The fused score does (Ss); a learned model
        when its features include the object / semantic / graph ones."""
        if self.learned is None:
            return True
        return bool(set(self.learned.features) & set(OBJECT_NAMES))

    def needs_objects(self, tenant: str | None = None, domain: str | None = None) -> bool:
        """Does this tenant's policy need the objects of every pair it calls a copy (the
        scene-change rule)?"""
        return (tenant in self.scene_change_tenants
                or self.resolve_domain(tenant, domain) in self.scene_change_domains)

    def needs_object_evidence(self, score: PairScore) -> bool:
        """Would the objects of a pair called a copy tell what its registration does not - what
        was added, removed or moved? Not for identical bytes, nor a same picture by hash, nor a
        verified registration with no changed region (every object in the overlap is there,
        where the transform puts it); yes where something changed or nothing registered."""
        if score.exact or self._same_picture_by_hash(score):
            return False
        reg = score.registration
        return not (reg is not None and reg.verified and not reg.changed_regions)

    def uses_learned(self, query: ImageFeatures | None, reference: ImageFeatures | None) -> bool:
        return self.learned is not None and query is not None and reference is not None

    def resolve_domain(self, tenant: str | None = None, domain: str | None = None) -> str | None:
        return domain or self.tenant_domains.get(tenant or "", None) or self.domain

    def p_copy(self, score: PairScore, *, tenant: str | None = None,
               domain: str | None = None, query: ImageFeatures | None = None,
               reference: ImageFeatures | None = None) -> float:
        """Calibrated P(copy): the learned model's when it is loaded and the pair's image
        features are given; else the domain's calibrator when ``decision.json`` has one, else
        ``calibrator``; 1 for identical bytes."""
        if score.exact:
            return 1.0
        if self.uses_learned(query, reference):
            return self.p_copy_many([(score, reference)], query=query)[0]
        cal = None
        if self.cutoffs is not None:
            cal = self.cutoffs.calibrator(self.resolve_domain(tenant, domain))
        return float((cal or self.calibrator)(score.fused))

    def p_copy_many(self, pairs: list[tuple[PairScore, ImageFeatures]], *,
                    query: ImageFeatures) -> list[float]:
        """The learned P(copy) of ``query`` against each (score, reference), in one call of
        the model (requires ``uses_learned``); 1 for identical bytes."""
        x = np.stack([self.learned.vector(pair_features(s, query, r)) for s, r in pairs])
        p = self.learned.p_copy_matrix(x)
        return [1.0 if s.exact else self._information_scaled(float(v), s, query, r)
                for (s, r), v in zip(pairs, p, strict=True)]

    def low_information(self, score: PairScore, query: ImageFeatures | None,
                        reference: ImageFeatures | None) -> bool:
        """Is one of the pictures too plain to tell apart (``low_information_flat_min``, or a
        PDQ quality of at most ``low_information_pdq_quality``) while the pair is not
        near-identical by PDQ (with hashes that say something)? Such a pair is a copy only by its
        bytes or PDQ."""
        if score.exact:
            return False
        quality = min(pdq_quality(query), pdq_quality(reference))
        hashless = quality <= self.low_information_pdq_quality
        if score.pdq_distance <= self.clear_pdq_max and not hashless:
            return False
        return hashless or (max(flat_share(query), flat_share(reference))
                            >= self.low_information_flat_min)

    def same_scene(self, score: PairScore, kind: Kind, query: ImageFeatures | None = None,
                   reference: ImageFeatures | None = None) -> bool:
        """Is the pair another photo (or another moment) of one scene? Its content matches
        but does not register rigidly (``Registration.same_scene``), or it registers under one
        transform - verified, or a sparse fit with inliers across the picture
        (``scene_evidence_min_*``) that failed on what changed - and the decision still calls it
        ``unique``: what changed inside the overlap (people moved, a frame later, another
        viewpoint) is more than an edit. Only for a ``unique`` verdict; a registration of a
        low-information picture says too little."""
        reg = score.registration
        if reg is None or score.exact or kind != "unique":
            return False
        if reg.same_scene:
            return True
        matches = reg.verified or (reg.method == "sparse"
                                   and reg.inliers >= self.scene_evidence_min_inliers
                                   and reg.support >= self.scene_evidence_min_support)
        return matches and not self.low_information(score, query, reference)

    def _information_scaled(self, p: float, score: PairScore, query: ImageFeatures | None,
                            reference: ImageFeatures | None) -> float:
        if self.low_information(score, query, reference):
            return p * self.low_information_p_scale
        return p

    def p_copy_verified(self, score: PairScore, *, tenant: str | None = None,
                        domain: str | None = None, query: ImageFeatures | None = None,
                        reference: ImageFeatures | None = None) -> float:
        """P(copy) with the verification evidence: at least ``verified_p_copy`` when the pair
        registered, at most 1 - ``same_scene_p_unique`` when it is another photo of the scene.
        The learned model reads that evidence itself: its P(copy) as it is."""
        if self.uses_learned(query, reference):
            return self.p_copy(score, query=query, reference=reference)
        p = self.p_copy(score, tenant=tenant, domain=domain)
        reg = score.registration
        if reg is not None and reg.verified and not score.exact:
            p = max(p, self.verified_p_copy)
        elif reg is not None and reg.same_scene and not score.exact:
            p = min(p, 1.0 - self.same_scene_p_unique)
        return self._information_scaled(p, score, query, reference)

    def cut_off(self, score: PairScore, *, tenant: str | None = None,
                domain: str | None = None, learned: bool = False) -> float:
        """The cut-off on P(copy): the learned model's for the tenant's preference (``learned``),
        else the fused-score decision's."""
        if learned and self.learned is not None:
            return self.learned.cut(self.tenant_preferences.get(tenant or "", self.preference))
        if self.cutoffs is None:
            return self.p_copy_min
        dom = self.resolve_domain(tenant, domain)
        pref = self.tenant_preferences.get(tenant or "", self.preference)
        return self.cutoffs.for_domain(dom).cut(pref, score_difficulty(score),
                                                adaptive=self.adaptive)

    def score(self, query: ImageFeatures, reference: ImageFeatures) -> PairScore:
        """Every signal of the pair as the engine has it before deciding: ``score_pair``, then
        the verification stage (``verify_pair``) where the decision is open
        (``needs_verification``)."""
        s = score_pair(query, reference)
        return self.verify(s, query, reference) if self.needs_verification(s) else s

    def verify(self, score: PairScore, query: ImageFeatures, reference: ImageFeatures
               ) -> PairScore:
        """``score`` with the verification stage's evidence (``verify_pair``), SIFT gated by
        ``sift_min_visual``."""
        return verify_pair(score, query, reference,
                           sift=score.visual_best >= self.sift_min_visual)

    def needs_verification(self, score: PairScore) -> bool:
        """Is the decision open, so that registering the pair can change it? Not for identical
        bytes, nor for a clear same-picture pair (near-identical PDQ, nothing changed), nor for
        a pair whose pictures look unrelated (best visual similarity below
        ``verify_min_visual``)."""
        if score.exact:
            return False
        if self._same_picture_by_hash(score) and score.pdq_distance <= self.clear_pdq_max:
            return False
        return score.visual_best >= self.verify_min_visual

    def _same_picture_by_hash(self, score: PairScore) -> bool:
        return score.exact or (
            score.pdq_variant == 0
            and score.pdq_distance <= self.duplicate_pdq_max
            and score.visual >= self.duplicate_visual_min
            and score.changed_area is not None
            and score.changed_area <= self.duplicate_changed_max
        )

    def _same_picture_by_registration(self, score: PairScore) -> bool:
        """A verified registration under (nearly) the identity up to scale, covering both
        pictures, with (nearly) nothing changed: a re-encode / resize / light recolour."""
        reg = score.registration
        if reg is None or not reg.verified:
            return False
        return (abs(reg.rotation_deg) <= 1.0 and not reg.flip
                and min(reg.overlap_ref, reg.overlap_query) >= self.duplicate_overlap_min
                and reg.changed_area <= self.duplicate_reg_changed_max
                and not reg.changed_regions
                and score.visual >= self.duplicate_visual_min)

    def decide(self, score: PairScore, *, tenant: str | None = None,
               domain: str | None = None, query: ImageFeatures | None = None,
               reference: ImageFeatures | None = None) -> tuple[Kind, float, bool]:
        """(verdict, P(verdict is right), review flag): ``decision`` in short."""
        d = self.decision(score, tenant=tenant, domain=domain, query=query, reference=reference)
        return d.kind, d.probability, d.review

    def decision(self, score: PairScore, *, tenant: str | None = None,
                 domain: str | None = None, query: ImageFeatures | None = None,
                 reference: ImageFeatures | None = None) -> Decision:
        """The verdict for one pair.

        With the learned model and the pair's image features, its calibrated P(copy) against
        its cut-off. Otherwise, with the verification stage's evidence (``score.registration``):
        a pair that registers under one transform with support inside the picture is a copy (at
        least ``verified_p_copy``); a pair whose content matches but does not register rigidly
        is another photo of the same scene: ``unique`` (``same_scene`` evidence), whatever the
        global similarity says; without it (or when registration is inconclusive), the
        calibrated fused score decides. A copy is a ``duplicate`` when the evidence says it is
        the same picture, else a ``near_duplicate``."""
        learned = self.uses_learned(query, reference)
        p = self.p_copy_verified(score, tenant=tenant, domain=domain, query=query,
                                 reference=reference)
        cut = self.cut_off(score, tenant=tenant, domain=domain, learned=learned)
        review = abs(p - cut) < self.review_margin and not score.exact
        if p < cut:
            return Decision("unique", 1.0 - p, review, p, cut)
        same_picture = (self._same_picture_by_hash(score)
                        or self._same_picture_by_registration(score))
        if same_picture and not score.exact and self.scene_changed(score, tenant, domain):
            same_picture = False
        return Decision("duplicate" if same_picture else "near_duplicate", p, review, p, cut)

    def scene_changed(self, score: PairScore, tenant: str | None = None,
                      domain: str | None = None) -> bool:
        """Under a scene-change policy (CCTV), did an object enter the picture?"""
        strict = (tenant in self.scene_change_tenants
                  or self.resolve_domain(tenant, domain) in self.scene_change_domains)
        return strict and bool(score.semantic.get("objects_added"))
