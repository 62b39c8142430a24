"""The stream service's at-least-once rules, driven through its real loop with in-process fakes
of the Kafka consumer/producer, object storage and the engine (no broker, milliseconds): commit
only after acknowledgement, rewind on a failed delivery (one deadline), a deferred offset holding
back the commit while its successors keep their results, commits reaching the end when quiet,
revoke finishing the work in hand, on_lost dropping in-flight work, a stop request honoured while
events wait on transient retries, snapshots never blocking the loop."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from dupstream.stream.service import StreamService, deadline_from_poll_interval
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
    service.deferrals.backoff = lambda attempts: 0.0  # retry deferred events at once
    return Rig(consumer, producer, store, deduper, service)


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


def test_a_delivery_not_acknowledged_within_the_deadline_rewinds_the_batch():
    rig = make_rig(partitions=1, delivery_deadline_s=0.05)
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.service.open()
    rig.service.step()  # polled: the batch is ahead, fetching
    rig.producer.down = True  # the broker acknowledges nothing
    t0 = time.monotonic()
    rig.service.step()
    assert time.monotonic() - t0 < 1.0  # one deadline, not a retry loop without end
    assert rig.consumer.committed == {}
    assert rig.consumer.seeks == [(P0, 0)]  # read again from the first unacknowledged event
    assert rig.service.checkpoint.outstanding(P0) == 0
    rig.producer.down = False
    drain(rig, lambda: settled(rig))
    assert set(rig.verdicts()) == set(rig.images)
    assert rig.deduper.processed["img-0"] == 2  # processed again after the rewind
    assert_commits_follow_acks(rig)


def test_a_failed_record_is_produced_again_within_the_deadline():
    rig = make_rig(partitions=1, delivery_deadline_s=5.0)
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.producer.fail_next = 2
    rig.service.open()
    drain(rig, lambda: settled(rig))
    assert sorted(rig.verdicts()) == sorted(rig.images)  # each exactly once
    assert rig.consumer.seeks == []
    assert rig.deduper.processed == {k: 1 for k in rig.images}


def test_the_delivery_deadline_derives_from_max_poll_interval():
    assert deadline_from_poll_interval({"max.poll.interval.ms": 60000}) == 30.0
    assert deadline_from_poll_interval({}) == 150.0
    rig = make_rig()
    assert rig.service._producer_conf["delivery.timeout.ms"] == 150000


def test_a_stop_request_gives_up_on_an_unacknowledged_delivery_within_its_grace():
    rig = make_rig(partitions=1, stop_grace_s=0.1)
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.service.open()
    rig.service.step()
    rig.producer.down = True
    rig.service.stop()
    t0 = time.monotonic()
    rig.service.step()
    assert time.monotonic() - t0 < 1.0
    assert rig.consumer.committed == {}  # the next owner replays the batch


def test_a_deferred_offset_holds_back_the_commit_until_it_resolves():
    rig = make_rig(partitions=1)
    for i in range(4):
        rig.upload(f"img-{i}")
    rig.store.transient["img-1.jpg"] = 2  # S3 fails twice for this blob, then serves it
    rig.service.open()
    drain(rig, lambda: settled(rig))
    assert rig.store.gets["img-1.jpg"] == 3
    # no commit ever passed offset 1 before img-1's verdict was acknowledged ...
    assert_commits_follow_acks(rig)
    assert {P0: 1} in rig.consumer.commits  # ... while its successors were committed up to it
    assert rig.consumer.committed == {P0: 4}
    # only the deferred event was retried: its successors were processed and published once
    assert rig.deduper.processed == {k: 1 for k in rig.images}
    assert sorted(rig.verdicts()) == sorted(rig.images)
    assert rig.consumer.seeks == []
    assert rig.store.gets["img-2.jpg"] == rig.store.gets["img-3.jpg"] == 1


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


def test_a_partition_holding_as_many_deferred_events_as_allowed_is_paused():
    rig = make_rig(partitions=2, max_deferred=2)
    for i in range(6):
        rig.upload(f"img-{i}", partition=i % 2)  # P0: img-0, 2, 4
    for i in (0, 2):
        rig.store.transient[f"img-{i}.jpg"] = 10**6
    rig.service.open()
    drain(rig, lambda: len(rig.service.deferrals) == 2)
    assert rig.consumer.paused == {P0}
    drain(rig, lambda: rig.consumer.committed.get(P1) == 3)  # the other partition flows
    assert rig.consumer.committed.get(P0, 0) == 0
    for i in (0, 2):
        rig.store.transient[f"img-{i}.jpg"] = 0  # S3 is back
    drain(rig, lambda: settled(rig))
    assert rig.consumer.paused == set()
    assert sorted(rig.verdicts()) == sorted(rig.images)


def test_commits_reach_the_end_of_every_partition_once_the_stream_is_quiet():
    rig = make_rig(partitions=2)
    for i in range(6):
        rig.upload(f"img-{i}", partition=i % 2)
    rig.service.open()
    rig.consumer.fail_commits = 10**6  # the broker refuses commits for a while
    drain(rig, lambda: len(rig.verdicts()) == 6)
    assert rig.consumer.committed == {}
    rig.consumer.fail_commits = 0
    rig.service.step()  # quiet: nothing polled, nothing in hand
    assert rig.consumer.committed == {P0: 3, P1: 3}
    n = len(rig.consumer.commits)
    rig.service.step()
    assert len(rig.consumer.commits) == n  # nothing moved: no more commits


def test_stop_is_honoured_while_events_wait_on_transient_retries():
    rig = make_rig(partitions=1)
    for i in range(3):
        rig.upload(f"img-{i}")
    rig.store.transient["img-0.jpg"] = 10**6  # S3 keeps failing for this blob
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(rig.service.run()))
    runner.start()
    deadline = time.monotonic() + 5
    while rig.store.gets["img-0.jpg"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    rig.service.stop()
    runner.join(5)
    assert not runner.is_alive() and time.monotonic() - t0 < 1.0
    assert result == [2]  # img-1 and img-2 were published
    assert rig.consumer.committed.get(P0, 0) == 0  # never past the deferred event
    assert rig.consumer.closed


def test_snapshots_run_beside_the_loop_never_inside_it():
    started, release = threading.Event(), threading.Event()

    def slow_snapshot(*, force: bool = False) -> None:
        started.set()
        release.wait(5)  # a snapshot that takes a while (S3 slow)

    snapshotter = SimpleNamespace(interval_s=0.01, maybe_snapshot=slow_snapshot)
    rig = make_rig(partitions=1, snapshotter=snapshotter)
    rig.service._snapshots.tick_s = 0.01
    for i in range(4):
        rig.upload(f"img-{i}")
    rig.service.open()
    assert started.wait(2)
    t0 = time.monotonic()
    drain(rig, lambda: settled(rig))  # while the snapshot is being written
    assert time.monotonic() - t0 < 1.0
    release.set()
    rig.service.close()


def test_stop_is_honoured_while_the_index_feed_catches_up():
    class SlowFeed:  # a long catch-up (a large feed to replay)
        caught_up = False

        def start(self, *, stopped) -> int:
            deadline = time.monotonic() + 30
            while not stopped() and time.monotonic() < deadline:
                time.sleep(0.01)
            return 0

        def poll(self) -> list:
            return []

        def close(self) -> None:
            pass

    rig = make_rig(partitions=1, feed=SlowFeed())
    rig.upload("img-0")
    runner = threading.Thread(target=rig.service.run)
    runner.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    rig.service.stop()
    runner.join(5)
    assert not runner.is_alive() and time.monotonic() - t0 < 1.0
    assert rig.verdicts() == [] and rig.consumer.committed == {}


def test_a_stop_request_does_not_wait_past_its_grace_for_the_final_snapshot():
    calls: list[bool] = []
    release = threading.Event()

    def snapshot(*, force: bool = False) -> None:
        calls.append(force)
        if force:
            release.wait(10)  # S3 hangs on the final snapshot

    snapshotter = SimpleNamespace(interval_s=60.0, maybe_snapshot=snapshot)
    rig = make_rig(partitions=1, snapshotter=snapshotter, stop_grace_s=0.2)
    rig.service._snapshots.tick_s = 0.01
    rig.upload("img-0")
    rig.service.open()
    drain(rig, lambda: settled(rig))
    rig.service.stop()
    t0 = time.monotonic()
    rig.service.close()
    assert time.monotonic() - t0 < 1.0
    assert True in calls  # the final snapshot was attempted
    release.set()


def test_a_weights_fault_at_run_time_stops_the_service_instead_of_dead_lettering():
    import pytest

    from dupstream.core.errors import WeightsError

    rig = make_rig(partitions=1)
    rig.upload("img-0")
    rig.upload("img-1")
    rig.deduper.raises["img-1"] = WeightsError("detector weights sha256 mismatch")
    rig.service.warm_up()  # what run() does first: the engine's full warm-up
    assert rig.deduper.warmed == 1 and rig.service.readiness()[1]["models_warm"] is True
    rig.service.open()
    with pytest.raises(WeightsError):
        drain(rig, lambda: False)
    assert rig.dead_letters() == []  # a deployment fault is not the image's fault
    # nothing of the failing batch is committed: a fixed deployment replays it
    assert rig.consumer.committed.get(P0, 0) == 0


def test_a_deferred_event_due_as_its_partition_is_revoked_is_left_to_the_next_owner():
    """A retry taken out of the deferrals just before a poll that revokes its partition is not
    run: the next owner reads the event again from the committed offset, so running it here
    would only publish its output twice (the fault-injection test saw a dead letter twice)."""
    rig = make_rig()
    rig.upload("img-0", partition=0)
    rig.upload("img-1", partition=1)
    rig.store.transient["img-0.jpg"] = 1  # S3 fails once for this blob
    rig.service.open()
    rig.service.step()  # the batch is ahead
    rig.service.step()  # finished: img-1 published, img-0 deferred
    assert rig.verdicts() == ["img-1"] and rig.service.deferrals
    rig.consumer.before_consume.append(lambda: rig.consumer.revoke([P0]))
    for _ in range(3):
        rig.service.step()
    assert rig.verdicts() == ["img-1"]  # img-0 is the next owner's
    assert rig.store.gets["img-0.jpg"] == 1 and rig.deduper.processed.get("img-0", 0) == 0
    assert not rig.service.deferrals and P0 not in rig.service.partitions.assigned
    assert P0 not in rig.consumer.committed  # its offset stays where the next owner starts


def test_features_are_extracted_ahead_and_handed_to_the_engine():
    """Every batch's features are extracted ahead of its judging (``Deduper.extract_ahead``) and
    given to ``process``; off (``extract_ahead=False``) the engine extracts them itself - the
    same verdicts, the same commits."""
    for on in (True, False):
        rig = make_rig(extract_ahead=on)
        for i in range(10):
            rig.upload(f"img-{i}", partition=i % 2)
        rig.service.open()
        drain(rig, lambda rig=rig: settled(rig))
        assert sorted(set(rig.verdicts())) == sorted(rig.images)
        assert rig.consumer.committed == {P0: 5, P1: 5}
        assert_commits_follow_acks(rig)
        # ahead, unless ``infer`` took a batch before its last fetch's callback had run
        assert rig.deduper.given_ahead == rig.deduper.ahead
        assert (rig.deduper.ahead > 0) == on
        rig.service.close()


def test_a_weights_fault_while_extracting_ahead_stops_the_service():
    import pytest

    from dupstream.core.errors import WeightsError

    rig = make_rig()
    rig.upload("img-0", partition=0)

    def broken(uploads):
        raise WeightsError("weights missing (test)")

    rig.deduper.extract_ahead = broken
    rig.service.open()
    with pytest.raises(WeightsError):
        drain(rig, lambda: settled(rig))
    assert rig.dead_letters() == [] and rig.consumer.committed.get(P0, 0) == 0
