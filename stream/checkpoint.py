"""Checkpointing: which input offsets may be committed.

Every polled message is *outstanding* until its verdict or dead-letter record is acknowledged by
the broker (``done``). A partition's commit position is its lowest outstanding offset, or one
past the highest done offset when nothing is outstanding. So a commit never covers a message
whose output was not acknowledged, and never passes a deferred message (one waiting on a
transient failure is outstanding), while the messages after it keep their results.

``rewind`` seeks partitions back to their commit position (a failed delivery: those messages
will be read and processed again); ``forget`` drops partitions that were revoked or lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, TopicPartition

from dupstream.stream.ports import KafkaConsumer, KafkaMessage, Part, part_of

log = logging.getLogger(__name__)


@dataclass
class _PartState:
    outstanding: set[int] = field(default_factory=set)
    #: one past the highest offset done (-1: none yet)
    done_end: int = -1
    #: the last position the broker accepted (-1: none by this consumer)
    committed: int = -1

    def position(self) -> int:
        """-1 until something was done: a commit must cover an acknowledged message."""
        if self.done_end < 0:
            return -1
        return min(self.outstanding) if self.outstanding else self.done_end


class Checkpoint:
    """Offsets polled, done and committed, per partition."""

    def __init__(self) -> None:
        self._parts: dict[Part, _PartState] = {}

    def track(self, msg: KafkaMessage) -> None:
        """A message was polled: it holds back the commit until ``done``."""
        self._parts.setdefault(part_of(msg), _PartState()).outstanding.add(msg.offset())

    def done(self, msg: KafkaMessage) -> None:
        """The message's output was acknowledged by the broker (or it needs none)."""
        st = self._parts.get(part_of(msg))
        if st is None or msg.offset() not in st.outstanding:
            return  # its partition was revoked, lost or rewound meanwhile: not ours to commit
        st.outstanding.discard(msg.offset())
        st.done_end = max(st.done_end, msg.offset() + 1)

    def positions(self) -> dict[Part, int]:
        """Every partition's commit position (partitions with nothing done are left out)."""
        return {p: pos for p, st in self._parts.items() if (pos := st.position()) >= 0}

    def pending(self) -> dict[Part, int]:
        """Positions not yet accepted by the broker."""
        return {p: pos for p, pos in self.positions().items()
                if pos > self._parts[p].committed}

    def outstanding(self, part: Part | None = None) -> int:
        if part is not None:
            st = self._parts.get(part)
            return len(st.outstanding) if st else 0
        return sum(len(st.outstanding) for st in self._parts.values())

    def commit(self, consumer: KafkaConsumer) -> bool:
        """Commit every position that moved since the last accepted commit (synchronously).
        Returns True when something was committed."""
        todo = self.pending()
        if not todo:
            return False
        offsets = [TopicPartition(t, p, off) for (t, p), off in sorted(todo.items())]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. revoked meanwhile: the new owner replays
            log.warning("commit failed (events will be replayed by the next owner): %s", exc)
            return False
        for part, off in todo.items():
            st = self._parts.get(part)
            if st is not None:
                st.committed = max(st.committed, off)
        return True

    def rewind(self, consumer: KafkaConsumer, parts: set[Part]) -> dict[Part, int]:
        """Seek ``parts`` back to their commit position and forget what was outstanding there:
        those messages will be polled again. Returns the positions sought."""
        sought: dict[Part, int] = {}
        for part in sorted(parts):
            st = self._parts.get(part)
            if st is None or not st.outstanding:
                continue
            target = min(st.outstanding)
            try:
                consumer.seek(TopicPartition(part[0], part[1], target))
            except KafkaException as exc:
                log.warning("cannot rewind %s[%d]: %s", part[0], part[1], exc)
                continue
            st.outstanding.clear()
            if st.done_end >= 0:
                st.done_end = target
            sought[part] = target
        return sought

    def forget(self, parts: set[Part]) -> None:
        """Revoked or lost: another member owns these now."""
        for part in parts:
            self._parts.pop(part, None)
