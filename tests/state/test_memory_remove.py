"""Removal (take-downs): ``Memory.remove``, the removal update kind of the index-updates feed
(backward compatible: an add-only reader skips it) and tombstones in snapshots."""

import numpy as np
import pytest

from dupstream.core.errors import StateError
from dupstream.state.blobstore import MemoryBlobStore
from dupstream.state.codec import pack
from dupstream.state.index import IndexSpec
from dupstream.state.memory import (
    Memory,
    MemoryConfig,
    Removal,
    decode_message,
    decode_update,
    encode_removal,
    encode_update,
    update_key,
)
from dupstream.state.snapshot import load_latest_snapshot, write_snapshot
from tests.state.helpers import make_record, near, unit

DIM = 16


def _memory() -> Memory:
    return Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind="flat")}))


def test_a_removed_image_is_never_a_candidate_and_its_record_is_gone():
    rng = np.random.default_rng(0)
    mem = _memory()
    v = unit(rng, 1, DIM)[0]
    rec = make_record("orig", "acme", vector=v)
    assert mem.add(rec)
    mem.add(make_record("other", "acme", vector=unit(rng, 1, DIM)[0]))
    query = make_record("q", "acme", vector=near(rng, v), digest=rec.digest, pdq=rec.pdq)
    assert {c.image_id for c in mem.candidates(query, k=2)} >= {"orig"}
    assert mem.remove(rec.key)
    assert not mem.remove(rec.key)  # already removed
    assert not mem.remove((None, "acme", "never-added"))
    assert "orig" not in {c.image_id for c in mem.candidates(query, k=2)}
    assert mem.record(rec.key) is None and mem.is_removed(rec.key)
    assert not mem.add(make_record("orig", "acme", vector=v))  # ids are not reused
    assert mem.record(rec.key) is None
    assert mem.stats()["removed"] == 1


def test_removal_travels_the_feed_under_the_adds_key_and_old_readers_skip_it():
    rng = np.random.default_rng(1)
    a, b = _memory(), _memory()
    rec = make_record("img", "t", vector=unit(rng, 1, DIM)[0])
    a.add(rec)
    b.apply(encode_update(rec), position=("u", 0, 0))
    assert a.remove(rec.key)
    msg = encode_removal(rec.key, origin=a.replica_id, ts=1.5)
    assert pack(list(rec.key)) == update_key(rec)  # compaction keeps the removal only
    assert decode_message(msg) == Removal(rec.key, origin=a.replica_id, ts=1.5)
    with pytest.raises(StateError):  # an add-only reader (older release) refuses, never applies
        decode_update(msg)
    applied = b.apply(msg, position=("u", 0, 1))
    assert applied.removed and applied.new and applied.record.key == rec.key
    assert b.record(rec.key) is None and b.positions == {"u/0": 2}
    assert not b.apply(msg).new  # idempotent
    with pytest.raises(StateError):
        decode_message(pack({"v": 1, "op": "remove", "k": ["x"]}))


def test_a_removal_before_its_add_still_hides_the_add():
    rng = np.random.default_rng(2)
    mem = _memory()
    rec = make_record("late", "t", vector=unit(rng, 1, DIM)[0])
    mem.apply_many([encode_removal(rec.key), encode_update(rec)])
    q = make_record("q", "t", vector=rec.arrays["vector"], digest=rec.digest, pdq=rec.pdq)
    assert mem.candidates(q, k=1) == [] and mem.record(rec.key) is None


def test_tombstones_survive_a_snapshot():
    rng = np.random.default_rng(3)
    mem = _memory()
    recs = [make_record(f"i{i}", "t", vector=v) for i, v in enumerate(unit(rng, 5, DIM))]
    for r in recs:
        mem.add(r)
    mem.remove(recs[2].key)
    store = MemoryBlobStore()
    write_snapshot(mem, store)
    restored = load_latest_snapshot(store, config=mem.config).memory
    assert restored.is_removed(recs[2].key) and restored.record(recs[2].key) is None
    q = make_record("q", "t", vector=recs[2].arrays["vector"], digest=recs[2].digest,
                    pdq=recs[2].pdq)
    assert "i2" not in {c.image_id for c in restored.candidates(q, k=3)}
