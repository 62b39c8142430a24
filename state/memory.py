"""``Memory``: everything a consumer remembers about images, behind one facade.

- *Collections*: the uploads, and one per reference bank. A collection's rows are shared by its
  id map, exact-hash store, PDQ store and one vector index per indexed record array.
- *Records*: the compact per-image records, in a bounded LRU over an optional stored form,
  written to it behind ``add`` by a bounded queue (``state.writebehind``), never under the lock.
- *Replication*: ``add`` a record locally, publish ``encode_update(record)`` under
  ``update_key(record)`` to the compacted index-updates topic, and ``apply`` every update read
  back from that topic, own ones included. ``apply`` is idempotent (a key already present is a
  no-op), so replicas that applied the same set of updates hold the same images.
- *Removal* (take-downs): ``remove`` a key locally and publish ``encode_removal(key)`` under the
  same Kafka key as the image's add (``update_key``), so compaction keeps only the removal. A
  removed key is a tombstone: its rows stay in the indexes but it is never a candidate again, its
  record is dropped, and re-adding the same key is a no-op (image ids are not reused). Tombstones
  travel in snapshots. Releases before removals skip a removal update as "not a version-1 index
  update" (logged), so the format stays backward compatible.

Tenant scoping: with ``scope="tenant"`` (the default) a lookup matches only images of the query's
tenant; ``scope="global"`` matches across tenants. Reference banks are matched for every tenant
and are only ever filled by ``add`` of records whose ``bank`` is set, never by uploads.

The replication window: an image added on replica A is matchable on replica B only once B has
applied its update, ``lag = publish + broker + poll + apply`` later. A copy judged on B within
that window misses the original. ``apply`` measures the lag of every remote update
(``stats()["replication_lag_s"]``, to export as a metric) and returns, as ``missed``, B's own
uploads of the same scope that were added after the remote image (by the origin's clock) and so
were judged without it: the caller re-judges them against the applied record and corrects.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from dupstream.core.errors import StateError
from dupstream.state.codec import pack, unpack
from dupstream.state.hashes import ExactHashStore, PDQStore, as_pdq
from dupstream.state.identity import ModelIdentity, check_identity
from dupstream.state.idmap import Allowed, IdMap
from dupstream.state.index import (
    IndexSpec,
    VectorIndex,
    as_matrix,
    build_index,
    load_index,
    omp_threads,
)
from dupstream.state.records import (
    ImageRecord,
    RecordCache,
    RecordKey,
    RecordStore,
    record_from_wire,
    record_to_wire,
)
from dupstream.state.writebehind import Slot, WriteBehind

log = logging.getLogger(__name__)

UPDATE_VERSION = 1
Scope = Literal["tenant", "global"]
Source = Literal["exact", "pdq", "vector"]


@dataclass(frozen=True)
class MemoryConfig:
    #: record array name -> index spec; each named array is indexed in every collection
    vectors: dict[str, IndexSpec] = field(
        default_factory=lambda: {"vector": IndexSpec(dim=512)}
    )
    scope: Scope = "tenant"
    #: PDQ matches further than this (bits of 256) are not candidates
    pdq_max_distance: int = 31
    #: records whose ``meta["pdq_quality"]`` is below this never match by PDQ
    pdq_min_quality: int = 50
    #: PDQ store: exact up to this many hashes, then a binary IVF (lists, lists probed)
    pdq_switch_at: int = 200_000
    pdq_nlist: int = 1024
    pdq_nprobe: int = 32
    records_max_items: int = 100_000
    records_max_bytes: int = 512 * 1024 * 1024
    #: record-store write-behind (``state.writebehind``): records queued for the stored form at
    #: most (count, bytes), how long ``add`` waits for room before ``RecordBacklog``, writer
    #: threads; runtime settings, not persisted
    record_queue_max_items: int = 4096
    record_queue_max_bytes: int = 128 * 1024 * 1024
    record_queue_wait_s: float = 5.0
    record_writers: int = 2
    #: how long own uploads are remembered for the ``missed`` check of remote updates
    replication_window_s: float = 60.0
    #: index specs for reference banks (default: exact flat, banks are curated and smaller)
    bank_kind: str = "flat"
    #: OpenMP threads FAISS uses for lookups and adds (in the calling thread); 0 = FAISS default
    threads: int = 1
    #: accept snapshots and index updates of another model (embedder / weights) with a warning
    #: instead of refusing them (``ModelMismatch``); a deliberate override, not persisted
    allow_model_mismatch: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "vectors": {k: v.to_dict() for k, v in self.vectors.items()},
            "scope": self.scope,
            "pdq_max_distance": self.pdq_max_distance,
            "pdq_min_quality": self.pdq_min_quality,
            "pdq_switch_at": self.pdq_switch_at,
            "pdq_nlist": self.pdq_nlist,
            "pdq_nprobe": self.pdq_nprobe,
            "records_max_items": self.records_max_items,
            "records_max_bytes": self.records_max_bytes,
            "replication_window_s": self.replication_window_s,
            "bank_kind": self.bank_kind,
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryConfig:
        d = dict(d)
        d["vectors"] = {k: IndexSpec.from_dict(v) for k, v in d.get("vectors", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Candidate:
    image_id: str
    tenant: str | None
    bank: str | None
    source: Source
    score: float  # cosine for "vector", 1.0 for "exact", 1 - distance/256 for "pdq"
    field: str | None = None  # the record array a "vector" candidate was found by
    pdq_distance: int | None = None
    pdq_variant: int | None = None

    @property
    def key(self) -> RecordKey:
        return (self.bank, self.tenant, self.image_id)


@dataclass(frozen=True)
class Removal:
    """A take-down from the index-updates feed: forget ``key`` everywhere."""

    key: RecordKey
    origin: str = ""
    ts: float = 0.0


@dataclass(frozen=True)
class Applied:
    #: the added record; for a removal, a key-only stub (no arrays) of the removed image
    record: ImageRecord
    new: bool  # False: already present (a replay, or our own update coming back)
    lag_s: float | None  # now - record.ts, for updates from other replicas
    missed: list[RecordKey]  # own uploads judged without this record: re-judge them
    #: True when the update was a removal (``record`` is then the stub)
    removed: bool = False


def _index_for(spec: IndexSpec) -> VectorIndex:
    return build_index(**spec.to_dict())


class Collection:
    """One searchable set of images: uploads, or one reference bank."""

    def __init__(
        self, *, name: str | None, specs: dict[str, IndexSpec], pdq: dict[str, int] | None = None
    ) -> None:
        self.name = name
        self.specs = dict(specs)
        self.ids = IdMap()
        self.exact = ExactHashStore()
        self.pdq = PDQStore(**(pdq or {}))
        self.indexes: dict[str, VectorIndex] = {f: _index_for(s) for f, s in specs.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def contains(self, image_id: str, tenant: str | None) -> bool:
        return self.ids.row(image_id, tenant) is not None

    def _vectors(self, rec: ImageRecord) -> dict[str, np.ndarray]:
        out = {}
        for f, index in self.indexes.items():
            if f not in rec.arrays:
                raise StateError(f"record {rec.image_id!r} has no array {f!r} to index")
            out[f] = as_matrix(rec.arrays[f], index.dim)
        return out

    def add_many(self, recs: list[ImageRecord], *, usable: list[bool]) -> list[bool]:
        """Add the records not present yet (validated first, so a bad one changes nothing)."""
        fresh: list[int] = []
        seen: set[tuple[str, str | None]] = set()
        vecs: dict[str, list[np.ndarray]] = {f: [] for f in self.indexes}
        pdqs = []
        for i, rec in enumerate(recs):
            key = (rec.image_id, rec.tenant)
            if key in seen or self.ids.row(*key) is not None:
                continue
            v = self._vectors(rec)
            pdqs.append(as_pdq(rec.pdq)[:1])
            for f in vecs:
                vecs[f].append(v[f])
            fresh.append(i)
            seen.add(key)
        if not fresh:
            return [False] * len(recs)
        for i, p in zip(fresh, pdqs, strict=True):
            rec = recs[i]
            row = self.ids.append(rec.image_id, rec.tenant)
            self.exact.add(row, rec.digest)
            self.pdq.add(row, p, usable=usable[i])
        for f, index in self.indexes.items():
            index.add(np.concatenate(vecs[f]))
        n = len(self.ids)
        if len(self.exact) != n or len(self.pdq) != n or any(
            len(x) != n for x in self.indexes.values()
        ):
            raise StateError(f"collection {self.name!r} rows out of step")
        new = [False] * len(recs)
        for i in fresh:
            new[i] = True
        return new

    def allowed(self, tenant: str | None, scope: Scope) -> Allowed | None:
        return None if scope == "global" else self.ids.allowed(tenant)

    def candidates(
        self,
        query: ImageRecord,
        *,
        k: int,
        allowed: Allowed | None,
        tenant_filter: str | None | Literal[False],
        pdq_max_distance: int,
        use_pdq: bool,
    ) -> list[Candidate]:
        if not len(self.ids):
            return []
        out: list[Candidate] = []
        bank = self.name
        code = None if tenant_filter is False else self.ids.tenant_code(tenant_filter)
        if tenant_filter is False or code is not None:
            for row in self.exact.rows(query.digest):
                if tenant_filter is False or self.ids.tenant(row) == tenant_filter:
                    image_id, t = self.ids.key(row)
                    out.append(Candidate(image_id, t, bank, "exact", 1.0))
                    break
        if use_pdq:
            hit = self.pdq.nearest(query.pdq, allowed=allowed, max_distance=pdq_max_distance)
            if hit is not None:
                row, dist, variant = hit
                image_id, t = self.ids.key(row)
                out.append(
                    Candidate(image_id, t, bank, "pdq", 1.0 - dist / 256.0, None, dist, variant)
                )
        for f, index in self.indexes.items():
            if f not in query.arrays:
                continue
            scores, rows = index.search(query.arrays[f], k, allowed=allowed)
            for s, r in zip(scores[0], rows[0], strict=True):
                if r >= 0:
                    image_id, t = self.ids.key(int(r))
                    out.append(Candidate(image_id, t, bank, "vector", float(s), f))
        return out

    def nbytes(self) -> dict[str, int]:
        return {
            "ids": self.ids.nbytes(),
            "exact": self.exact.nbytes(),
            "pdq": self.pdq.nbytes(),
            **{f"index.{f}": x.nbytes() for f, x in self.indexes.items()},
        }

    # -- serialisation (used by state.snapshot) ----------------------------------------------
    def rows_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "specs": {f: s.to_dict() for f, s in self.specs.items()},
            "ids": self.ids.to_state(),
            "exact": self.exact.to_state(),
            "pdq": self.pdq.to_state(),
        }

    @classmethod
    def restore(
        cls, rows: dict[str, Any], indexes: dict[str, bytes], *, gpu: bool | None = None
    ) -> Collection:
        specs = {f: IndexSpec.from_dict(s) for f, s in rows["specs"].items()}
        self = cls.__new__(cls)
        self.name = rows["name"]
        self.specs = specs
        self.ids = IdMap.from_state(rows["ids"])
        self.exact = ExactHashStore.from_state(rows["exact"])
        self.pdq = PDQStore.from_state(rows["pdq"])
        if set(indexes) != set(specs):
            raise StateError(f"collection {self.name!r}: index blobs do not match its specs")
        self.indexes = {f: load_index(b, gpu=gpu) for f, b in indexes.items()}
        n = len(self.ids)
        sizes = [len(self.exact), len(self.pdq), *(len(x) for x in self.indexes.values())]
        if any(s != n for s in sizes):
            raise StateError(f"collection {self.name!r}: {n} ids but stores of sizes {sizes}")
        return self


def update_key(rec: ImageRecord) -> bytes:
    """Kafka key of a record's update on the compacted topic: unique per (bank, tenant, id)."""
    return pack([rec.bank, rec.tenant, rec.image_id])


