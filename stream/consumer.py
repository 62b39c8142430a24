"""The consumer side: assigned partitions, pause/resume (backpressure), and the rebalance
callbacks.

``Partitions`` knows which partitions this member owns and which it has paused.
``Rebalance`` turns librdkafka's on_assign / on_revoke / on_lost callbacks into calls on the
service: on revoke the work in hand is finished and committed before the partitions move; on
lost (the session expired: another member may already own them) in-flight work of those
partitions is dropped without a commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from dupstream.stream.ports import KafkaConsumer, KafkaMessage, Part

log = logging.getLogger("dupstream.stream.service")  # the assign/revoke lines tests parse


def usable(msg: KafkaMessage) -> bool:
    """A message carrying an event (not an end-of-partition or error marker)."""
    err = msg.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", err)
    return False


class Partitions:
    """Assigned and paused partitions: a partition is paused while held (backpressure: it holds
    as many deferred events as allowed) and resumed when released."""

    def __init__(self) -> None:
        self.assigned: set[Part] = set()
        self._held: set[Part] = set()
        self._paused: set[Part] = set()

    def assign(self, parts: set[Part]) -> None:
        self.assigned |= parts

    def remove(self, parts: set[Part]) -> None:
        self.assigned -= parts
        for part in parts:
            self._held.discard(part)
            self._paused.discard(part)

    @property
    def paused(self) -> set[Part]:
        return set(self._paused)

    def hold(self, consumer: KafkaConsumer, parts: set[Part]) -> None:
        self._held |= parts & self.assigned
        self._apply(consumer)

    def release(self, consumer: KafkaConsumer, parts: set[Part]) -> None:
        self._held -= parts
        self._apply(consumer)

    def _apply(self, consumer: KafkaConsumer) -> None:
        want = self._held & self.assigned
        pause, resume = want - self._paused, self._paused - want
        if pause:
            try:
                consumer.pause([TopicPartition(t, p) for t, p in sorted(pause)])
                self._paused |= pause
            except KafkaException as exc:
                log.warning("cannot pause %s: %s", sorted(pause), exc)
        if resume:
            try:
                consumer.resume([TopicPartition(t, p) for t, p in sorted(resume)])
                self._paused -= resume
            except KafkaException as exc:
                log.warning("cannot resume %s: %s", sorted(resume), exc)


class Rebalance:
    """The subscription callbacks; ``on_change`` is told after every change (readiness)."""

    def __init__(self, *, partitions: Partitions, on_revoke: Callable[[set[Part]], None],
                 on_lost: Callable[[set[Part]], None],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.partitions = partitions
        self._revoke, self._lost, self._change = on_revoke, on_lost, on_change

    def subscribe(self, consumer: KafkaConsumer, topics: list[str]) -> None:
        consumer.subscribe(topics, on_assign=self.on_assign, on_revoke=self.on_revoke,
                           on_lost=self.on_lost)

    def on_assign(self, _consumer, partitions: list[TopicPartition]) -> None:
        self.partitions.assign({(p.topic, p.partition) for p in partitions})
        log.info("assigned %s", sorted(self.partitions.assigned))
        self._change()

    def on_revoke(self, _consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._revoke(gone)  # finish and commit the work in hand before the partitions move
        self.partitions.remove(gone)
        log.info("revoked %s", [(p.topic, p.partition) for p in partitions])
        self._change()

    def on_lost(self, _consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._lost(gone)  # drop in-flight work: nothing of it may be committed
        self.partitions.remove(gone)
        log.warning("lost %s", [(p.topic, p.partition) for p in partitions])
        self._change()
