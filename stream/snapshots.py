"""Snapshots on a background thread: writing one (serialising under the memory's lock, then
uploading) never holds up polling."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dupstream.stream.replication import Snapshotter

log = logging.getLogger(__name__)


class SnapshotThread:
    """Calls ``Snapshotter.maybe_snapshot`` every ``tick_s`` on a daemon thread; ``after``
    (when given) after each snapshot written."""

    def __init__(self, snapshotter: Snapshotter, *, tick_s: float = 1.0,
                 after: Callable[[], None] | None = None) -> None:
        self.snapshotter = snapshotter
        self.after = after
        self.tick_s = tick_s
        self._halt = threading.Event()
        self._final = False
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.snapshotter.interval_s > 0

    def start(self) -> SnapshotThread:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dupstream-snapshot",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._halt.wait(self.tick_s):
            if self.snapshotter.maybe_snapshot() is not None and self.after is not None:
                self.after()
        if self._final:
            self.snapshotter.maybe_snapshot(force=True)

    def stop(self, *, final: bool, timeout_s: float | None = None) -> None:
        """Stop the thread; with ``final``, write one last snapshot first. Waits at most
        ``timeout_s`` (None: until written); a snapshot still being written then is abandoned
        (its ``LATEST`` pointer is written last, so the previous snapshot stays the latest)."""
        self._final = final and self.enabled
        self._halt.set()
        if self._thread is None:
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("snapshot not finished within %.1fs of stopping; not waiting for it",
                        timeout_s or 0.0)
        self._thread = None