def encode_update(rec: ImageRecord) -> bytes:
    """``{"v": 1, "op": "add", "r": record, "m": model identity}``; ``m`` (the identity of the
    model that produced the record, ``rec.model``) is left out when unknown."""
    msg: dict[str, Any] = {"v": UPDATE_VERSION, "op": "add", "r": record_to_wire(rec)}
    if rec.model is not None:
        msg["m"] = rec.model.to_dict()
    return pack(msg)


def decode_update(data: bytes) -> ImageRecord:
    msg = unpack(data)
    if not isinstance(msg, dict) or msg.get("v") != UPDATE_VERSION or msg.get("op") != "add":
        raise StateError("not a version-1 index update")
    rec = record_from_wire(msg["r"])
    rec.model = ModelIdentity.from_dict(msg.get("m"))
    return rec


def encode_removal(key: RecordKey, *, origin: str = "", ts: float = 0.0) -> bytes:
    """``{"v": 1, "op": "remove", "k": [bank, tenant, image_id], "o": origin, "ts": ts}``:
    publish it under ``pack(list(key))`` (the same Kafka key as the image's add)."""
    bank, tenant, image_id = key
    return pack({"v": UPDATE_VERSION, "op": "remove", "k": [bank, tenant, image_id],
                 "o": origin, "ts": float(ts)})


