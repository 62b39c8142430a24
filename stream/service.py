"""The consumer loop: poll a micro-batch, fetch blobs, run the engine, publish, then commit.

At-least-once: offsets are committed only after every verdict and dead-letter record of the batch
is acknowledged by the broker; if any delivery fails, the batch's partitions are rewound and the
batch is processed again (verdicts are keyed by ``image_id``, so a replay is harmless).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from dupstream.core.errors import BlobUnavailable, DeliveryError, DupstreamError, ModelError
from dupstream.core.events import ImageUploaded, decode_event
from dupstream.core.verdict import Verdict
from dupstream.engine import Deduper, Failed, Upload
from dupstream.state.memory import encode_update, update_key
from dupstream.state.records import ImageRecord
from dupstream.stream.blobs import ObjectStore
from dupstream.stream.metrics import Metrics
from dupstream.stream.replication import FeedFollower, Snapshotter

log = logging.getLogger(__name__)


@dataclass
class _Item:
    msg: Message
    event: ImageUploaded | None = None
    data: bytes | None = None
    error: DupstreamError | None = None
    verdict: Verdict | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Batch:
    items: list[_Item]
    futures: list[Future]

    def without(self, parts: set[tuple[str, int]]) -> _Batch | None:
        """This batch less the messages of ``parts`` (rewound: they will be read again)."""
        keep = [it for it in self.items if (it.msg.topic(), it.msg.partition()) not in parts]
        return _Batch(keep, self.futures) if keep else None


def _log_delivery(err, msg) -> None:
    if err is not None:
        log.warning("corrected verdict not delivered: %s", err)


def _pos(msg: Message) -> tuple[str, int, int]:
    return msg.topic(), msg.partition(), msg.offset()


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
    ) -> None:
        self.metrics = metrics or Metrics()
        self._consumer_conf = {**consumer_conf, "stats_cb": self.metrics.observe_stats}
        self._producer_conf = producer_conf
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.store = store
        self.deduper = deduper
        self.max_blob_bytes = max_blob_bytes
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self.fetch_workers = fetch_workers
        self.delivery_timeout_s = delivery_timeout_s
        self.transient_budget_s = transient_budget_s
        #: (topic, partition, offset) -> (first failure time, attempts) for transient failures
        self._transient: dict[tuple[str, int, int], tuple[float, int]] = {}
        self._stop = threading.Event()
        self._assigned: set[tuple[str, int]] = set()
        self._warm = False
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: _Batch | None = None  # polled, blobs being fetched, not yet inferred
        self._paused: dict[tuple[str, int], float] = {}  # partition -> resume at (monotonic)
        self._processed = 0
        self.updates_topic = updates_topic
        self.feed = feed
        self.snapshotter = snapshotter
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
            "assigned_partitions": len(self._assigned),
            "models_warm": self._warm,
            "index_loaded": self.feed is None or self.feed.caught_up,
            "index_size": len(self.deduper),
        }
        ok = bool(self._assigned) and self._warm and detail["index_loaded"]
        return ok, {"ready": ok, **detail}

    def warm_up(self) -> None:
        import numpy as np

        self.deduper.extractor.embedder.embed([np.zeros((64, 64, 3), np.uint8)])
        self._warm = True

    def _on_assign(self, consumer, partitions) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        log.info("assigned %s", sorted(self._assigned))
        self._update_ready()

    def _on_revoke(self, consumer, partitions) -> None:
        # commit on revoke: finish the batch in hand before the partitions move
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            self._finish(ahead)
        gone = {(p.topic, p.partition) for p in partitions}
        for part in gone:
            self._paused.pop(part, None)
        self._assigned -= gone
        log.info("revoked %s", [(p.topic, p.partition) for p in partitions])
        self._update_ready()

    def _on_lost(self, consumer, partitions) -> None:
        # drop state on lost: another member owns these now; nothing of them is committed
        gone = {(p.topic, p.partition) for p in partitions}
        if self._ahead is not None:
            lost = [it for it in self._ahead.items
                    if (it.msg.topic(), it.msg.partition()) in gone]
            self.metrics.inflight.dec(len(lost))
            self._ahead = self._ahead.without(gone)
        for part in gone:
            self._paused.pop(part, None)
        self._assigned -= gone
        log.warning("lost %s", [(p.topic, p.partition) for p in partitions])
        self._update_ready()

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.readiness()[0] else 0)

    def run(self, *, max_events: int | None = None, idle_exit_s: float | None = None) -> int:
        """Consume until ``stop()``; or until ``max_events`` are committed; or until no message
        arrived for ``idle_exit_s`` after at least one was processed. Returns events processed.

        Pipelined: while batch N is on the model, batch N+1 has been polled and its blobs are
        being fetched. At most one batch is ahead, so nothing buffers without bound; partitions
        whose events wait on a transient failure are paused (and resumed after a backoff) while
        the others keep flowing."""
        self.warm_up()
        self.producer = Producer(self._producer_conf)
        if self.feed is not None:  # the index first: catch up with the feed, then take uploads
            self.feed.start()
        self.consumer = Consumer(self._consumer_conf)
        self._pool = ThreadPoolExecutor(max_workers=self.fetch_workers,
                                        thread_name_prefix="dupstream-fetch")
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._processed = 0
        last_activity = time.monotonic()
        try:
            while not self._stop.is_set():
                self._resume_due()
                self._follow_feed()
                msgs = self.consumer.consume(num_messages=self.batch_max,
                                             timeout=self.batch_wait_s)
                msgs = [m for m in msgs if self._usable(m)]
                new = self._start(msgs) if msgs else None
                if self._ahead is not None:
                    ahead, self._ahead = self._ahead, None
                    rewound = self._finish(ahead)
                    if new is not None and rewound:
                        new = new.without(rewound)
                self._ahead = new
                self.metrics.index_size.set(len(self.deduper))
                if msgs:
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

    def _follow_feed(self) -> None:
        """Apply the index updates that arrived; publish corrected verdicts for late matches;
        snapshot when due."""
        if self.feed is not None:
            corrected = self.feed.poll()
            for v in corrected:
                log.info("late match: %s is a copy of %s", v.image_id, v.match_id)
                self._produce(self.output_topic, key=v.image_id.encode(),
                              value=v.model_dump_json().encode(), cb=_log_delivery)
                self.metrics.verdicts.labels(verdict=v.verdict).inc()
            if corrected:
                self.producer.flush(self.delivery_timeout_s)
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
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self.feed is not None:
            self.feed.close()
        self.metrics.ready.set(0)

    # -- one batch ---------------------------------------------------------------------------
    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)
        return False

    def _start(self, msgs: list[Message]) -> _Batch:
        """Decode the events and start fetching their blobs in the background."""
        self.metrics.batch_size.observe(len(msgs))
        items = [_Item(msg) for msg in msgs]
        for it in items:
            try:
                it.event = decode_event(it.msg.value())
            except DupstreamError as exc:
                it.error = exc
        futures = [self._pool.submit(self._fetch_one, it) for it in items if it.error is None]
        self.metrics.inflight.inc(len(msgs))
        return _Batch(items, futures)

    def _fetch_one(self, it: _Item) -> None:
        t0 = time.perf_counter()
        try:
            it.data = self.store.get(it.event.bucket, it.event.key, max_bytes=self.max_blob_bytes)
        except DupstreamError as exc:
            it.error = exc
        except Exception as exc:  # never let one blob take the batch down
            it.error = BlobUnavailable(f"{type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t0
        it.timings_ms["fetch"] = round(dt * 1e3, 3)
        self.metrics.stage.labels(stage="fetch").observe(dt)

    def _finish(self, batch: _Batch) -> set[tuple[str, int]]:
        """Wait for the fetches, infer, publish, commit. Returns the partitions rewound."""
        for fut in batch.futures:
            fut.result()
        items = batch.items
        self._new_records.clear()
        self._infer([it for it in items if it.error is None])
        updates = list(self._new_records)
        deferred = self._defer_transient(items)
        publish = [it for it in items if it not in deferred]
        attempt = 0
        while True:
            attempt += 1
            try:
                self._publish(publish, updates)
                break
            except DeliveryError as exc:
                log.error("delivery failed (attempt %d): %s; retrying", attempt, exc)
                if self._stop.is_set() and attempt >= 3:
                    self._rewind([it.msg for it in items])
                    raise
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
        self._commit([it.msg for it in items], deferred)
        self.metrics.inflight.dec(len(items))
        self._processed += len(publish)
        if not deferred:
            return set()
        self._rewind([it.msg for it in deferred])
        worst = max(self._transient[_pos(it.msg)][1] for it in deferred)
        parts = {(it.msg.topic(), it.msg.partition()) for it in deferred}
        self._pause(parts, min(5.0, 0.25 * 2 ** min(worst, 5)))
        return parts

    def _pause(self, parts: set[tuple[str, int]], seconds: float) -> None:
        """Backpressure: hold partitions whose events wait on a transient failure."""
        tps = [TopicPartition(t, p) for t, p in parts]
        try:
            self.consumer.pause(tps)
        except KafkaException as exc:
            log.warning("cannot pause %s: %s", parts, exc)
            return
        due = time.monotonic() + seconds
        for part in parts:
            self._paused[part] = due

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [part for part, at in self._paused.items() if at <= now]
        if not due:
            return
        for part in due:
            del self._paused[part]
        try:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
        except KafkaException as exc:
            log.warning("cannot resume %s: %s", due, exc)

    def _rewind(self, msgs: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in msgs:
            k = (m.topic(), m.partition())
            first[k] = min(first.get(k, m.offset()), m.offset())
        for (t, p), off in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, off))
            except KafkaException as exc:
                log.warning("cannot rewind %s[%d]: %s", t, p, exc)

    def _defer_transient(self, items: list[_Item]) -> list[_Item]:
        """Transient failures (S3 down) are retried by re-reading their offsets later, until the
        budget is spent; then they go to the dead-letter topic with their attempt count."""
        deferred = []
        now = time.monotonic()
        for it in items:
            pos = _pos(it.msg)
            if it.error is None or not it.error.transient:
                self._transient.pop(pos, None)
                continue
            first, attempts = self._transient.get(pos, (now, 0))
            attempts += it.error.attempts
            if now - first < self.transient_budget_s:
                self._transient[pos] = (first, attempts)
                deferred.append(it)
                log.warning("transient failure on %s[%d]@%d (attempt %d): %s; will retry",
                            *pos, attempts, it.error)
            else:
                self._transient.pop(pos, None)
                it.error.attempts = attempts
        return deferred

    def _infer(self, items: list[_Item]) -> None:
        items = [it for it in items if it.error is None]
        if not items:
            return
        uploads = [Upload(it.event.image_id, it.data, it.event.tenant) for it in items]
        try:
            results = self.deduper.process(uploads)
        except Exception as exc:  # isolate the image that breaks the batch
            log.warning("batch inference failed (%s); retrying image by image", exc)
            results = []
            for up in uploads:
                try:
                    results.extend(self.deduper.process([up]))
                except Exception as one_exc:
                    err = one_exc if isinstance(one_exc, DupstreamError) else ModelError(
                        f"{type(one_exc).__name__}: {one_exc}")
                    results.append(Failed(up.image_id, up.tenant, err))
        for it, res in zip(items, results, strict=True):
            if isinstance(res, Failed):
                it.error = res.error
            else:
                res.timings_ms.update(it.timings_ms)
                it.verdict = res
                for stage in ("decode", "hash", "embed", "search"):
                    if stage in res.timings_ms:
                        self.metrics.stage.labels(stage=stage).observe(
                            res.timings_ms[stage] / 1e3)

    def _publish(self, items: list[_Item], updates: list[ImageRecord] = ()) -> None:
        t0 = time.perf_counter()
        failures: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None:
                failures.append(str(err))

        for it in items:
            if it.verdict is not None:
                self._produce(self.output_topic, key=it.verdict.image_id.encode(),
                              value=it.verdict.model_dump_json().encode(), cb=on_delivery)
            else:
                self._produce(self.dlq_topic, key=it.msg.key(), value=it.msg.value() or b"",
                              headers=self._dlq_headers(it), cb=on_delivery)
        for rec in updates:  # replication: delivered with the verdicts, before the commit
            self._produce(self.updates_topic, key=update_key(rec), value=encode_update(rec),
                          cb=on_delivery)
        remaining = self.producer.flush(self.delivery_timeout_s)
        if remaining or failures:
            raise DeliveryError(f"{remaining} undelivered, failures: {failures[:3]}")
        self.metrics.stage.labels(stage="publish").observe(time.perf_counter() - t0)
        for it in items:
            if it.verdict is not None:
                self.metrics.events.labels(outcome="verdict").inc()
                self.metrics.verdicts.labels(verdict=it.verdict.verdict).inc()
            else:
                self.metrics.events.labels(outcome="dlq").inc()
                self.metrics.dlq.labels(reason=it.error.reason).inc()
                log.info("dead-lettered %s[%d]@%d: %s: %s", it.msg.topic(), it.msg.partition(),
                         it.msg.offset(), it.error.reason, it.error)

    def _produce(self, topic: str, *, key, value, cb: Callable, headers=None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers,
                                      on_delivery=cb)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)

    def _dlq_headers(self, it: _Item) -> list[tuple[str, bytes]]:
        err = it.error
        headers = [
            ("dupstream.reason", err.reason.encode()),
            ("dupstream.error", str(err)[:2000].encode()),
            ("dupstream.attempts", str(getattr(err, "attempts", 1)).encode()),
            ("dupstream.source", f"{it.msg.topic()}/{it.msg.partition()}/{it.msg.offset()}"
             .encode()),
        ]
        if it.event is not None:
            headers.append(("dupstream.image_id", it.event.image_id.encode()))
        return headers

    def _commit(self, msgs: list[Message], deferred: list[_Item] = ()) -> None:
        """Commit past every message of the batch, but never past a deferred one."""
        nxt: dict[tuple[str, int], int] = {}
        for msg in msgs:
            k = (msg.topic(), msg.partition())
            nxt[k] = max(nxt.get(k, -1), msg.offset() + 1)
        for it in deferred:
            k = (it.msg.topic(), it.msg.partition())
            nxt[k] = min(nxt[k], it.msg.offset())
        offsets = [TopicPartition(t, p, off) for (t, p), off in nxt.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self.metrics.commits.inc()
        except KafkaException as exc:  # e.g. revoked meanwhile: the new owner replays
            log.warning("commit failed (events will be replayed by the next owner): %s", exc)
