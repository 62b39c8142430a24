"""Write-behind for the record store: records are written to the ``RecordStore`` (one object per
record in S3) by background writer threads, never by ``Memory.add`` under the memory's lock.

- **Bounded** by count and bytes (queued + reserved). ``reserve`` takes room *before* a record is
  added to the index, outside the memory's lock: while the queue is full it waits up to ``wait_s``
  for the writers to make room, and raises ``RecordBacklog`` (transient: the stream defers the
  event and retries it) when there is none by then, at once while the store is failing. So a
  record that made it into the index always has its place in the queue, and a slow or dead store
  holds up adds instead of growing memory. A queue with nothing in it admits one oversized
  request (a reference bank loaded in one call).
- **Retries**: a transient failure (connection refused, timeout, 5xx, throttling: a transient
  ``DupstreamError``, or an ``OSError``) keeps the record queued; the writers pause for a backoff
  (``retry_min_s`` doubling to ``retry_max_s``) and try again, in order. A permanent failure
  (access denied, an invalid name: retrying cannot fix it) drops that write, logged with its
  reason and counted (``stats.dropped``); the record stays in the LRU and in the index-updates feed.
- **Flush**: ``flush(timeout_s)`` returns once every record submitted before the call is written
  (or dropped as permanent); ``RecordFlushTimeout`` when that does not happen in time. The stream
  flushes before it commits the offsets of the events that added the records.
- **Reads**: a record still queued is served from here (``get``), so a read never misses a record
  whose write is pending.
- **Stop**: ``stop(timeout_s)`` drains within the timeout and stops the writers; what could not
  be written stays queued (a later ``submit``/``flush`` starts writers again).

Writes are idempotent by key (the object name is a hash of the key), so writing a record twice,
or a replayed event's record again, is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from dupstream.core.errors import DupstreamError, RecordBacklog, RecordFlushTimeout, StateError
from dupstream.state.records import ImageRecord, RecordKey, RecordStore

log = logging.getLogger(__name__)

#: a permanent failure is logged once per reason in this many seconds (each one is counted)
LOG_EVERY_S = 60.0


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: a transient ``DupstreamError`` (the S3 adapter's mapping) or an
    OS-level one (connection refused/reset, timeout)."""
    if isinstance(exc, DupstreamError):
        return exc.transient
    return isinstance(exc, OSError)


@dataclass(eq=False)
class _Entry:
    rec: ImageRecord
    size: int
    seq: int
    busy: bool = False


@dataclass
class WriteStats:
    submitted: int = 0
    written: int = 0
    #: failed attempts that will be retried (transient)
    retried: int = 0
    #: writes given up because the store refused them permanently
    dropped: int = 0
    #: queued writes superseded by a newer one of the same key before they started
    superseded: int = 0
    #: ``reserve`` calls refused (``RecordBacklog``)
    refused: int = 0


class Slot:
    """Room reserved in the queue (``WriteBehind.reserve``) for records about to be added. Hand
    each record to ``submit``; ``release`` (or leaving the ``with`` block) gives back the rest."""

    def __init__(self, owner: WriteBehind, items: int, nbytes: int) -> None:
        self._owner = owner
        self.items, self.nbytes = items, nbytes

    def submit(self, rec: ImageRecord) -> None:
        self._owner.submit(rec, slot=self)

    def release(self) -> None:
        self._owner._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


