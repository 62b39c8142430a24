"""Record-store writes against the real S3 server: the old synchronous path (one ``put`` per new
image inside ``Memory.add``, under the index lock) against the write-behind (``add`` indexes and
queues; writer threads put; ``flush_records`` waits for all). Prints per-call latency and totals.

    python -m dupstream.bench.record_writes [--records 300] [--writers 2] \
        [--out results/record_writes]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dupstream.state.blobstore import MinioBlobStore
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.state.records import BlobRecordStore, ImageRecord


def _records(n: int, prefix: str, rng: np.random.Generator) -> list[ImageRecord]:
    """Records of the size the engine writes (~27 KB: 512-d vector, a 24 KB thumbnail)."""
    out = []
    for i in range(n):
        v = rng.standard_normal(512).astype(np.float32)
        out.append(ImageRecord(
            f"{prefix}-{i}", "t", f"{i:064x}", rng.integers(0, 256, (8, 32), dtype=np.uint8),
            arrays={"vector": v / np.linalg.norm(v),
                    "thumb": rng.integers(0, 256, (120, 200), dtype=np.uint8)}))
    return out


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1e3 * float(np.median(xs)), 3),
            "p99_ms": round(1e3 * float(np.percentile(xs, 99)), 3)}


def run(*, records: int, writers: int) -> dict:
    from minio import Minio

    from dupstream.lab.devservers import local_servers

    rng = np.random.default_rng(0)
    config = MemoryConfig(vectors={"vector": IndexSpec(dim=512, kind="flat")},
                          record_writers=writers)
    with local_servers("recordbench") as (_bootstrap, s3):
        client = Minio(s3, access_key="x", secret_key="x", secure=False, region="us-east-1")
        sync_store = BlobRecordStore(MinioBlobStore(client, "record-bench-sync"), prefix="p")
        recs = _records(records + 1, "s", rng)
        sync_store.put(recs[0])  # the bucket exists, the connection is warm
        lat: list[float] = []
        t0 = time.perf_counter()
        for r in recs[1:]:
            t = time.perf_counter()
            sync_store.put(r)
            lat.append(time.perf_counter() - t)
        sync_total = time.perf_counter() - t0

        mem = Memory(config, replica_id="bench", record_store=BlobRecordStore(
            MinioBlobStore(client, "record-bench-wb"), prefix="p"))
        recs = _records(records + 1, "w", rng)
        mem.add(recs[0])
        mem.flush_records(30)
        lat_wb: list[float] = []
        t0 = time.perf_counter()
        for r in recs[1:]:
            t = time.perf_counter()
            mem.add(r)
            lat_wb.append(time.perf_counter() - t)
        added = time.perf_counter() - t0
        mem.flush_records(120)
        wb_total = time.perf_counter() - t0
        mem.records.writes.stop(5)
    return {
        "records": records,
        "record_bytes": recs[1].nbytes(),
        "sync_put_in_add": {**_ms(lat), "total_s": round(sync_total, 3)},
        "write_behind_add": {**_ms(lat_wb), "adds_s": round(added, 3),
                             "adds_and_flush_s": round(wb_total, 3), "writers": writers},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=300)
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--out", default=None, help="folder for record_writes.json")
    args = p.parse_args(argv)
    result = run(records=args.records, writers=args.writers)
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "record_writes.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
