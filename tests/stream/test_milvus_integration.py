"""Two consumers sharing one index on Milvus (``state.backend: milvus``), with no index feed: a
copy is found by the consumer that did not see its original, against the real broker, S3 server
and Milvus server the test setup starts."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid

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


def _assigned(log_path) -> str:
    lines = re.findall(r"assigned (\[.*\])", log_path.read_text())
    return lines[-1] if lines else ""


def _upload(store, producer, topic, bucket, image_id, data, partition):
    store.put(bucket, f"{image_id}.jpg", data)
    ev = ImageUploaded(image_id=image_id, bucket=bucket, key=f"{image_id}.jpg")
    producer.produce(topic, key=image_id.encode(), value=ev.model_dump_json().encode(),
                     partition=partition)
    producer.flush(10)


def _verdicts(bootstrap, topic, expect):
    return {json.loads(r.value)["image_id"]: json.loads(r.value)
            for r in read_topic(bootstrap_servers=bootstrap, topic=topic, expect=expect,
                                timeout_s=90)}


def test_copy_found_on_the_other_consumer_through_milvus_without_a_feed(
    kafka_bootstrap, s3_endpoint, milvus_uri, unique_name, photos, tmp_path
):
    topics = {k: f"{unique_name}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=kafka_bootstrap, compacted={topics["updates"]},
                  topics={topics["uploads"]: 2, topics["verdicts"]: 2, topics["dlq"]: 1,
                          topics["updates"]: 2})
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    prefix = f"e{uuid.uuid4().hex[:8]}"
    env = service_env(bootstrap=kafka_bootstrap, s3=s3_endpoint, topics=topics,
                      group=f"{unique_name}-svc", state_bucket=f"{unique_name}-state",
                      overrides={"DUPSTREAM_KAFKA__ASSIGNMENT_STRATEGY": "range",
                                 "DUPSTREAM_MODEL__DETECTOR": "none",
                                 "DUPSTREAM_STATE__BACKEND": "milvus",
                                 "DUPSTREAM_STATE__MILVUS__URI": milvus_uri,
                                 "DUPSTREAM_STATE__MILVUS__COLLECTION_PREFIX": prefix,
                                 "DUPSTREAM_STATE__MILVUS__NLIST": "16",
                                 "DUPSTREAM_STATE__MILVUS__PDQ_NLIST": "16"})
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                              stdout=open(p, "wb"), stderr=subprocess.STDOUT) for p in logs]
    try:
        deadline = time.monotonic() + 90  # each consumer owns one of the two partitions
        while time.monotonic() < deadline:
            if all(_assigned(p).count("uploads") == 1 for p in logs):
                break
            time.sleep(0.3)
        assert all(_assigned(p).count("uploads") == 1 for p in logs), [
            p.read_text()[-1500:] for p in logs]
        bucket = f"{unique_name}-up"
        _upload(store, producer, topics["uploads"], bucket, "orig",
                edits.encode(photos["coffee"], "JPEG", 92), partition=0)
        first = _verdicts(kafka_bootstrap, topics["verdicts"], 1)
        assert first["orig"]["verdict"] == "unique"
        # no sleep for a feed: the original is in Milvus (Strong) once its verdict is out
        rng = np.random.default_rng(0)
        _upload(store, producer, topics["uploads"], bucket, "copy",
                edits.encode(edits.caption(photos["coffee"], rng), "JPEG", 90), partition=1)
        got = _verdicts(kafka_bootstrap, topics["verdicts"], 2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
    assert got["copy"]["verdict"] == "near_duplicate", got["copy"]
    assert got["copy"]["match_id"] == "orig"
    assert got["copy"]["replica"] != got["orig"]["replica"]  # decided on the other consumer
    assert codes == [0, 0], [p.read_text()[-1500:] for p in logs]
    # the index feed was not used: replication is off with the shared index
    offsets = [p.read_text() for p in logs]
    assert not any("index feed:" in t for t in offsets), offsets[0][-1500:]
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    try:
        names = set(client.list_collections())
        assert {f"{prefix}_vector", f"{prefix}_content", f"{prefix}_pdq"} <= names
        for n in (f"{prefix}_vector", f"{prefix}_content", f"{prefix}_pdq"):
            client.drop_collection(n)
    finally:
        client.close()
