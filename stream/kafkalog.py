"""librdkafka's log lines through Python logging (confluent_kafka's ``logger`` property).

Without it librdkafka writes to stderr on its own: a broker that is down prints a "Connect to ...
failed" line for every reconnect of every client, ~20 a second. Routed here they go to the
``dupstream.librdkafka`` logger at their own level (syslog levels mapped by confluent_kafka), and
a line repeated within ``repeat_s`` is counted instead of printed again.
"""

from __future__ import annotations

import logging
import re
import threading
import time

LOGGER_NAME = "dupstream.librdkafka"
_VOLATILE = re.compile(r"\(after \d+ms[^)]*\)|\d+ms")


class LibrdkafkaLog:
    """An object for confluent_kafka's ``logger`` config property (it calls ``log``, from the
    thread that polls the client)."""

    def __init__(self, logger: logging.Logger | None = None, *, repeat_s: float = 60.0,
                 max_keys: int = 1000) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.repeat_s = repeat_s
        self.max_keys = max_keys
        #: the most recent line, whatever its level (what a start-up probe reports)
        self.last: str | None = None
        self._seen: dict[tuple, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LibrdkafkaLog({self.logger.name!r})"

    def __deepcopy__(self, memo: dict) -> LibrdkafkaLog:  # config dicts get copied: share it
        return self

    def log(self, level: int, msg: str, *args: object) -> None:
        text = msg % args if args else msg
        self.last = args[-1] if args and isinstance(args[-1], str) else text
        key = (level, _VOLATILE.sub("", text))
        now = time.monotonic()
        with self._lock:
            first, repeats = self._seen.get(key, (None, 0))
            if first is not None and now - first < self.repeat_s:
                self._seen[key] = (first, repeats + 1)
                return
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if repeats:
            text += f" (and {repeats} more like it in {self.repeat_s:.0f} s)"
        self.logger.log(level, text)
