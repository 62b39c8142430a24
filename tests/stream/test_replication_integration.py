"""Shared state across consumers, against the real broker and S3 server: a copy is flagged
whichever consumer saw the original, and a replacement consumer restores from the snapshot and
the index-updates feed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from confluent_kafka import Producer

from dupstream.core.events import ImageUploaded
from dupstream.lab.data import edits
from dupstream.lab.devservers import service_env
from dupstream.stream.blobs import MinioStore
from dupstream.stream.client import read_topic
from dupstream.stream.kafka import ensure_topics

pytestmark = pytest.mark.integration


def _env(bootstrap, s3, topics, name, **extra):
    return service_env(bootstrap=bootstrap, s3=s3, topics=topics, group=f"{name}-svc",
                       state_bucket=f"{name}-state",
                       overrides={"DUPSTREAM_KAFKA__ASSIGNMENT_STRATEGY": "range",
                                  "DUPSTREAM_MODEL__DETECTOR": "none", **extra})


@pytest.fixture()
def setup(kafka_bootstrap, s3_endpoint, unique_name, photos):
    topics = {k: f"{unique_name}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=kafka_bootstrap, compacted={topics["updates"]},
                  topics={topics["uploads"]: 2, topics["verdicts"]: 2, topics["dlq"]: 1,
                          topics["updates"]: 2})
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    return topics, store, Producer({"bootstrap.servers": kafka_bootstrap})


def _upload(store, producer, topic, bucket, image_id, data, partition=None):
    store.put(bucket, f"{image_id}.jpg", data)
    ev = ImageUploaded(image_id=image_id, bucket=bucket, key=f"{image_id}.jpg")
    kw = {} if partition is None else {"partition": partition}
    producer.produce(topic, key=image_id.encode(), value=ev.model_dump_json().encode(), **kw)
    producer.flush(10)


def _assigned(log_path) -> list[str]:
    lines = re.findall(r"assigned (\[.*\])", log_path.read_text())
    return lines[-1] if lines else ""


def _verdicts(bootstrap, topic, expect):
    out = {}
    for r in read_topic(bootstrap_servers=bootstrap, topic=topic, expect=expect, timeout_s=60):
        v = json.loads(r.value)
        out[v["image_id"]] = v  # the newest verdict per key wins (a late match corrects)
    return out


def test_copy_is_flagged_whichever_consumer_saw_the_original(
    kafka_bootstrap, s3_endpoint, unique_name, photos, setup, tmp_path
):
    topics, store, producer = setup
    env = _env(kafka_bootstrap, s3_endpoint, topics, unique_name)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                              stdout=open(p, "wb"), stderr=subprocess.STDOUT) for p in logs]
    try:
        deadline = time.monotonic() + 60  # each consumer owns one of the two partitions
        while time.monotonic() < deadline:
            if all(_assigned(p).count("uploads") == 1 for p in logs):
                break
            time.sleep(0.3)
        assert all(_assigned(p).count("uploads") == 1 for p in logs), [p.read_text()[-500:]
                                                                       for p in logs]
        bucket = f"{unique_name}-up"
        rng = np.random.default_rng(0)
        _upload(store, producer, topics["uploads"], bucket, "orig", edits.encode(
            photos["coffee"], "JPEG", 92), partition=0)
        first = _verdicts(kafka_bootstrap, topics["verdicts"], 1)
        assert first["orig"]["verdict"] == "unique"
        time.sleep(2.0)  # let the other replica apply the update from the feed
        _upload(store, producer, topics["uploads"], bucket, "copy", edits.encode(
            edits.caption(photos["coffee"], rng), "JPEG", 90), partition=1)
        got = _verdicts(kafka_bootstrap, topics["verdicts"], 2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
    assert got["copy"]["verdict"] == "near_duplicate" and got["copy"]["match_id"] == "orig"
    assert got["copy"]["replica"] != got["orig"]["replica"]  # decided on the other consumer
    assert codes == [0, 0]


def test_replacement_consumer_restores_from_snapshot_and_feed(
    kafka_bootstrap, s3_endpoint, unique_name, photos, setup, tmp_path
):
    topics, store, producer = setup
    env = _env(kafka_bootstrap, s3_endpoint, topics, unique_name,
               DUPSTREAM_STATE__SNAPSHOT_INTERVAL_S="1")
    bucket = f"{unique_name}-up"
    names = list(photos)
    before, after = names[:3], names[3:]
    a = subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                         stdout=open(tmp_path / "a.log", "wb"), stderr=subprocess.STDOUT)
    try:
        for n in before:
            _upload(store, producer, topics["uploads"], bucket, f"orig-{n}",
                    edits.encode(photos[n], "JPEG", 92))
        _verdicts(kafka_bootstrap, topics["verdicts"], len(before))
        time.sleep(2.5)  # a snapshot (interval 1 s) now holds the first originals
        for n in after:  # these reach the feed, maybe not a snapshot
            _upload(store, producer, topics["uploads"], bucket, f"orig-{n}",
                    edits.encode(photos[n], "JPEG", 92))
        _verdicts(kafka_bootstrap, topics["verdicts"], len(names))
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(30)
    snaps = store.client.list_objects(f"{unique_name}-state", prefix="dupstream/snapshots/",
                                      recursive=True)
    assert any(o.object_name.endswith("manifest.json") for o in snaps)

    b = subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                         stdout=open(tmp_path / "b.log", "wb"), stderr=subprocess.STDOUT)
    rng = np.random.default_rng(1)
    try:
        for n in names:
            _upload(store, producer, topics["uploads"], bucket, f"copy-{n}",
                    edits.encode(edits.crop(photos[n], rng), "JPEG", 90))
        got = _verdicts(kafka_bootstrap, topics["verdicts"], 2 * len(names))
    finally:
        b.send_signal(signal.SIGTERM)
        assert b.wait(60) == 0
    log_b = (tmp_path / "b.log").read_text()
    restored = re.search(r"restored snapshot \S+ \((\d+) images\)", log_b)
    assert restored and int(restored.group(1)) >= len(before), log_b[-2000:]
    replayed = re.search(r"index feed: (\d+) images after catch-up", log_b)
    assert replayed and int(replayed.group(1)) == len(names)  # snapshot + feed = everything
    for n in names:
        v = got[f"copy-{n}"]
        assert v["verdict"] in {"duplicate", "near_duplicate"}, v
        assert v["match_id"] == f"orig-{n}"

    # the snapshot writer: latest snapshot + the whole feed -> a new snapshot, then a rollback
    def index(*argv):
        out = subprocess.run([sys.executable, "-m", "dupstream", "index", *argv], env=env,
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    snap = index("snapshot")
    assert snap["feed_caught_up"] is True and snap["stats"]["images"] == 2 * len(names)
    listed = index("list")["snapshots"]
    assert listed[0] == snap["written"] and len(listed) >= 2
    rolled = index("restore", "--snapshot", listed[1])
    assert rolled["restored"] == listed[1]
    assert index("stats")["loaded"] == listed[1]  # replicas now start from the rollback
