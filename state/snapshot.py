"""Snapshots of a ``Memory`` to object storage, and restore (no pickle anywhere).

Layout under ``{prefix}/snapshots/``::

    {id}/c{i}/rows.msgpack        id map + exact digests + PDQ codes of collection i (msgpack)
    {id}/c{i}/index-{j}.bin       vector index j of collection i (faiss.serialize_index in msgpack)
    {id}/records.msgpack          the record LRU, least recent first
    {id}/manifest.json            what is in it: sizes and SHA-256 of every blob, feed offsets,
                                  config, counts, and a fingerprint over all of that
    LATEST                        the id of the newest complete snapshot

Atomicity: blobs first, the manifest after them, ``LATEST`` last. A snapshot without a manifest
(a writer died half-way) is never read; a manifest is only trusted when its fingerprint and every
blob's SHA-256 check out. ``load_latest_snapshot`` tries ``LATEST`` and then older manifests,
newest first, so one damaged snapshot does not leave a consumer empty.

Offsets: ``positions`` of the memory ("topic/partition" -> next offset of the index-updates
feed) taken under the same lock as the data, so replaying the feed from them after a restore
re-applies at most updates already included, which ``apply`` ignores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from dupstream.core.errors import BlobNotFound, ModelMismatch, StateError
from dupstream.state.blobstore import BlobStore
from dupstream.state.codec import pack, unpack
from dupstream.state.identity import ModelIdentity, check_identity
from dupstream.state.index import FaissIndex
from dupstream.state.memory import Collection, Memory, MemoryConfig
from dupstream.state.records import RecordStore, record_from_wire, record_to_wire

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    manifest: dict[str, Any]
    bytes: int
    seconds: float


@dataclass
class Restored:
    memory: Memory
    offsets: dict[str, int]
    snapshot_id: str
    manifest: dict[str, Any]


def _root(prefix: str) -> str:
    return f"{prefix.strip('/')}/snapshots"


def _fingerprint(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _serialize(memory: Memory) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every blob of a snapshot, and the manifest fields describing them (under the lock)."""
    blobs: dict[str, bytes] = {}
    collections = []
    with memory.lock:
        cols: list[Collection] = [memory.uploads, *memory.banks.values()]
        for i, col in enumerate(cols):
            d = f"c{i}"
            blobs[f"{d}/rows.msgpack"] = pack(col.rows_state())
            index_files = {}
            for j, (field, index) in enumerate(col.indexes.items()):
                name = f"{d}/index-{j}.bin"
                blobs[name] = index.serialize()
                index_files[field] = name
            collections.append(
                {"bank": col.name, "rows": f"{d}/rows.msgpack", "indexes": index_files,
                 "images": len(col)}
            )
        blobs["records.msgpack"] = pack([record_to_wire(r) for r in memory.records.records()])
        fields = {
            "replica_id": memory.replica_id,
            "offsets": dict(memory.positions),
            "config": memory.config.to_dict(),
            "model": None if memory.identity is None else memory.identity.to_dict(),
            "collections": collections,
            "records": len(memory.records),
            #: tombstones of removed images (absent in snapshots written before removals)
            "removed": sorted([list(k) for k in memory.removed],
                              key=lambda k: [str(x) for x in k]),
        }
    return blobs, fields


def write_snapshot(
    memory: Memory,
    store: BlobStore,
    *,
    prefix: str = "dupstream",
    offsets: dict[str, int] | None = None,
    keep: int = 3,
) -> SnapshotInfo:
    """Write a consistent snapshot of ``memory``; keep the newest ``keep`` snapshots.

    ``offsets`` overrides the memory's own feed positions (normally leave it None).
    """
    t0 = time.perf_counter()
    blobs, fields = _serialize(memory)
    if offsets is not None:
        fields["offsets"] = dict(offsets)
    now = datetime.now(UTC)
    snap_id = f"{now:%Y%m%dT%H%M%S%fZ}-{memory.replica_id}"
    root = _root(prefix)
    files = {}
    for name, data in blobs.items():
        store.put_bytes(f"{root}/{snap_id}/{name}", data)
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "snapshot": snap_id,
        "created": now.isoformat(),
        **fields,
        "files": files,
    }
    manifest["fingerprint"] = _fingerprint(manifest)
    store.put_bytes(f"{root}/{snap_id}/manifest.json", json.dumps(manifest, indent=1).encode())
    store.put_bytes(f"{root}/LATEST", snap_id.encode())
    if keep > 0:
        prune_snapshots(store, prefix=prefix, keep=keep)
    total = sum(f["size"] for f in files.values())
    return SnapshotInfo(snap_id, manifest, total, time.perf_counter() - t0)


def list_snapshots(store: BlobStore, *, prefix: str = "dupstream") -> list[str]:
    """Ids of snapshots that have a manifest, newest first."""
    root = _root(prefix) + "/"
    ids = {
        n[len(root):].split("/", 1)[0]
        for n in store.list(root)
        if n.endswith("/manifest.json")
    }
    return sorted(ids, reverse=True)


def prune_snapshots(store: BlobStore, *, prefix: str = "dupstream", keep: int = 3) -> list[str]:
    """Delete all but the newest ``keep`` complete snapshots (and never the LATEST one)."""
    root = _root(prefix)
    try:
        latest = store.get_bytes(f"{root}/LATEST").decode()
    except BlobNotFound:
        latest = None
    complete = list_snapshots(store, prefix=prefix)
    doomed = [s for s in complete[keep:] if s != latest]
    for snap in doomed:
        for name in store.list(f"{root}/{snap}/"):
            if not name.endswith("/manifest.json"):
                store.delete(name)
        store.delete(f"{root}/{snap}/manifest.json")  # last: a half-deleted one is not listed
    return doomed


