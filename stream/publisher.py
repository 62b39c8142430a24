"""Publishing: verdicts, dead-letter records and index updates, delivered under one deadline.

``publish`` produces every record of a batch and waits for the broker's acknowledgements. A record
whose delivery failed is produced again while the deadline allows; when the deadline passes (or a
stop request's grace runs out) with records unacknowledged it raises ``DeliveryError`` and the
caller rewinds: nothing of the batch is committed, so it is read and processed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dupstream.core.errors import DeliveryError
from dupstream.core.verdict import Verdict
from dupstream.state.memory import encode_update, update_key
from dupstream.state.records import ImageRecord
from dupstream.stream.metrics import Metrics
from dupstream.stream.pipeline import Item
from dupstream.stream.ports import KafkaProducer

log = logging.getLogger("dupstream.stream.service")  # the "dead-lettered" lines tests read


@dataclass
class _Out:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    state: str = "pending"  # pending | ok | failed
    error: str = ""


def dlq_headers(it: Item) -> list[tuple[str, bytes]]:
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


def _log_delivery(err, _msg) -> None:
    if err is not None:
        log.warning("corrected verdict not delivered: %s", err)


class Publisher:
    def __init__(
        self,
        *,
        producer: KafkaProducer,
        output_topic: str,
        dlq_topic: str,
        updates_topic: str | None,
        metrics: Metrics,
        deadline_s: float,
        give_up_at: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.producer = producer
        self.output_topic, self.dlq_topic, self.updates_topic = (output_topic, dlq_topic,
                                                                 updates_topic)
        self.metrics = metrics
        self.deadline_s = deadline_s
        #: an earlier time to give up at (a stop request's grace), asked while waiting
        self._give_up_at = give_up_at
        self._clock, self._sleep = clock, sleep

    def records(self, items: Sequence[Item], updates: Sequence[ImageRecord]) -> list[_Out]:
        out = []
        for it in items:
            if it.verdict is not None:
                out.append(_Out(self.output_topic, it.verdict.image_id.encode(),
                                it.verdict.model_dump_json().encode()))
            else:
                out.append(_Out(self.dlq_topic, it.msg.key(), it.msg.value() or b"",
                                dlq_headers(it)))
        for rec in updates:  # replication: delivered with the verdicts, before the commit
            out.append(_Out(self.updates_topic, update_key(rec), encode_update(rec)))
        return out

    def publish(self, items: Sequence[Item], updates: Sequence[ImageRecord] = ()) -> None:
        """Deliver the batch's records; raises ``DeliveryError`` when not all were acknowledged
        within the deadline."""
        if not items and not updates:
            return
        t0 = time.perf_counter()
        self.deliver(self.records(items, updates))
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

    def deliver(self, records: list[_Out]) -> None:
        deadline = self._clock() + self.deadline_s
        for rec in records:
            self._produce(rec)
        attempt = 1
        while True:
            self.producer.flush(0.1)
            if all(r.state == "ok" for r in records):
                return
            now = self._clock()
            limit = deadline
            if (stop_at := self._give_up_at()) is not None:
                limit = min(limit, stop_at)
            failed = [r for r in records if r.state == "failed"]
            if now >= limit:
                undelivered = sum(r.state != "ok" for r in records)
                errors = sorted({r.error for r in failed})[:3]
                raise DeliveryError(f"{undelivered} of {len(records)} records not acknowledged "
                                    f"within {self.deadline_s:.0f}s; failures: {errors}",
                                    attempts=attempt)
            if failed and all(r.state != "pending" for r in records):
                attempt += 1
                log.error("delivery failed (attempt %d): %s; retrying", attempt - 1,
                          failed[0].error)
                self._sleep(min(5.0, 0.1 * 2 ** (attempt - 1), max(0.0, limit - now)))
                for rec in failed:
                    self._produce(rec)

    def _produce(self, rec: _Out) -> None:
        rec.state, rec.error = "pending", ""

        def on_delivery(err, _msg, rec=rec) -> None:
            if err is None:
                rec.state = "ok"
            else:
                rec.state, rec.error = "failed", str(err)

        self._send(rec.topic, key=rec.key, value=rec.value, headers=rec.headers, cb=on_delivery)

    def _send(self, topic: str, *, key, value, cb: Callable, headers=None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers,
                                      on_delivery=cb)
                return
            except BufferError:  # local queue full: let deliveries drain
                stop_at = self._give_up_at()
                if stop_at is not None and self._clock() >= stop_at:
                    raise DeliveryError("local producer queue full while stopping") from None
                self.producer.poll(0.1)

    def corrections(self, verdicts: Sequence[Verdict]) -> None:
        """Corrected verdicts for late matches: produced without waiting (the next batch's
        delivery, or the shutdown flush, carries them; a failure is logged)."""
        for v in verdicts:
            log.info("late match: %s is a copy of %s", v.image_id, v.match_id)
            self._send(self.output_topic, key=v.image_id.encode(),
                       value=v.model_dump_json().encode(), cb=_log_delivery)
            self.metrics.verdicts.labels(verdict=v.verdict).inc()
        if verdicts:
            self.producer.poll(0)
