"""The shared index on Milvus against the embedded FAISS index, on the same vectors.

    python -m dupstream.bench.milvus_bench --uri http://127.0.0.1:19530 --n 100000 \
        [--float-index IVF_SQ8] [--queries 300] [--out results/milvus_bench_100k.json]

Data: ``index_bench.Synthetic`` 512-d unit vectors (clustered, decaying spectrum), one tenant
per vector out of ``--tenants`` (searches are tenant-scoped, as the service's are). Measured:

- *add -> searchable*: one new vector inserted, then a Strong search (any replica) finds it by
  itself; the time from the insert call to the search's answer. Embedded: ``add`` then
  ``search`` in process (another replica needs the index feed on top: see bench.feed_latency).
- *search*: one query at a time, k=10, tenant filter, p50/p99 over ``--queries`` queries, and
  queries/s (one client thread, sequential; and ``--batch`` queries per call).
- *recall@10*: overlap with exact brute-force top 10 (numpy) within the query's tenant.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from dupstream.bench.index_bench import Synthetic, copies_of
from dupstream.state.idmap import IdMap
from dupstream.state.index import FaissIndex, IndexSpec, omp_threads
from dupstream.state.milvus import MilvusConfig, MilvusStore, key_filter

K = 10


def pct(a: list[float]) -> dict[str, float]:
    x = np.array(a) * 1000
    return {"p50": round(float(np.percentile(x, 50)), 2),
            "p99": round(float(np.percentile(x, 99)), 2), "n": len(a)}


def exact_topk(data: np.ndarray, tenants: np.ndarray, q: np.ndarray, t: np.ndarray) -> list:
    out = []
    for i in range(len(q)):
        rows = np.flatnonzero(tenants == t[i])
        s = data[rows] @ q[i]
        out.append(set(rows[np.argsort(-s)[:K]].tolist()))
    return out


def recall(found: list[set], truth: list[set]) -> float:
    return round(float(np.mean([len(f & t) / K for f, t in zip(found, truth, strict=True)])), 4)


def bench_milvus(args, data, tenants, queries, qt, truth) -> dict[str, Any]:
    cfg = MilvusConfig(uri=args.uri, prefix=f"bench_{uuid.uuid4().hex[:8]}",
                       float_index=args.float_index, nlist=args.nlist, nprobe=args.nprobe,
                       hnsw_ef=args.ef, timeout_s=120.0, consistency=args.consistency)
    store = MilvusStore(cfg, dims={"vector": data.shape[1]})
    index = store.vectors["vector"]
    out: dict[str, Any] = {"consistency": args.consistency, "float_index": args.float_index,
                           "nlist": args.nlist,
                           "nprobe": args.nprobe, "ef": args.ef}
    try:
        t0 = time.perf_counter()
        step = 5000
        for s in range(0, len(data), step):
            keys = [(None, f"t{tenants[i]}", f"i{i}") for i in range(s, min(s + step,
                                                                              len(data)))]
            index.add(keys, data[s : s + step])
        out["insert_s"] = round(time.perf_counter() - t0, 1)
        client = store.conn.client
        client.flush(index.name)
        t1 = time.perf_counter()
        while True:  # wait for the index build over the sealed segments
            info = client.describe_index(index.name, index_name=index.vector_field)
            if int(info.get("indexed_rows", 0)) >= len(data) or time.perf_counter() - t1 > 900:
                break
            time.sleep(1.0)
        out["index_build_s"] = round(time.perf_counter() - t1, 1)
        out["indexed_rows"] = int(info.get("indexed_rows", 0))

        def one(i: int) -> list:
            return index.search(queries[i], K, expr=key_filter(tenant=f"t{qt[i]}",
                                                                bank=None))[0]

        for i in range(5):
            one(i)
        lat, found = [], []
        t2 = time.perf_counter()
        for i in range(len(queries)):
            a = time.perf_counter()
            hits = one(i)
            lat.append(time.perf_counter() - a)
            found.append({int(h.key[2][1:]) for h in hits})
        out["search_ms"] = pct(lat)
        out["qps_sequential"] = round(len(queries) / (time.perf_counter() - t2), 1)
        out["recall_at_10"] = recall(found, truth)
        b = args.batch
        t3 = time.perf_counter()
        nb = 0
        for s in range(0, len(queries) - b + 1, b):  # one tenant's batch, one call
            index.search(queries[s : s + b], K, expr=key_filter(tenant=f"t{qt[s]}", bank=None))
            nb += b
        out[f"qps_batch{b}"] = round(nb / (time.perf_counter() - t3), 1)
        vis = []
        rng = np.random.default_rng(5)
        fresh = Synthetic(dim=data.shape[1], seed=9).sample(args.adds, rng)
        for j in range(args.adds):
            key = (None, "t0", f"new{j}")
            a = time.perf_counter()
            index.add([key], fresh[j])
            expr = key_filter(tenant="t0", bank=None) + f' and image_id == "new{j}"'
            while not index.search(fresh[j], 1, expr=expr)[0]:
                pass
            vis.append(time.perf_counter() - a)
        out["add_to_searchable_ms"] = pct(vis)
    finally:
        store.drop()
        store.close()
    return out


def bench_faiss(args, data, tenants, queries, qt, truth) -> dict[str, Any]:
    ids = IdMap()
    for i in range(len(data)):
        ids.append(f"i{i}", f"t{tenants[i]}")
    t0 = time.perf_counter()
    index = FaissIndex(IndexSpec(dim=data.shape[1], kind="ivf", switch_at=len(data),
                                 nlist=args.nlist, nprobe=args.nprobe))
    index.add(data)
    out: dict[str, Any] = {"factory": index.describe()["factory"], "nprobe": args.nprobe,
                           "build_s": round(time.perf_counter() - t0, 1)}
    lat, found = [], []
    with omp_threads(1):
        for i in range(len(queries)):
            a = time.perf_counter()
            _, rows = index.search(queries[i], K, allowed=ids.allowed(f"t{qt[i]}"))
            lat.append(time.perf_counter() - a)
            found.append({int(r) for r in rows[0] if r >= 0})
        out["search_ms"] = pct(lat)
        out["qps_sequential"] = round(len(queries) / sum(lat), 1)
        out["recall_at_10"] = recall(found, truth)
        vis = []
        fresh = Synthetic(dim=data.shape[1], seed=9).sample(args.adds, np.random.default_rng(5))
        for j in range(args.adds):
            a = time.perf_counter()
            ids.append(f"new{j}", "t0")
            index.add(fresh[j])
            _, rows = index.search(fresh[j], 1, allowed=ids.allowed("t0"))
            assert rows[0][0] == len(ids) - 1
            vis.append(time.perf_counter() - a)
        out["add_to_searchable_ms_in_process"] = pct(vis)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", default="http://127.0.0.1:19530")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--adds", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--float-index", default="IVF_SQ8", choices=["IVF_SQ8", "HNSW", "FLAT"])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ef", type=int, default=128)
    ap.add_argument("--consistency", default="Strong",
                    choices=["Strong", "Session", "Bounded", "Eventually"])
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    gen = Synthetic(dim=512, seed=0)
    data = gen.sample(args.n, rng)
    tenants = rng.integers(0, args.tenants, args.n)
    pick = rng.choice(args.n, args.queries, replace=False)
    queries, qt = copies_of(data[pick], rng, cos=0.9), tenants[pick]
    truth = exact_topk(data, tenants, queries, qt)
    result: dict[str, Any] = {
        "n": args.n, "dim": 512, "tenants": args.tenants, "queries": args.queries, "k": K,
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
    }
    if not args.skip_faiss:
        result["faiss"] = bench_faiss(args, data, tenants, queries, qt, truth)
        print(json.dumps(result["faiss"]), flush=True)
    result["milvus"] = bench_milvus(args, data, tenants, queries, qt, truth)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
