"""Batching and pipelining: a polled micro-batch is decoded and its blobs fetched in the
background (while the previous batch is on the model); once its blobs are in, its features are
extracted in the background too (``Deduper.extract_ahead``: decode, hashes, embedding - work that
reads no memory), while the previous batch is still judged. Then it is judged by the engine with
one failing image isolated from the rest of its batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from dupstream.core.errors import (
    BlobUnavailable,
    ConfigError,
    DupstreamError,
    ModelError,
    WeightsError,
)
from dupstream.core.events import ImageUploaded, decode_event
from dupstream.core.verdict import Verdict
from dupstream.engine import Deduper, Extracted, Failed, Upload
from dupstream.stream.blobs import ObjectStore
from dupstream.stream.metrics import Metrics
from dupstream.stream.ports import KafkaMessage, Part, part_of

#: errors that are deployment faults, not a property of one image: they end the run (exit code
#: 3/4 from ``dupstream run``) instead of dead-lettering every event
FATAL = (WeightsError, ConfigError)

log = logging.getLogger("dupstream.stream.service")


@dataclass(eq=False)
class Item:
    """One input message on its way through the pipeline."""

    msg: KafkaMessage
    event: ImageUploaded | None = None
    data: bytes | None = None
    error: DupstreamError | None = None
    verdict: Verdict | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: its features, extracted ahead of its judging (None: not, or not yet)
    ahead: Extracted | None = None

    def reset(self) -> None:
        """Before a retry: forget the outcome of the last attempt (the decoded event stays)."""
        self.data, self.error, self.verdict, self.timings_ms = None, None, None, {}
        self.ahead = None

    def upload(self) -> Upload:
        """What the engine judges: the event's image and tenant with the fetched bytes."""
        return Upload(self.event.image_id, self.data, self.event.tenant)