def decode_message(data: bytes) -> ImageRecord | Removal:
    """An index update of either kind: an added record, or a ``Removal``."""
    msg = unpack(data)
    if isinstance(msg, dict) and msg.get("v") == UPDATE_VERSION and msg.get("op") == "remove":
        k = msg.get("k")
        if (not isinstance(k, list) or len(k) != 3 or not isinstance(k[2], str)
                or not all(x is None or isinstance(x, str) for x in k[:2])):
            raise StateError("malformed removal update")
        return Removal((k[0], k[1], k[2]), origin=str(msg.get("o") or ""),
                       ts=float(msg.get("ts") or 0.0))
    return decode_update(data)


def _stub(key: RecordKey, origin: str, ts: float) -> ImageRecord:
    bank, tenant, image_id = key
    return ImageRecord(image_id, tenant, "", np.zeros((0, 32), np.uint8), bank=bank,
                       origin=origin, ts=ts)


class Memory:
    """Index + exact + PDQ + records + reference banks of one replica (thread-safe)."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        replica_id: str | None = None,
        record_store: RecordStore | None = None,
        loader: Any = None,
        identity: ModelIdentity | None = None,
        collections: Any = None,
    ) -> None:
        """``collections``: the backend hook, ``(name) -> collection`` making the uploads
        (``None``) and bank collections (default: in-process FAISS ``Collection``s; the Milvus
        backend passes ``state.milvus.MilvusCollection``s, see ``state.milvus``)."""
        self.config = config or MemoryConfig()
        self._new_collection = collections
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        #: the model whose vectors this memory holds (None: not known yet); see ``bind``
        self.identity = identity
        #: where that identity came from, for error messages ("snapshot X", ...)
        self.identity_source = "the index"
        self.lock = threading.RLock()
        self.uploads = (Collection(name=None, specs=self.config.vectors, pdq=self._pdq_params())
                        if collections is None else collections(None))
        self.banks: dict[str, Collection] = {}
        c = self.config
        #: new records reach the stored form through a bounded write-behind, off the lock
        writes = None if record_store is None else WriteBehind(
            record_store, max_items=c.record_queue_max_items,
            max_bytes=c.record_queue_max_bytes, wait_s=c.record_queue_wait_s,
            writers=c.record_writers)
        self.records = RecordCache(
            max_items=c.records_max_items,
            max_bytes=c.records_max_bytes,
            backing=record_store,
            loader=loader,
            writes=writes,
        )
        #: feed position: "topic/partition" -> next offset to read
        self.positions: dict[str, int] = {}
        self._recent: deque[tuple[float, RecordKey]] = deque()
        self._lag_last: float | None = None
        self._lag_max: float = 0.0
        self._lag_ewma: float | None = None
        self._applied = 0
        self._replayed = 0
        self._refused = 0
        self._unidentified = 0
        #: tombstones: keys removed (take-downs); never candidates again (persisted in snapshots)
        self.removed: set[RecordKey] = set()

    # -- collections -------------------------------------------------------------------------
    def _pdq_params(self) -> dict[str, int]:
        c = self.config
        return {"switch_at": c.pdq_switch_at, "nlist": c.pdq_nlist, "nprobe": c.pdq_nprobe}

    def _bank_specs(self) -> dict[str, IndexSpec]:
        kind = self.config.bank_kind
        return {f: replace(s, kind=kind) for f, s in self.config.vectors.items()}

    def _collection(self, bank: str | None, *, create: bool) -> Collection | None:
        if bank is None:
            return self.uploads
        col = self.banks.get(bank)
        if col is None and create:
            col = self.banks[bank] = (Collection(
                name=bank, specs=self._bank_specs(), pdq=self._pdq_params()
            ) if self._new_collection is None else self._new_collection(bank))
        return col

    def __len__(self) -> int:
        return len(self.uploads)

    def __contains__(self, key: RecordKey) -> bool:
        bank, tenant, image_id = key
        col = self._collection(bank, create=False)
        return col is not None and col.contains(image_id, tenant)

    # -- model identity ----------------------------------------------------------------------
    def bind(self, identity: ModelIdentity) -> None:
        """Declare the model that produces this memory's new records (the running engine).

        Raises ``ModelMismatch`` when the memory already holds another model's vectors (restored
        from a snapshot of another embedder), unless ``config.allow_model_mismatch``. From then
        on, records added here carry ``identity`` in their updates, snapshots record it, and
        updates of another model are refused."""
        with self.lock:
            check_identity(self.identity, identity, what=self.identity_source,
                           allow_mismatch=self.config.allow_model_mismatch)
            shared = getattr(self.uploads, "bind", None)  # a shared index checks its own
            if shared is not None:
                shared(identity, allow_mismatch=self.config.allow_model_mismatch)
            self.identity = identity

    def _admit(self, rec: ImageRecord) -> None:
        """Refuse (``ModelMismatch``) an update produced by another model than this memory's."""
        if rec.model is None:
            self._unidentified += 1
            if self._unidentified == 1:
                log.warning("index update %r from replica %r carries no model identity (an older "
                            "release wrote it): applied as this model's", rec.image_id,
                            rec.origin)
            return
        if self.identity is None:  # an engine-less memory takes the first identity it sees
            self.identity = rec.model
            self.identity_source = f"the index (first update, from replica {rec.origin!r})"
            return
        try:
            check_identity(rec.model, self.identity,
                           what=f"index update {rec.image_id!r} from replica {rec.origin!r}",
                           against="this replica's index holds",
                           allow_mismatch=self.config.allow_model_mismatch)
        except StateError:
            self._refused += 1
            raise

    # -- adding ------------------------------------------------------------------------------
    def _usable(self, rec: ImageRecord) -> bool:
        q = rec.meta.get("pdq_quality")
        return q is None or q >= self.config.pdq_min_quality

    def _add_many(self, recs: list[ImageRecord], *, local: bool,
                  slot: Slot | None = None) -> list[bool]:
        by_bank: dict[str | None, list[int]] = {}
        for i, r in enumerate(recs):
            by_bank.setdefault(r.bank, []).append(i)
        new = [False] * len(recs)
        for bank, idx in by_bank.items():
            col = self._collection(bank, create=True)
            assert col is not None
            sub = [recs[i] for i in idx]
            for i, flag in zip(idx, col.add_many(sub, usable=[self._usable(r) for r in sub]),
                               strict=True):
                new[i] = flag
        if local:
            self._prune_recent(time.time())
        for r, flag in zip(recs, new, strict=True):
            if flag:
                self.records.put(r)
                if local and r.bank is None:
                    self._recent.append((r.ts, r.key))
            if slot is not None:
                # queued for the stored form (no I/O here). A key already present is a replay
                # (an event read again after a kill, a rebalance or a failed flush): its record is
                # written again, since its first write may never have happened (idempotent)
                slot.submit(r if flag else (self.records.peek(r.key) or r))
        return new

    def _reserve(self, recs: list[ImageRecord]) -> Slot | None:
        """Room in the write-behind for ``recs``, taken before they are indexed and outside the
        lock (it may wait while the queue is full; ``RecordBacklog`` when it stays full)."""
        writes = self.records.writes
        if writes is None:
            return None
        return writes.reserve(len(recs), sum(r.nbytes() for r in recs))

    def flush_records(self, timeout_s: float, *, until=None) -> None:
        """Wait until every record added so far is in the record store (``WriteBehind.flush``;
        ``RecordFlushTimeout`` when not within ``timeout_s``). A no-op without a record store."""
        if self.records.writes is not None:
            self.records.writes.flush(timeout_s, until=until)

    def add(self, rec: ImageRecord) -> bool:
        """Add a record produced on this replica. Returns False when its key is already present.

        Stamps ``origin``/``ts`` when unset. After a True, publish ``encode_update(rec)``.
        With a record store, the record's write is queued (``WriteBehind``): room is reserved
        first, outside the lock (waits while the queue is full, ``RecordBacklog`` when it stays
        full; the record is then not added); ``flush_records`` makes it durable.
        """
        if not rec.origin:
            rec.origin = self.replica_id
        if not rec.ts:
            rec.ts = time.time()
        if rec.model is None:
            rec.model = self.identity
        writes = self.records.writes
        if writes is not None and writes.get(rec.key) is not None and rec.key in self:
            return False  # present, and its write still queued: nothing to add or write again
        slot = self._reserve([rec])
        try:
            with self.lock, omp_threads(self.config.threads):
                return self._add_many([rec], local=True, slot=slot)[0]
        finally:
            if slot is not None:
                slot.release()

    def add_to_bank(self, bank: str, recs: list[ImageRecord]) -> list[bool]:
        """Load images into a reference bank (publish their updates too, to replicate it)."""
        now = time.time()
        for r in recs:
            r.bank = bank
            r.origin = r.origin or self.replica_id
            r.ts = r.ts or now
            r.model = r.model or self.identity
        slot = self._reserve(recs)
        try:
            with self.lock, omp_threads(self.config.threads):
                return self._add_many(recs, local=True, slot=slot)
        finally:
            if slot is not None:
                slot.release()

    def remove(self, key: RecordKey) -> bool:
        """Forget a stored image (a take-down) on this replica: it is never a candidate again
        and its record is dropped. Returns False when the key is unknown or already removed.
        After a True, publish ``encode_removal(key, ...)`` so every replica forgets it."""
        with self.lock:
            return self._remove(key)

    def _remove(self, key: RecordKey) -> bool:
        if key in self.removed or key not in self:
            return False
        self.removed.add(key)
        self.records.discard(key)
        return True

    def is_removed(self, key: RecordKey) -> bool:
        return key in self.removed

    def apply(self, data: bytes, *, position: tuple[str, int, int] | None = None) -> Applied:
        """Apply one update from the index-updates topic (idempotent; own updates are no-ops).

        ``position`` = (topic, partition, offset) of the message: remembered for snapshots.
        """
        return self.apply_many([data], positions=[position] if position else None)[0]

    def apply_many(
        self, batch: list[bytes], *, positions: list[tuple[str, int, int]] | None = None
    ) -> list[Applied]:
        msgs = [decode_message(d) for d in batch]
        recs = [m for m in msgs if isinstance(m, ImageRecord)]
        now = time.time()
        with self.lock, omp_threads(self.config.threads):
            for rec in recs:  # all admitted first: a foreign update changes nothing
                self._admit(rec)
            added = iter(self._add_many(recs, local=False))
            out = []
            self._prune_recent(now)
            for msg in msgs:
                if isinstance(msg, Removal):  # after the adds before it in the batch
                    # a removal may arrive before its add (another partition): remembered, so
                    # the add is then never a candidate either
                    fresh = msg.key not in self.removed
                    self.removed.add(msg.key)
                    self.records.discard(msg.key)
                    self._applied += 1
                    out.append(Applied(_stub(msg.key, msg.origin, msg.ts), fresh, None, [],
                                       removed=True))
                    continue
                rec, flag = msg, next(added)
                remote = rec.origin != self.replica_id
                lag = max(0.0, now - rec.ts) if remote and rec.ts else None
                if lag is not None:
                    self._lag_last = lag
                    self._lag_max = max(self._lag_max, lag)
                    self._lag_ewma = lag if self._lag_ewma is None else (
                        0.9 * self._lag_ewma + 0.1 * lag
                    )
                missed: list[RecordKey] = []
                if flag and remote and rec.bank is None:
                    missed = [
                        k for ts, k in self._recent
                        if ts > rec.ts and (self.config.scope == "global" or k[1] == rec.tenant)
                    ]
                self._applied += 1
                self._replayed += 0 if flag else 1
                out.append(Applied(rec, flag, lag, missed))
            for topic, partition, offset in positions or []:
                key = f"{topic}/{partition}"
                self.positions[key] = max(self.positions.get(key, 0), offset + 1)
        return out

    def _prune_recent(self, now: float) -> None:
        horizon = now - self.config.replication_window_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    # -- lookups -----------------------------------------------------------------------------
    def candidates(self, query: ImageRecord, *, k: int = 10) -> list[Candidate]:
        """Images that may be copies of ``query``: exact, then PDQ, then ``k`` nearest vectors
        per indexed array, from the uploads (tenant-scoped) and every reference bank.

        Deduplicated by key (first occurrence kept); the query's own key is never returned.
        """
        scope = self.config.scope
        tenant_filter: str | None | Literal[False] = False if scope == "global" else query.tenant
        use_pdq = self._usable(query)
        found: list[Candidate] = []
        with self.lock, omp_threads(self.config.threads):
            cols = [self.uploads, *self.banks.values()]
            if getattr(self.uploads, "covers_banks", False):  # a shared index: banks included
                cols = [self.uploads]
            for col in cols:
                is_bank = col is not self.uploads
                found += col.candidates(
                    query,
                    k=k + 1,
                    allowed=None if is_bank else col.allowed(query.tenant, scope),
                    tenant_filter=False if is_bank else tenant_filter,
                    pdq_max_distance=self.config.pdq_max_distance,
                    use_pdq=use_pdq,
                )
        out: dict[RecordKey, Candidate] = {}
        for c in found:
            if c.key != query.key and c.key not in out and c.key not in self.removed:
                out[c.key] = c
        return list(out.values())

    def record(self, key: RecordKey) -> ImageRecord | None:
        """The full record of a stored image: LRU, then the stored form, then the loader (None
        for a removed image)."""
        if key in self.removed:
            return None
        return self.records.get(key)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            cs = self.records.stats
            return {
                "replica_id": self.replica_id,
                "images": len(self.uploads),
                "banks": {name: len(c) for name, c in self.banks.items()},
                "indexes": {f: x.describe() for f, x in self.uploads.indexes.items()},
                "bytes": self.uploads.nbytes(),
                "records": {
                    "items": len(self.records),
                    "bytes": self.records.nbytes,
                    "hits": cs.hits,
                    "misses": cs.misses,
                    "fetched": cs.fetched,
                    "from_queue": cs.queued,
                    "recomputed": cs.recomputed,
                    "lost": cs.lost,
                    "evicted": cs.evicted,
                    "writes": (None if self.records.writes is None
                               else self.records.writes.snapshot()),
                },
                "updates_applied": self._applied,
                "updates_replayed": self._replayed,
                "updates_refused": self._refused,
                "updates_unidentified": self._unidentified,
                "removed": len(self.removed),
                "model": None if self.identity is None else self.identity.to_dict(),
                "replication_lag_s": self._lag_last,
                "replication_lag_max_s": self._lag_max,
                "replication_lag_ewma_s": self._lag_ewma,
                "positions": dict(self.positions),
            }
