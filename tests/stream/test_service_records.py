"""The stream and the record store's write-behind: a commit never precedes the writes of the
records its events added; a flush that does not finish means no commit (and no reprocessing);
a full queue defers the event; a stop drains the writes within its grace; queue depth and write
failures are exported. Driven through the service's real loop, a real ``Memory`` and
``WriteBehind``, with the in-process Kafka fakes and a record store that journals its writes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from functools import partial

import numpy as np

from dupstream.core.errors import BlobUnavailable
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.state.records import ImageRecord, RecordKey
from dupstream.stream.service import StreamService
from tests.stream.fakes import (
    FakeConsumer,
    FakeDeduper,
    FakeProducer,
    FakeStore,
    Rig,
    drain,
    settled,
)

P0, P1 = ("in", 0), ("in", 1)
DIM = 4


class JournalStore:
    """A ``RecordStore`` that appends ("put", image_id) to the shared journal once a record is
    written; ``delay_s`` per write, ``down`` (transient failures), ``gate`` (held up)."""

    def __init__(self, journal: list, *, delay_s: float = 0.0) -> None:
        self.journal, self.delay_s = journal, delay_s
        self.data: dict[RecordKey, ImageRecord] = {}
        self.down = False
        self.failures = 0
        self.gate = threading.Event()
        self.gate.set()

    def put(self, rec: ImageRecord) -> None:
        assert self.gate.wait(10)
        time.sleep(self.delay_s)
        if self.down:
            self.failures += 1
            raise BlobUnavailable("fake: record store unavailable")
        self.data[rec.key] = rec
        self.journal.append(("put", rec.image_id))

    def get(self, key: RecordKey) -> ImageRecord | None:
        return self.data.get(key)


class AddingDeduper(FakeDeduper):
    """Every upload is unique and is added to a real ``Memory`` (as the engine does)."""

    def __init__(self, memory: Memory) -> None:
        super().__init__()
        self.memory = memory

    def process(self, uploads):
        out = []
        for up, verdict in zip(uploads, super().process(uploads), strict=True):
            seed = int.from_bytes(up.image_id.encode()[-4:].rjust(4, b"\0"), "little")
            vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            rec = ImageRecord(up.image_id, up.tenant, f"{seed:064x}",
                              np.zeros((1, 32), np.uint8),
                              arrays={"vector": vec / np.linalg.norm(vec)})
            self.memory.add(rec)
            out.append(verdict)
        return out


def make_rig(*, partitions: int = 2, delay_s: float = 0.0, batch_max: int = 4,
             memory_kw: dict | None = None, **kw) -> tuple[Rig, JournalStore, Memory]:
    journal: list = []
    consumer = FakeConsumer("in", partitions, journal=journal)
    producer = FakeProducer(journal=journal)
    records = JournalStore(journal, delay_s=delay_s)
    memory = Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind="flat")},
                                 **(memory_kw or {})), replica_id="r", record_store=records)
    memory.records.writes.retry_min_s = memory.records.writes.retry_max_s = 0.01
    deduper = AddingDeduper(memory)
    service = StreamService(
        consumer_conf={}, producer_conf={}, input_topic="in", output_topic="verdicts",
        dlq_topic="dlq", store=FakeStore(), deduper=deduper, batch_max=batch_max,
        batch_wait_s=0.0, fetch_workers=2, consumer_factory=lambda _conf: consumer,
        producer_factory=lambda _conf: producer, records=memory.records.writes, **kw)
    service.deferrals.backoff = lambda attempts: 0.0
    return Rig(consumer, producer, service.store, deduper, service), records, memory


#: record writes go through writer threads: the loop may need longer than the rules' default
drain = partial(drain, timeout=10.0)


def assert_commits_follow_record_writes(rig: Rig) -> int:
    """Every commit covers only events whose records were in the record store before it.
    Returns the number of commits checked."""
    by_pos = {pos: image_id for image_id, pos in rig.images.items()}
    written: set[str] = set()
    commits = 0
    for entry in rig.consumer.journal:
        if entry[0] == "put":
            written.add(entry[1])
        elif entry[0] == "commit":
            commits += 1
            _, (_, partition), off = entry
            covered = {by_pos[(partition, o)] for o in range(off) if (partition, o) in by_pos}
            assert covered <= written, (
                f"commit {partition}@{off} before the records of {sorted(covered - written)}")
    return commits


def test_a_commit_never_precedes_the_writes_of_the_records_its_events_added():
    rig, records, _ = make_rig(delay_s=0.01)  # every record write takes a while
    for i in range(12):
        rig.upload(f"img-{i}", partition=i % 2)
    rig.service.open()
    drain(rig, lambda: settled(rig))
    assert assert_commits_follow_record_writes(rig) >= 3
    assert {k[2] for k in records.data} == set(rig.images)
    assert rig.consumer.committed == {P0: 6, P1: 6}


def test_without_the_flush_the_same_run_would_commit_before_the_writes():
    """The rig can tell: with the records written behind but no flush before the commit, a
    commit overtakes a write (so the test above checks something)."""
    rig, records, _ = make_rig(delay_s=0.05)
    rig.service.records = None  # the hook off
    for i in range(4):
        rig.upload(f"img-{i}", partition=0)
    rig.service.open()
    drain(rig, lambda: settled(rig))
    try:
        assert_commits_follow_record_writes(rig)
    except AssertionError as exc:
        assert "before the records of" in str(exc)
    else:
        raise AssertionError("a commit should have overtaken a record write")
    rig.deduper.memory.flush_records(5)


def test_no_commit_while_the_records_are_not_written_and_no_reprocessing():
    rig, records, _ = make_rig(partitions=1, record_flush_s=0.1)
    records.down = True  # the record store is down (transient failures)
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.service.open()
    drain(rig, lambda: len(rig.verdicts()) == 3)
    for _ in range(3):
        rig.service.step()  # quiet turns: each tries to commit, each flush times out
    assert rig.consumer.committed == {}
    assert records.failures >= 1
    records.down = False  # back: the queued records are written, the next quiet turn commits
    drain(rig, lambda: settled(rig))
    assert rig.consumer.committed == {P0: 3}
    assert rig.consumer.seeks == []  # nothing rewound ...
    assert rig.deduper.processed == {k: 1 for k in rig.images}  # ... nor processed again
    assert sorted(rig.verdicts()) == sorted(rig.images)
    assert_commits_follow_record_writes(rig)
    failures = rig.service.metrics.record_write_failures.labels(kind="transient")._value.get()
    assert failures == records.failures
    assert rig.service.metrics.record_queue._value.get() == 0
    text = rig.service.metrics.render().decode()
    assert "dupstream_state_record_queue_depth_records" in text
    assert 'dupstream_state_record_write_failures_total{kind="transient"}' in text


def test_a_full_queue_while_the_store_is_down_defers_the_event_until_it_is_back():
    rig, records, memory = make_rig(partitions=1, record_flush_s=0.05,
                                    memory_kw={"record_queue_max_items": 1})
    records.down = True
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.service.open()
    drain(rig, lambda: len(rig.service.deferrals) == 2)  # img-1, img-2: no room in the queue
    assert ("in", 0, 1) in rig.service.deferrals._entries
    assert (None, None, "img-1") not in memory  # refused before it was indexed
    assert rig.consumer.committed == {}
    records.down = False
    drain(rig, lambda: settled(rig))
    assert {k[2] for k in records.data} == set(rig.images)
    assert sorted(set(rig.verdicts())) == sorted(rig.images) and rig.dead_letters() == []
    assert rig.consumer.seeks == []
    assert_commits_follow_record_writes(rig)


def test_a_stop_drains_the_record_writes_within_its_grace():
    rig, records, memory = make_rig(partitions=1, delay_s=0.02, stop_grace_s=2.0)
    for i in range(6):
        rig.upload(f"img-{i}")
    runner = threading.Thread(target=rig.service.run)
    runner.start()
    deadline = time.monotonic() + 5
    while len(rig.verdicts()) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    rig.service.stop()
    runner.join(5)
    assert not runner.is_alive()
    assert len(memory.records.writes) == 0 and len(records.data) == 6
    assert rig.consumer.committed == {P0: 6}
    assert_commits_follow_record_writes(rig)


def test_a_stop_does_not_wait_past_its_grace_for_a_hung_record_store():
    rig, records, memory = make_rig(partitions=1, stop_grace_s=0.3, record_flush_s=0.05)
    records.gate.clear()  # S3 hangs on every write
    for i in range(2):
        rig.upload(f"img-{i}")
    rig.service.open()
    drain(rig, lambda: len(rig.verdicts()) == 2)
    rig.service.record_flush_s = 30.0  # only the stop's grace limits the waits now
    rig.service.stop()
    t0 = time.monotonic()
    rig.service.commit()
    rig.service.close()
    assert time.monotonic() - t0 < 2.0
    assert rig.consumer.committed == {}  # the next owner replays them (and writes the records)
    records.gate.set()


def test_replayed_events_write_their_records_again():
    """A batch read again (the records of the first pass never written, e.g. the process was
    killed) writes the records again: their keys are present, yet they are queued."""
    rig, records, memory = make_rig(partitions=1)
    for i in range(2):
        rig.upload(f"img-{i}")
    rig.service.open()
    drain(rig, lambda: settled(rig))
    puts = Counter(e[1] for e in rig.consumer.journal if e[0] == "put")
    records.data.clear()
    # as if the process had died before its commit: the partition is read again from the start
    rig.consumer.committed = {}
    rig.consumer.position[P0] = 0
    rig.service.checkpoint.forget({P0})
    drain(rig, lambda: len(records.data) == 2 and settled(rig))
    again = Counter(e[1] for e in rig.consumer.journal if e[0] == "put")
    assert all(again[k] == puts[k] + 1 for k in rig.images)
    assert rig.deduper.processed == {k: 2 for k in rig.images}


def test_a_revoke_while_the_records_are_not_written_commits_none_of_them_and_waits_once():
    rig, records, _ = make_rig(partitions=2, record_flush_s=0.3)
    records.down = True
    for i in range(4):
        rig.upload(f"img-{i}", partition=i % 2)
    rig.service.open()
    drain(rig, lambda: len(rig.verdicts()) == 4)
    took: list[float] = []

    def revoke() -> None:
        t0 = time.monotonic()
        rig.consumer.revoke([P0])
        took.append(time.monotonic() - t0)

    rig.consumer.before_consume.append(revoke)
    rig.service.step()
    assert took and took[0] < 0.9  # one flush timeout, not one per commit attempt
    assert rig.consumer.committed == {}  # the next owner of P0 replays (and writes the records)
    records.down = False
    drain(rig, lambda: rig.consumer.committed.get(P1) == 2)
    assert P0 not in rig.consumer.committed
    assert_commits_follow_record_writes(rig)
