"""Concurrent requests gathered into model micro-batches behind a bounded queue.

Requests are ``Job``s put on a queue of at most ``queue_max``; a full queue refuses at once
(``Overloaded``: 503 with Retry-After) instead of growing. One worker thread takes the first
waiting job, waits at most ``wait_s`` for up to ``batch_max - 1`` more, and runs them through
the engine in groups of the same kind (judged in order, one model batch per group). A job whose
caller gave up (timeout) before the worker reached it is skipped (``Future.cancel``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from dupstream.core.errors import DupstreamError
from dupstream.engine import Deduper
from dupstream.engine.deduper import Failed, Upload
from dupstream.engine.records import features_to_record
from dupstream.serve.errors import Overloaded, RequestError
from dupstream.serve.scope import ScopedMemory
from dupstream.state.records import ImageRecord

log = logging.getLogger(__name__)


@dataclass
class Job:
    #: "lookup": judge (and with ``add``, remember); "add": remember without judging
    kind: Literal["lookup", "add"]
    upload: Upload
    add: bool = False
    #: "add" only: the reference bank to add to (None: the tenant's uploads)
    bank: str | None = None
    #: "lookup" only: the banks it may match (None: every bank)
    banks: frozenset[str] | None = None
    future: Future = field(default_factory=Future)

    def group(self) -> tuple:
        return (self.kind, self.add, self.bank, self.banks)


@dataclass(frozen=True)
class Added:
    image_id: str
    tenant: str | None
    bank: str | None
    added: bool  # False: already there


class MicroBatcher:
    def __init__(self, *, deduper: Deduper, memory: ScopedMemory,
                 publish: Callable[[list[ImageRecord]], None], queue_max: int, batch_max: int,
                 wait_s: float, on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.deduper, self.memory, self.publish = deduper, memory, publish
        self.batch_max, self.wait_s = batch_max, wait_s
        self.on_batch = on_batch
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_max)
        self._stop = threading.Event()
        self._added: list[ImageRecord] = []
        deduper.on_add = self._added.append  # the engine's adds, published after each group
        self._thread = threading.Thread(target=self._run, name="dupstream-serve-batcher",
                                        daemon=True)

    def start(self) -> MicroBatcher:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> Future:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests already waiting") from None
        return job.future

    def stop(self) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(30)

    # -- the worker ----------------------------------------------------------------------------
    def _take(self) -> list[Job]:
        first = self._queue.get()
        if first is None:
            return []
        jobs = [first]
        deadline = time.monotonic() + self.wait_s
        while len(jobs) < self.batch_max:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stop.set()
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = [j for j in self._take() if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            self.on_batch(len(jobs))
            for _, grp in itertools.groupby(jobs, key=Job.group):
                group = list(grp)
                try:
                    results = self._run_group(group)
                except Exception as exc:  # noqa: BLE001 - answered, never a dead worker
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                for job, res in zip(group, results, strict=True):
                    if isinstance(res, BaseException):
                        job.future.set_exception(res)
                    else:
                        job.future.set_result(res)

    def _run_group(self, group: list[Job]) -> list[Any]:
        self._added.clear()
        first = group[0]
        if first.kind == "lookup":
            with self.memory.scoped(first.banks):
                out = self.deduper.process([j.upload for j in group], add=first.add)
            results: list[Any] = [r.error if isinstance(r, Failed) else r for r in out]
        else:
            results = self._add(group)
        if self._added:
            try:
                self.publish(list(self._added))
            except DupstreamError as exc:  # added here, not acknowledged by the broker
                return [exc if not isinstance(r, BaseException) else r for r in results]
        return results

    def _add(self, group: list[Job]) -> list[Any]:
        feats = self.deduper.extractor.extract([j.upload.data for j in group])
        out: list[Any] = []
        for job, feat in zip(group, feats, strict=True):
            up = job.upload
            if isinstance(feat, DupstreamError):
                out.append(feat)
                continue
            key = (job.bank, None if job.bank else up.tenant, up.image_id)
            if self.memory.is_removed(key):
                out.append(RequestError(f"image {up.image_id!r} was deleted; ids are not "
                                        "reused", reason="image_deleted"))
                continue
            if job.bank is None:
                added = self.deduper.add(up.image_id, up.tenant, feat) is not None
            else:
                rec = features_to_record(up.image_id, None, feat)
                added = self.memory.add_to_bank(job.bank, [rec])[0]
                if added:
                    self._added.append(rec)
            out.append(Added(up.image_id, key[1], job.bank, added))
        return out
