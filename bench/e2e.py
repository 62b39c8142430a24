"""End to end through the real broker: event → verdict latency at a fixed offered load."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
from confluent_kafka import Producer

from dupstream.core.events import ImageUploaded
from dupstream.stream.blobs import MinioStore
from dupstream.stream.client import read_topic
from dupstream.stream.kafka import ensure_topics


def run_e2e(*, events: int, rate: float, detector: str | None = None,
            extract_ahead: bool = True) -> dict:
    """``detector``: the service's (default: the engine's, ``DEFAULT_DETECTOR``);
    ``extract_ahead``: the service's ``batch.extract_ahead``. At a rate above what the service
    sustains, ``throughput_per_s`` is the stream's throughput (first send to the service's
    exit after the last event)."""
    from dupstream.bench.pipeline import make_images
    from dupstream.lab.devservers import local_servers, service_env
    from dupstream.workers.detector import DEFAULT_DETECTOR

    detector = detector or DEFAULT_DETECTOR

    blobs = make_images(events, seed=1)
    with local_servers("bench") as (bootstrap, s3):
        topics = {"uploads": "bench.uploads", "verdicts": "bench.verdicts", "dlq": "bench.dlq",
                  "updates": "bench.index-updates"}
        ensure_topics(bootstrap_servers=bootstrap, topics={t: 3 for t in topics.values()},
                      compacted={topics["updates"]})
        store = MinioStore(endpoint=s3, access_key="bench", secret_key="bench")
        for i, b in enumerate(blobs):
            store.put("bench", f"img{i}.jpg", b)
        env = service_env(bootstrap=bootstrap, s3=s3, topics=topics, group="bench",
                          state_bucket="bench-state",
                          overrides={"DUPSTREAM_MODEL__DETECTOR": detector,
                                     "DUPSTREAM_BATCH__MAX_WAIT_MS": "20",
                                     "DUPSTREAM_BATCH__EXTRACT_AHEAD": str(extract_ahead).lower()})
        proc = subprocess.Popen([sys.executable, "-m", "dupstream", "run", "--max-events",
                                 str(events + 1)], env=env, stderr=subprocess.DEVNULL)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        # one warm-up event, answered before the clock starts
        warm = ImageUploaded(image_id="warm", bucket="bench", key="img0.jpg")
        producer.produce(topics["uploads"], key=b"warm", value=warm.model_dump_json().encode())
        producer.flush(10)
        read_topic(bootstrap_servers=bootstrap, topic=topics["verdicts"], expect=1, timeout_s=120)
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(events):
            due = t0 + i / rate
            while time.perf_counter() < due:
                time.sleep(0.001)
            ev = ImageUploaded(image_id=f"e{i}", bucket="bench", key=f"img{i}.jpg")
            sent[ev.image_id] = time.time()
            producer.produce(topics["uploads"], key=ev.image_id.encode(),
                             value=ev.model_dump_json().encode())
            producer.poll(0)
        producer.flush(10)
        proc.wait(timeout=600)
        elapsed = time.perf_counter() - t0
        recs = read_topic(bootstrap_servers=bootstrap, topic=topics["verdicts"], expect=events + 1,
                          timeout_s=60)
    # latency: the verdict record's broker timestamp minus the send time
    lat, stamps = [], []
    for r in recs:
        v = json.loads(r.value)
        if v["image_id"] in sent and r.timestamp_ms:
            lat.append(r.timestamp_ms - sent[v["image_id"]] * 1e3)
            stamps.append(r.timestamp_ms)
    a = np.asarray(lat)
    # the service's own pace: verdicts per second between the first and the last verdict's
    # broker timestamps (throughput_per_s also counts the first batch's wait and the service's
    # exit: its last commit, the snapshot, leaving the group)
    span_s = (max(stamps) - min(stamps)) / 1e3 if len(stamps) > 1 else 0.0
    return {"events": events, "rate_per_s": rate, "mode": detector,
            "extract_ahead": extract_ahead,
            "received": len(lat), "throughput_per_s": round(events / elapsed, 2),
            "verdict_rate_per_s": round((len(stamps) - 1) / span_s, 2) if span_s else None,
            "latency_ms": {"p50": round(float(np.percentile(a, 50)), 1),
                           "p99": round(float(np.percentile(a, 99)), 1)}}
