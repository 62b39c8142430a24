"""Snapshots on a background thread: writing one (serialising under the memory's lock, then
uploading) never holds up polling."""

from __future__ import annotations

import logging
import threading

from dupstream.stream.replication import Snapshotter

log = logging.getLogger(__name__)


class SnapshotThread:
    """Calls ``Snapshotter.maybe_snapshot`` every ``tick_s`` on a daemon thread."""

    def __init__(self, snapshotter: Snapshotter, *, tick_s: float = 1.0) -> None:
        self.snapshotter = snapshotter
        self.tick_s = tick_s
        self._halt = threading.Event()
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
            self.snapshotter.maybe_snapshot()

    def stop(self, *, final: bool, timeout_s: float = 30.0) -> None:
        """Stop the thread; with ``final``, write one last snapshot (unless one is still being
        written after ``timeout_s``)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("a snapshot is still being written; no final snapshot")
                return
            self._thread = None
        if final and self.enabled:
            self.snapshotter.maybe_snapshot(force=True)
