"""The record store's write-behind: ``Memory.add`` queues, writer threads write off the lock,
the queue is bounded, ``flush`` waits or says why not, queued records are readable, transient
failures are retried and permanent ones dropped, replays are written again, stop drains. Unit
tests use an in-process record store that can be held up or made to fail; the last test writes
through the real S3 (moto) server."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from dupstream.core.errors import (
    BlobAccessDenied,
    BlobUnavailable,
    RecordBacklog,
    RecordFlushTimeout,
)
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.state.records import BlobRecordStore, ImageRecord, RecordKey
from dupstream.state.writebehind import WriteBehind
from tests.state.helpers import make_record, unit

DIM = 8


class GatedStore:
    """A ``RecordStore`` in a dict whose ``put`` waits while ``gate`` is closed and fails
    ``fail[image_id]`` times (with ``error``) before it succeeds."""

    def __init__(self) -> None:
        self.data: dict[RecordKey, ImageRecord] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.puts: Counter[str] = Counter()
        self.gets = 0
        self.fail: Counter[str] = Counter()
        self.error: Exception = BlobUnavailable("fake: S3 unavailable")
        self.in_put = threading.Event()

    def put(self, rec: ImageRecord) -> None:
        self.in_put.set()
        assert self.gate.wait(10), "test store held too long"
        self.puts[rec.image_id] += 1
        if self.fail[rec.image_id] > 0:
            self.fail[rec.image_id] -= 1
            raise self.error
        self.data[rec.key] = rec

    def get(self, key: RecordKey) -> ImageRecord | None:
        self.gets += 1
        return self.data.get(key)


def _memory(store, **kw) -> Memory:
    config = MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind="flat")}, **kw)
    return Memory(config, replica_id="r", record_store=store)


def _records(n: int, seed: int = 0, prefix: str = "img") -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    return [make_record(f"{prefix}-{i}", "t", vector=unit(rng, 1, DIM)[0]) for i in range(n)]


def test_add_queues_and_never_waits_on_the_store_under_the_lock():
    store = GatedStore()
    store.gate.clear()  # S3 hangs
    mem = _memory(store)
    a, b = _records(2)
    t0 = time.monotonic()
    assert mem.add(a) and mem.add(b)
    assert store.in_put.wait(2)  # a writer is inside put, held up ...
    assert time.monotonic() - t0 < 1.0  # ... while add returned at once
    got: list = []
    lookup = threading.Thread(target=lambda: got.append(mem.candidates(a, k=2)))
    lookup.start()
    lookup.join(2)
    assert not lookup.is_alive() and got  # the memory's lock is free meanwhile
    assert store.data == {}
    store.gate.set()
    mem.flush_records(5)
    assert set(store.data) == {a.key, b.key}
    assert len(mem.records.writes) == 0
    assert mem.stats()["records"]["writes"]["written"] == 2


def test_a_queued_record_is_read_from_the_queue():
    store = GatedStore()
    store.gate.clear()
    mem = _memory(store, records_max_items=1)  # the LRU keeps one record
    a, b = _records(2)
    mem.add(a)
    mem.add(b)  # a leaves the LRU; its write is still queued
    assert mem.records.peek(a.key) is None
    got = mem.record(a.key)
    assert got is a
    assert store.gets == 0  # not asked: the queue had it
    assert mem.records.stats.queued == 1 and mem.records.stats.lost == 0
    store.gate.set()
    mem.flush_records(5)


def test_the_queue_is_bounded_and_add_waits_outside_the_lock_then_gives_up():
    store = GatedStore()
    store.gate.clear()
    mem = _memory(store, record_queue_max_items=2, record_queue_wait_s=0.3, record_writers=1)
    recs = _records(4)
    assert mem.add(recs[0]) and mem.add(recs[1])
    assert store.in_put.wait(2)
    t0 = time.monotonic()
    with pytest.raises(RecordBacklog) as err:
        mem.add(recs[2])
    waited = time.monotonic() - t0
    assert 0.25 <= waited < 2.0
    assert err.value.transient and err.value.reason == "record_backlog"
    assert recs[2].key not in mem  # refused before it was indexed: a retry adds it
    # a waiting add holds no lock: lookups go on, and it proceeds once the writer makes room
    mem.records.writes.wait_s = 10.0
    done = threading.Event()
    adder = threading.Thread(target=lambda: (mem.add(recs[3]), done.set()))
    adder.start()
    time.sleep(0.2)
    assert not done.is_set()
    assert mem.candidates(recs[0], k=1) is not None
    store.gate.set()
    assert done.wait(5)
    adder.join()
    mem.flush_records(5)
    assert recs[3].key in store.data and len(mem.records.writes) == 0


def test_the_queue_is_bounded_by_bytes_too():
    store = GatedStore()
    store.gate.clear()
    recs = _records(3)
    size = recs[0].nbytes()
    mem = _memory(store, record_queue_max_bytes=int(1.5 * size), record_queue_wait_s=0.1)
    mem.add(recs[0])
    with pytest.raises(RecordBacklog):
        mem.add(recs[1])
    assert mem.records.writes.nbytes == size
    store.gate.set()
    mem.flush_records(5)
    assert mem.add(recs[1])  # room again
    mem.flush_records(5)


def test_flush_raises_a_clear_error_when_the_records_are_not_written_in_time():
    store = GatedStore()
    store.gate.clear()
    mem = _memory(store)
    for r in _records(3):
        mem.add(r)
    t0 = time.monotonic()
    with pytest.raises(RecordFlushTimeout) as err:
        mem.flush_records(0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0
    assert "3 record(s) not written to the record store within 0.3s" in str(err.value)
    assert err.value.reason == "record_flush_timeout" and err.value.transient
    store.gate.set()
    mem.flush_records(5)  # still queued: written once the store answers
    assert len(store.data) == 3


def test_flush_gives_up_at_an_earlier_stop_time():
    store = GatedStore()
    store.gate.clear()
    mem = _memory(store)
    mem.add(_records(1)[0])
    stop_at = time.monotonic() + 0.2
    t0 = time.monotonic()
    with pytest.raises(RecordFlushTimeout):
        mem.flush_records(30, until=lambda: stop_at)
    assert time.monotonic() - t0 < 1.0
    store.gate.set()


def test_transient_failures_are_retried_and_permanent_ones_dropped():
    store = GatedStore()
    mem = _memory(store)
    writes = mem.records.writes
    writes.retry_min_s = 0.01
    a, b, c = _records(3)
    store.fail[a.image_id] = 3  # S3 briefly down: three failures, then it works
    mem.add(a)
    mem.flush_records(5)
    assert store.puts[a.image_id] == 4 and a.key in store.data
    assert writes.stats.retried == 3 and writes.last_error is None
    store.error = BlobAccessDenied("fake: access denied")  # permanent: retrying cannot help
    store.fail[b.image_id] = 1
    mem.add(b)
    mem.add(c)
    mem.flush_records(5)  # does not wait for a write that will never succeed
    assert store.puts[b.image_id] == 1 and b.key not in store.data and c.key in store.data
    assert writes.stats.dropped == 1
    assert mem.record(b.key) is b  # still held in the LRU (and carried by the feed)


def test_a_full_queue_refuses_at_once_while_the_store_is_failing():
    store = GatedStore()
    mem = _memory(store, record_queue_max_items=1, record_queue_wait_s=5.0, record_writers=1)
    mem.records.writes.retry_min_s = 2.0
    a, b = _records(2)
    store.fail[a.image_id] = 10**6
    mem.add(a)
    deadline = time.monotonic() + 2
    while not mem.records.writes.failing:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(RecordBacklog, match="failing"):
        mem.add(b)
    assert time.monotonic() - t0 < 0.5  # no wait_s: the stream defers the event at once
    mem.records.writes.stop(0.1)


def test_a_replayed_add_writes_the_record_again():
    """A key already present (the event replayed after a kill or a failed flush) is not added
    again, but its record is written again: its first write may never have happened."""
    store = GatedStore()
    mem = _memory(store)
    a = _records(1)[0]
    assert mem.add(a)
    mem.flush_records(5)
    store.data.clear()  # as if the write had been lost with the process
    again = make_record(a.image_id, "t", vector=a.arrays["vector"])
    assert mem.add(again) is False
    mem.flush_records(5)
    assert store.data[a.key] is a  # the held record, not the replay's copy
    assert store.puts[a.image_id] == 2


def test_a_newer_queued_write_of_a_key_replaces_one_not_started():
    store = GatedStore()
    writes = WriteBehind(store, writers=1)
    store.gate.clear()
    first, blocker = _records(2)
    writes.submit(blocker)
    assert store.in_put.wait(2)  # the writer is busy with the blocker
    writes.submit(first)
    newer = make_record(first.image_id, "t", vector=first.arrays["vector"])
    writes.submit(newer)
    assert len(writes) == 3 - 1 and writes.get(first.key) is newer
    store.gate.set()
    writes.flush(5)
    assert store.data[first.key] is newer and store.puts[first.image_id] == 1
    assert writes.stats.superseded == 1


def test_stop_drains_within_its_timeout_and_keeps_what_it_could_not_write():
    store = GatedStore()
    writes = WriteBehind(store)
    for r in _records(5):
        writes.submit(r)
    assert writes.stop(5) is True and len(store.data) == 5
    store.gate.clear()
    stuck = _records(1, prefix="late")[0]
    writes.submit(stuck)  # starts writers again
    t0 = time.monotonic()
    assert writes.stop(0.2) is False
    assert time.monotonic() - t0 < 1.5
    assert writes.get(stuck.key) is stuck  # kept, not lost
    store.gate.set()
    writes.flush(5)  # a flush starts writers again
    assert stuck.key in store.data


def test_bounds_must_be_positive():
    from dupstream.core.errors import StateError

    with pytest.raises(StateError):
        WriteBehind(GatedStore(), max_items=0)


@pytest.mark.integration
def test_records_land_in_the_real_s3_server_after_a_flush(s3_endpoint, unique_name):
    from minio import Minio

    from dupstream.state.blobstore import MinioBlobStore

    client = Minio(s3_endpoint, access_key="x", secret_key="x", secure=False,
                   region="us-east-1")
    blobs = MinioBlobStore(client, unique_name)
    mem = _memory(BlobRecordStore(blobs, prefix="p"), record_writers=4)
    recs = _records(25)
    for r in recs:
        assert mem.add(r)
    mem.flush_records(30)
    assert len(mem.records.writes) == 0
    fresh = BlobRecordStore(MinioBlobStore(client, unique_name), prefix="p")  # another replica
    for r in recs:
        got = fresh.get(r.key)
        assert got is not None and got.digest == r.digest
        assert (got.arrays["vector"] == r.arrays["vector"]).all() and (got.pdq == r.pdq).all()
    assert len(blobs.list("p/records/")) == 25
    assert mem.records.writes.stop(5) is True
