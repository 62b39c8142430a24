"""The engine on top of ``state.memory``: bounded records, replication, tenants, banks.

A tiny deterministic embedder stands in for SSCD so this runs in well under a second per test;
identical bytes give identical vectors, which is all these tests need.
"""

import cv2
import numpy as np
import pytest

from dupstream.engine import Deduper, Upload
from dupstream.engine.records import features_to_record, record_to_features
from dupstream.lab.data import edits
from dupstream.state.blobstore import MemoryBlobStore
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.state.records import BlobRecordStore
from dupstream.workers.decision import DecisionPolicy, default_calibrator
from dupstream.workers.features import FeatureExtractor
from tests.tiny import TinyEmbedder


def _deduper(memory=None, **kw) -> Deduper:
    if memory is None:
        memory = Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=48, kind="flat")}))
    return Deduper(extractor=FeatureExtractor(embedder=TinyEmbedder()), memory=memory,
                   policy=DecisionPolicy(calibrator=default_calibrator()), **kw)


@pytest.fixture(scope="module")
def blobs(photos):
    return {name: edits.encode(img) for name, img in photos.items()}


def test_features_survive_the_record_round_trip(blobs):
    feat = FeatureExtractor(embedder=TinyEmbedder()).extract([blobs["coffee"]])[0]
    rec = features_to_record("c", "t", feat)
    back = record_to_features(rec)
    assert back.digest == feat.digest and back.pdq.quality == feat.pdq.quality
    assert (back.pdq.variants == feat.pdq.variants).all() and (back.thumb == feat.thumb).all()
    assert (back.vector == feat.vector).all() and (back.width, back.height) == (
        feat.width, feat.height)


def test_a_records_registration_thumbnail_is_decoded_on_first_read(blobs):
    """A record keeps the registration thumbnail as the extractor's own JPEG; the features read
    from it decode it when verification first reads ``reg`` - the very pixels the fresh features
    have (no train / serve skew in registration) - and a record made of them again keeps the same
    bytes (never re-encoded)."""
    feat = FeatureExtractor(embedder=TinyEmbedder()).extract([blobs["coffee"]])[0]
    rec = features_to_record("c", "t", feat)
    back = record_to_features(rec)
    assert "_reg" not in vars(back) or vars(back)["_reg"] is None  # not decoded yet
    jpg = rec.arrays["reg.jpg"]
    assert np.array_equal(jpg, feat.reg_jpeg)
    want = cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE)
    assert back.reg is not None and np.array_equal(back.reg, want)
    assert back.reg is back.reg  # decoded once
    assert np.array_equal(back.reg, feat.reg)  # the fresh thumbnail is the stored one
    again = features_to_record("c", "t", back)
    assert "reg_jpeg" not in again.arrays
    assert np.array_equal(again.arrays["reg.jpg"], jpg)


@pytest.mark.parametrize("edit", ["crop", "caption", "screenshot", "rotate"])
def test_a_pair_registers_alike_fresh_and_from_a_record(photos, edit):
    """The decision is trained on pairs extracted fresh, the stream registers against records:
    both see the same registration (every field)."""
    from dupstream.workers.similarity import score_pair, verify_pair

    ext = FeatureExtractor(embedder=TinyEmbedder())
    copy = edits.NEAR_DUPLICATE_EDITS[edit](photos["coffee"], np.random.default_rng(4))
    q, r = ext.extract([edits.encode(copy), edits.encode(photos["coffee"])])
    stored = record_to_features(features_to_record("r", None, r))
    fresh = verify_pair(score_pair(q, r), q, r).registration
    served = verify_pair(score_pair(q, stored), q, stored).registration
    assert fresh is not None and fresh == served


def test_semantic_fields_survive_the_record_round_trip_through_the_wire(blobs):
    from dupstream.state.records import decode_record, encode_record
    from dupstream.workers.semantic import Objects

    feat = FeatureExtractor(embedder=TinyEmbedder()).extract([blobs["rocket"]])[0]
    rng = np.random.default_rng(0)
    feat.objects = Objects(boxes=rng.random((3, 4), dtype=np.float32),
                           labels=np.array([1, 5, 7]), scores=rng.random(3, dtype=np.float32),
                           colours=np.full((3, Objects.empty().colours.shape[1]), 0.1, np.float32))
    feat.semantic = rng.random(32, dtype=np.float32)
    back = record_to_features(decode_record(encode_record(features_to_record("r", None, feat))))
    assert isinstance(back.objects, Objects) and (back.objects.labels == [1, 5, 7]).all()
    assert back.objects.colours.shape == (3, feat.objects.colours.shape[1])
    assert (back.semantic == feat.semantic).all() and back.graph is None
    feat.objects = None
    assert record_to_features(features_to_record("r", None, feat)).objects is None


def test_a_copy_of_an_image_evicted_from_the_record_lru_is_still_flagged(blobs):
    store = BlobRecordStore(MemoryBlobStore(), prefix="t")
    mem = Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=48, kind="flat")},
                              records_max_items=1), record_store=store)
    d = _deduper(mem)
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    d.process([Upload(n, blobs[n], "t") for n in names])
    assert mem.records.peek((None, "t", "astronaut")) is None
    (v,) = d.process([Upload("again", blobs["astronaut"], "t")])
    assert v.verdict == "duplicate" and v.match_id == "astronaut"
    assert mem.records.stats.fetched >= 1


def test_tenants_are_kept_apart(blobs):
    d = _deduper()
    d.process([Upload("a", blobs["chelsea"], "t1")])
    (v,) = d.process([Upload("b", blobs["chelsea"], "t2")])
    assert v.verdict == "unique"
    (v,) = d.process([Upload("c", blobs["chelsea"], "t1")])
    assert v.verdict == "duplicate" and v.match_tenant == "t1"


def test_replicas_see_each_other_through_the_update_feed_and_correct_late_matches(blobs):
    from dupstream.state.memory import encode_update

    feed: list[bytes] = []
    a = _deduper(on_add=lambda rec: feed.append(encode_update(rec)))
    b = _deduper(on_add=lambda rec: feed.append(encode_update(rec)))
    a.process([Upload("orig", blobs["rocket"], "t")])
    for msg in list(feed):
        b.memory.apply(msg)
    (v,) = b.process([Upload("copy", blobs["rocket"], "t")])
    assert v.verdict == "duplicate" and v.match_id == "orig"
    # the window: B judges a copy before A's original reaches it
    feed.clear()
    a.process([Upload("orig2", blobs["coffee"], "t")])
    (late,) = b.process([Upload("copy2", blobs["coffee"], "t")])
    assert late.verdict == "unique"
    fixes = []
    for msg in feed:
        applied = b.memory.apply(msg)
        fixes += b.late_matches(applied)
    assert [(f.image_id, f.verdict, f.match_id) for f in fixes] == [
        ("copy2", "duplicate", "orig2")]


def test_reference_bank_hits_carry_the_bank_name(blobs):
    d = _deduper()
    extractor = d.extractor
    feat = extractor.extract([blobs["astronaut"]])[0]
    d.memory.add_to_bank("copyright", [features_to_record("work-17", None, feat)])
    (v,) = d.process([Upload("u1", blobs["astronaut"], "acme")])
    assert v.verdict == "duplicate" and v.match_id == "work-17"
    assert v.evidence.bank == "copyright"
    assert len(d.memory) == 1 and len(d.memory.banks["copyright"]) == 1
