"""The consumer loop: poll a micro-batch, fetch blobs, run the engine, publish, then commit.

At-least-once: offsets are committed only after every verdict and dead-letter record of the batch
is acknowledged by the broker; if any delivery fails, the batch's partitions are rewound and the
batch is processed again (verdicts are keyed by ``image_id``, so a replay is harmless).

The loop is assembled from small parts, each testable with in-process fakes of the Kafka clients
(``ports``):

- ``consumer``: assigned/paused partitions and the rebalance callbacks (revoke: finish and commit
  the work in hand; lost: drop it);
- ``pipeline``: batch N+1 is polled and its blobs fetched while batch N is on the model, one
  failing image isolated from its batch;
- ``deferral``: events that failed transiently are retried until a budget is spent (then
  dead-lettered with their attempt count);
- ``publisher``: verdicts, dead letters and index updates of a batch;
- ``checkpoint``: a partition's commit position is its lowest unacknowledged offset, so a commit
  never passes an event whose output was not acknowledged, nor a deferred one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from dupstream.core.errors import DeliveryError
from dupstream.engine import Deduper
from dupstream.state.records import ImageRecord
from dupstream.stream.blobs import ObjectStore
from dupstream.stream.checkpoint import Checkpoint
from dupstream.stream.consumer import Partitions, Rebalance, usable
from dupstream.stream.deferral import Deferrals, backoff_s
from dupstream.stream.metrics import Metrics
from dupstream.stream.pipeline import Batch, Item, Pipeline
from dupstream.stream.ports import KafkaConsumer, KafkaProducer, Part, part_of, position_of
from dupstream.stream.publisher import Publisher
from dupstream.stream.replication import FeedFollower, Snapshotter

log = logging.getLogger(__name__)


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
        delivery_timeout_s: float = 30.0,
        transient_budget_s: float = 300.0,
        updates_topic: str | None = None,
        feed: FeedFollower | None = None,
        snapshotter: Snapshotter | None = None,
        consumer_factory: Callable[[dict], KafkaConsumer] = Consumer,
        producer_factory: Callable[[dict], KafkaProducer] = Producer,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._consumer_conf = {**consumer_conf, "stats_cb": self.metrics.observe_stats}
        self._producer_conf = producer_conf
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.store = store
        self.deduper = deduper
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self.delivery_timeout_s = delivery_timeout_s
        self.transient_budget_s = transient_budget_s
        self.updates_topic = updates_topic
        self.feed = feed
        self.snapshotter = snapshotter
        self._consumer_factory, self._producer_factory = consumer_factory, producer_factory

        self._stop = threading.Event()
        self._warm = False
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.publisher: Publisher | None = None
        self.pipeline = Pipeline(store=store, deduper=deduper, metrics=self.metrics,
                                 max_blob_bytes=max_blob_bytes, fetch_workers=fetch_workers)
        self.checkpoint = Checkpoint()
        self.deferrals: Deferrals[Item] = Deferrals(budget_s=transient_budget_s, cap=batch_max)
        self.partitions = Partitions()
        self.rebalance = Rebalance(partitions=self.partitions, on_revoke=self._revoked,
                                   on_lost=self._lost, on_change=self._update_ready)
        self._ahead: Batch | None = None  # polled, blobs being fetched, not yet inferred
        self._processed = 0
        self._new_records: list[ImageRecord] = []
        self._stats_at = 0.0
        if updates_topic is not None:
            deduper.on_add = self._new_records.append

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        """Ask the loop to finish the batch in hand, flush, commit and return."""
        self._stop.set()

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
        import numpy as np

        self.deduper.extractor.embedder.embed([np.zeros((64, 64, 3), np.uint8)])
        self._warm = True

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)

    def open(self) -> None:
        """Connect: producer, the index feed (caught up first), the consumer's subscription."""
        self.producer = self._producer_factory(self._producer_conf)
        self.publisher = Publisher(producer=self.producer, output_topic=self.output_topic,
                                   dlq_topic=self.dlq_topic, updates_topic=self.updates_topic,
                                   metrics=self.metrics, deadline_s=self.delivery_timeout_s)
        if self.feed is not None:  # the index first: catch up with the feed, then take uploads
            self.feed.start()
        self.consumer = self._consumer_factory(self._consumer_conf)
        self.pipeline.open()
        self.rebalance.subscribe(self.consumer, [self.input_topic])

    def run(self, *, max_events: int | None = None, idle_exit_s: float | None = None) -> int:
        """Consume until ``stop()``; or until ``max_events`` are committed; or until no message
        arrived for ``idle_exit_s`` after at least one was processed. Returns events processed.

        Pipelined: while batch N is on the model, batch N+1 has been polled and its blobs are
        being fetched. At most one batch is ahead, so nothing buffers without bound; partitions
        whose events wait on a transient failure are paused (and resumed after a backoff) while
        the others keep flowing."""
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
                      and time.monotonic() - last_activity > idle_exit_s):
                    break
                if max_events is not None and self._processed >= max_events:
                    break
        finally:
            try:
                if self._ahead is not None and self.consumer is not None:
                    ahead, self._ahead = self._ahead, None
                    self._finish(ahead)  # graceful stop: finish, flush, commit
            finally:
                if self.snapshotter is not None and self.snapshotter.interval_s > 0:
                    self.snapshotter.maybe_snapshot(force=True)
                self.close()
        return self._processed

    def step(self) -> bool:
        """One turn of the loop: poll (and start fetching) the next batch, finish the one ahead.
        Returns whether any message arrived."""
        self.partitions.tick(self.consumer)
        self._follow_feed()
        msgs = self.consumer.consume(num_messages=self.batch_max, timeout=self.batch_wait_s)
        msgs = [m for m in msgs if usable(m)]
        for m in msgs:
            self.checkpoint.track(m)
        new = self.pipeline.start(msgs) if msgs else None
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            rewound = self._finish(ahead)
            if new is not None and rewound:
                new = new.without(rewound)
        self._ahead = new
        self.metrics.inflight.set(self.checkpoint.outstanding())
        self.metrics.index_size.set(len(self.deduper))
        return bool(msgs)

    def commit(self) -> bool:
        if self.consumer is None:
            return False
        if self.checkpoint.commit(self.consumer):
            self.metrics.commits.inc()
            return True
        return False

    def _follow_feed(self) -> None:
        """Apply the index updates that arrived; publish corrected verdicts for late matches;
        snapshot when due."""
        if self.feed is not None:
            self.publisher.corrections(self.feed.poll())
            now = time.monotonic()
            if now - self._stats_at > 5.0:
                self._stats_at = now
                lag = self.deduper.memory.stats().get("replication_lag_s")
                if lag is not None:
                    self.metrics.replication_lag.set(lag)
        if self.snapshotter is not None:
            self.snapshotter.maybe_snapshot()

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(self.delivery_timeout_s)
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
        """Revoke: finish the batch in hand and commit before the partitions move."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            self._finish(ahead)
        self.commit()
        self.deferrals.drop(parts)
        self.checkpoint.forget(parts)

    def _lost(self, parts: set[Part]) -> None:
        """Lost: another member owns these now; drop their in-flight events, commit nothing of
        them."""
        if self._ahead is not None:
            self._ahead = self._ahead.without(parts)
        self.deferrals.drop(parts)
        self.checkpoint.forget(parts)
        self.metrics.inflight.set(self.checkpoint.outstanding())

    # -- one batch ---------------------------------------------------------------------------
    def _finish(self, batch: Batch) -> set[Part]:
        """Wait for the fetches, infer, publish, commit. Returns the partitions rewound."""
        self.pipeline.wait_fetched(batch, until=lambda: None)
        items = batch.items
        self._new_records.clear()
        self.pipeline.infer(items)
        updates = list(self._new_records)
        deferred = self.deferrals.settle(items)
        held = {id(it) for it in deferred}
        publish = [it for it in items if id(it) not in held]
        attempt = 0
        while True:
            attempt += 1
            try:
                self.publisher.publish(publish, updates)
                break
            except DeliveryError as exc:
                log.error("delivery failed (attempt %d): %s; retrying", attempt, exc)
                if self._stop.is_set() and attempt >= 3:
                    self.checkpoint.rewind(self.consumer, batch.parts())
                    raise
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
        for it in publish:
            self.checkpoint.done(it.msg)
        self.commit()
        self._processed += len(publish)
        if not deferred:
            return set()
        # re-read from the first deferred offset after a backoff (the budget is kept by offset)
        parts = {part_of(it.msg) for it in deferred}
        self.checkpoint.rewind(self.consumer, parts)
        worst = max(self.deferrals.attempts(position_of(it.msg)) for it in deferred)
        self.partitions.pause_for(self.consumer, parts, backoff_s(worst))
        return parts
