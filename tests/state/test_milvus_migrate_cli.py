"""``dupstream index migrate``: an embedded snapshot in the real S3 server copied into the real
Milvus server, then ``index stats`` and ``index list`` on the Milvus backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from dupstream.state.blobstore import MinioBlobStore
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.state.records import BlobRecordStore
from dupstream.state.snapshot import write_snapshot
from dupstream.stream.blobs import MinioStore
from tests.state.helpers import make_record, unit

pytestmark = pytest.mark.integration
pytest.importorskip("pymilvus")


def test_index_migrate_then_stats_and_list_on_milvus(s3_endpoint, milvus_uri, unique_name):
    bucket, prefix = f"{unique_name}-state", "dupstream"
    blobs = MinioBlobStore(MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y"),
                           bucket)
    spec = IndexSpec(dim=512, kind="flat")
    mem = Memory(MemoryConfig(vectors={"vector": spec, "content": spec}),
                 record_store=BlobRecordStore(blobs, prefix=prefix))
    rng = np.random.default_rng(2)
    v = unit(rng, 5, 512)
    for i in range(4):
        rec = make_record(f"img{i}", "acme", vector=v[i])
        rec.arrays["content"] = v[i]
        mem.add(rec)
    ref = make_record("ref", None, vector=v[4])
    ref.arrays["content"] = v[4]
    mem.add_to_bank("brands", [ref])
    mem.flush_records(10)
    snap = write_snapshot(mem, blobs, prefix=prefix).snapshot_id
    mem.records.writes.stop(5)
    col = f"m{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DUPSTREAM_S3__ENDPOINT": s3_endpoint,
           "DUPSTREAM_S3__ACCESS_KEY": "x", "DUPSTREAM_S3__SECRET_KEY": "y",
           "DUPSTREAM_STATE__BUCKET": bucket, "DUPSTREAM_STATE__BACKEND": "milvus",
           "DUPSTREAM_STATE__MILVUS__URI": milvus_uri,
           "DUPSTREAM_STATE__MILVUS__COLLECTION_PREFIX": col,
           "DUPSTREAM_STATE__MILVUS__NLIST": "16", "DUPSTREAM_STATE__MILVUS__PDQ_NLIST": "16"}

    def index(*argv):
        r = subprocess.run([sys.executable, "-m", "dupstream", "index", *argv], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    out = index("migrate")
    assert out["migrated_from"] == snap
    assert out["migrated"]["images"] == 5 and out["migrated"]["added"] == 5
    assert out["stats"]["images"] == 4 and out["stats"]["banks"] == {"brands": 1}
    stats = index("stats")
    assert stats["stats"]["images"] == 4
    assert stats["stats"]["indexes"]["vector"]["collection"] == f"{col}_vector"
    listed = index("list")
    assert listed["snapshots"] == [snap] and listed["milvus"]["images"] == 4
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    for name in ("vector", "content", "pdq"):
        client.drop_collection(f"{col}_{name}")
    client.close()
