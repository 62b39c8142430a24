"""The lookup server and the stream share one index (real broker, S3 server, uvicorn, httpx):

- an image uploaded through the stream (`dupstream run`) is found by POST /v1/lookup of an
  edited copy, with the right match_id;
- an image added over HTTP is then matched by the stream;
- a token of tenant A never sees tenant B's image;
- a deletion reaches a second replica (a `dupstream serve` process) and the stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from confluent_kafka import Producer

from dupstream.core.events import ImageUploaded
from dupstream.lab.devservers import free_port
from dupstream.stream.blobs import MinioStore
from dupstream.stream.client import read_topic, submit
from tests.serve.conftest import TOKENS, auth, serve_env, wait_ready

pytestmark = pytest.mark.integration


def _until(fn, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def _verdicts(bootstrap: str, topic: str, expect: int) -> dict[str, dict]:
    recs = read_topic(bootstrap_servers=bootstrap, topic=topic, expect=expect, timeout_s=90)
    out = {}
    for r in recs:
        v = json.loads(r.value)
        out[v["image_id"]] = v
    return out


def _has(base: str, image_id: str, who: str = "acme") -> bool:
    return httpx.get(f"{base}/v1/images/{image_id}", headers=auth(who)).status_code == 200


def test_a_replica_starts_from_the_latest_snapshot(replica_a):
    base, server = replica_a
    assert server.snapshot_id is not None
    info = httpx.get(f"{base}/v1/images/snap-img", headers=auth("archive"))
    assert info.status_code == 200, info.text
    assert info.json()["origin"] == "snapshot-writer" and info.json()["width"] == 7
    assert httpx.get(f"{base}/v1/images/snap-img", headers=auth("acme")).status_code == 404
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["snapshot"] == server.snapshot_id and ready["feed"]["caught_up"] is True


def test_stream_and_server_share_one_index(replica_a, kafka_bootstrap, s3_endpoint, serve_names,
                                           copies, tmp_path):
    base_a, _ = replica_a
    env = {**os.environ, **serve_env(kafka_bootstrap, s3_endpoint, serve_names)}
    bucket = serve_names["uploads_bucket"]
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    verdicts = serve_names["verdicts"]

    def upload(image_id: str, data: bytes, tenant: str = "acme") -> None:
        ev = ImageUploaded(image_id=image_id, bucket=bucket, key=f"{image_id}.jpg",
                           tenant=tenant)
        submit(producer=producer, store=store, topic=serve_names["uploads"], event=ev,
               data=data)
        producer.flush(10)

    port_b = free_port()
    base_b = f"http://127.0.0.1:{port_b}"
    logs = {n: open(tmp_path / f"{n}.log", "wb") for n in ("stream", "replica_b")}
    stream = subprocess.Popen([sys.executable, "-m", "dupstream", "run", "--max-events", "3"],
                              env=env, stdout=logs["stream"], stderr=subprocess.STDOUT)
    replica_b = subprocess.Popen([sys.executable, "-m", "dupstream", "serve", "--host",
                                  "127.0.0.1", "--port", str(port_b), "--access-log"],
                                 env=env, stdout=logs["replica_b"], stderr=subprocess.STDOUT)
    try:
        # 1. through the stream, then found over HTTP by an edited copy
        upload("orig-astronaut", copies["astronaut"])
        first = _verdicts(kafka_bootstrap, verdicts, 1)
        assert first["orig-astronaut"]["verdict"] == "unique", \
            (tmp_path / "stream.log").read_text()[-3000:]
        _until(lambda: _has(base_a, "orig-astronaut"), "the stream's image reaches replica A")
        r = httpx.post(f"{base_a}/v1/lookup", headers=auth("acme"), timeout=60,
                       files={"image": ("copy.jpg", copies["astronaut-crop"], "image/jpeg")})
        assert r.status_code == 200, r.text
        v = r.json()
        assert v["verdict"] in {"duplicate", "near_duplicate"} and v["match_id"] == \
            "orig-astronaut", v
        assert v["tenant"] == "acme" and v["model_version"].startswith("dupstream-")
        assert v["p_copy"] is not None and "embed" in v["timings_ms"] and v["evidence"]
        store.put(bucket, "caption.jpg", copies["astronaut-caption"])  # JSON {bucket, key}
        r = httpx.post(f"{base_a}/v1/lookup", headers=auth("acme"), timeout=60,
                       json={"bucket": bucket, "key": "caption.jpg"})
        assert r.status_code == 200 and r.json()["match_id"] == "orig-astronaut", r.text

        # 2. tenant isolation: zeta's token never sees acme's image
        r = httpx.post(f"{base_a}/v1/lookup", headers=auth("zeta"), timeout=60,
                       files={"image": ("copy.jpg", copies["astronaut-crop"], "image/jpeg")})
        assert r.status_code == 200 and r.json()["match_id"] != "orig-astronaut", r.text
        assert r.json()["verdict"] == "unique" and r.json()["tenant"] == "zeta"
        byte_copy = httpx.post(f"{base_a}/v1/lookup", headers=auth("zeta"), timeout=60,
                               files={"image": ("a.jpg", copies["astronaut"], "image/jpeg")})
        assert byte_copy.json()["verdict"] == "unique"  # not even by its exact hash
        assert httpx.get(f"{base_a}/v1/images/orig-astronaut", headers=auth("zeta")) \
            .status_code == 404
        assert httpx.delete(f"{base_a}/v1/images/orig-astronaut", headers=auth("zeta")) \
            .status_code == 404
        assert _has(base_a, "orig-astronaut")

        # 3. added over HTTP (published to the feed), then matched by the stream
        r = httpx.post(f"{base_a}/v1/images", headers=auth("acme"), timeout=60,
                       params={"image_id": "http-chelsea"},
                       files={"image": ("c.jpg", copies["chelsea"], "image/jpeg")})
        assert r.status_code == 200 and r.json() == {"image_id": "http-chelsea",
                                                     "tenant": "acme", "bank": None,
                                                     "added": True}, r.text
        info = httpx.get(f"{base_a}/v1/images/http-chelsea", headers=auth("acme")).json()
        assert info["width"] == 451 and info["origin"] and len(info["sha256"]) == 64, info
        wait_ready(base_b, timeout_s=90)
        _until(lambda: _has(base_b, "http-chelsea"), "the HTTP add reaches replica B")
        time.sleep(1.0)  # the stream follows the same feed
        upload("copy-chelsea", copies["chelsea-crop"])
        v = _verdicts(kafka_bootstrap, verdicts, 2)["copy-chelsea"]
        assert v["verdict"] in {"duplicate", "near_duplicate"}, v
        assert v["match_id"] == "http-chelsea"

        # 4. a deletion reaches the second replica and the stream
        _until(lambda: _has(base_b, "orig-astronaut"), "the stream's image reaches replica B")
        r = httpx.delete(f"{base_a}/v1/images/orig-astronaut", headers=auth("acme"))
        assert r.status_code == 200 and r.json()["deleted"] is True, r.text
        assert not _has(base_a, "orig-astronaut")
        _until(lambda: not _has(base_b, "orig-astronaut"), "the deletion reaches replica B")
        r = httpx.post(f"{base_b}/v1/lookup", headers=auth("acme"), timeout=60,
                       files={"image": ("copy.jpg", copies["astronaut-crop"], "image/jpeg")})
        assert r.status_code == 200 and r.json()["match_id"] != "orig-astronaut", r.text
        time.sleep(1.0)
        upload("copy-astronaut-after-delete", copies["astronaut-caption"])
        v = _verdicts(kafka_bootstrap, verdicts, 3)["copy-astronaut-after-delete"]
        assert v["match_id"] != "orig-astronaut", v
        assert stream.wait(timeout=60) == 0
        metrics = httpx.get(f"{base_b}/metrics").text
        assert "dupstream_serve_feed_applied_updates" in metrics
    finally:
        for proc in (stream, replica_b):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    log_b = (tmp_path / "replica_b.log").read_text()
    assert replica_b.returncode == 0, log_b[-3000:]
    for token in TOKENS.values():  # tokens never logged, not even with the access log
        assert token not in log_b
    assert "test-secret" not in log_b