class Ahead:
    """The hand-off of a batch's extraction ahead: started by the last of its fetches to finish,
    taken by ``Pipeline.infer``. Taken before it started (the fetches' callbacks run just after
    their waiters wake), it never starts - the engine extracts the batch itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._future: Future | None = None
        self._taken = False

    def start(self, submit: Callable[[], Future]) -> None:
        with self._lock:
            if not self._taken and self._future is None:
                self._future = submit()

    def take(self) -> Future | None:
        with self._lock:
            self._taken = True
            return self._future


@dataclass
class Batch:
    items: list[Item]
    futures: list[Future]
    ahead: Ahead | None = None

    def parts(self) -> set[Part]:
        return {part_of(it.msg) for it in self.items}

    def without(self, parts: set[Part]) -> Batch | None:
        """This batch less the messages of ``parts`` (their fetches finish unobserved)."""
        keep = [it for it in self.items if part_of(it.msg) not in parts]
        return Batch(keep, self.futures, self.ahead) if keep else None


class FetchPool:
    """A fixed set of daemon threads: a fetch stuck on an unreachable server never holds up the
    process exiting (``concurrent.futures`` joins its workers at exit)."""

    def __init__(self, *, workers: int, name: str = "dupstream-fetch") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], None]) -> Future:
        fut: Future = Future()
        self._queue.put((fn, fut))
        return fut

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                fut.set_exception(exc)

    def shutdown(self) -> None:
        """Stop the workers after the jobs queued now (without waiting for them)."""
        for _ in self._threads:
            self._queue.put(None)


class Pipeline:
    """Start a batch (decode, fetch in the background, then extract its features in the
    background), wait for it, run the engine on it. ``extract_ahead``: whether features are
    extracted ahead (one thread, batches in order); off, the engine extracts them when the batch
    is judged. The verdicts are the same either way."""

    def __init__(self, *, store: ObjectStore, deduper: Deduper, metrics: Metrics,
                 max_blob_bytes: int, fetch_workers: int, extract_ahead: bool = True) -> None:
        self.store, self.deduper, self.metrics = store, deduper, metrics
        self.max_blob_bytes = max_blob_bytes
        self.fetch_workers = fetch_workers
        self.extract_ahead = extract_ahead
        self._pool: FetchPool | None = None
        self._extract: FetchPool | None = None

    def open(self) -> None:
        self._pool = FetchPool(workers=self.fetch_workers)
        if self.extract_ahead:
            self._extract = FetchPool(workers=1, name="dupstream-extract")

    def close(self) -> None:
        for pool in (self._pool, self._extract):
            if pool is not None:
                pool.shutdown()
        self._pool = self._extract = None

    def start(self, msgs: list[KafkaMessage], retries: list[Item] = ()) -> Batch:
        """Decode new messages, and start fetching the blobs of those and of ``retries``
        (deferred items due for another attempt)."""
        if msgs:
            self.metrics.batch_size.observe(len(msgs))
        items = [Item(msg) for msg in msgs]
        for it in items:
            try:
                it.event = decode_event(it.msg.value())
            except DupstreamError as exc:
                it.error = exc
        for it in retries:
            it.reset()
        items = [*retries, *items]
        futures = [self._pool.submit(lambda it=it: self._fetch_one(it))
                   for it in items if it.error is None]
        batch = Batch(items, futures)
        if self._extract is not None and futures:
            pool, ahead = self._extract, Ahead()
            batch.ahead = ahead

            def fetched(_: Future) -> None:
                if all(f.done() for f in futures):
                    ahead.start(lambda: pool.submit(lambda: self._extract_ahead(items)))

            for f in futures:
                f.add_done_callback(fetched)
        return batch

    def _extract_ahead(self, items: list[Item]) -> None:
        """Features of the items that have their bytes, kept on each item. A deployment fault is
        raised to ``infer``; any other failure only means the engine extracts them itself."""
        ready = [it for it in items if it.error is None and it.data is not None]
        if not ready:
            return
        uploads = [it.upload() for it in ready]
        try:
            extracted = self.deduper.extract_ahead(uploads)
        except FATAL:
            raise
        except Exception as exc:  # the batch's own inference isolates what broke
            log.warning("extraction ahead failed (%s); the batch is extracted when judged", exc)
            return
        for it, ext in zip(ready, extracted, strict=True):
            it.ahead = ext

    def wait_fetched(self, batch: Batch, *, until: Callable[[], float | None]) -> bool:
        """Wait for the batch's fetches. ``until()`` is the time (monotonic) past which to give
        up (None: no limit; it is asked again every 0.2 s, so a stop request shortens it).
        Returns False when given up."""
        pending = [f for f in batch.futures if not f.done()]
        while pending:
            limit = until()
            if limit is not None and time.monotonic() >= limit:
                return False
            _, not_done = wait_futures(pending, timeout=0.2)
            pending = list(not_done)
        return True

    def _fetch_one(self, it: Item) -> None:
        t0 = time.perf_counter()
        try:
            it.data = self.store.get(it.event.bucket, it.event.key, max_bytes=self.max_blob_bytes)
        except DupstreamError as exc:
            it.error = exc
        except Exception as exc:  # never let one blob take the batch down
            it.error = BlobUnavailable(f"{type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t0
        it.timings_ms["fetch"] = round(dt * 1e3, 3)
        self.metrics.stage.labels(stage="fetch").observe(dt)

    def infer(self, items: list[Item], ahead: Ahead | None = None) -> None:
        """Run the engine on the items that have their bytes, with the features extracted
        ahead (``ahead``: the batch's hand-off; waited for when it started); a batch that fails
        as a whole is retried image by image, so one bad image fails alone (a per-image dead
        letter)."""
        started = ahead.take() if ahead is not None else None
        if started is not None:
            started.result()  # CPU work on bytes already fetched; a deployment fault is raised
        items = [it for it in items if it.error is None]
        if not items:
            return
        uploads = [it.upload() for it in items]
        extracted = [it.ahead for it in items] if started is not None else None
        try:
            results = self.deduper.process(uploads, extracted=extracted)
        except FATAL:  # a deployment fault (weights, configuration): stop, never dead-letter
            raise
        except Exception as exc:  # isolate the image that breaks the batch
            log.warning("batch inference failed (%s); retrying image by image", exc)
            results = []
            for up in uploads:
                try:
                    results.extend(self.deduper.process([up]))
                except FATAL:
                    raise
                except Exception as one_exc:
                    err = one_exc if isinstance(one_exc, DupstreamError) else ModelError(
                        f"{type(one_exc).__name__}: {one_exc}")
                    results.append(Failed(up.image_id, up.tenant, err))
        for it, res in zip(items, results, strict=True):
            if isinstance(res, Failed):
                it.error = res.error
            else:
                res.timings_ms.update(it.timings_ms)
                it.verdict = res
                for stage in ("decode", "hash", "embed", "detect", "search", "verify",
                              "objects"):
                    if stage in res.timings_ms:
                        self.metrics.stage.labels(stage=stage).observe(
                            res.timings_ms[stage] / 1e3)
                for stage in res.evidence.cascade:
                    self.metrics.cascade.labels(stage=stage).inc()