class WriteBehind:
    """A bounded queue of record writes drained by ``writers`` threads (started on the first
    submit; no thread and no I/O in ``__init__``)."""

    def __init__(
        self,
        store: RecordStore,
        *,
        max_items: int = 4096,
        max_bytes: int = 128 * 1024 * 1024,
        wait_s: float = 5.0,
        writers: int = 2,
        retry_min_s: float = 0.05,
        retry_max_s: float = 5.0,
    ) -> None:
        if max_items <= 0 or max_bytes <= 0 or writers <= 0:
            raise StateError("record write-behind bounds and writers must be positive")
        self.store = store
        self.max_items, self.max_bytes = max_items, max_bytes
        self.wait_s = wait_s
        self.writers = writers
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.stats = WriteStats()
        #: the last failure of a write (None after a success)
        self.last_error: BaseException | None = None
        self._cond = threading.Condition()
        self._queue: OrderedDict[int, _Entry] = OrderedDict()  # by seq: submission order
        self._latest: dict[RecordKey, _Entry] = {}  # the newest queued write of each key
        self._bytes = 0
        self._reserved_items = 0
        self._reserved_bytes = 0
        self._seq = 0
        self._retry_at = 0.0
        self._delay = retry_min_s
        self._generation = 0
        self._threads: list[threading.Thread] = []
        self._logged_at: dict[str, float] = {}

    # -- sizes -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._queue)

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def failing(self) -> bool:
        """The last write failed transiently and the writers are waiting to retry."""
        return self.last_error is not None and time.monotonic() < self._retry_at

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            s = replace(self.stats)
            return {"queued": len(self._queue), "queued_bytes": self._bytes,
                    "submitted": s.submitted, "written": s.written, "retried": s.retried,
                    "dropped": s.dropped, "superseded": s.superseded, "refused": s.refused}

    # -- producers -------------------------------------------------------------------------
    def _fits(self, items: int, nbytes: int) -> bool:
        used = len(self._queue) + self._reserved_items
        if used == 0:
            return True  # an empty queue takes anything, however large
        return (used + items <= self.max_items
                and self._bytes + self._reserved_bytes + nbytes <= self.max_bytes)

    def reserve(self, items: int, nbytes: int, *, timeout_s: float | None = None) -> Slot:
        """Room for ``items`` records of ``nbytes`` in all (``ImageRecord.nbytes``). Call it
        without holding the memory's lock: it waits while the queue is full, up to ``timeout_s``
        (default ``wait_s``); raises ``RecordBacklog`` when there is no room by then, at once
        while the store is failing."""
        wait = self.wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        with self._cond:
            while not self._fits(items, nbytes):
                left = deadline - time.monotonic()
                if left <= 0 or self.failing:
                    self.stats.refused += 1
                    why = (f"the record store is failing ({self.last_error})" if self.failing
                           else f"no room within {wait:.1f}s")
                    raise RecordBacklog(
                        f"record write-behind full ({len(self._queue)} records, {self._bytes} "
                        f"bytes queued; bounds {self.max_items} records, {self.max_bytes} "
                        f"bytes): {why}")
                self._cond.wait(left)
            self._reserved_items += items
            self._reserved_bytes += nbytes
        return Slot(self, items, nbytes)

    def _release(self, slot: Slot) -> None:
        with self._cond:
            self._reserved_items -= slot.items
            self._reserved_bytes -= slot.nbytes
            slot.items = slot.nbytes = 0
            self._cond.notify_all()

    def submit(self, rec: ImageRecord, *, slot: Slot | None = None) -> None:
        """Queue a write of ``rec`` (never waits, never does I/O: safe under the memory's lock).
        With a ``slot``, it uses room reserved before; without one it may exceed the bounds
        (use ``offer`` for a best-effort write that respects them)."""
        size = rec.nbytes()
        with self._cond:
            if slot is not None and slot.items > 0:
                self._reserved_items -= 1
                self._reserved_bytes -= min(size, slot.nbytes)
                slot.items -= 1
                slot.nbytes -= min(size, slot.nbytes)
            old = self._latest.get(rec.key)
            if old is not None and not old.busy:  # not started: the newer write replaces it
                self._drop(old)
                self.stats.superseded += 1
            self._seq += 1
            entry = _Entry(rec, size, self._seq)
            self._queue[entry.seq] = entry
            self._latest[rec.key] = entry
            self._bytes += size
            self.stats.submitted += 1
            self._ensure_writers()
            self._cond.notify_all()

    def offer(self, rec: ImageRecord) -> bool:
        """Queue ``rec`` if there is room now (no waiting); False when the queue is full."""
        try:
            slot = self.reserve(1, rec.nbytes(), timeout_s=0.0)
        except RecordBacklog:
            return False
        with slot:
            slot.submit(rec)
        return True

    def get(self, key: RecordKey) -> ImageRecord | None:
        """The newest queued (not yet written) record of ``key``, if any."""
        with self._cond:
            entry = self._latest.get(key)
        return None if entry is None else entry.rec

    # -- flush / stop ----------------------------------------------------------------------
    def _oldest(self) -> int | None:
        return next(iter(self._queue), None)

    def flush(self, timeout_s: float, *, until=None) -> None:
        """Wait until every record submitted before this call is written (or dropped as a
        permanent failure). ``until()``: an earlier time (``time.monotonic``) to give up at, asked
        again every 0.2 s (a stop request). Raises ``RecordFlushTimeout`` when it runs out."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            target = self._seq
            if self._queue:
                self._ensure_writers()
            while (oldest := self._oldest()) is not None and oldest <= target:
                limit = deadline
                if until is not None and (stop_at := until()) is not None:
                    limit = min(limit, stop_at)
                left = limit - time.monotonic()
                if left <= 0:
                    behind = sum(1 for s in self._queue if s <= target)
                    raise RecordFlushTimeout(
                        f"{behind} record(s) not written to the record store within "
                        f"{timeout_s:.1f}s ({len(self._queue)} queued; last error: "
                        f"{self.last_error or 'none, the store is slow'})")
                self._cond.wait(min(left, 0.2))

    def stop(self, timeout_s: float) -> bool:
        """Drain within ``timeout_s``, then stop the writers. Returns whether the queue was
        drained; records left are kept queued (logged)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            self.flush(timeout_s)
            drained = True
        except RecordFlushTimeout as exc:
            log.warning("stopping the record writers with records unwritten: %s", exc)
            drained = False
        with self._cond:
            self._generation += 1  # the current writers exit after their write in hand
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        for t in threads:  # a writer stuck in a hung put is a daemon: not waited for past it
            t.join(max(0.0, min(0.5, deadline - time.monotonic())))
        return drained

    # -- writers ---------------------------------------------------------------------------
    def _ensure_writers(self) -> None:
        """(Under the condition.) Start the writer threads when none runs."""
        if self._threads:
            return
        gen = self._generation
        self._threads = [threading.Thread(target=self._run, args=(gen,), daemon=True,
                                          name=f"dupstream-records-{i}")
                         for i in range(self.writers)]
        for t in self._threads:
            t.start()

    def _drop(self, entry: _Entry) -> None:
        self._queue.pop(entry.seq, None)
        self._bytes -= entry.size
        if self._latest.get(entry.rec.key) is entry:
            del self._latest[entry.rec.key]

    def _next(self, gen: int) -> _Entry | None:
        """(Under the condition.) The oldest write nobody works on, once any backoff is over;
        None when this writer should exit."""
        while gen == self._generation:
            now = time.monotonic()
            if now < self._retry_at:
                self._cond.wait(self._retry_at - now)
                continue
            for entry in self._queue.values():
                if not entry.busy:
                    entry.busy = True
                    return entry
            self._cond.wait()
        return None

    def _log_permanent(self, entry: _Entry, err: BaseException) -> None:
        """(Under the condition.) One line per reason a minute at most: a misconfigured store
        (a bad bucket, no permission) refuses every write."""
        reason = getattr(err, "reason", type(err).__name__)
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._logged_at[reason] = now
        log.error("record %s not written to the record store (%s, permanent; %d writes given "
                  "up so far): %s", entry.rec.key, reason, self.stats.dropped, err)

    def _run(self, gen: int) -> None:
        while True:
            with self._cond:
                entry = self._next(gen)
            if entry is None:
                return
            try:
                self.store.put(entry.rec)
                err = None
            except Exception as exc:  # noqa: BLE001 - classified below, the writer goes on
                err = exc
            with self._cond:
                entry.busy = False
                if err is None:
                    self._drop(entry)
                    self.stats.written += 1
                    self.last_error, self._retry_at, self._delay = None, 0.0, self.retry_min_s
                elif is_transient(err):
                    self.stats.retried += 1
                    if self.last_error is None:
                        log.warning("record store write failed (%s); retrying (%d queued)",
                                    err, len(self._queue))
                    self.last_error = err
                    self._retry_at = time.monotonic() + self._delay
                    self._delay = min(self.retry_max_s, self._delay * 2)
                else:
                    self._drop(entry)
                    self.stats.dropped += 1
                    self._log_permanent(entry, err)
                self._cond.notify_all()
