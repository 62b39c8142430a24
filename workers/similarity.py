"""Pair similarity: every signal that compares two images, and their fusion."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources

import numpy as np

from dupstream.workers.features import ImageFeatures
from dupstream.workers.hashing import DIHEDRAL
from dupstream.workers.verify import Registration, match_objects, register

NO_OBJECTS_NOTE = "no objects detected: visual evidence only"
NO_DETECTOR_NOTE = "object detection not run: visual evidence only"


@dataclass(frozen=True, kw_only=True)
class Fusion:
    """S = alpha*Sv + (1 - alpha)*Ss, Ss = weighted mean of Jaccard, semantic cosine and graph.

    ``alpha`` is grid-searched on validation pairs by ``dupstream train`` (stored in gcn.json).
    """

    alpha: float = 0.5
    w_jaccard: float = 1.0
    w_cosine: float = 1.0
    w_graph: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> Fusion:
        keys = ("alpha", "w_jaccard", "w_cosine", "w_graph")
        return cls(**{k: float(d[k]) for k in keys if k in d})


@lru_cache(maxsize=1)
def default_fusion() -> Fusion:
    """The fusion fitted with the shipped GCN (``workers/assets/gcn.json``), else the defaults."""
    try:
        ref = resources.files("dupstream.workers") / "assets" / "gcn.json"
        return Fusion.from_dict(json.loads(ref.read_text()).get("fusion", {}))
    except (OSError, ValueError):
        return Fusion()


@dataclass
class PairScore:
    exact: bool
    visual: float  # Sv, cosine of the visual embeddings
    pdq_distance: int  # min over the query's dihedral variants
    pdq_variant: int  # which variant (0 = identity)
    fused: float  # S = alpha*Sv + (1-alpha)*Ss when both images have objects, else Sv
    changed_area: float | None  # share of the picture that differs (None: geometry differs)
    semantic: dict = field(default_factory=dict)  # SemanticScore.evidence()
    #: Sv between the pictures without their frames: the best cosine of the content-region
    #: embeddings (query content vs reference content or whole, and the reverse); None: no
    #: content embeddings on one side (records from before they existed)
    content: float | None = None
    #: the verification stage's result for this pair (None: not run - see ``verify_pair``)
    registration: Registration | None = None
    #: objects of the reference mapped through the registration into the query
    #: (``verify.match_objects``): matched / added / removed / moved / outside
    object_changes: dict | None = None
    #: the registration's scale in image pixels (query size / reference size); the
    #: registration itself measures it on the thumbnails (what the learned decision was fit on)
    image_scale: float | None = None

    @property
    def visual_best(self) -> float:
        """max(Sv, content Sv): the visual similarity of the pictures, framed or not."""
        return self.visual if self.content is None else max(self.visual, self.content)

    def evidence(self) -> dict:
        # the PDQ transform only means something where PDQ says the pictures are close
        near = self.pdq_distance <= PDQ_TRANSFORM_MAX
        out = {
            "exact_hash": self.exact,
            "visual": round(self.visual, 6),
            "content_visual": None if self.content is None else round(self.content, 6),
            "pdq_distance": self.pdq_distance,
            "pdq_transform": DIHEDRAL[self.pdq_variant] if near else None,
            "fused": round(self.fused, 6),
            "changed_area": None if self.changed_area is None else round(self.changed_area, 4),
            **self.semantic,
        }
        reg = self.registration
        if reg is not None:
            out["registration"] = reg.evidence()
            if self.image_scale is not None:
                out["registration"]["transform"]["scale"] = round(self.image_scale, 4)
            out["same_scene"] = bool(reg.same_scene and not reg.verified)
            if reg.verified:
                out["changed_area"] = round(reg.changed_area, 4)
                out["changed_regions"] = [list(b) for b in reg.changed_regions]
        if self.object_changes is not None:
            ch = self.object_changes
            out["objects_matched"] = sorted(o["name"] for o in ch["matched"])
            out["objects_added"] = sorted(o["name"] for o in ch["added"])
            out["objects_missing"] = sorted(o["name"] for o in ch["removed"])
            out["objects_moved"] = sorted(o["name"] for o in ch["moved"])
            notes = [n for n in out.get("notes", []) if not n.endswith((" added", " missing"))]
            notes += [f"{n} added" for n in out["objects_added"]]
            notes += [f"{n} removed" for n in out["objects_missing"]]
            notes += [f"{n} moved" for n in out["objects_moved"]]
            out["notes"] = notes
        return out


#: PDQ distances above this are "unrelated pictures": no transform is reported for them
PDQ_TRANSFORM_MAX = 90


@dataclass
class SemanticScore:
    """Ss and its parts. ``semantic`` is None when there is no semantic evidence."""

    semantic: float | None
    jaccard: float | None
    cosine: float | None
    graph: float | None
    matched: list[str]
    added: list[str]  # in the query, not in the reference
    missing: list[str]  # in the reference, not in the query
    notes: list[str]
    alpha: float

    def evidence(self) -> dict:
        def r(v):
            return None if v is None else round(float(v), 6)

        return {
            "semantic": r(self.semantic),
            "jaccard": r(self.jaccard),
            "semantic_cosine": r(self.cosine),
            "graph": r(self.graph),
            "alpha": self.alpha,
            "objects_matched": self.matched,
            "objects_added": self.added,
            "objects_missing": self.missing,
            "notes": self.notes,
        }


def _names(counter: Counter) -> list[str]:
    return [name if n == 1 else f"{name} x{n}" for name, n in sorted(counter.items())]


def object_jaccard(query: Counter, ref: Counter) -> float:
    """Multiset Jaccard of two bags of class names: sum of min counts / sum of max counts."""
    union = sum((query | ref).values())
    return sum((query & ref).values()) / union if union else 0.0


def semantic_score(query: ImageFeatures, ref: ImageFeatures, fusion: Fusion) -> SemanticScore:
    if query.objects is None or ref.objects is None:
        return SemanticScore(None, None, None, None, [], [], [], [NO_DETECTOR_NOTE], fusion.alpha)
    q, r = Counter(query.objects.names), Counter(ref.objects.names)
    matched, added, missing = _names(q & r), _names(q - r), _names(r - q)
    notes = [f"{name} added" for name in added] + [f"{name} missing" for name in missing]
    if not q or not r:
        which = "either image" if not q and not r else ("the query" if not q else "the reference")
        notes.insert(0, f"{NO_OBJECTS_NOTE} (none in {which})")
        return SemanticScore(None, None, None, None, matched, added, missing, notes, fusion.alpha)
    jaccard = object_jaccard(q, r)
    cosine = float(np.clip(np.dot(query.semantic, ref.semantic), 0.0, 1.0))
    parts = [(fusion.w_jaccard, jaccard), (fusion.w_cosine, cosine)]
    graph = None
    if query.graph is not None and ref.graph is not None:
        graph = float(np.clip(np.dot(query.graph, ref.graph), -1.0, 1.0))
        parts.append((fusion.w_graph, max(graph, 0.0)))
    total = sum(w for w, _ in parts)
    ss = sum(w * v for w, v in parts) / total if total > 0 else 0.0
    return SemanticScore(float(np.clip(ss, 0.0, 1.0)), jaccard, cosine, graph, matched, added,
                         missing, notes, fusion.alpha)


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


def content_similarity(query: ImageFeatures, ref: ImageFeatures) -> float | None:
    """Best cosine between the pictures without their frames: content vs content, and each
    content vs the other's whole image (a framed copy of a clean original, or the reverse); a
    picture turned on a solid fill (``content_turns``) by its best upright orientation against
    the other's content and whole image."""
    if query.content is None or ref.content is None:
        return None
    pairs = [(query.content, ref.content), (query.content, ref.vector),
             (query.vector, ref.content)]
    best = max(float(np.dot(a, b)) for a, b in pairs)
    for turns, other in ((query.content_turns, ref), (ref.content_turns, query)):
        if turns is not None and len(turns):
            best = max(best, float(np.max(np.asarray(turns) @ np.stack([other.vector,
                                                                        other.content]).T)))
    return float(np.clip(best, -1.0, 1.0))


