"""Freed heap memory handed back to the OS: at most once per interval, between batches and after
each snapshot; the real glibc ``malloc_trim`` releases freed pages of this process."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from dupstream.stream.heap import HeapTrimmer, _glibc_trim
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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_trims_at_most_once_per_interval_and_when_forced():
    clock, calls = Clock(), []
    heap = HeapTrimmer(interval_s=30.0, trim=lambda: calls.append(clock.now), clock=clock)
    assert not heap.maybe_trim()  # nothing since it was made
    clock.now = 29.9
    assert not heap.maybe_trim()
    clock.now = 30.0
    assert heap.maybe_trim() and not heap.maybe_trim()
    clock.now = 31.0
    assert heap.maybe_trim(force=True)  # after a snapshot: at once
    assert calls == [30.0, 31.0] and heap.trims == 2


def test_an_interval_of_zero_never_trims():
    calls = []
    heap = HeapTrimmer(interval_s=0.0, trim=lambda: calls.append(1))
    assert not heap.enabled
    assert not heap.maybe_trim(force=True) and calls == []


def _rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_glibc_trim_hands_freed_heap_pages_back():
    trim = _glibc_trim()
    if trim is None:
        pytest.skip("not glibc")
    keep = []

    def churn() -> None:  # 64 MiB of small blocks on a thread's arena, every 64th kept
        blocks = [bytearray(16384) for _ in range(4096)]
        keep.extend(blocks[::64])

    t = threading.Thread(target=churn)
    t.start()
    t.join()
    trim()  # what earlier tests left free
    before = _rss_kb()
    t = threading.Thread(target=churn)
    t.start()
    t.join()
    held = _rss_kb()
    trim()
    after = _rss_kb()
    # the freed blocks stay resident (pinned by the kept ones) until the trim hands them back
    assert held - before > 32 * 1024
    assert held - after > 32 * 1024


def _rig(heap: HeapTrimmer, **kw) -> Rig:
    consumer, producer = FakeConsumer("in", 1), FakeProducer()
    store, deduper = FakeStore(), FakeDeduper()
    service = StreamService(
        consumer_conf={}, producer_conf={}, input_topic="in", output_topic="verdicts",
        dlq_topic="dlq", store=store, deduper=deduper, batch_max=2, batch_wait_s=0.0,
        fetch_workers=2, consumer_factory=lambda _conf: consumer,
        producer_factory=lambda _conf: producer, heap=heap, **kw)
    return Rig(consumer, producer, store, deduper, service)


def test_the_loop_trims_between_batches_within_the_interval():
    clock, calls = Clock(), []
    rig = _rig(HeapTrimmer(interval_s=10.0, trim=lambda: calls.append(clock.now), clock=clock))
    for i in range(6):
        rig.upload(f"img-{i}")
    rig.service.open()
    rig.service.step()
    assert calls == []  # within the interval
    clock.now = 10.0
    drain(rig, lambda: settled(rig))
    assert calls == [10.0]  # once, however many steps ran in the interval
    clock.now = 20.0
    rig.service.step()
    assert calls == [10.0, 20.0]


def test_a_written_snapshot_is_followed_by_a_trim():
    calls, written = [], threading.Event()

    def snapshot(*, force: bool = False) -> str:
        written.set()
        return "snap-1"

    heap = HeapTrimmer(interval_s=3600.0, trim=lambda: calls.append(1))
    rig = _rig(heap, snapshotter=SimpleNamespace(interval_s=0.01, maybe_snapshot=snapshot))
    rig.service._snapshots.tick_s = 0.01
    rig.service.open()
    assert written.wait(2)
    deadline = time.monotonic() + 2
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    rig.service.close()
    assert calls  # forced after the snapshot, though the interval had not passed
