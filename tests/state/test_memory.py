import numpy as np
import pytest

from dupstream.core.errors import StateError
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig, decode_update, encode_update, update_key
from tests.state.helpers import make_record, near, unit

DIM = 16


def _memory(kind="flat", **cfg) -> Memory:
    return Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind=kind)}, **cfg))


def _keys(cands):
    return [(c.bank, c.tenant, c.image_id, c.source) for c in cands]


def test_lookups_are_tenant_scoped_unless_configured_global():
    rng = np.random.default_rng(0)
    v = unit(rng, 1, DIM)[0]
    for scope in ("tenant", "global"):
        mem = _memory(scope=scope)
        mem.add(make_record("orig", "acme", vector=v))
        for i in range(20):
            mem.add(make_record(f"other{i}", "zeta", vector=unit(rng, 1, DIM)[0]))
        copy = make_record("copy", "zeta", vector=near(rng, v), digest=mem.uploads.exact.digest(0)
                           .hex())
        found = {c.image_id for c in mem.candidates(copy, k=3)}
        assert ("orig" in found) == (scope == "global")
        same = make_record("copy2", "acme", vector=near(rng, v))
        assert mem.candidates(same, k=1)[0].image_id == "orig"


def test_exact_pdq_and_vector_sources_in_that_order_without_the_query_itself():
    rng = np.random.default_rng(1)
    mem = _memory()
    v = unit(rng, 1, DIM)[0]
    orig = make_record("orig", "t", vector=v)
    mem.add(orig)
    for i in range(10):
        mem.add(make_record(f"n{i}", "t", vector=unit(rng, 1, DIM)[0]))
    # a rotated copy: its variant 3 equals the original's identity hash
    pdq = np.random.default_rng(9).integers(0, 256, (8, 32), dtype=np.uint8)
    pdq[3] = orig.pdq[0]
    copy = make_record("copy", "t", vector=near(rng, v), pdq=pdq, digest=orig.digest)
    cands = mem.candidates(copy, k=3)
    assert cands[0].source == "exact" and cands[0].image_id == "orig"
    assert len([c for c in cands if c.image_id == "orig"]) == 1  # deduplicated by key
    only_pdq = make_record("copy-b", "t", vector=unit(rng, 1, DIM)[0], pdq=pdq)
    c = mem.candidates(only_pdq, k=1)[0]
    assert (c.source, c.image_id, c.pdq_distance, c.pdq_variant) == ("pdq", "orig", 0, 3)
    low = make_record("copy-c", "t", vector=unit(rng, 1, DIM)[0], pdq=pdq, pdq_quality=10)
    assert all(c.source != "pdq" for c in mem.candidates(low, k=1))
    assert all(c.image_id != "orig" for c in mem.candidates(orig, k=5))  # never itself


def test_faiss_memory_agrees_with_the_numpy_oracle():
    rng = np.random.default_rng(2)
    a, b = _memory("flat"), _memory("numpy")
    data = unit(rng, 300, DIM)
    for i, v in enumerate(data):
        for m in (a, b):
            m.add(make_record(f"i{i}", f"t{i % 3}", vector=v))
    for q in unit(rng, 10, DIM):
        query = make_record("q", "t1", vector=q)
        assert _keys(a.candidates(query, k=5)) == _keys(b.candidates(query, k=5))


def test_reference_banks_match_every_tenant_and_are_never_filled_by_uploads():
    rng = np.random.default_rng(3)
    mem = _memory()
    work = unit(rng, 1, DIM)[0]
    mem.add_to_bank("copyright", [make_record("famous-painting", vector=work)])
    up = make_record("upload-1", "acme", vector=near(rng, work))
    assert mem.add(up)
    assert len(mem.banks["copyright"]) == 1 and len(mem) == 1
    for tenant in ("acme", "zeta"):
        q = make_record("q", tenant, vector=near(rng, work))
        banked = [c for c in mem.candidates(q, k=2) if c.bank == "copyright"]
        assert banked and banked[0].image_id == "famous-painting"
    assert mem.record(("copyright", None, "famous-painting")) is not None


