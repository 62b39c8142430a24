"""Pictures with too little content to tell apart (nearly black frames): two different ones are
not called copies on the strength of their common blackness; a re-encode of one still is."""

import cv2
import numpy as np
import pytest
from skimage import data

from dupstream.engine import Upload
from dupstream.engine.build import build_deduper
from dupstream.lab.data.edits import encode
from dupstream.workers.decision import flat_share


def _corner(img: np.ndarray, corner: str, side: int = 160) -> np.ndarray:
    h, w = img.shape[:2]
    y = 0 if corner[0] == "t" else h - side
    x = 0 if corner[1] == "l" else w - side
    return np.ascontiguousarray(img[y:y + side, x:x + side])


@pytest.fixture(scope="module")
def retina():
    img = data.retina()
    return cv2.resize(img, (1000, 1000), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def deduper(retina):
    d = build_deduper(detector="none", threads=2)
    d.process([Upload("corner", encode(_corner(retina, "br"), "PNG")),
               Upload("coffee", encode(np.ascontiguousarray(data.coffee()[::2, ::2]), "PNG")),
               Upload("rocket", encode(np.ascontiguousarray(data.rocket()[::2, ::2]), "PNG"))])
    return d


def test_the_corners_are_nearly_blank(deduper, retina):
    feats = deduper.extractor.extract([encode(_corner(retina, c), "PNG") for c in ("tl", "br")],
                                      objects=False)
    assert all(flat_share(f) >= deduper.policy.low_information_flat_min for f in feats)


def test_another_blank_corner_is_not_a_copy(deduper, retina):
    [v] = deduper.process([Upload("other", encode(_corner(retina, "tl"), "PNG"))], add=False)
    assert v.verdict == "unique", v.evidence
    assert v.evidence.nearest_id == "corner" and v.evidence.low_information
    assert v.p_copy < 0.1 and any("low-information" in n for n in v.evidence.notes)


def test_a_reencoded_blank_corner_is_still_a_copy(deduper, retina):
    blob = encode(_corner(retina, "br"), "JPEG", quality=92)
    [v] = deduper.process([Upload("again", blob)], add=False)
    assert v.verdict in ("duplicate", "near_duplicate") and v.match_id == "corner", v.evidence
    assert not v.evidence.low_information


def test_the_rule_scales_p_copy_and_switches_off(deduper, retina):
    q, r = deduper.extractor.extract([encode(_corner(retina, c), "PNG") for c in ("tl", "br")],
                                     objects=False)
    policy = deduper.policy
    score = policy.score(q, r)
    assert policy.low_information(score, q, r)
    off = type(policy)(**{**policy.__dict__, "low_information_p_scale": 1.0})
    p_on = policy.p_copy_verified(score, query=q, reference=r)
    p_off = off.p_copy_verified(score, query=q, reference=r)
    assert p_on == pytest.approx(p_off * policy.low_information_p_scale)
    # without the rule, the two blank corners would be called copies
    assert off.decision(score, query=q, reference=r).kind != "unique"
    assert policy.decision(score, query=q, reference=r).kind == "unique"


def test_pictures_without_a_usable_pdq_hash_match_only_by_their_bytes():
    """PDQ gives a 1-px image, a thin strip and a uniform picture quality 0 and the same all-zero
    hash: none of them is a copy of another, nor of its own re-encode; the same bytes still are."""
    d = build_deduper(detector="none", threads=2)
    strip = np.random.default_rng(0).integers(0, 255, (2, 3000, 3), dtype=np.uint8)
    black = np.zeros((300, 400, 3), np.uint8)
    pixel = np.zeros((1, 1, 3), np.uint8)
    d.process([Upload("pixel", encode(pixel, "PNG"))])
    verdicts = d.process([Upload("strip", encode(strip, "PNG")),
                          Upload("black", encode(black, "PNG"))])
    for v in verdicts:
        assert v.verdict == "unique", v.evidence
        assert v.evidence.low_information and v.evidence.pdq_distance == 0  # PDQ-"identical"
    [again] = d.process([Upload("black-jpeg", encode(black, "JPEG"))], add=False)
    assert again.verdict == "unique" and again.evidence.low_information
    [same] = d.process([Upload("black-again", encode(black, "PNG"))], add=False)
    assert same.verdict == "duplicate" and same.match_id == "black"  # identical bytes
