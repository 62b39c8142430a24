"""Handing the heap memory the process has freed back to the operating system.

glibc's malloc keeps freed memory in its arenas (one per thread that allocates: the inference
threads, the blob fetch workers, the record writers, the snapshot thread, librdkafka's threads)
and returns pages to the OS only from the top of a heap, when the free space there passes its
trim threshold. Free chunks below a live allocation stay resident, so after a snapshot (its
serialised form is about the size of the index + records) or a batch of large images the RSS
stays at a high-water mark that rises with the state. ``malloc_trim(0)`` hands every free page of
every arena back; it costs about 0.1 s per GB released (nothing when little is free).

``HeapTrimmer.maybe_trim`` trims at most once every ``interval_s``; the stream service calls it
between batches and after each snapshot. Elsewhere than glibc (musl, macOS) it does nothing.

Measured (docs/PERFORMANCE.md, Soak; two 22-minute soaks at once, snapshots every 60 s): RSS
minus the state (index + records) grew +20.8 % on its floor without trimming, +6.9 % with a
trim every 30 s and after each snapshot, at the same throughput.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _glibc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


class HeapTrimmer:
    """``malloc_trim(0)`` at most once every ``interval_s`` (0: never). Thread-safe."""

    def __init__(self, *, interval_s: float, trim: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._trim = trim if trim is not None else (_glibc_trim() if interval_s > 0 else None)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()
        self.trims = 0
        self.seconds = 0.0

    @property
    def enabled(self) -> bool:
        return self._trim is not None and self.interval_s > 0

    def maybe_trim(self, *, force: bool = False) -> bool:
        """Trim when ``interval_s`` has passed since the last trim (or ``force``, still only
        when enabled). Returns whether it trimmed."""
        if not self.enabled:
            return False
        with self._lock:
            now = self._clock()
            if not force and now - self._last < self.interval_s:
                return False
            t0 = time.perf_counter()
            self._trim()
            dt = time.perf_counter() - t0
            self._last = self._clock()
            self.trims += 1
            self.seconds += dt
        log.debug("malloc_trim: %.1f ms", dt * 1e3)
        return True
