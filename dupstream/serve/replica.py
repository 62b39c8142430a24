"""The server as a replica of the shared index: it follows the index-updates feed (a
``FeedFollower`` on its own thread: catch up, then apply what arrives) and publishes its own adds
and removals to the feed, waiting for the broker's acknowledgement before answering."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dupstream.core.errors import DeliveryError
from dupstream.state.codec import pack
from dupstream.state.memory import Memory, encode_removal, encode_update, update_key
from dupstream.state.records import ImageRecord, RecordKey

log = logging.getLogger(__name__)


class FeedPublisher:
    """Index updates of this replica onto the feed (thread-safe; one flush at a time)."""

    def __init__(self, *, producer: Any, topic: str, timeout_s: float) -> None:
        self.producer, self.topic, self.timeout_s = producer, topic, timeout_s
        self._lock = threading.Lock()

    def _send(self, msgs: list[tuple[bytes, bytes]]) -> None:
        if not msgs:
            return
        errors: list[str] = []
        acked = [0]

        def done(err, _msg) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                acked[0] += 1

        with self._lock:
            for key, value in msgs:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=done)
            deadline = time.monotonic() + self.timeout_s
            while acked[0] + len(errors) < len(msgs) and time.monotonic() < deadline:
                self.producer.flush(max(0.0, min(0.5, deadline - time.monotonic())))
        if errors or acked[0] < len(msgs):
            raise DeliveryError(f"index update not acknowledged within {self.timeout_s}s"
                                + (f": {errors[0]}" if errors else ""))

    def adds(self, recs: list[ImageRecord]) -> None:
        self._send([(update_key(r), encode_update(r)) for r in recs])

    def removal(self, key: RecordKey, *, origin: str) -> None:
        self._send([(pack(list(key)), encode_removal(key, origin=origin, ts=time.time()))])

    def close(self) -> None:
        self.producer.flush(self.timeout_s)


class FeedThread:
    """Runs a ``FeedFollower``: catch up (until then the server is not ready), then apply what
    arrives every ``interval_s``. A missing topic is retried, not fatal."""

    def __init__(self, follower_factory: Callable[[], Any], memory: Memory, *,
                 interval_s: float = 0.05) -> None:
        self._factory = follower_factory
        self.memory = memory
        self.interval_s = interval_s
        self.follower: Any = None
        self.caught_up = False
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dupstream-serve-feed",
                                        daemon=True)

    @property
    def applied(self) -> int:
        return 0 if self.follower is None else self.follower.applied

    def start(self) -> FeedThread:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.follower is None:
                    self.follower = self._factory()
                self.follower.start(stopped=self._stop.is_set)
                break
            except Exception as exc:  # topic not there yet, broker down: retry
                self.error = str(exc)
                log.warning("index feed: %s; retrying", exc)
                self._stop.wait(1.0)
        # caught up, or start's own timeout passed (it logged how far it got): serve from here
        self.caught_up = self.follower is not None
        while not self._stop.is_set():
            try:
                self.follower.poll()
                self.error = None
            except Exception as exc:  # keep following
                self.error = str(exc)
                log.warning("index feed: %s", exc)
                self._stop.wait(1.0)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.follower is not None:
            self.follower.close()
