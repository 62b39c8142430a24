"""Every bad input to the lookup server gets a 4xx with a machine-readable reason (never a 500),
against a real uvicorn, the real S3 server and broker; a full queue answers 503 + Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from dupstream.stream.blobs import MinioStore
from tests.badinputs import catalogue
from tests.serve.conftest import auth

pytestmark = pytest.mark.integration


def _lookup(base, *, files=None, headers=None, **kw):
    return httpx.post(f"{base}/v1/lookup", files=files, headers=headers, timeout=60, **kw)


def _is(resp, status: int, reason: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.json()["reason"] == reason, resp.text


def test_authentication_and_grants(replica_a, copies):
    base, _ = replica_a
    files = {"image": ("a.jpg", copies["coffee"], "image/jpeg")}
    r = _lookup(base, files=files)
    _is(r, 401, "auth_missing")
    assert r.headers["www-authenticate"] == "Bearer"
    _is(_lookup(base, files=files, headers={"Authorization": "Bearer not-a-token"}), 401,
        "auth_invalid")
    _is(_lookup(base, files=files, headers={"Authorization": "Basic dXNlcjpwdw=="}), 401,
        "auth_missing")
    _is(_lookup(base, files=files, headers=auth("acme"), params={"tenant": "zeta"}), 403,
        "tenant_forbidden")
    _is(_lookup(base, files=files, headers=auth("acme-logos"), params={"banks": "other"}), 403,
        "bank_forbidden")
    _is(httpx.post(f"{base}/v1/images", params={"image_id": "x", "bank": "logos"},
                   files=files, headers=auth("acme-nobank")), 403, "bank_forbidden")
    _is(httpx.get(f"{base}/v1/images/x"), 401, "auth_missing")
    _is(httpx.delete(f"{base}/v1/images/x", headers={"Authorization": "Bearer nope"}), 401,
        "auth_invalid")


def test_every_bad_image_gets_its_reason(replica_a, photos):
    base, _ = replica_a
    # blob_too_large is S3's cap (tested through JSON lookups); bodies: the body cap below
    cases = [c for c in catalogue(photos["astronaut"])
             if c.kind == "blob" and c.reason != "blob_too_large"]
    assert len(cases) > 15
    for case in cases:
        r = _lookup(base, files={"image": ("x.bin", case.payload, "application/octet-stream")},
                    headers=auth("acme"))
        assert 400 <= r.status_code < 500, (case.name, r.status_code, r.text)
        assert r.json()["reason"] == case.reason, (case.name, r.text)
    # the same through raw bytes and through POST /v1/images
    bomb = next(c for c in cases if c.reason == "image_bomb")
    _is(httpx.post(f"{base}/v1/lookup", content=bomb.payload, headers={
        **auth("acme"), "Content-Type": "image/png"}), 413, "image_bomb")
    trunc = next(c for c in cases if c.reason == "image_truncated")
    _is(httpx.post(f"{base}/v1/images", params={"image_id": "t"}, headers=auth("acme"),
                   files={"image": ("t.jpg", trunc.payload, "image/jpeg")}), 422,
        "image_truncated")


def test_bodies_over_the_cap_and_malformed_requests(replica_a, copies):
    base, _ = replica_a
    big = b"\xff" * (3 * 1024 * 1024)
    _is(_lookup(base, files={"image": ("big.jpg", big, "image/jpeg")}, headers=auth("acme")),
        413, "body_too_large")

    def chunks():  # no Content-Length: refused while it streams in
        for _ in range(48):
            yield b"\0" * 65536

    _is(httpx.post(f"{base}/v1/lookup", content=chunks(), headers={
        **auth("acme"), "Content-Type": "application/octet-stream"}), 413, "body_too_large")
    h = {**auth("acme"), "Content-Type": "application/json"}
    _is(httpx.post(f"{base}/v1/lookup", content=b'{"bucket": "b", ', headers=h), 400,
        "bad_json")
    _is(httpx.post(f"{base}/v1/lookup", content=b'\xff\xfe', headers=h), 400, "bad_json")
    _is(httpx.post(f"{base}/v1/lookup", json={"bucket": "b"}, headers=auth("acme")), 422,
        "bad_request")
    _is(httpx.post(f"{base}/v1/lookup", json=[1, 2], headers=auth("acme")), 422, "bad_request")
    _is(httpx.post(f"{base}/v1/lookup", content=b"hello", headers={
        **auth("acme"), "Content-Type": "text/plain"}), 415, "unsupported_media_type")
    _is(httpx.post(f"{base}/v1/lookup", content=b"hello", headers=auth("acme")), 415,
        "unsupported_media_type")
    _is(_lookup(base, files={"other": ("a.jpg", copies["coffee"], "image/jpeg")},
                headers=auth("acme")), 400, "missing_image")
    _is(httpx.post(f"{base}/v1/lookup", content=b"--xx\r\ngarbage", headers={
        **auth("acme"), "Content-Type": "multipart/form-data; boundary=xx"}), 400,
        "missing_image")
    _is(_lookup(base, files={"image": ("a.jpg", copies["coffee"], "image/jpeg")},
                headers=auth("acme"), params={"add": "maybe"}), 422, "bad_request")
    _is(_lookup(base, files={"image": ("a.jpg", copies["coffee"], "image/jpeg")},
                headers=auth("acme"), params={"image_id": "x" * 600}), 422, "bad_image_id")
    _is(httpx.post(f"{base}/v1/images", files={"image": ("a.jpg", b"x", "image/jpeg")},
                   headers=auth("acme")), 422, "bad_request")  # image_id is required
    _is(httpx.get(f"{base}/v1/images/never-added", headers=auth("acme")), 404, "image_missing")
    _is(httpx.delete(f"{base}/v1/images/never-added", headers=auth("acme")), 404,
        "image_missing")
    _is(httpx.get(f"{base}/v2/nothing"), 404, "not_found")
    _is(httpx.put(f"{base}/v1/lookup"), 405, "method_not_allowed")


def test_objects_that_cannot_be_read(replica_a, s3_endpoint, serve_names, photos):
    base, _ = replica_a
    bucket = serve_names["uploads_bucket"]
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    store.put(bucket, "present.jpg", b"not an image at all")
    store.put(bucket, "huge.bin", b"\0" * (1024 * 1024 + 10))  # over DUPSTREAM_S3__MAX_BLOB
    cases = [
        ({"bucket": bucket, "key": "nowhere.jpg"}, 404, "blob_missing"),
        ({"bucket": f"{bucket}-none", "key": "a.jpg"}, 404, "blob_missing"),
        ({"bucket": bucket, "key": "../../../etc/passwd"}, 400, "blob_invalid_key"),
        ({"bucket": bucket, "key": "\u00e9" * 513}, 400, "blob_invalid_key"),
        ({"bucket": "BadBucket!", "key": "a.jpg"}, 400, "blob_invalid_bucket"),
        ({"bucket": bucket, "key": "huge.bin"}, 413, "blob_too_large"),
        ({"bucket": bucket, "key": "present.jpg"}, 422, "image_not_image"),
    ]
    for body, status, reason in cases:
        _is(httpx.post(f"{base}/v1/lookup", json=body, headers=auth("acme"), timeout=60),
            status, reason)


def test_a_full_queue_answers_503_with_retry_after(replica_a, copies):
    base, _ = replica_a
    data = copies["rocket-crop"]

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*[
                client.post(f"{base}/v1/lookup", headers=auth("acme"),
                            files={"image": ("a.jpg", data, "image/jpeg")}) for _ in range(n)])

    responses = asyncio.run(burst(40))  # queue of 4 (DUPSTREAM_SERVE__QUEUE_MAX)
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    full = [r for r in responses if r.status_code == 503]
    assert full and codes.count(200) >= 4, codes
    for r in full:
        assert r.json()["reason"] == "overloaded" and r.headers["retry-after"] == "1"
    metrics = httpx.get(f"{base}/metrics").text
    assert 'dupstream_serve_errors_total{reason="overloaded"}' in metrics
    assert "dupstream_serve_batch_size_requests_bucket" in metrics
