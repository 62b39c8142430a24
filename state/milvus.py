"""The shared index on Milvus: vectors and PDQ hashes of every replica in one distributed store.

With ``backend: milvus`` a replica holds no index of its own: the vectors the engine indexes (one
Milvus collection per indexed record array, ``FLOAT_VECTOR`` with ``IVF_SQ8`` / ``HNSW`` / ``FLAT``
and inner product) and the PDQ hashes (``BINARY_VECTOR`` 256 with ``BIN_IVF_FLAT`` and Hamming
distance, plus the content digest for exact lookups) live in Milvus, written by whichever replica
added the image and searched by all. Milvus 2.3 allows one vector field per collection, hence one
collection per array plus one for PDQ.

Every entity carries its key: ``tenant`` (the partition key: a tenant's search touches only its
partitions), ``bank`` (``""`` for uploads, the bank's name for a reference bank) and
``image_id``; the primary key is a 63-bit hash of the three (``entity_pk``), the same on every
replica. ``None`` (no tenant, or uploads for ``bank``) is stored as ``""``.

Consistency: with ``Strong`` (the default) a search issued after an insert returned sees it, on
any replica; ``Session`` guarantees that only to the writer; ``Bounded``/``Eventually`` not at
once. Errors: an unreachable or failing server raises :class:`MilvusUnavailable` (transient: the
stream defers the event and retries); a collection whose schema, dimension or model identity
does not match raises :class:`MilvusSchemaMismatch` / ``ModelMismatch`` (permanent, at start).

The Milvus client (``pymilvus``) is imported lazily, so ``state`` imports without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from dupstream.core.errors import StateError
from dupstream.state.hashes import PDQ_BYTES, as_pdq, digest_bytes
from dupstream.state.identity import ModelIdentity, check_identity
from dupstream.state.index import as_matrix
from dupstream.state.memory import Candidate
from dupstream.state.records import ImageRecord, RecordKey

log = logging.getLogger(__name__)

FORMAT = "dupstream-milvus-1"
Consistency = Literal["Strong", "Session", "Bounded", "Eventually"]
FloatIndex = Literal["IVF_SQ8", "HNSW", "FLAT", "IVF_FLAT"]
#: filter value meaning "every tenant" / "every bank"
ANY = object()
T = TypeVar("T")


class MilvusUnavailable(StateError):
    """Milvus did not answer or failed the request (transient: retried by the stream)."""

    reason = "milvus_unavailable"
    transient = True


class MilvusSchemaMismatch(StateError):
    """A Milvus collection exists with another schema, dimension or format than configured."""

    reason = "milvus_schema_mismatch"


@dataclass(frozen=True, kw_only=True)
class MilvusConfig:
    """Connection and index settings (``StateSettings.milvus`` maps onto this)."""

    uri: str = "http://127.0.0.1:19530"
    #: ``user:password`` or an API key; never logged
    token: str | None = None
    db_name: str = ""
    #: TLS: ``secure`` with the server's CA / certificate (``server_pem_path``) and name
    secure: bool = False
    server_pem_path: str | None = None
    server_name: str | None = None
    #: collection names are ``{prefix}_{array}`` and ``{prefix}_pdq``
    prefix: str = "dupstream"
    consistency: Consistency = "Strong"
    #: float vectors: index type and its parameters
    float_index: FloatIndex = "IVF_SQ8"
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 128
    #: PDQ: BIN_IVF_FLAT lists and lists probed
    pdq_nlist: int = 1024
    pdq_nprobe: int = 32
    #: partitions the tenant partition key hashes into
    partitions: int = 64
    #: per-request timeout (s); a request that fails or times out raises MilvusUnavailable
    timeout_s: float = 10.0
    max_id_length: int = 1024
    max_tenant_length: int = 256


def entity_pk(bank: str | None, tenant: str | None, image_id: str) -> int:
    """Primary key of an image in every collection: 63-bit hash of (bank, tenant, image_id)."""
    raw = "\x1f".join(("" if bank is None else "\x01" + bank,
                       "" if tenant is None else "\x01" + tenant, image_id))
    h = hashlib.blake2b(raw.encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _lit(s: str) -> str:
    """A string literal for a Milvus boolean expression."""
    return json.dumps(s, ensure_ascii=False)


def _opt(s: str | None) -> str:
    return "" if s is None else s


def _back(s: str) -> str | None:
    return None if s == "" else s


def key_filter(*, tenant: str | None | object = ANY, bank: str | None | object = ANY,
               banks_only: bool = False) -> str:
    """Expression selecting a tenant (``ANY``: all) of uploads (``bank=None``), of one bank, or
    of every bank (``banks_only``)."""
    parts = []
    if banks_only:
        parts.append('bank != ""')
    elif bank is not ANY:
        parts.append(f"bank == {_lit(_opt(bank))}")  # type: ignore[arg-type]
    if tenant is not ANY:
        parts.append(f"tenant == {_lit(_opt(tenant))}")  # type: ignore[arg-type]
    return " and ".join(parts)


class MilvusConnection:
    """One ``MilvusClient`` with errors translated: every call goes through ``call``."""

    def __init__(self, config: MilvusConfig) -> None:
        self.config = config
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StateError("backend milvus needs the pymilvus package (scripts/setup.sh "
                             "installs it)", reason="config") from exc
        c = self.config
        kwargs: dict[str, Any] = {"uri": c.uri, "timeout": c.timeout_s}
        if c.token:
            kwargs["token"] = c.token
        if c.db_name:
            kwargs["db_name"] = c.db_name
        if c.secure:
            kwargs["secure"] = True
            if c.server_pem_path:
                kwargs["server_pem_path"] = c.server_pem_path
            if c.server_name:
                kwargs["server_name"] = c.server_name
        try:
            return MilvusClient(**kwargs)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises many kinds
            raise MilvusUnavailable(f"cannot connect to Milvus at {c.uri}: {exc}") from exc

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        try:
            return fn(self.client)
        except StateError:
            raise
        except Exception as exc:  # noqa: BLE001 - grpc / pymilvus errors of every kind
            raise MilvusUnavailable(f"Milvus at {self.config.uri}: {what} failed: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass
            self._client = None


def _describe(kind: str, dim: int, identity: ModelIdentity | None) -> str:
    return json.dumps({"format": FORMAT, "kind": kind, "dim": dim,
                       "model": None if identity is None else identity.to_dict()})


class _MilvusCollection:
    """Shared by the vector and PDQ stores: creation, schema checks, counting, keys present."""

    kind = "?"
    vector_field = "v"

    def __init__(self, conn: MilvusConnection, name: str, dim: int,
                 identity: ModelIdentity | None) -> None:
        self.conn, self.name, self.dim = conn, name, dim
        self.config = conn.config
        self.stored_identity: ModelIdentity | None = None
        self._open(identity)

    def _schema(self) -> Any:
        from pymilvus import DataType, MilvusClient

        c = self.config
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                       description=self._description)
        s.add_field("pk", DataType.INT64, is_primary=True)
        s.add_field("tenant", DataType.VARCHAR, max_length=c.max_tenant_length,
                    is_partition_key=True)
        s.add_field("bank", DataType.VARCHAR, max_length=c.max_tenant_length)
        s.add_field("image_id", DataType.VARCHAR, max_length=c.max_id_length)
        self._extra_fields(s)
        return s

    def _extra_fields(self, schema: Any) -> None:
        raise NotImplementedError

    def _index_params(self, client: Any) -> Any:
        raise NotImplementedError

    def _open(self, identity: ModelIdentity | None) -> None:
        self._description = _describe(self.kind, self.dim, identity)

        def run(client: Any) -> None:
            if not client.has_collection(self.name):
                client.create_collection(
                    self.name, schema=self._schema(), index_params=self._index_params(client),
                    consistency_level=self.config.consistency,
                    num_partitions=self.config.partitions)
                log.info("milvus: created collection %s (%s, dim %d)", self.name, self.kind,
                         self.dim)
            self._check(client.describe_collection(self.name))
            client.load_collection(self.name)

        self.conn.call(f"opening collection {self.name}", run)

    def _check(self, desc: dict[str, Any]) -> None:
        try:
            meta = json.loads(desc.get("description") or "{}")
        except ValueError:
            meta = {}
        fields = {f["name"]: f for f in desc.get("fields", [])}
        vec = fields.get(self.vector_field)
        got_dim = None if vec is None else int(vec.get("params", {}).get("dim", -1))
        problems = []
        if meta.get("format") != FORMAT or meta.get("kind") != self.kind:
            problems.append(f"format {meta.get('format')!r}/{meta.get('kind')!r}, expected "
                            f"{FORMAT!r}/{self.kind!r}")
        if got_dim != self.dim:
            problems.append(f"vector dimension {got_dim}, expected {self.dim}")
        missing = {"pk", "tenant", "bank", "image_id"} - set(fields)
        if missing:
            problems.append(f"fields {sorted(missing)} missing")
        if problems:
            raise MilvusSchemaMismatch(
                f"Milvus collection {self.name} does not match this service: "
                f"{'; '.join(problems)} (use another state prefix, or drop the collection)")
        self.stored_identity = ModelIdentity.from_dict(meta.get("model"))

    def check_identity(self, running: ModelIdentity, *, allow_mismatch: bool = False) -> None:
        check_identity(self.stored_identity, running, what=f"Milvus collection {self.name}",
                       allow_mismatch=allow_mismatch)

    def count(self, expr: str = "") -> int:
        def run(client: Any) -> int:
            res = client.query(self.name, filter=expr or "pk >= 0", output_fields=["count(*)"],
                               consistency_level=self.config.consistency)
            return int(res[0]["count(*)"]) if res else 0

        return self.conn.call(f"counting {self.name}", run)

    def present(self, pks: Sequence[int]) -> set[int]:
        if not pks:
            return set()
        expr = f"pk in [{', '.join(str(int(p)) for p in pks)}]"

        def run(client: Any) -> set[int]:
            res = client.query(self.name, filter=expr, output_fields=["pk"],
                               consistency_level=self.config.consistency)
            return {int(r["pk"]) for r in res}

        return self.conn.call(f"looking up keys in {self.name}", run)

    def insert(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.conn.call(f"inserting into {self.name}",
                           lambda client: client.insert(self.name, rows))

    def drop(self) -> None:
        self.conn.call(f"dropping {self.name}", lambda client: client.drop_collection(self.name))

    def describe(self) -> dict[str, Any]:
        return {"type": "milvus", "collection": self.name, "kind": self.kind, "dim": self.dim,
                "uri": self.config.uri, "consistency": self.config.consistency}


@dataclass(frozen=True)
class Hit:
    key: RecordKey
    score: float


class MilvusVectorIndex(_MilvusCollection):
    """Unit-norm float vectors of one record array, inner product (= cosine)."""

    kind = "float"

    def _extra_fields(self, schema: Any) -> None:
        from pymilvus import DataType

        schema.add_field(self.vector_field, DataType.FLOAT_VECTOR, dim=self.dim)

    def _index_params(self, client: Any) -> Any:
        c = self.config
        params: dict[str, Any] = {}
        if c.float_index in ("IVF_SQ8", "IVF_FLAT"):
            params = {"nlist": c.nlist}
        elif c.float_index == "HNSW":
            params = {"M": c.hnsw_m, "efConstruction": c.hnsw_ef_construction}
        ip = client.prepare_index_params()
        ip.add_index(field_name=self.vector_field, index_type=c.float_index, metric_type="IP",
                     params=params)
        return ip

    def _search_params(self, k: int) -> dict[str, Any]:
        c = self.config
        if c.float_index == "HNSW":
            return {"metric_type": "IP", "params": {"ef": max(c.hnsw_ef, k)}}
        if c.float_index == "FLAT":
            return {"metric_type": "IP", "params": {}}
        return {"metric_type": "IP", "params": {"nprobe": c.nprobe}}

    def rows(self, keys: Sequence[RecordKey], vectors: np.ndarray) -> list[dict[str, Any]]:
        v = as_matrix(vectors, self.dim)
        if len(v) != len(keys):
            raise StateError(f"{len(keys)} keys but {len(v)} vectors")
        return [{"pk": entity_pk(b, t, i), "tenant": _opt(t), "bank": _opt(b), "image_id": i,
                 self.vector_field: v[j].tolist()} for j, (b, t, i) in enumerate(keys)]

    def add(self, keys: Sequence[RecordKey], vectors: np.ndarray) -> None:
        """Insert (the caller skips keys already present: ``present``)."""
        self.insert(self.rows(keys, vectors))

    def search(self, queries: np.ndarray, k: int, *, expr: str = "") -> list[list[Hit]]:
        """The ``k`` nearest (highest inner product) per query among entities matching
        ``expr`` (see ``key_filter``), best first."""
        q = as_matrix(queries, self.dim)
        if k <= 0 or not len(q):
            return [[] for _ in range(len(q))]

        def run(client: Any) -> Any:
            return client.search(self.name, data=q.tolist(), anns_field=self.vector_field,
                                 limit=k, filter=expr, search_params=self._search_params(k),
                                 output_fields=["tenant", "bank", "image_id"],
                                 consistency_level=self.config.consistency)

        res = self.conn.call(f"searching {self.name}", run)
        return [[Hit((_back(h["entity"]["bank"]), _back(h["entity"]["tenant"]),
                      h["entity"]["image_id"]), float(h["distance"])) for h in hits]
                for hits in res]


@dataclass(frozen=True)
class PDQHit:
    key: RecordKey
    distance: int
    variant: int


class MilvusPDQStore(_MilvusCollection):
    """PDQ hashes (256-bit, Hamming) and content digests, keyed like the vectors."""

    kind = "pdq"
    vector_field = "pdq"

    def _extra_fields(self, schema: Any) -> None:
        from pymilvus import DataType

        schema.add_field("digest", DataType.VARCHAR, max_length=64)
        schema.add_field("usable", DataType.BOOL)
        schema.add_field(self.vector_field, DataType.BINARY_VECTOR, dim=PDQ_BYTES * 8)

    def _index_params(self, client: Any) -> Any:
        ip = client.prepare_index_params()
        ip.add_index(field_name=self.vector_field, index_type="BIN_IVF_FLAT",
                     metric_type="HAMMING", params={"nlist": self.config.pdq_nlist})
        return ip

    def rows(self, keys: Sequence[RecordKey], hashes: np.ndarray, digests: Sequence[str | bytes],
             usable: Sequence[bool]) -> list[dict[str, Any]]:
        h = as_pdq(hashes)
        return [{"pk": entity_pk(b, t, i), "tenant": _opt(t), "bank": _opt(b), "image_id": i,
                 "digest": digest_bytes(d).hex(), "usable": bool(u),
                 self.vector_field: h[j].tobytes()}
                for j, ((b, t, i), d, u) in enumerate(zip(keys, digests, usable, strict=True))]

    def add(self, keys: Sequence[RecordKey], hashes: np.ndarray, digests: Sequence[str | bytes],
            usable: Sequence[bool]) -> None:
        self.insert(self.rows(keys, hashes, digests, usable))

    def exact(self, digest: str | bytes, *, expr: str = "", limit: int = 16) -> list[RecordKey]:
        """Keys whose content digest equals ``digest`` among entities matching ``expr``."""
        d = f"digest == {_lit(digest_bytes(digest).hex())}"
        full = f"{d} and ({expr})" if expr else d

        def run(client: Any) -> Any:
            return client.query(self.name, filter=full, limit=limit,
                                output_fields=["tenant", "bank", "image_id"],
                                consistency_level=self.config.consistency)

        res = self.conn.call(f"exact lookup in {self.name}", run)
        return [(_back(r["bank"]), _back(r["tenant"]), r["image_id"]) for r in res]

    def nearest(self, variants: np.ndarray, *, expr: str = "", max_distance: int = 256,
                k: int = 1) -> list[PDQHit]:
        """Per key, the closest stored usable hash to any query variant within
        ``max_distance`` bits, closest first (at most ``k`` per variant considered)."""
        q = as_pdq(variants)
        usable = "usable == true"
        full = f"{usable} and ({expr})" if expr else usable

        def run(client: Any) -> Any:
            return client.search(self.name, data=[x.tobytes() for x in q],
                                 anns_field=self.vector_field, limit=k, filter=full,
                                 search_params={"metric_type": "HAMMING",
                                                "params": {"nprobe": self.config.pdq_nprobe}},
                                 output_fields=["tenant", "bank", "image_id"],
                                 consistency_level=self.config.consistency)

        res = self.conn.call(f"PDQ search in {self.name}", run)
        best: dict[RecordKey, PDQHit] = {}
        for v, hits in enumerate(res):
            for h in hits:
                d = int(round(h["distance"]))
                if d > max_distance:
                    continue
                e = h["entity"]
                key = (_back(e["bank"]), _back(e["tenant"]), e["image_id"])
                if key not in best or d < best[key].distance:
                    best[key] = PDQHit(key, d, v)
        return sorted(best.values(), key=lambda x: (x.distance, x.variant))


@dataclass
class MilvusStore:
    """The collections of one deployment (one ``prefix``): a vector index per indexed array and
    the PDQ store. Opened (created when absent, checked when present) on construction."""

    config: MilvusConfig
    dims: dict[str, int]
    identity: ModelIdentity | None = None
    conn: MilvusConnection = field(init=False)
    vectors: dict[str, MilvusVectorIndex] = field(init=False)
    pdq: MilvusPDQStore = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        #: concurrent requests of one lookup or add (the client is thread-safe)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="milvus")
        self.conn = MilvusConnection(self.config)
        p = self.config.prefix
        self.vectors = {f: MilvusVectorIndex(self.conn, f"{p}_{f}", d, self.identity)
                        for f, d in self.dims.items()}
        self.pdq = MilvusPDQStore(self.conn, f"{p}_pdq", PDQ_BYTES * 8, self.identity)

    def bind(self, identity: ModelIdentity, *, allow_mismatch: bool = False) -> None:
        for col in (*self.vectors.values(), self.pdq):
            col.check_identity(identity, allow_mismatch=allow_mismatch)
        self.identity = identity

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.conn.close()

    def drop(self) -> None:
        for col in (*self.vectors.values(), self.pdq):
            col.drop()


class MilvusCollection:
    """A ``state.memory.Collection`` whose stores are Milvus collections (see module).

    ``bank`` None is the uploads; its ``candidates`` also search every reference bank (banks
    live in the same collections, told apart by the ``bank`` field, and may have been loaded
    by another replica), so the memory searches only the uploads collection
    (``covers_banks``).
    """

    covers_banks = True

    def __init__(self, *, name: str | None, store: MilvusStore) -> None:
        self.name = name
        self.store = store
        self.indexes = store.vectors

    def __len__(self) -> int:
        return self.store.pdq.count(key_filter(bank=self.name))

    def contains(self, image_id: str, tenant: str | None) -> bool:
        return bool(self.store.pdq.present([entity_pk(self.name, tenant, image_id)]))

    def bind(self, identity: ModelIdentity, *, allow_mismatch: bool = False) -> None:
        self.store.bind(identity, allow_mismatch=allow_mismatch)

    def allowed(self, tenant: str | None, scope: str) -> None:
        return None  # tenant scoping is the partition-key filter (``tenant_filter``)

    def add_many(self, recs: list[ImageRecord], *, usable: list[bool]) -> list[bool]:
        """Insert the records whose key is not in Milvus yet (one lookup, then one insert per
        collection for the whole batch); validated first, so a bad record changes nothing."""
        pks = [entity_pk(r.bank, r.tenant, r.image_id) for r in recs]
        present = self.store.pdq.present(pks)
        fresh: list[int] = []
        seen: set[int] = set()
        for i, pk in enumerate(pks):
            if pk not in present and pk not in seen:
                fresh.append(i)
                seen.add(pk)
        new = [False] * len(recs)
        if not fresh:
            return new
        keys = [(self.name, recs[i].tenant, recs[i].image_id) for i in fresh]
        rows: dict[str, list[dict[str, Any]]] = {}
        for f, index in self.indexes.items():
            missing = [recs[i].image_id for i in fresh if f not in recs[i].arrays]
            if missing:
                raise StateError(f"record {missing[0]!r} has no array {f!r} to index")
            rows[f] = index.rows(keys, np.concatenate(
                [as_matrix(recs[i].arrays[f], index.dim) for i in fresh]))
        pdq = self.store.pdq.rows(keys, np.concatenate([as_pdq(recs[i].pdq)[:1] for i in fresh]),
                                  [recs[i].digest for i in fresh], [usable[i] for i in fresh])
        for fut in [self.store.pool.submit(index.insert, rows[f])
                    for f, index in self.indexes.items()]:
            fut.result()
        self.store.pdq.insert(pdq)  # last: the key counts as present once its hash is in
        for i in fresh:
            new[i] = True
        return new

    def candidates(self, query: ImageRecord, *, k: int, allowed: Any,
                   tenant_filter: str | None | Literal[False], pdq_max_distance: int,
                   use_pdq: bool) -> list[Candidate]:
        tenant: Any = ANY if tenant_filter is False else tenant_filter
        uploads = key_filter(tenant=tenant, bank=None)
        banks = key_filter(banks_only=True)
        scopes = [uploads, banks] if self.name is None else [key_filter(bank=self.name)]
        either = " or ".join(f"({s})" for s in scopes)
        pool = self.store.pool
        # every request waits for its consistency point (one time tick with Strong): issued
        # together, a lookup costs about one tick instead of one per request
        exact = pool.submit(self.store.pdq.exact, query.digest, expr=either)
        pdq = (pool.submit(self.store.pdq.nearest, query.pdq, expr=either,
                           max_distance=pdq_max_distance, k=2) if use_pdq else None)
        vec = [(f, pool.submit(index.search, query.arrays[f], k, expr=expr))
               for f, index in self.indexes.items() if f in query.arrays for expr in scopes]
        out: list[Candidate] = []
        for b, t, i in exact.result():
            out.append(Candidate(i, t, b, "exact", 1.0))
        for h in pdq.result() if pdq is not None else []:
            b, t, i = h.key
            out.append(Candidate(i, t, b, "pdq", 1.0 - h.distance / 256.0, None,
                                 h.distance, h.variant))
        for f, fut in vec:
            for hit in fut.result()[0]:
                b, t, i = hit.key
                out.append(Candidate(i, t, b, "vector", hit.score, f))
        return out

    def nbytes(self) -> dict[str, int]:
        return {"ids": 0, "exact": 0, "pdq": 0, **{f"index.{f}": 0 for f in self.indexes}}

    def rows_state(self) -> dict[str, Any]:
        raise StateError("the Milvus backend keeps no local index to snapshot "
                         "(set snapshot_interval_s to 0)")

