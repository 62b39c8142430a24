"""The cascade: objects (detector + GCN) only where a verdict or a policy needs them when the
decision does not read them (a copy in which something changed, a scene-change tenant); a
reference's objects found when a later match first needs them and kept in its record; every
stage named in the evidence."""

from __future__ import annotations

import numpy as np
import pytest

from dupstream.engine import Upload
from dupstream.engine.build import build_deduper
from dupstream.engine.deduper import OBJECTS_SKIPPED
from dupstream.lab.data import edits as E
from dupstream.lab.data.photos import load_photos


@pytest.fixture(scope="module")
def photos():
    return load_photos(["motorcycle_left", "coffee", "camera", "astronaut"])


def _blob(rgb) -> bytes:
    return E.encode(rgb, "JPEG", 92)


def _marked(rgb) -> bytes:
    """A watermarked copy: changed regions inside the registered overlap."""
    return _blob(E.overlay("watermark", 7)(rgb))


def test_objects_only_for_copies_and_kept_in_the_reference_record(photos):
    d = build_deduper(threads=2)
    assert not d.policy.reads_objects and d.lazy_objects
    a, b = photos["motorcycle_left"], photos["coffee"]
    first = d.process([Upload("moto", _blob(a)), Upload("coffee", _blob(b))])
    for v in first:
        assert v.verdict == "unique"
        assert "objects" not in v.evidence.cascade and "detect" not in v.timings_ms
    ref_key = (None, None, "moto")
    rec = d.memory.record(ref_key)
    assert "objects.boxes" not in rec.arrays and "obj.jpg" in rec.arrays  # found later
    (copy,) = d.process([Upload("moto-marked", _marked(a))])
    assert copy.verdict == "near_duplicate" and copy.match_id == "moto"
    assert copy.evidence.cascade == ["exact", "embed", "search", "verify", "objects"]
    assert "motorcycle" in copy.evidence.objects_matched
    # the reference's objects are now in its record (for the next query), and the copy's
    rec = d.memory.record(ref_key)
    assert "objects.boxes" in rec.arrays and len(rec.arrays["objects.labels"]) >= 1
    assert "objects.boxes" in d.memory.record((None, None, "moto-marked")).arrays


def test_a_copy_in_which_nothing_changed_skips_the_detector(photos):
    d = build_deduper(threads=2)
    a = photos["motorcycle_left"]
    d.process([Upload("moto", _blob(a))])
    h, w = a.shape[:2]
    for name, img in (("moto-small", E.encode(a[: h - h % 2, : w - w % 2][::2, ::2], "JPEG", 80)),
                      ("moto-crop", _blob(a[h // 8 :, w // 10 :]))):
        (v,) = d.process([Upload(name, img)])
        assert v.verdict != "unique" and v.match_id == "moto", name
        assert "objects" not in v.evidence.cascade and "objects" not in v.timings_ms, name
        assert v.evidence.objects_matched == [] and OBJECTS_SKIPPED in v.evidence.notes, name
    assert "objects.boxes" not in d.memory.record((None, None, "moto")).arrays


def test_a_scene_change_tenant_always_gets_objects(photos):
    d = build_deduper(threads=2, policy={"scene_change_tenants": ("cctv",)})
    (v,) = d.process([Upload("cam", _blob(photos["camera"]), tenant="cctv")])
    assert v.verdict == "unique"
    # no candidate: nothing to compare objects with, nothing computed
    assert "objects" not in v.evidence.cascade
    (w,) = d.process([Upload("astro", _blob(photos["astronaut"]), tenant="cctv")])
    assert w.verdict == "unique" and "objects" in w.evidence.cascade


def test_cascade_off_finds_objects_for_every_image(photos):
    d = build_deduper(threads=2, cascade=False)
    assert not d.lazy_objects
    (v,) = d.process([Upload("coffee", _blob(photos["coffee"]))])
    assert "objects" in v.evidence.cascade and "detect" in v.timings_ms
    rec = d.memory.record((None, None, "coffee"))
    assert np.asarray(rec.arrays["objects.labels"]).size >= 1


def test_one_batch_gets_one_detector_call_for_all_its_copies(photos):
    d = build_deduper(threads=2)
    d.process([Upload(n, _blob(p)) for n, p in photos.items()])
    calls = []
    detect = d.extractor.detector.detect

    def counting(images):
        calls.append(len(images))
        return detect(images)

    d.extractor.detector.detect = counting
    copies = d.process([Upload(f"{n}-marked", _marked(p)) for n, p in photos.items()])
    assert [v.match_id for v in copies] == list(photos)
    assert all("objects" in v.evidence.cascade for v in copies)
    # the four copies and their four references: one call with eight thumbnails
    assert calls == [2 * len(photos)]


def test_a_lookup_that_adds_nothing_writes_only_into_the_references(photos):
    d = build_deduper(threads=2)
    d.process([Upload("moto", _blob(photos["motorcycle_left"])),
               Upload("coffee", _blob(photos["coffee"]))])
    # a lookup (add=False) of a copy of moto under an id the index holds for another picture
    (v,) = d.process([Upload("coffee", _marked(photos["motorcycle_left"]))], add=False)
    assert v.match_id == "moto" and "objects" in v.evidence.cascade
    assert "objects.boxes" in d.memory.record((None, None, "moto")).arrays
    assert "objects.boxes" not in d.memory.record((None, None, "coffee")).arrays
