"""The checkpoint rules on their own: commit only what was acknowledged, never past an
outstanding (deferred) offset, rewind to the first unacknowledged offset, forget lost partitions.
In-process fakes, no broker."""

from __future__ import annotations

from dupstream.stream.checkpoint import Checkpoint
from tests.stream.fakes import FakeConsumer

P0, P1 = ("in", 0), ("in", 1)


def _consumer(n: int = 5) -> tuple[FakeConsumer, list]:
    consumer = FakeConsumer("in", partitions=2)
    msgs = [consumer.append(0, b"k", b"v") for _ in range(n)]
    consumer.assign([P0, P1])
    return consumer, msgs


def test_nothing_is_committed_before_an_acknowledgement():
    consumer, msgs = _consumer()
    cp = Checkpoint()
    for m in msgs:
        cp.track(m)
    assert cp.commit(consumer) is False
    assert consumer.commits == []


def test_commit_covers_only_the_acknowledged_prefix():
    consumer, msgs = _consumer()
    cp = Checkpoint()
    for m in msgs:
        cp.track(m)
    cp.done(msgs[0])
    cp.done(msgs[1])
    cp.done(msgs[3])  # acknowledged, but 2 is not: the commit stops at 2
    assert cp.commit(consumer)
    assert consumer.committed == {P0: 2}
    cp.done(msgs[2])
    cp.commit(consumer)
    assert consumer.committed == {P0: 4}  # 4 is still outstanding
    cp.done(msgs[4])
    cp.commit(consumer)
    assert consumer.committed == {P0: 5}


def test_a_deferred_offset_holds_back_the_commit_while_its_successors_are_done():
    consumer, msgs = _consumer()
    cp = Checkpoint()
    for m in msgs:
        cp.track(m)
    for m in msgs[:1] + msgs[2:]:  # 1 is deferred (still outstanding)
        cp.done(m)
    cp.commit(consumer)
    assert consumer.committed == {P0: 1}
    assert cp.outstanding(P0) == 1
    cp.done(msgs[1])  # the deferred event resolved: the commit jumps past its successors
    cp.commit(consumer)
    assert consumer.committed == {P0: 5}


def test_commit_is_retried_after_a_failure_and_not_repeated_after_success():
    consumer, msgs = _consumer(2)
    cp = Checkpoint()
    for m in msgs:
        cp.track(m)
        cp.done(m)
    consumer.fail_commits = 1
    assert cp.commit(consumer) is False
    assert cp.pending() == {P0: 2}
    assert cp.commit(consumer) is True
    assert cp.commit(consumer) is False  # nothing moved: no second commit
    assert consumer.commits == [{P0: 2}]


def test_rewind_seeks_to_the_first_unacknowledged_offset_and_forgets_the_rest():
    consumer, msgs = _consumer()
    cp = Checkpoint()
    for m in msgs:
        cp.track(m)
    cp.done(msgs[0])
    cp.done(msgs[2])
    assert cp.rewind(consumer, {P0}) == {P0: 1}
    assert consumer.position[P0] == 1
    assert cp.outstanding(P0) == 0
    cp.done(msgs[3])  # a late acknowledgement of a rewound message counts for nothing
    assert cp.positions() == {P0: 1}
    for m in consumer.consume(10):  # read again from 1
        cp.track(m)
        cp.done(m)
    cp.commit(consumer)
    assert consumer.committed == {P0: 5}


def test_forgotten_partitions_are_never_committed():
    consumer, msgs = _consumer(3)
    other = consumer.append(1, b"k", b"v")
    cp = Checkpoint()
    for m in [*msgs, other]:
        cp.track(m)
        cp.done(m)
    cp.forget({P0})
    cp.done(msgs[2])
    cp.commit(consumer)
    assert consumer.committed == {P1: 1}