def _read_manifest(store: BlobStore, root: str, snap_id: str) -> dict[str, Any]:
    try:
        manifest = json.loads(store.get_bytes(f"{root}/{snap_id}/manifest.json"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateError(f"snapshot {snap_id}: manifest is not JSON") from exc
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise StateError(f"snapshot {snap_id}: unknown format {manifest.get('format')!r}")
    if manifest.get("fingerprint") != _fingerprint(manifest):
        raise StateError(f"snapshot {snap_id}: manifest fingerprint does not match")
    return manifest


def _read_blob(store: BlobStore, root: str, snap_id: str, manifest: dict, name: str) -> bytes:
    meta = manifest["files"].get(name)
    if meta is None:
        raise StateError(f"snapshot {snap_id}: {name} is not in the manifest")
    data = store.get_bytes(f"{root}/{snap_id}/{name}")
    if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise StateError(f"snapshot {snap_id}: {name} does not match its checksum")
    return data


def load_snapshot(
    store: BlobStore,
    snap_id: str,
    *,
    prefix: str = "dupstream",
    config: MemoryConfig | None = None,
    replica_id: str | None = None,
    record_store: RecordStore | None = None,
    loader: Any = None,
    gpu: bool | None = None,
    identity: ModelIdentity | None = None,
) -> Restored:
    """Load one snapshot, verifying its manifest and every blob; raises ``StateError``.

    ``config``: the running configuration (scope, PDQ thresholds, record bounds, search-time
    ``nprobe``/``ef_search``); the trained index structure always comes from the snapshot.
    Default: the configuration the snapshot was written with.

    ``identity``: the running model; a snapshot written by another one (embedder or weights)
    raises ``ModelMismatch`` before any blob is read, unless ``config.allow_model_mismatch``.
    Without it the memory keeps the snapshot's identity, and ``Memory.bind`` checks it when an
    engine takes the memory. A snapshot written before identities existed is accepted with a
    warning.
    """
    root = _root(prefix)
    try:
        manifest = _read_manifest(store, root, snap_id)
        stored = MemoryConfig.from_dict(manifest["config"])
        config = config or stored
        written_by = ModelIdentity.from_dict(manifest.get("model"))
        if written_by is None:
            log.warning("snapshot %s carries no model identity (written by an older release): "
                        "assuming it holds the running model's vectors", snap_id)
        check_identity(written_by, identity, what=f"snapshot {snap_id}",
                       allow_mismatch=config.allow_model_mismatch)
        if set(config.vectors) != set(stored.vectors) or any(
            config.vectors[f].dim != stored.vectors[f].dim for f in stored.vectors
        ):
            raise StateError(f"snapshot {snap_id}: indexed arrays/dimensions differ from config")
        memory = Memory(config, replica_id=replica_id, record_store=record_store, loader=loader,
                        identity=identity or written_by)
        memory.identity_source = f"snapshot {snap_id}"
        banks = {}
        for c in manifest["collections"]:
            rows = unpack(_read_blob(store, root, snap_id, manifest, c["rows"]))
            indexes = {
                f: _read_blob(store, root, snap_id, manifest, name)
                for f, name in c["indexes"].items()
            }
            col = Collection.restore(rows, indexes, gpu=gpu)
            for f, index in col.indexes.items():
                if isinstance(index, FaissIndex):
                    want = config.vectors[f]
                    index.spec = replace(index.spec, nprobe=want.nprobe, ef_search=want.ef_search)
            if len(col) != c["images"]:
                raise StateError(f"snapshot {snap_id}: collection size differs from manifest")
            if c["bank"] is None:
                memory.uploads = col
            else:
                banks[c["bank"]] = col
        memory.banks = banks
        for w in unpack(_read_blob(store, root, snap_id, manifest, "records.msgpack")):
            memory.records.put(record_from_wire(w))
        offsets = {str(k): int(v) for k, v in manifest["offsets"].items()}
        memory.positions = dict(offsets)
        memory.removed = {(k[0], k[1], k[2]) for k in manifest.get("removed", [])}
    except BlobNotFound as exc:
        raise StateError(f"snapshot {snap_id}: a blob is missing ({exc})") from exc
    except (KeyError, TypeError) as exc:
        raise StateError(f"snapshot {snap_id}: malformed ({exc})") from exc
    return Restored(memory, offsets, snap_id, manifest)


def load_latest_snapshot(
    store: BlobStore, *, prefix: str = "dupstream", **kwargs: Any
) -> Restored | None:
    """The newest snapshot that verifies (``LATEST`` first, then older ones), or None if there is
    no snapshot at all. Raises ``StateError`` when snapshots exist but none verifies, and
    ``ModelMismatch`` at once when the newest is another model's (no fall-back to older ones)."""
    root = _root(prefix)
    order = list_snapshots(store, prefix=prefix)
    try:
        latest = store.get_bytes(f"{root}/LATEST").decode()
        order = [latest] + [s for s in order if s != latest]
    except BlobNotFound:
        pass
    errors = []
    for snap_id in order:
        try:
            return load_snapshot(store, snap_id, prefix=prefix, **kwargs)
        except ModelMismatch:  # not damage: an older snapshot of the wrong model is no better
            raise
        except StateError as exc:
            errors.append(str(exc))
    if errors:
        raise StateError("no snapshot could be loaded: " + "; ".join(errors))
    return None
