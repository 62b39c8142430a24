"""The verification stage through the real streaming path: `dupstream run` against the Tansu broker
and the moto S3 server started by the test setup. A screenshot-framed copy uploaded after its
original is a near_duplicate of it with the registration evidence; two different photos wearing
one identical frame (an overlay trap) stay unique."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from confluent_kafka import Producer

from dupstream.core.events import ImageUploaded
from dupstream.lab.data import edits
from dupstream.lab.devservers import service_env
from dupstream.stream.blobs import MinioStore
from dupstream.stream.client import read_topic, submit
from dupstream.stream.kafka import ensure_topics

pytestmark = pytest.mark.integration


def test_screenshot_copy_is_found_and_overlay_trap_stays_unique(
    kafka_bootstrap, s3_endpoint, unique_name, photos, tmp_path
):
    topics = {k: f"{unique_name}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=kafka_bootstrap, topics={n: 1 for n in topics.values()},
                  compacted={topics["updates"]})
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    bucket = f"{unique_name}-uploads"
    rng = np.random.default_rng(11)
    frame = edits.overlay("frame", seed=5)
    uploads = [  # in this order, one partition: each is judged against the ones before it
        ("orig-astronaut", edits.encode(photos["astronaut"], "JPEG", 92)),
        ("orig-coffee-framed", edits.encode(frame(photos["coffee"]))),
        ("copy-astronaut-screenshot",
         edits.encode(edits.screenshot_phone(photos["astronaut"], rng), "JPEG", 90)),
        ("trap-chelsea-framed", edits.encode(frame(photos["chelsea"]))),
    ]
    for image_id, data in uploads:
        submit(producer=producer, store=store, topic=topics["uploads"],
               event=ImageUploaded(image_id=image_id, bucket=bucket, key=f"{image_id}.img"),
               data=data)
    producer.flush(10)
    group = f"{unique_name}-svc"
    env = service_env(bootstrap=kafka_bootstrap, s3=s3_endpoint, topics=topics, group=group,
                      state_bucket=f"{group.lower()}-state",
                      overrides={"DUPSTREAM_BATCH__MAX_EVENTS": "1"})
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        rc = subprocess.run([sys.executable, "-m", "dupstream", "run", "--max-events",
                             str(len(uploads))], env=env, stdout=out, stderr=subprocess.STDOUT,
                            timeout=240).returncode
    assert rc == 0, log.read_text()[-3000:]
    records = read_topic(bootstrap_servers=kafka_bootstrap, topic=topics["verdicts"],
                         expect=len(uploads), timeout_s=30)
    by_id = {json.loads(r.value)["image_id"]: json.loads(r.value) for r in records}
    assert set(by_id) == {u[0] for u in uploads}

    shot = by_id["copy-astronaut-screenshot"]
    assert shot["verdict"] == "near_duplicate", shot
    assert shot["match_id"] == "orig-astronaut"
    ev = shot["evidence"]
    reg = ev["registration"]
    assert reg["verified"] is True and reg["method"] in {"sparse", "dense"}
    # the photo sits inside the phone UI: scaled down, covering only part of the screenshot
    assert reg["transform"]["scale"] < 1.0 and reg["overlap_query"] < 0.9
    assert reg["overlap_ref"] > 0.8 and reg["transform"]["flip"] is False
    assert ev["content_visual"] > ev["visual"]  # the framed content is closer than the whole
    assert ev["same_scene"] is False and ev["verifications"] >= 1
    assert 0.5 <= shot["p_copy"] <= 1.0 and "verify" in shot["timings_ms"]

    trap = by_id["trap-chelsea-framed"]
    assert trap["verdict"] == "unique" and trap["match_id"] is None, trap
