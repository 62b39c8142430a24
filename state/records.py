"""Compact per-image records, their msgpack codec, and a bounded LRU in front of a stored form.

A record carries what re-ranking a candidate needs, generically: named numpy arrays (the visual
vector, the thumbnail, a semantic vector, a compact object graph, ...) and small scalars (width,
height, PDQ quality, where the image came from). New feature fields need no change here.

``RecordCache`` keeps the recently used records in memory, bounded by count *and* bytes. On a
miss it asks the backing ``RecordStore`` (the stored form, e.g. ``BlobRecordStore`` in object
storage), then an optional ``loader`` (recompute, e.g. refetch the image and re-extract), and
returns ``None`` when neither has it. With a write-behind (``state.writebehind.WriteBehind``),
writes to the stored form are queued and written by background threads; a record still queued
is served from the queue on a miss.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from dupstream.core.errors import BlobNotFound, DupstreamError, StateError
from dupstream.state.blobstore import BlobStore
from dupstream.state.codec import pack, unpack
from dupstream.state.idmap import key64

if TYPE_CHECKING:
    from dupstream.state.writebehind import WriteBehind

log = logging.getLogger(__name__)

Scalar = None | bool | int | float | str
#: (bank, tenant, image_id); bank is None for uploads
RecordKey = tuple[str | None, str | None, str]
RECORD_VERSION = 1


@dataclass
class ImageRecord:
    image_id: str
    tenant: str | None
    digest: str  # content hash (SHA-256 hex)
    pdq: np.ndarray  # (V, 32) uint8 packed PDQ; row 0 = identity, up to 8 dihedral variants
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # scalars / short lists of scalars
    bank: str | None = None  # reference bank name; None = an upload
    origin: str = ""  # the replica that added it
    ts: float = 0.0  # unix seconds at which the origin added it
    #: the model that produced it (``state.identity.ModelIdentity``): travels with index
    #: updates, not stored per record (snapshots carry it once, in the manifest)
    model: Any = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> RecordKey:
        return (self.bank, self.tenant, self.image_id)

    def nbytes(self) -> int:
        """Approximate resident size: arrays + strings + a fixed overhead."""
        size = 400 + len(self.image_id) + len(self.digest) + int(self.pdq.nbytes)
        for name, arr in self.arrays.items():
            size += 100 + len(name) + int(arr.nbytes)
        return size + 60 * len(self.meta)


def encode_record(rec: ImageRecord) -> bytes:
    return pack(record_to_wire(rec))


def decode_record(data: bytes) -> ImageRecord:
    return record_from_wire(unpack(data))


def record_to_wire(rec: ImageRecord) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "id": rec.image_id,
        "t": rec.tenant,
        "b": rec.bank,
        "d": rec.digest,
        "p": np.asarray(rec.pdq, dtype=np.uint8),
        "a": {k: np.asarray(v) for k, v in rec.arrays.items()},
        "m": dict(rec.meta),
        "o": rec.origin,
        "ts": float(rec.ts),
    }


def record_from_wire(w: Any) -> ImageRecord:
    if not isinstance(w, dict) or w.get("v") != RECORD_VERSION:
        raise StateError("not a version-1 image record")
    try:
        rec = ImageRecord(
            image_id=str(w["id"]),
            tenant=w["t"],
            digest=str(w["d"]),
            pdq=np.asarray(w["p"], dtype=np.uint8).reshape(-1, 32),
            arrays=dict(w["a"]),
            meta=dict(w["m"]),
            bank=w.get("b"),
            origin=str(w.get("o", "")),
            ts=float(w.get("ts", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"bad image record: {exc}") from exc
    if not all(isinstance(a, np.ndarray) for a in rec.arrays.values()):
        raise StateError("bad image record: arrays must be numpy arrays")
    return rec


@runtime_checkable
class RecordStore(Protocol):
    """The stored form of records: every record, not only the recent ones."""

    def get(self, key: RecordKey) -> ImageRecord | None: ...

    def put(self, rec: ImageRecord) -> None: ...


class BlobRecordStore:
    """One msgpack blob per record under ``{prefix}/records/``: shared by every replica."""

    def __init__(self, store: BlobStore, *, prefix: str = "dupstream") -> None:
        self.store = store
        self.prefix = prefix.strip("/")

    def name(self, key: RecordKey) -> str:
        bank, tenant, image_id = key
        scope = "_uploads" if bank is None else f"bank-{key64(bank, None):016x}"
        return f"{self.prefix}/records/{scope}/{key64(image_id, tenant):016x}"

    def get(self, key: RecordKey) -> ImageRecord | None:
        try:
            rec = decode_record(self.store.get_bytes(self.name(key)))
        except BlobNotFound:
            return None
        return rec if rec.key == key else None

    def put(self, rec: ImageRecord) -> None:
        self.store.put_bytes(self.name(rec.key), encode_record(rec))


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # not in memory
    fetched: int = 0  # of the misses: found in the stored form (its write queue included)
    queued: int = 0  # of the fetched: served from the write-behind queue (not yet written)
    recomputed: int = 0  # of the misses: rebuilt by the loader
    lost: int = 0  # of the misses: nowhere
    evicted: int = 0
    unpersisted: int = 0  # writes to the stored form that failed (the record stays in memory)


class RecordCache:
    """LRU of records bounded by ``max_items`` and ``max_bytes``, over an optional stored form."""

    def __init__(
        self,
        *,
        max_items: int = 100_000,
        max_bytes: int = 512 * 1024 * 1024,
        backing: RecordStore | None = None,
        loader: Callable[[RecordKey], ImageRecord | None] | None = None,
        writes: WriteBehind | None = None,
    ) -> None:
        if max_items <= 0 or max_bytes <= 0:
            raise StateError("record cache bounds must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.backing = backing
        self.loader = loader
        #: writes to ``backing`` go through this queue when set (else synchronously)
        self.writes = writes
        self.stats = CacheStats()
        self._lru: OrderedDict[RecordKey, tuple[ImageRecord, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: RecordKey) -> bool:
        return key in self._lru

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _insert(self, rec: ImageRecord) -> None:
        size = rec.nbytes()
        old = self._lru.pop(rec.key, None)
        if old is not None:
            self._bytes -= old[1]
        if size > self.max_bytes:
            return  # larger than the whole cache: keep it only in the stored form
        self._lru[rec.key] = (rec, size)
        self._bytes += size
        while len(self._lru) > self.max_items or self._bytes > self.max_bytes:
            _, (_, s) = self._lru.popitem(last=False)
            self._bytes -= s
            self.stats.evicted += 1

    def put(self, rec: ImageRecord, *, persist: bool = False) -> None:
        """Keep ``rec`` as most recent; with ``persist`` also write it to the stored form
        (queued, when there is a write-behind)."""
        if persist and self.writes is not None:
            self.writes.submit(rec)
        elif persist and self.backing is not None:
            try:
                self.backing.put(rec)
            except DupstreamError as exc:
                # storage briefly down: the record is still held here and replicated by the
                # feed; only a later eviction could lose it, so count it rather than fail
                if not exc.transient:
                    raise
                self.stats.unpersisted += 1
                log.warning("record %s not persisted: %s", rec.key, exc)
        with self._lock:
            self._insert(rec)

    def discard(self, key: RecordKey) -> None:
        """Drop ``key`` from the LRU (a removed image); the stored form is left as it is."""
        with self._lock:
            old = self._lru.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def peek(self, key: RecordKey) -> ImageRecord | None:
        """In-memory lookup only; does not touch recency or the stored form."""
        with self._lock:
            hit = self._lru.get(key)
        return None if hit is None else hit[0]

    def get(self, key: RecordKey) -> ImageRecord | None:
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                self.stats.hits += 1
                return hit[0]
            self.stats.misses += 1
        rec = self.writes.get(key) if self.writes is not None else None
        if rec is not None:
            self.stats.queued += 1
        elif self.backing is not None:
            rec = self.backing.get(key)
        if rec is not None:
            self.stats.fetched += 1
        elif self.loader is not None:
            rec = self.loader(key)
            if rec is not None:
                self.stats.recomputed += 1
                if self.writes is not None:
                    self.writes.offer(rec)  # best effort: a full queue skips it (recomputable)
                elif self.backing is not None:
                    self.backing.put(rec)
        if rec is None:
            self.stats.lost += 1
            return None
        with self._lock:
            self._insert(rec)
        return rec

    def records(self) -> Iterator[ImageRecord]:
        """Least recently used first (the order to re-insert them in)."""
        with self._lock:
            items = [r for r, _ in self._lru.values()]
        return iter(items)
