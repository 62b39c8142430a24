"""Deferral of transiently failing events on its own: retried after a backoff, given up (with
the total attempts) once the budget is spent, a cap per partition, dropped with its partition.
A fake clock; no broker."""

from __future__ import annotations

from dupstream.core.errors import BlobNotFound, BlobUnavailable
from dupstream.stream.deferral import Deferrals, backoff_s
from dupstream.stream.pipeline import Item
from tests.stream.fakes import FakeMessage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def item(offset: int, error=None, partition: int = 0) -> Item:
    return Item(FakeMessage("in", partition, offset, b"k", b"v"), error=error)


def test_only_transient_failures_are_deferred_and_retried_after_their_backoff():
    clock = Clock()
    d: Deferrals[Item] = Deferrals(budget_s=60, cap=10, clock=clock)
    ok, missing, down = item(0), item(1, BlobNotFound("x")), item(2, BlobUnavailable("x"))
    assert d.settle([ok, missing, down]) == [down]
    assert d.due() == []  # not before the backoff
    clock.now += backoff_s(1)
    assert d.due() == [down]
    assert d.due() == []  # in flight: not handed out twice
    down.reset()  # the retry succeeded
    assert d.settle([down]) == [] and len(d) == 0


def test_past_its_budget_a_transient_failure_is_final_with_every_attempt_counted():
    clock = Clock()
    d: Deferrals[Item] = Deferrals(budget_s=10, cap=10, clock=clock)
    it = item(0, BlobUnavailable("x", attempts=3))
    assert d.settle([it]) == [it]
    clock.now += 11
    retry = d.due()[0]
    retry.reset()
    retry.error = BlobUnavailable("x", attempts=3)
    assert d.settle([retry]) == []  # final: goes to the dead-letter topic
    assert retry.error.attempts == 6 and len(d) == 0


def test_a_partition_at_the_cap_is_full_and_drop_forgets_its_events():
    d: Deferrals[Item] = Deferrals(budget_s=60, cap=2, clock=Clock())
    d.settle([item(0, BlobUnavailable("x")), item(1, BlobUnavailable("x")),
              item(0, BlobUnavailable("x"), partition=1)])
    assert d.full() == {("in", 0)}
    assert len(d.drop({("in", 0)})) == 2
    assert d.full() == set() and len(d) == 1
