"""Deferral of events that failed transiently (object storage down, a timeout).

A deferred event is kept in memory and retried alone after a backoff (``due``); the events after
it in its partition go on and keep their results (the commit stops at the deferred offset, see
``checkpoint``). Once an event has been failing for ``budget_s`` it is given up on: it goes to
the dead-letter topic with its attempt count. A partition that holds ``cap`` deferred events is
paused until some resolve (``full``), so a long outage holds a bounded number of events in memory.
A deferred event of a partition that is revoked, lost or rewound is dropped (``drop``): it is
read again from the committed offset, which never passes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from dupstream.core.errors import DupstreamError
from dupstream.stream.ports import KafkaMessage, Part, position_of

log = logging.getLogger("dupstream.stream.service")  # the "transient failure" lines tests count


class Deferrable(Protocol):
    msg: KafkaMessage
    error: DupstreamError | None


T = TypeVar("T", bound=Deferrable)


@dataclass
class _Entry(Generic[T]):
    item: T
    first: float
    attempts: int
    due: float


def backoff_s(attempts: int) -> float:
    """0.5 s, 1 s, 2 s, 4 s, then 5 s between retries of one event."""
    return min(5.0, 0.25 * 2 ** min(attempts, 5))


class Deferrals(Generic[T]):
    def __init__(self, *, budget_s: float, cap: int,
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Callable[[int], float] = backoff_s) -> None:
        self.budget_s = budget_s
        self.cap = max(1, cap)
        self._clock = clock
        #: seconds before the next attempt, from the attempts so far
        self.backoff = backoff
        self._entries: dict[tuple[str, int, int], _Entry[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def settle(self, items: list[T]) -> list[T]:
        """After a batch ran: defer the items that failed transiently and are within budget
        (returned); the others are final (a transient one past its budget carries its total
        attempts). A deferred item that now succeeded or failed permanently is forgotten."""
        now = self._clock()
        deferred: list[T] = []
        for it in items:
            pos = position_of(it.msg)
            entry = self._entries.pop(pos, None)
            if it.error is None or not it.error.transient:
                continue
            first = entry.first if entry else now
            attempts = (entry.attempts if entry else 0) + it.error.attempts
            if now - first < self.budget_s:
                self._entries[pos] = _Entry(it, first, attempts, now + self.backoff(attempts))
                deferred.append(it)
                log.warning("transient failure on %s[%d]@%d (attempt %d): %s; will retry",
                            *pos, attempts, it.error)
            else:
                it.error.attempts = attempts
        return deferred

    def due(self, *, limit: int | None = None) -> list[T]:
        """Deferred items whose backoff ended (oldest offsets first), taken out for a retry;
        ``settle`` puts them back if they fail again."""
        now = self._clock()
        ready = sorted((e for e in self._entries.values() if e.due <= now),
                       key=lambda e: position_of(e.item.msg))[:limit]
        for e in ready:
            e.due = float("inf")  # in flight: not due again until settled
        return [e.item for e in ready]

    def full(self) -> set[Part]:
        """Partitions holding ``cap`` or more deferred events (to be paused)."""
        counts: dict[Part, int] = {}
        for pos in self._entries:
            counts[pos[:2]] = counts.get(pos[:2], 0) + 1
        return {p for p, n in counts.items() if n >= self.cap}

    def drop(self, parts: set[Part]) -> list[T]:
        """Forget the deferred events of ``parts`` (revoked, lost or rewound: they will be read
        again from the committed offset). Returns them."""
        gone = [pos for pos in self._entries if pos[:2] in parts]
        return [self._entries.pop(pos).item for pos in gone]
