"""Copy an embedded memory (a restored snapshot) into the shared Milvus index.

Every image of every collection (the uploads and each reference bank) is copied from its full
record (the LRU, then the record store): its indexed arrays at full precision (never the
quantised codes of an IVF-SQ8 index), its identity PDQ hash, digest and PDQ quality. Images
already in Milvus are skipped (adds are idempotent by key), so a migration can be re-run after
an interruption. An image whose record is lost (neither in the snapshot's LRU nor in the record
store) cannot be verified by the engine either: it is counted and skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from dupstream.state.memory import Collection, Memory
from dupstream.state.records import ImageRecord, RecordKey


@dataclass
class Migrated:
    images: int = 0
    added: int = 0
    present: int = 0  # already in Milvus (a re-run, or added by a replica meanwhile)
    lost: list[RecordKey] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"images": self.images, "added": self.added, "present": self.present,
                "lost": len(self.lost), "lost_keys": [list(k) for k in self.lost[:20]],
                "seconds": round(self.seconds, 2)}


def _keys(col: Collection) -> Iterator[RecordKey]:
    for row in range(len(col.ids)):
        image_id, tenant = col.ids.key(row)
        yield (col.name, tenant, image_id)


def _add(target: Memory, dest, recs: list[ImageRecord], out: Migrated) -> None:
    if recs:
        new = dest.add_many(recs, usable=[target._usable(r) for r in recs])
        out.added += sum(new)
        out.present += len(new) - sum(new)


def migrate_to_milvus(source: Memory, target: Memory, *, batch: int = 256) -> Migrated:
    """Add every image of ``source`` (embedded) to ``target`` (a Milvus-backed memory)."""
    t0 = time.perf_counter()
    out = Migrated()
    for col in [source.uploads, *source.banks.values()]:
        dest = target._collection(col.name, create=True)
        pending: list[ImageRecord] = []
        for key in _keys(col):
            out.images += 1
            rec = source.record(key)
            if rec is None:
                out.lost.append(key)
                continue
            rec.bank = col.name
            pending.append(rec)
            if len(pending) >= batch:
                _add(target, dest, pending, out)
                pending = []
        _add(target, dest, pending, out)
    out.seconds = time.perf_counter() - t0
    return out
