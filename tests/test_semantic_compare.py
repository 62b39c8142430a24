"""End to end: ``Deduper.compare`` with the semantic engine on packaged photos."""

from __future__ import annotations

import numpy as np
import pytest

from dupstream.engine.build import build_deduper
from dupstream.lab.data import edits
from dupstream.lab.data.photos import load_photos


@pytest.fixture(scope="module")
def deduper():
    return build_deduper()


@pytest.fixture(scope="module")
def photos():
    return load_photos(["camera", "grace_hopper", "chelsea"])


def test_copy_with_objects_carries_semantic_evidence(deduper, photos):
    cam = photos["camera"]
    copy = edits.recolour(cam, np.random.default_rng(0))
    r = deduper.compare(edits.encode(cam), edits.encode(copy))
    assert r["verdict"] != "unique" and r["probability"] > 0.9
    assert r["objects_matched"] == ["person x2"] and r["semantic"] > 0.9
    assert r["fused"] == pytest.approx(r["alpha"] * r["visual"] + (1 - r["alpha"]) * r["semantic"],
                                       abs=1e-5)


def test_different_portraits_are_unique_and_objects_named(deduper, photos):
    r = deduper.compare(edits.encode(photos["camera"]), edits.encode(photos["grace_hopper"]))
    assert r["verdict"] == "unique"
    assert "person" in r["objects_matched"] and "tie x2" in r["objects_added"]


def test_no_objects_is_visual_only(deduper, photos):
    cat = photos["chelsea"]
    r = deduper.compare(edits.encode(cat), edits.encode(edits.crop(cat, np.random.default_rng(0))))
    assert r["semantic"] is None and r["fused"] == pytest.approx(r["visual"])
    assert any(n.startswith("no objects detected: visual evidence only") for n in r["notes"])
    assert r["verdict"] == "near_duplicate"
