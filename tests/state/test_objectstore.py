"""The one S3 error mapping (``classify``) and name check, exhaustively; the adapter against a
closed port (a real refused connection, no server)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3 import HTTPResponse
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from dupstream.core.errors import (
    BlobAccessDenied,
    BlobError,
    BlobInvalidBucket,
    BlobInvalidKey,
    BlobNotFound,
    BlobRejected,
    BlobTooLarge,
    BlobUnavailable,
    DupstreamError,
)
from dupstream.state import objectstore
from dupstream.state.objectstore import S3ObjectStore, check_names, classify
from dupstream.stream.blobs import MinioStore

PERMANENT_REASONS = {
    BlobNotFound: "blob_missing",
    BlobInvalidKey: "blob_invalid_key",
    BlobInvalidBucket: "blob_invalid_bucket",
    BlobAccessDenied: "blob_access_denied",
    BlobTooLarge: "blob_too_large",
    BlobRejected: "blob_rejected",
}


def s3_error(code: str | None, status: int) -> S3Error:
    return S3Error(HTTPResponse(body=b"", status=status), code, "message", "/b/k", "req", "host",
                   bucket_name="b", object_name="k")


def _expect(err: BlobError, cls: type[BlobError]) -> None:
    assert type(err) is cls, (type(err), cls, err)
    if cls is BlobUnavailable:
        assert err.transient and err.reason == "blob_unavailable"
    else:
        assert not err.transient and err.reason == PERMANENT_REASONS[cls]


# -- S3 error codes: every listed code, each at the status S3 sends it with -----------------------
CODE_TABLE = [
    (objectstore.NOT_FOUND, 404, BlobNotFound),
    (objectstore.INVALID_KEY, 400, BlobInvalidKey),
    (objectstore.INVALID_BUCKET, 400, BlobInvalidBucket),
    (objectstore.DENIED, 403, BlobAccessDenied),
    (objectstore.TOO_LARGE, 400, BlobTooLarge),
    (objectstore.TRANSIENT, 503, BlobUnavailable),
]


@pytest.mark.parametrize(("codes", "status", "cls"), CODE_TABLE,
                         ids=[c.__name__ for _, _, c in CODE_TABLE])
def test_every_listed_s3_code_maps_to_its_class(codes, status, cls):
    assert codes, "an empty code set"
    for code in sorted(codes):
        _expect(classify(s3_error(code, status), what="s3://b/k"), cls)


def test_code_sets_are_disjoint_and_name_the_issue_cases():
    sets = [codes for codes, _, _ in CODE_TABLE]
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            assert not a & b, a & b
    assert {"NoSuchKey", "NoSuchBucket"} <= objectstore.NOT_FOUND
    assert "AccessDenied" in objectstore.DENIED  # was transient in the state store
    assert "InvalidObjectName" in objectstore.INVALID_KEY
    assert {"SlowDown", "ServiceUnavailable", "InternalError"} <= objectstore.TRANSIENT


def test_the_code_wins_over_the_status():
    # SlowDown is sent with 503, but a throttling code is transient whatever the status
    _expect(classify(s3_error("SlowDown", 400), what="x"), BlobUnavailable)
    _expect(classify(s3_error("AccessDenied", 500), what="x"), BlobAccessDenied)
    _expect(classify(s3_error("NoSuchKey", 503), what="x"), BlobNotFound)


# -- unknown codes (and no code) fall back to the HTTP status: 5xx/408/429 transient, 4xx not -----
STATUS_TABLE = (
    [(s, BlobUnavailable) for s in (500, 501, 502, 503, 504, 507, 599, 408, 429)]
    + [(404, BlobNotFound), (403, BlobAccessDenied)]
    + [(s, BlobRejected) for s in (400, 401, 405, 409, 411, 412, 413, 416, 418, 451, 499, 301)]
)


@pytest.mark.parametrize(("status", "cls"), STATUS_TABLE)
@pytest.mark.parametrize("code", ["SomeNewCode", None])
def test_unknown_codes_fall_back_to_the_status(code, status, cls):
    _expect(classify(s3_error(code, status), what="x"), cls)


@pytest.mark.parametrize(("status", "cls"), STATUS_TABLE)
def test_answers_without_an_s3_document_map_by_status(status, cls):
    _expect(classify(ServerError(f"HTTP {status}", status), what="x"), cls)
    _expect(classify(InvalidResponseError(status, "text/html", "<html>bad gateway</html>"),
                     what="x"), cls)


# -- the transport: only these are transient ------------------------------------------------------
TRANSPORT = [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    TimeoutError("timed out"),
    socket.gaierror(-2, "Name or service not known"),
    ssl.SSLError("handshake"),
    NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused"),
    MaxRetryError(None, "/b/k", reason=ConnectionRefusedError(111, "refused")),
    ReadTimeoutError(None, "/b/k", "Read timed out"),
    ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
    SSLError("certificate verify failed"),
]


@pytest.mark.parametrize("exc", TRANSPORT, ids=lambda e: type(e).__name__)
def test_connection_errors_and_timeouts_are_transient(exc):
    _expect(classify(exc, what="x"), BlobUnavailable)


# -- client-side validation and anything else: permanent ------------------------------------------
def test_client_side_validation_errors_are_invalid_keys():
    from minio.helpers import check_object_name

    with pytest.raises(ValueError) as info:  # minio's own refusal, as the issue saw it
        check_object_name("../../../etc/passwd")
    assert "'..' path segment" in str(info.value)
    _expect(classify(info.value, what="x"), BlobInvalidKey)
    _expect(classify(TypeError(), what="x"), BlobInvalidKey)
    _expect(classify(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"), what="x"),
            BlobInvalidKey)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("k"), AttributeError("a"),
                                 DupstreamError("odd")], ids=lambda e: type(e).__name__)
def test_anything_else_is_permanent_never_a_retry_storm(exc):
    err = classify(exc, what="x")
    assert isinstance(err, BlobRejected) and not err.transient


def test_blob_errors_pass_through_unchanged():
    for err in (BlobTooLarge("big"), BlobNotFound("gone"), BlobUnavailable("down")):
        assert classify(err, what="x") is err


# -- names ---------------------------------------------------------------------------------------
BAD_KEYS = ["../../../etc/passwd", "a/../b", "a/./b", ".", "..", "a/..", "./a", "", "   ",
            "k" * 1025, "é" * 513, "bad\ud800surrogate"]
GOOD_KEYS = ["a", "a/b.c", "..a", "a..b/c", ".hidden/x", "k" * 1024, "é" * 512, "a b/c%2F..",
             "/leading", "trailing/"]
BAD_BUCKETS = ["ab", "a" * 64, "192.168.1.1", "a..b", "a.-b", "-abc", "abc-", "ABC!", "a b c"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_invalid_keys_are_refused_before_any_request(key):
    with pytest.raises(BlobInvalidKey) as info:
        check_names("bucket", key)
    assert type(info.value) is BlobInvalidKey and not info.value.transient


@pytest.mark.parametrize("key", GOOD_KEYS, ids=range(len(GOOD_KEYS)))
def test_valid_keys_pass(key):
    check_names("bucket", key)


@pytest.mark.parametrize("bucket", BAD_BUCKETS)
def test_invalid_buckets_are_refused(bucket):
    with pytest.raises(BlobInvalidBucket) as info:
        check_names(bucket, "k")
    assert info.value.reason == "blob_invalid_bucket"


# -- the adapter against a closed port ------------------------------------------------------------
@pytest.fixture()
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def test_a_refused_connection_is_retried_then_transient(closed_port):
    store = S3ObjectStore(endpoint=f"127.0.0.1:{closed_port}", access_key="a", secret_key="b",
                          retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(BlobUnavailable) as info:
        store.get("bucket", "key", max_bytes=100)
    assert info.value.transient and info.value.attempts == 3
    with pytest.raises(BlobUnavailable):
        store.bucket_exists("bucket", retries=0)


def test_an_invalid_key_fails_at_once_without_touching_the_network(closed_port):
    store = MinioStore(endpoint=f"127.0.0.1:{closed_port}", access_key="a", secret_key="b",
                       retries=5, backoff_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(BlobInvalidKey) as info:
        store.get("bucket", "../../../etc/passwd", max_bytes=100)
    assert time.monotonic() - t0 < 0.5 and info.value.attempts == 1
    with pytest.raises(BlobInvalidBucket):
        store.put("Not A Bucket", "k", b"x")


def test_the_state_store_uses_the_same_adapter_and_mapping(closed_port):
    from minio import Minio

    from dupstream.state.blobstore import MinioBlobStore

    store = S3ObjectStore(endpoint=f"127.0.0.1:{closed_port}", access_key="a", secret_key="b",
                          retries=1, backoff_s=0.01)
    blobs = MinioBlobStore(store, "state-bucket")
    with pytest.raises(BlobUnavailable):
        blobs.get_bytes("snapshots/LATEST")
    with pytest.raises(BlobUnavailable):
        blobs.put_bytes("snapshots/LATEST", b"x")
    with pytest.raises(BlobInvalidKey):
        blobs.get_bytes("../LATEST")
    # a bare minio client is wrapped in the same adapter
    wrapped = MinioBlobStore(Minio(f"127.0.0.1:{closed_port}", access_key="a", secret_key="b",
                                   secure=False), "state-bucket")
    assert wrapped.store.endpoint == f"127.0.0.1:{closed_port}"
    with pytest.raises(BlobInvalidKey):
        wrapped.get_bytes("a/../../LATEST")
