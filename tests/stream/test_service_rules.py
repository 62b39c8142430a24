"""The stream service's at-least-once rules, driven through its real loop with in-process fakes
of the Kafka consumer/producer, object storage and the engine (no broker, milliseconds): commit
only after acknowledgement, rewind on a failed delivery, a deferred offset holding back the
commit, revoke finishing the work in hand, on_lost dropping in-flight work."""

from __future__ import annotations

import time

import pytest

from dupstream.core.errors import DeliveryError
from dupstream.stream.service import StreamService
from tests.stream.fakes import FakeConsumer, FakeDeduper, FakeProducer, FakeStore, Rig

P0, P1 = ("in", 0), ("in", 1)


def make_rig(*, partitions: int = 2, batch_max: int = 4, **kw) -> Rig:
    journal: list = []
    consumer = FakeConsumer("in", partitions, journal=journal)
    producer = FakeProducer(journal=journal)
    store, deduper = FakeStore(), FakeDeduper()
    service = StreamService(
        consumer_conf={}, producer_conf={}, input_topic="in", output_topic="verdicts",
        dlq_topic="dlq", store=store, deduper=deduper, batch_max=batch_max, batch_wait_s=0.0,
        fetch_workers=2, consumer_factory=lambda _conf: consumer,
        producer_factory=lambda _conf: producer, **kw)
    return Rig(consumer, producer, store, deduper, service)


def drain(rig: Rig, until, *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        rig.service.step()


def settled(rig: Rig) -> bool:
    c = rig.consumer
    return all(c.committed.get(p, 0) == c.end(p) for p in c.log)


def assert_commits_follow_acks(rig: Rig) -> None:
    """Every commit covers only messages whose output the broker had acknowledged before it."""
    by_pos = {pos: image_id for image_id, pos in rig.images.items()}
    acked: set[str] = set()
    for entry in rig.consumer.journal:
        if entry[0] == "ack":
            acked.add(entry[2].decode())
            continue
        _, (_, partition), off = entry
        covered = {by_pos[(partition, o)] for o in range(off) if (partition, o) in by_pos}
        assert covered <= acked, f"commit {partition}@{off} before the ack of {covered - acked}"


def test_offsets_are_committed_only_after_the_outputs_are_acknowledged():
    rig = make_rig()
    for i in range(10):
        rig.upload(f"img-{i}", partition=i % 2)
    rig.producer.fail_next = 3  # the first deliveries fail: retried, then acknowledged
    rig.service.open()
    drain(rig, lambda: settled(rig))
    assert sorted(set(rig.verdicts())) == sorted(rig.images)
    assert rig.consumer.committed == {P0: 5, P1: 5}
    assert_commits_follow_acks(rig)


def test_a_failed_delivery_rewinds_and_commits_nothing_of_the_batch():
    rig = make_rig(partitions=1)
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.service.open()
    rig.service.step()  # polled: the batch is ahead, fetching
    rig.producer.down = True  # the broker takes nothing
    rig.service.stop()
    with pytest.raises(DeliveryError):
        rig.service.step()
    assert rig.consumer.committed == {}
    assert rig.consumer.seeks == [(P0, 0)]  # read again from the first unacknowledged event
    assert rig.consumer.position[P0] == 0


def test_a_deferred_offset_holds_back_the_commit_until_it_resolves():
    rig = make_rig(partitions=1)
    for i in range(4):
        rig.upload(f"img-{i}")
    rig.store.transient["img-1.jpg"] = 2  # S3 fails twice for this blob, then serves it
    rig.service.open()
    drain(rig, lambda: settled(rig))
    assert rig.store.gets["img-1.jpg"] == 3
    # no commit ever passed offset 1 before img-1's verdict was acknowledged
    assert_commits_follow_acks(rig)
    assert rig.consumer.committed == {P0: 4}
    assert set(rig.verdicts()) == set(rig.images)


def test_a_transient_failure_past_its_budget_is_dead_lettered_with_its_attempts():
    rig = make_rig(partitions=1, transient_budget_s=0.0)
    rig.upload("img-0")
    rig.store.transient["img-0.jpg"] = 99
    rig.service.open()
    drain(rig, lambda: settled(rig))
    (_, _, headers), = rig.producer.topics["dlq"]
    assert headers["dupstream.reason"] == b"blob_unavailable"
    assert rig.verdicts() == []


def test_revoke_finishes_and_commits_the_work_in_hand():
    rig = make_rig()
    for i in range(4):
        rig.upload(f"img-{i}", partition=i % 2)
    rig.service.open()
    rig.service.step()  # the batch is ahead
    rig.consumer.before_consume.append(lambda: rig.consumer.revoke([P0]))
    rig.service.step()
    assert set(rig.verdicts()) == set(rig.images)
    assert rig.consumer.committed[P0] == 2
    assert P0 not in rig.service.partitions.assigned
    assert_commits_follow_acks(rig)


def test_on_lost_drops_in_flight_work_and_commits_nothing_of_it():
    rig = make_rig()
    for i in range(4):
        rig.upload(f"img-{i}", partition=i % 2)  # img-0, img-2 on P0; img-1, img-3 on P1
    rig.service.open()
    rig.service.step()  # the batch (both partitions) is ahead
    rig.consumer.before_consume.append(lambda: rig.consumer.lose([P0]))
    rig.service.step()
    drain(rig, lambda: rig.consumer.committed.get(P1) == 2)
    assert sorted(rig.verdicts()) == ["img-1", "img-3"]  # P0's events were not published
    assert P0 not in rig.consumer.committed
    assert rig.service.checkpoint.outstanding(P0) == 0
    assert P0 not in rig.service.partitions.assigned
