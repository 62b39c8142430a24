import numpy as np
import pytest

from dupstream.core.errors import StateError
from dupstream.state.blobstore import MemoryBlobStore
from dupstream.state.codec import pack, unpack
from dupstream.state.records import BlobRecordStore, RecordCache, decode_record, encode_record
from tests.state.helpers import make_record, unit


def test_codec_round_trips_arrays_of_every_plain_dtype_and_refuses_objects():
    data = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f16": np.ones(3, np.float16),
        "u8": np.zeros((0, 32), np.uint8),
        "i64": np.array(7, np.int64),
        "big_endian": np.arange(3, dtype=">i4"),
        "bool": np.array([True, False]),
        "nested": [{"x": np.ones(2)}, b"raw", None, 1.5, "s"],
    }
    out = unpack(pack(data))
    for k in ("f32", "f16", "u8", "i64", "bool"):
        assert out[k].dtype == data[k].dtype and out[k].shape == data[k].shape
        assert (out[k] == data[k]).all()
    assert (out["big_endian"] == [0, 1, 2]).all()
    assert out["nested"][1] == b"raw" and (out["nested"][0]["x"] == 1).all()
    with pytest.raises(StateError):
        pack({"o": np.array([object()], dtype=object)})
    with pytest.raises(StateError):
        pack({"s": {1, 2}})
    with pytest.raises(StateError):
        unpack(b"\xc1")


def test_record_round_trip_keeps_every_array_and_scalar():
    rng = np.random.default_rng(0)
    rec = make_record("img-1", "t", vector=unit(rng, 1, 16)[0], pdq_quality=90)
    rec.arrays["graph"] = rng.standard_normal((5, 4)).astype(np.float32)
    rec.meta["labels"] = ["dog", "ball"]
    again = decode_record(encode_record(rec))
    assert again.key == rec.key and again.digest == rec.digest and again.meta == rec.meta
    assert set(again.arrays) == {"vector", "thumb", "graph"}
    assert all((again.arrays[k] == rec.arrays[k]).all() for k in rec.arrays)
    assert (again.pdq == rec.pdq).all()
    with pytest.raises(StateError):
        decode_record(pack({"v": 99}))


def test_lru_is_bounded_by_count_and_by_bytes():
    rng = np.random.default_rng(1)
    recs = [make_record(f"r{i}", vector=unit(rng, 1, 64)[0]) for i in range(10)]
    size = recs[0].nbytes()
    cache = RecordCache(max_items=4, max_bytes=10 * size)
    for r in recs:
        cache.put(r)
    assert len(cache) == 4 and [r.image_id for r in cache.records()] == ["r6", "r7", "r8", "r9"]
    assert cache.get(recs[6].key) is not None  # touch r6: now most recent
    cache.put(make_record("new", vector=unit(rng, 1, 64)[0]))
    assert cache.peek(recs[7].key) is None and cache.peek(recs[6].key) is not None
    by_bytes = RecordCache(max_items=100, max_bytes=int(2.5 * size))
    for r in recs:
        by_bytes.put(r)
    assert len(by_bytes) == 2 and by_bytes.nbytes <= 2.5 * size
    assert by_bytes.stats.evicted == 8


def test_a_miss_falls_back_to_the_stored_form_then_the_loader():
    rng = np.random.default_rng(2)
    store = BlobRecordStore(MemoryBlobStore(), prefix="p")
    recomputed = make_record("gone", vector=unit(rng, 1, 8)[0])
    cache = RecordCache(max_items=1, max_bytes=1 << 20, backing=store,
                        loader=lambda key: recomputed if key == recomputed.key else None)
    a = make_record("a", "t", vector=unit(rng, 1, 8)[0])
    b = make_record("b", "t", vector=unit(rng, 1, 8)[0])
    cache.put(a, persist=True)
    cache.put(b, persist=True)  # evicts a from memory; it stays in the stored form
    assert cache.peek(a.key) is None
    got = cache.get(a.key)
    assert got is not None and got.image_id == "a" and (got.arrays["vector"] ==
                                                         a.arrays["vector"]).all()
    assert cache.get(recomputed.key) is recomputed
    assert store.get(recomputed.key) is not None  # a recomputed record is stored back
    assert cache.get((None, "t", "never")) is None
    s = cache.stats
    assert (s.fetched, s.recomputed, s.lost) == (1, 1, 1)
