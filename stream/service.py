"""The consumer loop: poll a micro-batch, fetch blobs, run the engine, publish, then commit.

At-least-once: an input offset is committed only after the verdict or dead-letter record of its
event (and the index updates it caused) is acknowledged by the broker. The loop is assembled from
small parts, each testable with in-process fakes of the Kafka clients (``ports``):

- ``consumer``: assigned/paused partitions and the rebalance callbacks (revoke: finish and commit
  the work in hand; lost: drop it);
- ``pipeline``: batch N+1 is polled and its blobs fetched while batch N is on the model;
- ``deferral``: an event that failed transiently is retried alone after a backoff, until a budget
  is spent (then dead-lettered); the events after it keep their results;
- ``publisher``: verdicts, dead letters and index updates, delivered under one deadline derived
  from ``max.poll.interval.ms`` (past it: rewind, the batch is read again);
- ``checkpoint``: the commit position of a partition is its lowest unacknowledged offset, so a
  commit never passes a deferred event; positions are committed after every batch and whenever the
  stream is quiet (so the group's lag reaches 0);
- ``snapshots``: snapshots of the index on a background thread;
- ``records``: the record store's write-behind (``state.writebehind``), flushed before every
  commit, so a committed event's record is in the record store (no flush, no commit: the events
  stay uncommitted and a later commit, or the next owner's replay, covers them);
- ``heap``: freed heap memory handed back to the OS between batches and after each snapshot
  (``stream.heap``), so the RSS follows what is in use instead of its high-water mark.

A stop request (SIGINT/SIGTERM -> ``stop()``) is seen within ``batch_wait_s`` while polling, and
every wait on the network (fetches, delivery) gives up ``stop_grace_s`` after it; events whose
output was not acknowledged by then are not committed (the next owner replays them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from dupstream.core.errors import DeliveryError, RecordFlushTimeout
from dupstream.engine import Deduper
from dupstream.state.records import ImageRecord
from dupstream.state.writebehind import WriteBehind
from dupstream.stream.blobs import ObjectStore
from dupstream.stream.checkpoint import Checkpoint
from dupstream.stream.consumer import Partitions, Rebalance, usable
from dupstream.stream.deferral import Deferrals
from dupstream.stream.heap import HeapTrimmer
from dupstream.stream.metrics import Metrics
from dupstream.stream.pipeline import Batch, Item, Pipeline
from dupstream.stream.ports import KafkaConsumer, KafkaProducer, Part, part_of
from dupstream.stream.publisher import Publisher
from dupstream.stream.replication import FeedFollower, Snapshotter
from dupstream.stream.snapshots import SnapshotThread

log = logging.getLogger(__name__)

#: the share of ``max.poll.interval.ms`` one batch's delivery may take (the rest: the model)
DELIVERY_SHARE = 0.5


def deadline_from_poll_interval(consumer_conf: dict) -> float:
    """One deadline for delivering a batch: half of ``max.poll.interval.ms`` (librdkafka's
    default 300 s when unset), so a batch delivered at the last moment still leaves the loop
    time to poll again before the group evicts this member."""
    return DELIVERY_SHARE * float(consumer_conf.get("max.poll.interval.ms", 300000)) / 1e3


class StreamService:
    def __init__(
        self,
        *,
        consumer_conf: dict,
        producer_conf: dict,
        input_topic: str,
        output_topic: str,
        dlq_topic: str,
        store: ObjectStore,
        deduper: Deduper,
        metrics: Metrics | None = None,
        max_blob_bytes: int = 50 * 1024 * 1024,
        batch_max: int = 16,
        batch_wait_s: float = 0.2,
        fetch_workers: int = 8,
        extract_ahead: bool = True,
        delivery_timeout_s: float = 30.0,
        transient_budget_s: float = 300.0,
        updates_topic: str | None = None,
        feed: FeedFollower | None = None,
        snapshotter: Snapshotter | None = None,
        delivery_deadline_s: float | None = None,
        max_deferred: int | None = None,
        stop_grace_s: float = 5.0,
        records: WriteBehind | None = None,
        record_flush_s: float = 10.0,
        heap: HeapTrimmer | None = None,
        consumer_factory: Callable[[dict], KafkaConsumer] = Consumer,
        producer_factory: Callable[[dict], KafkaProducer] = Producer,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._consumer_conf = {**consumer_conf, "stats_cb": self.metrics.observe_stats}
        #: one deadline for a batch's delivery (None: derived from max.poll.interval.ms)
        self.delivery_deadline_s = (delivery_deadline_s if delivery_deadline_s is not None
                                    else deadline_from_poll_interval(consumer_conf))
        # librdkafka gives up on a record at the same deadline: no late duplicates after a rewind
        self._producer_conf = {
            "delivery.timeout.ms": int(self.delivery_deadline_s * 1e3), **producer_conf}
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.store = store
        self.deduper = deduper
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        #: how long the shutdown flush of late-match corrections may take
        self.delivery_timeout_s = delivery_timeout_s
        self.transient_budget_s = transient_budget_s
        self.stop_grace_s = stop_grace_s
        self.updates_topic = updates_topic
        self.feed = feed
        self.snapshotter = snapshotter
        #: the record store's write-behind, flushed (within ``record_flush_s``) before commits
        self.records, self.record_flush_s = records, record_flush_s
        self._record_failures = {"transient": 0, "permanent": 0}
        self._records_behind = False  # the last flush before a commit timed out
        self._consumer_factory, self._producer_factory = consumer_factory, producer_factory

        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._warm = False
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.publisher: Publisher | None = None
        self.pipeline = Pipeline(store=store, deduper=deduper, metrics=self.metrics,
                                 max_blob_bytes=max_blob_bytes, fetch_workers=fetch_workers,
                                 extract_ahead=extract_ahead)
        self.checkpoint = Checkpoint()
        self.deferrals: Deferrals[Item] = Deferrals(
            budget_s=transient_budget_s, cap=max_deferred if max_deferred else batch_max)
        self.partitions = Partitions()
        self.rebalance = Rebalance(partitions=self.partitions, on_revoke=self._revoked,
                                   on_lost=self._lost, on_change=self._update_ready)
        #: malloc_trim between batches (at most every interval) and after each snapshot
        self.heap = heap
        self._snapshots = (SnapshotThread(snapshotter, after=self._after_snapshot)
                           if snapshotter is not None else None)
        self._ahead: Batch | None = None  # polled, blobs being fetched, not yet inferred
        #: partitions revoked or lost since the last poll began (a retry taken out before the
        #: poll must not run for them: the next owner reads the event again)
        self._moved: set[Part] = set()
        self._processed = 0
        self._new_records: list[ImageRecord] = []
        self._stats_at = 0.0
        if updates_topic is not None:
            # a replayed add is published again: its first delivery may have failed (the batch
            # was rewound) and replicas apply a key they hold as a no-op
            deduper.on_add = deduper.on_replay = self._new_records.append

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        """Ask the loop to finish the batch in hand, flush, commit and return (waits on the
        network give up ``stop_grace_s`` after this)."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.stop_grace_s
        self._stop.set()

    def _give_up_at(self) -> float | None:
        return self._stop_at if self._stop.is_set() else None

    def _grace_left(self) -> float | None:
        """Seconds left of a stop request's grace (None: no stop requested)."""
        at = self._give_up_at()
        return None if at is None else max(0.0, at - time.monotonic())

    def readiness(self) -> tuple[bool, dict]:
        detail = {
            "assigned_partitions": len(self.partitions.assigned),
            "models_warm": self._warm,
            "index_loaded": self.feed is None or self.feed.caught_up,
            "index_size": len(self.deduper),
        }
        ok = bool(self.partitions.assigned) and self._warm and detail["index_loaded"]
        return ok, {"ready": ok, **detail}

    def warm_up(self) -> None:
        """Every configured model loaded and verified (a no-op re-check when the composition
        root already warmed the engine up): readiness waits for it."""
        self.deduper.warm_up()
        self._warm = True

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)

    def open(self) -> None:
        """Connect: producer, the index feed (caught up first), the consumer's subscription."""
        self.producer = self._producer_factory(self._producer_conf)
        self.publisher = Publisher(producer=self.producer, output_topic=self.output_topic,
                                   dlq_topic=self.dlq_topic, updates_topic=self.updates_topic,
                                   metrics=self.metrics, deadline_s=self.delivery_deadline_s,
                                   give_up_at=self._give_up_at)
        if self.feed is not None:  # the index first: catch up with the feed, then take uploads
            self.feed.start(stopped=self._stop.is_set)
        self.consumer = self._consumer_factory(self._consumer_conf)
        self.pipeline.open()
        self.rebalance.subscribe(self.consumer, [self.input_topic])
        if self._snapshots is not None:
            self._snapshots.start()

    def run(self, *, max_events: int | None = None, idle_exit_s: float | None = None) -> int:
        """Consume until ``stop()``; or until ``max_events`` are committed; or until no message
        arrived for ``idle_exit_s`` after at least one was processed. Returns events processed.

        Pipelined: while batch N is on the model, batch N+1 has been polled and its blobs are
        being fetched. At most one batch is ahead and at most ``max_deferred`` deferred events
        per partition are held (a partition at the cap is paused), so nothing buffers without
        bound."""
        self.warm_up()
        self._processed = 0
        try:
            self.open()
            last_activity = time.monotonic()
            while not self._stop.is_set():
                active = self.step()
                if active:
                    last_activity = time.monotonic()
                elif (idle_exit_s is not None and self._processed and self._ahead is None
                      and not self.deferrals
                      and time.monotonic() - last_activity > idle_exit_s):
                    break
                if max_events is not None and self._processed >= max_events:
                    break
        finally:
            try:
                if self._ahead is not None and self.consumer is not None:
                    ahead, self._ahead = self._ahead, None
                    self._finish(ahead)  # graceful stop: finish, flush, commit
                    self.commit()
            finally:
                self.close()
        return self._processed

    def step(self) -> bool:
        """One turn of the loop: poll (and start fetching) the next batch, finish the one ahead,
        commit. Returns whether any message arrived."""
        self._follow_feed()
        retries = self.deferrals.due(limit=self.batch_max)
        self._moved = set()
        msgs = self.consumer.consume(num_messages=self.batch_max, timeout=self.batch_wait_s)
        if self._moved:  # the poll revoked or lost partitions: their retries are not ours now
            retries = [it for it in retries if part_of(it.msg) not in self._moved]
        msgs = [m for m in msgs if usable(m)]
        for m in msgs:
            self.checkpoint.track(m)
        new = self.pipeline.start(msgs, retries) if msgs or retries else None
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            rewound = self._finish(ahead)
            if new is not None and rewound:
                new = new.without(rewound)
        self._ahead = new
        if self._ahead is None:
            self.commit()  # quiet: commit what the last batches covered (lag reaches 0)
        self.metrics.inflight.set(self.checkpoint.outstanding())
        self.metrics.index_size.set(len(self.deduper))
        self._export_records()
        if self.heap is not None:
            self.heap.maybe_trim()
        return bool(msgs)

    def _after_snapshot(self) -> None:
        """A snapshot's serialised form (about the size of the state) was just freed."""
        if self.heap is not None:
            self.heap.maybe_trim(force=True)

    def commit(self) -> bool:
        if self.consumer is None:
            return False
        if self.checkpoint.pending() and not self._records_flushed():
            return False
        if self.checkpoint.commit(self.consumer):
            self.metrics.commits.inc()
            return True
        return False

    def _records_flushed(self) -> bool:
        """Before a commit: the records added so far are in the record store (at-least-once for
        records too). False when they are not within ``record_flush_s`` (or a stop's grace)."""
        if self.records is None:
            return True
        try:
            self.records.flush(self.record_flush_s, until=self._give_up_at)
        except RecordFlushTimeout as exc:
            log.warning("not committing: %s", exc)
            self._records_behind = True
            return False
        self._records_behind = False
        return True

    def _export_records(self) -> None:
        if self.records is None:
            return
        s = self.records.snapshot()
        self.metrics.record_queue.set(s["queued"])
        for kind, n in (("transient", s["retried"]), ("permanent", s["dropped"])):
            if n > self._record_failures[kind]:
                self.metrics.record_write_failures.labels(kind=kind).inc(
                    n - self._record_failures[kind])
                self._record_failures[kind] = n

    def _follow_feed(self) -> None:
        """Apply the index updates that arrived; publish corrected verdicts for late matches."""
        if self.feed is None:
            return
        self.publisher.corrections(self.feed.poll())
        now = time.monotonic()
        if now - self._stats_at > 5.0:
            self._stats_at = now
            lag = self.deduper.memory.stats().get("replication_lag_s")
            if lag is not None:
                self.metrics.replication_lag.set(lag)

    def close(self) -> None:
        if self._snapshots is not None:  # a stop request waits for it within its grace only
            self._snapshots.stop(final=True, timeout_s=self._grace_left())
        if self.producer is not None:
            left = self._grace_left()
            self.producer.flush(self.delivery_timeout_s if left is None
                                else min(self.delivery_timeout_s, left))
        if self.records is not None:  # drain the record writes within the grace
            left = self._grace_left()
            self.records.stop(self.record_flush_s if left is None
                              else min(self.record_flush_s, left))
            self._export_records()
        if self.consumer is not None:
            try:
                self.consumer.close()
            except RuntimeError:
                pass
            self.consumer = None
        self.pipeline.close()
        if self.feed is not None:
            self.feed.close()
        self.metrics.ready.set(0)

    # -- rebalance -----------------------------------------------------------------------------
    def _revoked(self, parts: set[Part]) -> None:
        """Revoke: finish the batch in hand and commit before the partitions move; deferred
        events of those partitions are left to the next owner (the commit stops at them), also
        one taken out for a retry just before this poll (``_moved``)."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            self._finish(ahead)
        for attempt in range(3):  # a connection dropped just now: a failed commit means replays
            if self.commit() or not self.checkpoint.pending() or self._records_behind:
                break  # (records not written: waiting record_flush_s again would not help)
            if self._stop.is_set() and self._give_up_at() <= time.monotonic():
                break
            time.sleep(0.2 * (attempt + 1))
        self.deferrals.drop(parts)
        self.checkpoint.forget(parts)
        self._moved |= parts

    def _lost(self, parts: set[Part]) -> None:
        """Lost: another member owns these now; drop their in-flight and deferred events, commit
        nothing of them."""
        if self._ahead is not None:
            self._ahead = self._ahead.without(parts)
        self.deferrals.drop(parts)
        self.checkpoint.forget(parts)
        self._moved |= parts
        self.metrics.inflight.set(self.checkpoint.outstanding())

    # -- one batch ---------------------------------------------------------------------------
    def _finish(self, batch: Batch) -> set[Part]:
        """Wait for the fetches, infer, publish, mark done. Returns the partitions rewound
        (delivery failed or a stop request gave up on the batch)."""
        if not self.pipeline.wait_fetched(batch, until=self._give_up_at):
            log.warning("stopping: %d events left unfinished (not committed)", len(batch.items))
            return self._rewind(batch)
        items = batch.items
        self._new_records.clear()
        self.pipeline.infer(items, batch.ahead)
        updates = list(self._new_records)
        deferred = self.deferrals.settle(items)
        held = {id(it) for it in deferred}
        publish = [it for it in items if id(it) not in held]
        try:
            self.publisher.publish(publish, updates)
        except DeliveryError as exc:
            log.error("delivery failed: %s; rewinding %d events", exc, len(items))
            return self._rewind(batch)
        for it in publish:
            self.checkpoint.done(it.msg)
        self._processed += len(publish)
        self._hold_full()
        self.commit()
        return set()

    def _rewind(self, batch: Batch) -> set[Part]:
        """Nothing of the batch's partitions past their commit position stays in hand: seek
        back, drop their deferred events (they are read again)."""
        parts = batch.parts()
        self.checkpoint.rewind(self.consumer, parts)
        self.deferrals.drop(parts)
        self._hold_full()
        return parts

    def _hold_full(self) -> None:
        full = self.deferrals.full()
        self.partitions.hold(self.consumer, full)
        self.partitions.release(self.consumer, self.partitions.paused - full)