def thumb_box(feat: ImageFeatures) -> tuple[int, int, int, int] | None:
    """The picture's content box (``content_box``, found by the extractor on the thumbnail before
    it was stored) in the registration thumbnail's pixels; None: the whole picture."""
    box, reg = feat.content_box, feat.reg
    if box is None or reg is None or feat.width <= 0 or feat.height <= 0:
        return None
    sx, sy = reg.shape[1] / feat.width, reg.shape[0] / feat.height
    x0, y0, x1, y1 = box
    out = (max(0, round(x0 * sx)), max(0, round(y0 * sy)),
           min(reg.shape[1], round(x1 * sx)), min(reg.shape[0], round(y1 * sy)))
    return out if out[2] > out[0] and out[3] > out[1] else None


def verify_pair(score: PairScore, query: ImageFeatures, ref: ImageFeatures, *,
                sift: bool = True) -> PairScore:
    """``score`` with the verification stage's evidence: the reference registered onto the query
    (``verify.register`` on the two registration thumbnails) and, where both images have objects,
    the objects matched / added / removed / moved through that transform. Unchanged when either
    image lacks a registration thumbnail. ``sift``: see ``verify.register``."""
    if query.reg is None or ref.reg is None:
        return score
    reg = register(query.reg, ref.reg, sift=sift, picture_box=thumb_box(query))
    changes = _object_changes(reg, query, ref)
    image_scale = None
    if reg.method != "none" and reg.query_size[0] and reg.ref_size[0]:
        image_scale = reg.scale * (query.width / reg.query_size[0]) / (ref.width / reg.ref_size[0])
    return replace(score, registration=reg, object_changes=changes, image_scale=image_scale)


