"""Pair scoring with the semantic part: symmetry, bounds, fusion, evidence, no-object path."""

from __future__ import annotations

import numpy as np
import pytest

from dupstream.workers.coco import class_index
from dupstream.workers.features import ImageFeatures
from dupstream.workers.hashing import pdq_hash
from dupstream.workers.semantic import NUM_COLOURS, Objects, semantic_vector
from dupstream.workers.similarity import NO_DETECTOR_NOTE, NO_OBJECTS_NOTE, Fusion, score_pair

RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)
PDQ = pdq_hash(IMG)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def feats(names: list[str] | None, *, vec=None, graph=None, boxes=None) -> ImageFeatures:
    vec = unit(RNG.normal(size=16)) if vec is None else vec
    objects = None
    if names is not None:
        n = len(names)
        xy = RNG.uniform(0, 0.5, (n, 2))
        b = boxes if boxes is not None else np.tile(xy, 2) + [0, 0, 0.3, 0.3]
        objects = Objects(np.asarray(b, np.float32).reshape(-1, 4),
                          np.array([class_index(x) for x in names], np.int64),
                          np.full(n, 0.8, np.float32),
                          np.full((n, NUM_COLOURS), 1 / NUM_COLOURS, np.float32))
    return ImageFeatures(
        digest=str(RNG.integers(1 << 30)), pdq=PDQ, vector=vec, width=64, height=64,
        thumb=IMG[..., 0], objects=objects,
        semantic=None if objects is None else semantic_vector(objects),
        graph=None if objects is None or not len(objects) else (
            unit(RNG.normal(size=8)) if graph is None else graph),
    )


FUSION = Fusion(alpha=0.5)


def test_scores_symmetric_bounded_and_fused_as_the_paper_says():
    for _ in range(20):
        names = list(RNG.choice(["person", "dog", "cup", "car"], RNG.integers(1, 5)))
        a, b = feats(names[:2] + ["dog"]), feats(names)
        ab, ba = score_pair(a, b, fusion=FUSION), score_pair(b, a, fusion=FUSION)
        for key in ("visual", "semantic", "jaccard", "semantic_cosine", "graph", "fused"):
            assert ab.evidence()[key] == pytest.approx(ba.evidence()[key], abs=1e-6)
        ev = ab.evidence()
        assert -1 <= ev["visual"] <= 1 and -1 <= ev["graph"] <= 1 and -1 <= ev["fused"] <= 1
        for key in ("semantic", "jaccard", "semantic_cosine"):
            assert 0 <= ev[key] <= 1
        assert ev["fused"] == pytest.approx(0.5 * ev["visual"] + 0.5 * ev["semantic"], abs=1e-5)
        assert ab.evidence()["objects_added"] == ba.evidence()["objects_missing"]


def test_evidence_names_matched_added_missing_objects():
    ref = feats(["person", "bicycle"])
    query = feats(["person", "dog", "dog"])
    ev = score_pair(query, ref, fusion=FUSION).evidence()
    assert ev["objects_matched"] == ["person"]
    assert ev["objects_added"] == ["dog x2"]
    assert ev["objects_missing"] == ["bicycle"]
    assert "dog x2 added" in ev["notes"] and "bicycle missing" in ev["notes"]
    assert ev["jaccard"] == pytest.approx(1 / 4)


def test_identical_objects_give_full_semantic_similarity():
    g = unit(RNG.normal(size=8))
    boxes = [[0.1, 0.1, 0.4, 0.6], [0.5, 0.5, 0.9, 0.9]]
    a = feats(["person", "dog"], graph=g, boxes=boxes)
    b = feats(["person", "dog"], graph=g, boxes=boxes)
    ev = score_pair(a, b, fusion=FUSION).evidence()
    assert ev["jaccard"] == 1 and ev["semantic_cosine"] == pytest.approx(1, abs=1e-6)
    assert ev["semantic"] == pytest.approx(1, abs=1e-6)


def test_no_objects_means_visual_only_and_says_so():
    v = unit(RNG.normal(size=16))
    cases = [(feats([], vec=v), feats([], vec=v)), (feats(["person"], vec=v), feats([], vec=v))]
    for a, b in cases:
        s = score_pair(a, b, fusion=FUSION)
        ev = s.evidence()
        assert s.fused == pytest.approx(s.visual)
        assert ev["semantic"] is None and ev["jaccard"] is None
        assert any(n.startswith(NO_OBJECTS_NOTE) for n in ev["notes"])
    ev = score_pair(feats(["person"], vec=v), feats([], vec=v), fusion=FUSION).evidence()
    assert ev["objects_added"] == ["person"]
    s = score_pair(feats(None, vec=v), feats(None, vec=v), fusion=FUSION)
    assert s.fused == pytest.approx(s.visual) and s.evidence()["notes"] == [NO_DETECTOR_NOTE]


def test_alpha_moves_the_fused_score():
    a, b = feats(["person"]), feats(["cup"])
    lo = score_pair(a, b, fusion=Fusion(alpha=0.1)).fused
    hi = score_pair(a, b, fusion=Fusion(alpha=0.9)).fused
    visual = score_pair(a, b, fusion=FUSION).visual
    assert abs(hi - visual) < abs(lo - visual)
