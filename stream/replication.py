"""Keeping every replica's ``Memory`` in step: the index-updates feed and periodic snapshots.

Each replica publishes every image it adds to a compacted index-updates topic (in the same
delivery as the verdict, before the input offsets are committed) and applies that whole topic,
its own updates included; ``Memory.apply`` is idempotent, so replicas converge. A starting
replica loads the latest snapshot from object storage and replays the feed from the offsets the
snapshot recorded. The window in which two replicas can miss each other (an image added on A,
its copy judged on B before B applied A's update) is exported as
``dupstream_state_replication_lag_seconds``; copies judged inside it are caught when the update
arrives (``Deduper.late_matches``) and a corrected verdict is published under the same key.

Updates carry the identity of the model that wrote them; one of another model (embedder or
weights) is refused, logged and counted (``FeedFollower.refused``, ``updates_refused`` in the
memory's stats), never applied: its vectors are not comparable with this index's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from dupstream.core.errors import ModelMismatch
from dupstream.core.verdict import Verdict
from dupstream.engine import Deduper
from dupstream.state.blobstore import BlobStore
from dupstream.state.memory import Memory
from dupstream.state.snapshot import write_snapshot

log = logging.getLogger(__name__)


class FeedFollower:
    """Reads every partition of the index-updates topic (no consumer group: each replica needs
    the whole feed) and applies it to the memory."""

    def __init__(self, *, consumer_conf: dict, topic: str, memory: Memory,
                 deduper: Deduper | None = None) -> None:
        self.topic = topic
        self.deduper = deduper  # for late-match corrections; None: apply only
        self.memory = memory
        conf = {k: v for k, v in consumer_conf.items()
                if k not in ("partition.assignment.strategy", "stats_cb",
                             "statistics.interval.ms")}
        conf.update({"group.id": f"{conf.get('group.id', 'dupstream')}.feed",
                     "enable.auto.commit": False, "enable.partition.eof": True,
                     # the feed is latency-bound (add -> matchable elsewhere): short fetch waits
                     "fetch.wait.max.ms": 50})
        self._consumer = Consumer(conf)
        self._partitions: list[int] = []
        self.caught_up = False
        self.applied = 0
        #: updates refused because another model wrote them (``Memory.stats()`` counts them too)
        self.refused = 0

    def start(self, *, timeout_s: float = 120.0,
              stopped: Callable[[], bool] = lambda: False) -> int:
        """Assign all partitions at the memory's feed positions and apply until caught up (or
        ``stopped()``: a stop request, asked every 0.5 s)."""
        meta = self._consumer.list_topics(self.topic, timeout=10)
        tmeta = meta.topics.get(self.topic)
        if tmeta is None or tmeta.error is not None:
            raise RuntimeError(f"index-updates topic {self.topic!r} is not available")
        self._partitions = sorted(tmeta.partitions)
        pos = self.memory.positions
        self._consumer.assign([
            TopicPartition(self.topic, p, pos.get(f"{self.topic}/{p}", OFFSET_BEGINNING))
            for p in self._partitions
        ])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while (len(at_end) < len(self._partitions) and time.monotonic() < deadline
               and not stopped()):
            msgs = self._consumer.consume(num_messages=1000, timeout=0.5)
            for m in msgs:
                if m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
            self._apply(msgs)
        self.caught_up = len(at_end) == len(self._partitions)
        if not self.caught_up:
            log.warning("index feed not caught up after %.0fs (%d/%d partitions at end)",
                        timeout_s, len(at_end), len(self._partitions))
        log.info("index feed: %d images after catch-up (%d updates applied)",
                 len(self.memory), self.applied)
        return self.applied

    def poll(self, *, max_messages: int = 1000) -> list[Verdict]:
        """Apply what has arrived; return corrected verdicts for late matches."""
        msgs = self._consumer.consume(num_messages=max_messages, timeout=0)
        return self._apply(msgs)

    def _apply(self, msgs) -> list[Verdict]:
        good = [m for m in msgs if m.error() is None and m.value()]
        if not good:
            return []
        corrected: list[Verdict] = []
        for m in good:
            try:
                applied = self.memory.apply(m.value(), position=(m.topic(), m.partition(),
                                                                 m.offset()))
            except ModelMismatch as exc:  # another model's vectors: never mixed into the index
                self.refused += 1
                log.warning("refused index update %s[%d]@%d: %s: %s", m.topic(), m.partition(),
                            m.offset(), exc.reason, exc)
                continue
            except Exception as exc:  # a damaged record must not stop the feed
                log.warning("skipping index update %s[%d]@%d: %s", m.topic(), m.partition(),
                            m.offset(), exc)
                continue
            self.applied += 1
            if self.deduper is not None:
                corrected.extend(self.deduper.late_matches(applied))
        return corrected

    def close(self) -> None:
        try:
            self._consumer.close()
        except RuntimeError:
            pass


class Snapshotter:
    """Writes a snapshot of the memory every ``interval_s`` seconds (0 = never)."""

    def __init__(self, *, memory: Memory, store: BlobStore, prefix: str, interval_s: float,
                 keep: int = 3) -> None:
        self.memory, self.store, self.prefix = memory, store, prefix
        self.interval_s, self.keep = interval_s, keep
        self._last = time.monotonic()

    def maybe_snapshot(self, *, force: bool = False) -> str | None:
        due = self.interval_s > 0 and time.monotonic() - self._last >= self.interval_s
        if not (force or due):
            return None
        self._last = time.monotonic()
        try:
            info = write_snapshot(self.memory, self.store, prefix=self.prefix, keep=self.keep)
        except Exception as exc:  # storage down: keep serving, try again next interval
            log.warning("snapshot failed: %s", exc)
            return None
        log.info("snapshot %s: %d bytes in %.2fs", info.snapshot_id, info.bytes, info.seconds)
        return info.snapshot_id
