"""The real streaming path: `dupstream run` as a process, against the Tansu broker and the moto
S3 server started by the test setup."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from dupstream.core.events import ImageUploaded
from dupstream.lab.data import edits
from dupstream.lab.devservers import service_env
from dupstream.stream.blobs import MinioStore
from dupstream.stream.client import read_topic, submit
from dupstream.stream.kafka import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture()
def topics(kafka_bootstrap, unique_name):
    names = {k: f"{unique_name}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=kafka_bootstrap, topics={n: 3 for n in names.values()},
                  compacted={names["updates"]})
    return names


def _service_env(kafka_bootstrap, s3_endpoint, topics, group):
    return service_env(bootstrap=kafka_bootstrap, s3=s3_endpoint, topics=topics, group=group,
                       state_bucket=f"{group.lower()}-state",
                       overrides={"DUPSTREAM_S3__ACCESS_KEY": "test-access",
                                  "DUPSTREAM_S3__SECRET_KEY": "test-secret-do-not-log",
                                  "DUPSTREAM_BATCH__MAX_EVENTS": "4"})


def test_every_event_gets_exactly_one_verdict_or_dead_letter(
    kafka_bootstrap, s3_endpoint, topics, unique_name, photos, tmp_path
):
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    bucket = f"{unique_name}-uploads"
    rng = np.random.default_rng(7)

    originals = {name: edits.encode(photos[name], "JPEG", 92)
                 for name in ("astronaut", "chelsea", "coffee", "rocket")}
    copies = {  # image_id -> (original, bytes)
        "copy-astronaut-resized": ("astronaut", edits.encode(edits.resize(photos["astronaut"],
                                                                            rng), "JPEG", 85)),
        "copy-chelsea-crop": ("chelsea", edits.encode(edits.crop(photos["chelsea"], rng))),
        "copy-coffee-caption": ("coffee", edits.encode(edits.caption(photos["coffee"], rng))),
        "copy-rocket-reupload": ("rocket", originals["rocket"]),  # byte-identical
    }
    # phase 1: originals (alternating JSON and msgpack events)
    for i, (name, data) in enumerate(originals.items()):
        ev = ImageUploaded(image_id=f"orig-{name}", bucket=bucket, key=f"{name}.jpg", tenant="t1")
        submit(producer=producer, store=store, topic=topics["uploads"], event=ev, data=data,
               fmt="json" if i % 2 else "msgpack")
    # bad input mixed in: not an image, a missing blob, a broken event, a schema violation
    ev_bad = ImageUploaded(image_id="bad-bytes", bucket=bucket, key="bad.jpg")
    submit(producer=producer, store=store, topic=topics["uploads"], event=ev_bad,
           data=b"this is not an image")
    ev_missing = ImageUploaded(image_id="missing-blob", bucket=bucket, key="nowhere.jpg")
    submit(producer=producer, store=None, topic=topics["uploads"], event=ev_missing, data=None)
    producer.produce(topics["uploads"], key=b"garbage", value=b"\x00{ not an event")
    producer.produce(topics["uploads"], key=b"schema", value=msgpack.packb({"image_id": "s"}))
    producer.flush(10)

    group = f"{unique_name}-svc"
    log = open(tmp_path / "service.log", "wb")
    n_events = len(originals) + len(copies) + 4
    proc = subprocess.Popen(
        [sys.executable, "-m", "dupstream", "run", "--max-events", str(n_events)],
        env=_service_env(kafka_bootstrap, s3_endpoint, topics, group),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        first = read_topic(bootstrap_servers=kafka_bootstrap, topic=topics["verdicts"],
                           expect=len(originals), timeout_s=90)
        assert len(first) == len(originals), (tmp_path / "service.log").read_text()[-3000:]
        # phase 2: the copies, once the originals are known
        for image_id, (_, data) in copies.items():
            ev = ImageUploaded(image_id=image_id, bucket=bucket, key=f"{image_id}.img",
                               tenant="t1")
            submit(producer=producer, store=store, topic=topics["uploads"], event=ev, data=data)
        producer.flush(10)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    service_log = (tmp_path / "service.log").read_text()
    assert "test-secret-do-not-log" not in service_log

    verdicts = read_topic(bootstrap_servers=kafka_bootstrap, topic=topics["verdicts"],
                          expect=len(originals) + len(copies), timeout_s=30)
    by_key = {}
    for rec in verdicts:
        v = json.loads(rec.value)
        assert rec.key.decode() == v["image_id"]
        by_key.setdefault(v["image_id"], []).append(v)
    expected = {f"orig-{n}" for n in originals} | set(copies)
    assert set(by_key) == expected  # one distinct verdict key per good event, nothing else
    assert all(len(vs) == 1 for vs in by_key.values())
    for name in originals:
        assert by_key[f"orig-{name}"][0]["verdict"] == "unique"
    for image_id, (src, _) in copies.items():
        v = by_key[image_id][0]
        assert v["verdict"] in {"duplicate", "near_duplicate"}, v
        assert v["match_id"] == f"orig-{src}"
        assert v["model_version"].startswith("dupstream-")
        assert "fetch" in v["timings_ms"]
        # byte-identical re-uploads take the hash fast path: no model runs for them
        assert ("embed" in v["timings_ms"]) == (image_id != "copy-rocket-reupload")
    reupload = by_key["copy-rocket-reupload"][0]
    assert reupload["evidence"]["exact_hash"] is True and reupload["verdict"] == "duplicate"
    assert any("fast path" in n for n in reupload["evidence"]["notes"])
    assert by_key["copy-astronaut-resized"][0]["verdict"] == "duplicate"
    assert by_key["copy-chelsea-crop"][0]["verdict"] == "near_duplicate"

    dlq = read_topic(bootstrap_servers=kafka_bootstrap, topic=topics["dlq"], expect=4,
                     timeout_s=30)
    reasons = sorted(r.headers["dupstream.reason"].decode() for r in dlq)
    assert reasons == sorted(["image_not_image", "blob_missing", "bad_event_encoding",
                              "bad_event_schema"])
    garbage = next(r for r in dlq if r.key == b"garbage")
    assert garbage.value == b"\x00{ not an event"  # the original payload, untouched
    assert all(int(r.headers["dupstream.attempts"]) >= 1 for r in dlq)

    # offsets were committed for everything (only after delivery)
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topics["uploads"], p) for p in range(3)], timeout=10)
    c.close()
    assert sum(tp.offset for tp in committed if tp.offset > 0) == n_events


def test_health_endpoints_and_metrics(kafka_bootstrap, s3_endpoint, topics, unique_name, photos):
    import urllib.request

    from tests.conftest import free_port

    port = free_port()
    env = _service_env(kafka_bootstrap, s3_endpoint, topics, f"{unique_name}-m")
    env["DUPSTREAM_METRICS_PORT"] = str(port)
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    bucket = f"{unique_name}-m"
    submit(producer=producer, store=store, topic=topics["uploads"],
           event=ImageUploaded(image_id="m1", bucket=bucket, key="m1.png"),
           data=edits.encode(photos["coffee"]))
    producer.flush(10)
    proc = subprocess.Popen([sys.executable, "-m", "dupstream", "run", "--max-events", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        deadline = time.monotonic() + 90
        body = ""
        while time.monotonic() < deadline:
            try:
                status, body = get("/metrics")
                if 'dupstream_stream_verdicts_total{verdict="unique"} 1.0' in body:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert 'dupstream_stream_verdicts_total{verdict="unique"} 1.0' in body
        assert "dupstream_pipeline_stage_latency_seconds_bucket" in body
        assert get("/healthz")[0] == 200
        status, ready = get("/readyz")
        assert status == 200 and json.loads(ready)["ready"] is True
    finally:
        producer.produce(topics["uploads"], key=b"x", value=b"bye")  # 2nd event ends the run
        producer.flush(10)
        proc.wait(timeout=60)
