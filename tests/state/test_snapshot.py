import json

import numpy as np
import pytest

from dupstream.core.errors import StateError
from dupstream.state.blobstore import FileBlobStore, MemoryBlobStore, MinioBlobStore
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig, encode_update
from dupstream.state.snapshot import list_snapshots, load_latest_snapshot, write_snapshot
from tests.state.helpers import make_record, near, unit

DIM = 16


def _filled(n=1500) -> tuple[Memory, np.ndarray]:
    rng = np.random.default_rng(0)
    spec = IndexSpec(dim=DIM, kind="ivf", switch_at=1000, nlist=16, nprobe=16)
    mem = Memory(MemoryConfig(vectors={"vector": spec}, records_max_items=50))
    data = unit(rng, n, DIM)
    for i, v in enumerate(data):
        mem.apply(encode_update(make_record(f"i{i}", f"t{i % 3}", vector=v)),
                  position=("updates", i % 2, i // 2))
    mem.add_to_bank("refs", [make_record("ref0", vector=unit(rng, 1, DIM)[0])])
    return mem, data


def _answers(mem: Memory, data: np.ndarray):
    rng = np.random.default_rng(1)
    out = []
    for i in (0, 7, 1001, 1499):
        q = make_record("q", f"t{i % 3}", vector=near(rng, data[i], 0.02))
        out.append([(c.bank, c.tenant, c.image_id, c.source) for c in mem.candidates(q, k=3)])
    return out


def _round_trip(store) -> None:
    mem, data = _filled()
    assert mem.stats()["indexes"]["vector"]["stage"] == "approx"
    info = write_snapshot(mem, store, prefix="svc")
    restored = load_latest_snapshot(store, prefix="svc")
    assert restored is not None and restored.snapshot_id == info.snapshot_id
    new = restored.memory
    assert restored.offsets == {"updates/0": 750, "updates/1": 750}
    assert len(new) == 1500 and len(new.banks["refs"]) == 1
    assert new.stats()["indexes"]["vector"]["stage"] == "approx"
    assert _answers(new, data) == _answers(mem, data)
    assert len(new.records) == 50 and new.record((None, "t2", "i1499")) is not None
    # the feed replayed from before the offsets is a no-op; new images keep coming
    assert not new.apply(encode_update(make_record("i3", "t0", vector=data[3]))).new
    assert new.add(make_record("fresh", "t0", vector=unit(np.random.default_rng(5), 1, DIM)[0]))


def test_snapshot_round_trip_in_memory_store():
    _round_trip(MemoryBlobStore())


def test_snapshot_round_trip_in_a_directory(tmp_path):
    _round_trip(FileBlobStore(tmp_path))


def test_a_damaged_snapshot_falls_back_to_the_previous_one_and_old_ones_are_pruned():
    store = MemoryBlobStore()
    assert load_latest_snapshot(store, prefix="svc") is None
    mem, _ = _filled(300)
    first = write_snapshot(mem, store, prefix="svc", keep=2)
    mem.add(make_record("later", "t0", vector=unit(np.random.default_rng(3), 1, DIM)[0]))
    second = write_snapshot(mem, store, prefix="svc", keep=2)
    third = write_snapshot(mem, store, prefix="svc", keep=2)
    assert list_snapshots(store, prefix="svc") == [third.snapshot_id, second.snapshot_id]
    assert not store.list(f"svc/snapshots/{first.snapshot_id}/")
    # flip one byte of the newest index blob: its checksum fails, the older one is used
    name = f"svc/snapshots/{third.snapshot_id}/c0/index-0.bin"
    blob = bytearray(store.get_bytes(name))
    blob[len(blob) // 2] ^= 0xFF
    store.put_bytes(name, bytes(blob))
    restored = load_latest_snapshot(store, prefix="svc")
    assert restored.snapshot_id == second.snapshot_id and len(restored.memory) == 301
    # a tampered manifest fails its fingerprint
    mname = f"svc/snapshots/{second.snapshot_id}/manifest.json"
    manifest = json.loads(store.get_bytes(mname))
    manifest["offsets"]["updates/0"] = 0
    store.put_bytes(mname, json.dumps(manifest).encode())
    with pytest.raises(StateError, match="fingerprint"):
        load_latest_snapshot(store, prefix="svc")


def test_a_half_written_snapshot_is_invisible():
    store = MemoryBlobStore()
    mem, _ = _filled(200)
    good = write_snapshot(mem, store, prefix="svc")
    store.put_bytes("svc/snapshots/99999999T000000000000Z-dead/c0/rows.msgpack", b"partial")
    assert list_snapshots(store, prefix="svc") == [good.snapshot_id]
    assert load_latest_snapshot(store, prefix="svc").snapshot_id == good.snapshot_id


@pytest.mark.integration
def test_snapshot_round_trip_against_a_real_s3_server(s3_endpoint, unique_name):
    from minio import Minio

    client = Minio(s3_endpoint, access_key="x", secret_key="x", secure=False,
                   region="us-east-1")
    _round_trip(MinioBlobStore(client, unique_name))


def test_restore_takes_the_running_search_settings_but_refuses_other_dimensions():
    from dataclasses import replace

    store = MemoryBlobStore()
    mem, _ = _filled(1200)
    write_snapshot(mem, store, prefix="svc")
    spec = mem.config.vectors["vector"]
    cfg = replace(mem.config, vectors={"vector": replace(spec, nprobe=3)}, scope="global")
    restored = load_latest_snapshot(store, prefix="svc", config=cfg)
    assert restored.memory.config.scope == "global"
    assert restored.memory.uploads.indexes["vector"].spec.nprobe == 3
    bad = replace(cfg, vectors={"vector": replace(spec, dim=DIM * 2)})
    with pytest.raises(StateError, match="dimensions"):
        load_latest_snapshot(store, prefix="svc", config=bad)
