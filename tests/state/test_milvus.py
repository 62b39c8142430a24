"""The Milvus backend beyond the shared contract: the Memory facade on it, errors (unreachable
server, schema and model mismatches), reference banks seen by every tenant and every replica."""

from __future__ import annotations

import socket
import uuid

import numpy as np
import pytest

from dupstream.core.errors import ModelMismatch
from dupstream.state.identity import ModelIdentity
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from tests.state.helpers import make_record, near, unit

pytestmark = pytest.mark.integration
pytest.importorskip("pymilvus")
from dupstream.state.milvus import (  # noqa: E402
    MilvusCollection,
    MilvusConfig,
    MilvusSchemaMismatch,
    MilvusStore,
    MilvusUnavailable,
)

DIM = 32
SSCD = ModelIdentity(embedder="sscd", embedder_sha256="a" * 64)
OTHER = ModelIdentity(embedder="sscd_distilled", embedder_sha256="b" * 64)


@pytest.fixture(scope="module")
def store(milvus_uri):  # shared by the module (a collection takes seconds to create)
    s = MilvusStore(MilvusConfig(uri=milvus_uri, prefix=f"m{uuid.uuid4().hex[:8]}", nlist=16,
                                 pdq_nlist=16, partitions=16), dims={"vector": DIM},
                    identity=SSCD)
    yield s
    s.drop()
    s.close()


def _memory(store, replica: str) -> Memory:
    config = MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind="flat")})
    return Memory(config, replica_id=replica,
                  collections=lambda name: MilvusCollection(name=name, store=store))


def test_two_memories_share_one_index_without_a_feed(store):
    a, b = _memory(store, "a"), _memory(store, "b")
    rng = np.random.default_rng(1)
    v = unit(rng, 3, DIM)
    assert a.add(make_record("orig", "t1", vector=v[0]))
    assert not b.add(make_record("orig", "t1", vector=v[0]))  # present: added by replica a
    assert len(a) == len(b) == 1
    assert (None, "t1", "orig") in b
    found = b.candidates(make_record("copy", "t1", vector=near(rng, v[0], 0.05)))
    assert [(c.image_id, c.source) for c in found] == [("orig", "vector")]
    # a reference bank loaded on replica a: matched on replica b for every tenant
    a.add_to_bank("brands", [make_record("logo", "t9", vector=v[1])])
    found = b.candidates(make_record("q", "t2", vector=near(rng, v[1], 0.05)))
    assert [(c.image_id, c.bank, c.source) for c in found] == [("logo", "brands", "vector")]
    # an upload never lands in a bank: t2 does not see t1's upload
    assert not [c for c in found if c.image_id == "orig"]
    stats = b.stats()
    assert stats["images"] == 1 and stats["indexes"]["vector"]["type"] == "milvus"


def test_another_models_collection_is_refused_at_bind(store):
    m = _memory(store, "a")
    m.bind(SSCD)  # same model: fine
    with pytest.raises(ModelMismatch, match="sscd_distilled"):
        _memory(store, "b").bind(OTHER)


def test_a_collection_of_another_dimension_is_refused(store, milvus_uri):
    with pytest.raises(MilvusSchemaMismatch, match="dimension 32, expected 64"):
        MilvusStore(store.config, dims={"vector": 64})


def test_an_unreachable_server_is_a_transient_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MilvusUnavailable) as err:
        MilvusStore(MilvusConfig(uri=f"http://127.0.0.1:{port}", timeout_s=1.0),
                    dims={"vector": DIM})
    assert err.value.transient and err.value.reason == "milvus_unavailable"


def test_migrate_copies_an_embedded_memory_into_milvus(store):
    from dupstream.state.migrate import migrate_to_milvus

    rng = np.random.default_rng(4)
    v = unit(rng, 6, DIM)
    u = uuid.uuid4().hex[:6]
    src = Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind="flat")},
                              records_max_items=5))
    for i in range(4):
        src.add(make_record(f"m{i}", f"x-{u}" if i % 2 else f"y-{u}", vector=v[i]))
    src.add_to_bank(f"bank{u}", [make_record("ref", None, vector=v[4])])
    src.add(make_record("gone", f"x-{u}", vector=v[5]))  # evicts m0 (LRU of 5, no store)
    dst = _memory(store, "migrate")
    got = migrate_to_milvus(src, dst, batch=2)
    assert (got.images, got.added, got.present) == (6, 5, 0)
    assert got.lost == [(None, f"y-{u}", "m0")]
    again = migrate_to_milvus(src, dst)
    assert (again.added, again.present) == (0, 5)  # re-runnable
    found = dst.candidates(make_record("q", f"x-{u}", vector=near(rng, v[3], 0.05)))
    assert [c.image_id for c in found if c.source == "vector"][:1] == ["m3"]
    found = dst.candidates(make_record("q2", "anyone", vector=near(rng, v[4], 0.05)))
    assert [(c.image_id, c.bank) for c in found][:1] == [("ref", f"bank{u}")]