def test_apply_is_idempotent_and_replicas_converge_whatever_the_order():
    rng = np.random.default_rng(4)
    a, b = _memory(), _memory()
    feed = []
    for i in range(40):
        rec = make_record(f"img{i}", f"t{i % 2}", vector=unit(rng, 1, DIM)[0])
        origin = a if i % 2 else b
        assert origin.add(rec)
        assert not origin.add(rec)  # re-adding is a no-op
        feed.append(encode_update(rec))
    bank = make_record("ref", vector=unit(rng, 1, DIM)[0])
    a.add_to_bank("refs", [bank])
    feed.append(encode_update(bank))
    order = rng.permutation(len(feed))
    for m in (a, b):
        for i in order:
            m.apply(feed[i])
        res = m.apply_many(feed)  # a full replay changes nothing
        assert not any(r.new for r in res)
    c = _memory()
    for i in order[::-1]:
        c.apply(feed[i], position=("updates", 0, int(i)))
    assert c.positions == {"updates/0": len(feed)}
    for m in (a, b, c):
        assert len(m) == 40 and len(m.banks["refs"]) == 1
    for q in unit(rng, 5, DIM):
        query = make_record("q", "t1", vector=q)
        assert _keys(a.candidates(query, k=4)) == _keys(b.candidates(query, k=4)) == _keys(
            c.candidates(query, k=4))
    assert update_key(bank) != update_key(make_record("ref", vector=bank.arrays["vector"]))
    assert decode_update(feed[0]).image_id == "img0"


def test_apply_reports_lag_and_own_uploads_judged_without_the_remote_image():
    rng = np.random.default_rng(5)
    a, b = _memory(), _memory()
    x = make_record("x", "t", vector=unit(rng, 1, DIM)[0])
    a.add(x)  # on replica A, at x.ts
    y = make_record("y", "t", vector=near(rng, x.arrays["vector"]))
    y.ts = x.ts + 0.5  # on replica B, later, before A's update arrived
    b.add(y)
    other_tenant = make_record("z", "u", vector=unit(rng, 1, DIM)[0])
    other_tenant.ts = x.ts + 0.6
    b.add(other_tenant)
    got = b.apply(encode_update(x))
    assert got.new and got.missed == [(None, "t", "y")]
    assert got.lag_s is not None and b.stats()["replication_lag_s"] == got.lag_s
    assert a.apply(encode_update(y)).missed == []  # y is later than everything A added
    assert a.apply(encode_update(x)).lag_s is None  # own update coming back


def test_a_bad_record_changes_nothing():
    rng = np.random.default_rng(6)
    mem = _memory()
    good = make_record("good", vector=unit(rng, 1, DIM)[0])
    bad = make_record("bad", vector=np.ones(DIM + 1, np.float32))
    with pytest.raises(StateError):
        mem._add_many([good, bad], local=True)
    assert len(mem) == 0 and len(mem.uploads.pdq) == 0 and len(mem.uploads.exact) == 0
    missing = make_record("missing", vector=unit(rng, 1, DIM)[0])
    del missing.arrays["vector"]
    with pytest.raises(StateError):
        mem.add(missing)
    with pytest.raises(StateError):
        mem.apply(b"\x81\xa1v\x07")


def test_record_lru_inside_memory_is_bounded_and_stats_are_reported():
    rng = np.random.default_rng(7)
    mem = _memory(records_max_items=5)
    for i in range(12):
        mem.add(make_record(f"i{i}", vector=unit(rng, 1, DIM)[0]))
    s = mem.stats()
    assert s["images"] == 12 and s["records"]["items"] == 5 and s["records"]["evicted"] == 7
    assert mem.record((None, None, "i0")) is None and mem.record((None, None, "i11")) is not None
    assert s["indexes"]["vector"]["stage"] == "flat"
