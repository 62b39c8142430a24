"""Blob fetch and the state store against the real S3 server (moto, started by tests/conftest.py):
invalid keys fail at once as permanent, missing objects are ``blob_missing``, and both paths share
one adapter."""

from __future__ import annotations

import time

import pytest

from dupstream.core.errors import (
    BlobInvalidBucket,
    BlobInvalidKey,
    BlobNotFound,
    BlobTooLarge,
)
from dupstream.state.blobstore import MinioBlobStore
from dupstream.stream.blobs import MinioStore, ObjectStore

pytestmark = pytest.mark.integration

INVALID_KEYS = ["../../../etc/passwd", "a/../../b", "./k", "k/.", ""]


@pytest.fixture()
def store(s3_endpoint) -> MinioStore:
    # a generous retry budget: a key mistaken for transient would take seconds to fail
    return MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y", retries=5,
                      backoff_s=1.0)


@pytest.fixture()
def bucket(store, unique_name) -> str:
    name = f"{unique_name}-blobs"
    store.put(name, "ok/image.jpg", b"\xff\xd8 bytes")
    return name


def test_the_store_round_trips_and_caps(store, bucket):
    assert isinstance(store, ObjectStore)
    assert store.get(bucket, "ok/image.jpg", max_bytes=100) == b"\xff\xd8 bytes"
    with pytest.raises(BlobTooLarge) as info:
        store.get(bucket, "ok/image.jpg", max_bytes=4)
    assert not info.value.transient


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_an_invalid_key_fails_at_once_as_permanent(store, bucket, key):
    t0 = time.monotonic()
    with pytest.raises(BlobInvalidKey) as info:
        store.get(bucket, key, max_bytes=1000)
    elapsed = time.monotonic() - t0
    err = info.value
    assert err.reason == "blob_invalid_key" and not err.transient and err.attempts == 1
    assert elapsed < 0.5, elapsed  # no retry, no backoff


def test_missing_objects_and_buckets_are_permanent(store, bucket, unique_name):
    for b, k in ((bucket, "no/such/key.jpg"), (f"{unique_name}-nobucket", "k.jpg")):
        t0 = time.monotonic()
        with pytest.raises(BlobNotFound) as info:
            store.get(b, k, max_bytes=1000)
        assert info.value.reason == "blob_missing" and info.value.attempts == 1
        assert time.monotonic() - t0 < 0.5
    with pytest.raises(BlobInvalidBucket):
        store.get("Invalid_Bucket!", "k.jpg", max_bytes=1000)


def test_the_state_store_shares_the_adapter(store, unique_name):
    blobs = MinioBlobStore(store, f"{unique_name}-state")
    assert blobs.client is store.client
    assert blobs.list("snap/") == []  # no bucket yet: nothing stored
    blobs.put_bytes("snap/a/LATEST", b"id-1")
    assert blobs.get_bytes("snap/a/LATEST") == b"id-1"
    assert blobs.list("snap/") == ["snap/a/LATEST"]
    with pytest.raises(BlobNotFound):
        blobs.get_bytes("snap/b/LATEST")
    with pytest.raises(BlobInvalidKey):
        blobs.get_bytes("snap/../../etc/passwd")
    blobs.delete("snap/a/LATEST")
    assert blobs.list("snap/") == []
