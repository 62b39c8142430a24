"""add → matchable through the real broker: a record added on replica A is published to the
index-updates topic; replica B's feed follower (polled at the service loop's cadence) applies it,
and B can then find it. Prints and writes p50/p99 of (B finds it) − (A added it).

    python -m dupstream.bench.feed_latency [--updates 200] [--cadence-ms 200] \
        [--out results/feed_latency]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Producer

from dupstream.state.memory import Memory, MemoryConfig, encode_update, update_key
from dupstream.state.records import ImageRecord
from dupstream.stream.kafka import consumer_config, ensure_topics
from dupstream.stream.replication import FeedFollower


def _record(i: int, rng: np.random.Generator) -> ImageRecord:
    v = rng.standard_normal(512).astype(np.float32)
    v /= np.linalg.norm(v)
    pdq = rng.integers(0, 256, (8, 32), dtype=np.uint8)
    return ImageRecord(f"img{i}", "t", f"{i:064x}", pdq, arrays={"vector": v},
                       meta={"pdq_quality": 100})


def run(*, updates: int, cadence_s: float, interval_s: float) -> dict:
    from dupstream.lab.devservers import local_servers

    rng = np.random.default_rng(0)
    with local_servers("feedbench") as (bootstrap, _s3):
        topic = "feedbench.index-updates"
        ensure_topics(bootstrap_servers=bootstrap, topics={topic: 3}, compacted={topic})
        a, b = Memory(MemoryConfig(), replica_id="A"), Memory(MemoryConfig(), replica_id="B")
        follower = FeedFollower(consumer_conf=consumer_config(bootstrap_servers=bootstrap,
                                                              group_id="feedbench"),
                                topic=topic, memory=b)
        follower.start(timeout_s=30)
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5})
        added: dict[str, float] = {}
        found: dict[str, float] = {}
        next_add = time.perf_counter()
        i = 0
        deadline = time.perf_counter() + updates * interval_s + 30
        while len(found) < updates and time.perf_counter() < deadline:
            now = time.perf_counter()
            while i < updates and now >= next_add:  # replica A adds and publishes (with a
                rec = _record(i, rng)                # flush, as the service does)
                a.add(rec)
                added[rec.image_id] = time.perf_counter()
                producer.produce(topic, key=update_key(rec), value=encode_update(rec))
                producer.flush(10)
                i += 1
                next_add += interval_s
            follower.poll()  # replica B, once per loop iteration
            t = time.perf_counter()
            for image_id in list(added):
                if image_id not in found and (None, "t", image_id) in b:
                    found[image_id] = t
            time.sleep(cadence_s)
        follower.close()
    lat = np.array([(found[k] - added[k]) * 1e3 for k in found])
    return {"updates": updates, "found": len(found), "cadence_ms": cadence_s * 1e3,
            "interval_ms": interval_s * 1e3,
            "add_to_matchable_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                                    "p99": round(float(np.percentile(lat, 99)), 1),
                                    "max": round(float(lat.max()), 1)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--cadence-ms", type=float, default=200.0,
                   help="how often replica B polls the feed (the service loop's batch wait)")
    p.add_argument("--interval-ms", type=float, default=50.0, help="time between adds on A")
    p.add_argument("--out", default="results/feed_latency")
    args = p.parse_args(argv)
    r = run(updates=args.updates, cadence_s=args.cadence_ms / 1e3,
            interval_s=args.interval_ms / 1e3)
    print(json.dumps(r))
    out = Path(args.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