def with_objects(score: PairScore, query: ImageFeatures, ref: ImageFeatures) -> PairScore:
    """``score`` again now that both images have objects (the cascade's late object step): the
    semantic scores recomputed, the registration kept (not run again), and the objects matched /
    added / removed / moved through it."""
    reg = score.registration
    return replace(score_pair(query, ref), registration=reg,
                   object_changes=_object_changes(reg, query, ref),
                   image_scale=score.image_scale)


def _object_changes(reg, query: ImageFeatures, ref: ImageFeatures) -> dict | None:
    """Objects matched / added / removed / moved through a registration (None when it found
    no transform or either image lacks objects)."""
    if reg is None or reg.method == "none" or query.objects is None or ref.objects is None:
        return None
    return match_objects(reg, query.objects.boxes.tolist(), query.objects.names,
                         ref.objects.boxes.tolist(), ref.objects.names)


def fuse(visual: float, semantic: float | None, alpha: float) -> float:
    """S = alpha*Sv + (1 - alpha)*Ss; Sv alone without semantic evidence."""
    return visual if semantic is None else alpha * visual + (1.0 - alpha) * semantic


def score_pair(
    query: ImageFeatures, ref: ImageFeatures, *, fusion: Fusion | None = None
) -> PairScore:
    """Every signal comparing ``query`` to ``ref``, and the fused score S (in [-1, 1]).

    Symmetric in its scores (Sv, Jaccard, semantic cosine, graph, S); ``objects_added`` lists what
    the query has and the reference lacks, ``objects_missing`` the reverse.
    """
    fusion = fusion or default_fusion()
    visual = float(np.clip(np.dot(query.vector, ref.vector), -1.0, 1.0))
    dist, variant = pdq_distance(query, ref)
    sem = semantic_score(query, ref, fusion)
    content = content_similarity(query, ref)
    best = visual if content is None else max(visual, content)
    return PairScore(
        exact=query.digest == ref.digest,
        visual=visual,
        pdq_distance=dist,
        pdq_variant=variant,
        fused=float(fuse(best, sem.semantic, fusion.alpha)),
        changed_area=changed_area(query, ref),
        semantic=sem.evidence(),
        content=content,
    )
