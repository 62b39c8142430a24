"""The one S3 adapter (through the ``minio`` client) and the one S3 error mapping, shared by blob
fetch (``dupstream.stream.blobs``) and the state store (``dupstream.state.blobstore``).

Every failure leaves this module as a ``BlobError`` whose ``transient`` flag says whether
retrying can help. Only the network and the server's own trouble are transient:

============================================================  =========================
what happened                                                  error (reason)
============================================================  =========================
name rejected before any request (empty key, '.'/'..'          ``BlobInvalidKey``
segment, > 1,024 UTF-8 bytes, unencodable; minio's             (``blob_invalid_key``)
``ValueError``/``TypeError``); InvalidObjectName,
KeyTooLongError, InvalidURI
invalid bucket name (client-side or InvalidBucketName)         ``BlobInvalidBucket``
                                                               (``blob_invalid_bucket``)
NoSuchKey, NoSuchBucket, NotFound, ... (404)                   ``BlobNotFound``
                                                               (``blob_missing``)
AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,       ``BlobAccessDenied``
expired/invalid token, RequestTimeTooSkewed, ... (403)         (``blob_access_denied``)
EntityTooLarge; an object over the caller's cap                ``BlobTooLarge``
                                                               (``blob_too_large``)
any other 4xx code, an unknown code, a non-XML 4xx answer,     ``BlobRejected``
any other exception                                            (``blob_rejected``)
connection refused/reset, DNS, TLS, timeouts (``OSError``,     ``BlobUnavailable``
urllib3 errors); 5xx; SlowDown, throttling, 429, 408,          (``blob_unavailable``,
RequestTimeout, OperationAborted                               transient)
============================================================  =========================

Transient failures are retried inside one call (``retries``, jittered exponential backoff);
permanent ones are raised at once.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

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

T = TypeVar("T")

#: S3 error codes, by what they mean for a retry. Codes not listed fall back to the HTTP status.
NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchVersion", "NotFound",
                       "NoSuchUpload", "ResourceNotFound"})
INVALID_KEY = frozenset({"InvalidObjectName", "KeyTooLongError", "InvalidURI"})
INVALID_BUCKET = frozenset({"InvalidBucketName"})
DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                    "InvalidSecurity", "RequestTimeTooSkewed", "NotSignedUp",
                    "AuthorizationHeaderMalformed"})
TOO_LARGE = frozenset({"EntityTooLarge"})
TRANSIENT = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "SlowDownRead",
                       "SlowDownWrite", "Throttling", "ThrottlingException", "TooManyRequests",
                       "RequestLimitExceeded", "RequestThrottled", "RequestTimeout",
                       "RequestTimeoutException", "OperationAborted", "ServerBusy",
                       "XMinioServerNotInitialized", "XMinioStorageFull"})
#: HTTP statuses that are transient whatever the code says
TRANSIENT_STATUS = frozenset({408, 429})
#: S3 keys are at most 1,024 bytes of UTF-8
MAX_KEY_BYTES = 1024


def _is_transient_status(status: int | None) -> bool:
    return status is not None and (status >= 500 or status in TRANSIENT_STATUS)


def _status_error(status: int | None, what: str, detail: str) -> BlobError:
    if _is_transient_status(status):
        return BlobUnavailable(f"{what}: {detail}")
    if status == 404:
        return BlobNotFound(f"{what}: {detail}")
    if status == 403:
        return BlobAccessDenied(f"{what}: {detail}")
    return BlobRejected(f"{what}: {detail}")


def classify(exc: BaseException, *, what: str) -> BlobError:
    """The ``BlobError`` an exception raised by the minio client (or its transport) stands for.
    Total: every exception maps to exactly one error; see the module table."""
    from minio.error import InvalidResponseError, S3Error, ServerError
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, BlobError):
        return exc
    if isinstance(exc, DupstreamError):
        return BlobRejected(f"{what}: {exc}", reason=exc.reason)
    if isinstance(exc, S3Error):
        code = exc.code or ""
        status = getattr(exc.response, "status", None)
        detail = f"{code} (HTTP {status})" if status else code
        if code in TRANSIENT:
            return BlobUnavailable(f"{what}: {detail}")
        if code in NOT_FOUND:
            return BlobNotFound(f"{what}: {detail}")
        if code in INVALID_BUCKET:
            return BlobInvalidBucket(f"{what}: {detail}")
        if code in INVALID_KEY:
            return BlobInvalidKey(f"{what}: {detail}")
        if code in DENIED:
            return BlobAccessDenied(f"{what}: {detail}")
        if code in TOO_LARGE:
            return BlobTooLarge(f"{what}: {detail}")
        return _status_error(status, what, detail or "S3 error without a code")
    if isinstance(exc, ServerError):  # no S3 error document, only a status
        return _status_error(exc.status_code, what, f"HTTP {exc.status_code}")
    if isinstance(exc, InvalidResponseError):  # a non-XML answer (a proxy's error page, ...)
        status = getattr(exc, "_code", None)
        return _status_error(status, what, f"non-S3 answer, HTTP {status}")
    if isinstance(exc, (OSError, Urllib3Error)):  # refused/reset, DNS, TLS, timeouts
        return BlobUnavailable(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, (ValueError, TypeError)):  # the client refused the name before sending
        return BlobInvalidKey(f"{what}: {exc or type(exc).__name__}")
    return BlobRejected(f"{what}: {type(exc).__name__}: {exc}")


def check_names(bucket: object, key: object) -> None:
    """Raise ``BlobInvalidBucket`` / ``BlobInvalidKey`` for names no S3 request can carry."""
    from minio.helpers import check_bucket_name

    what = f"s3://{bucket}/{key}"
    if not isinstance(bucket, str):
        raise BlobInvalidBucket(f"{what}: the bucket name is not a string")
    try:
        check_bucket_name(bucket)
    except ValueError as exc:
        raise BlobInvalidBucket(f"{what}: {exc}") from None
    if not isinstance(key, str) or not key.strip():
        raise BlobInvalidKey(f"{what}: the key is empty")
    if any(part in (".", "..") for part in key.split("/")):
        raise BlobInvalidKey(f"{what}: a '.' or '..' path segment in the key")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise BlobInvalidKey(f"{what}: the key is not encodable as UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise BlobInvalidKey(f"{what}: the key is {size} UTF-8 bytes (at most {MAX_KEY_BYTES})")


class S3ObjectStore:
    """S3 (MinIO, AWS S3, moto) through one pooled ``minio`` client. No I/O in ``__init__``.

    ``get``/``put``/``list``/``delete``/``bucket_exists`` validate names first, map every failure
    through ``classify`` and retry transient ones ``retries`` times (jittered exponential
    backoff from ``backoff_s``)."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str = "us-east-1",
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_pool: int = 16,
    ) -> None:
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            maxsize=max_pool,
            retries=False,
        )
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                             secure=secure, region=region, http_client=http)
        self.endpoint = endpoint
        self.retries = retries
        self.backoff_s = backoff_s

    @classmethod
    def wrap(cls, client: Any, *, retries: int = 3, backoff_s: float = 0.2) -> S3ObjectStore:
        """An adapter around an existing ``minio.Minio``."""
        self = cls.__new__(cls)
        self._client = client
        base_url = getattr(client, "_base_url", None)
        self.endpoint = getattr(getattr(base_url, "_url", None), "netloc", None) or "s3"
        self.retries = retries
        self.backoff_s = backoff_s
        return self

    def __repr__(self) -> str:  # never print credentials
        return f"{type(self).__name__}(endpoint={self.endpoint!r})"

    @property
    def client(self) -> Any:
        """The ``minio.Minio`` client (shared connection pool)."""
        return self._client

    def call(self, fn: Callable[[], T], *, what: str, retries: int | None = None) -> T:
        """``fn()``; failures mapped by ``classify``; transient ones retried."""
        budget = self.retries if retries is None else retries
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classify() is total
                err = classify(exc, what=what)
                if not err.transient or attempt > budget:
                    err.attempts = attempt
                    if err is exc:
                        raise
                    raise err from exc
            time.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; ``BlobTooLarge`` past ``max_bytes`` (checked before download)."""
        check_names(bucket, key)
        what = f"s3://{bucket}/{key}"

        def fetch() -> bytes:
            stat = self._client.stat_object(bucket, key)
            if stat.size is not None and stat.size > max_bytes:
                raise BlobTooLarge(f"{what} is {stat.size} bytes, cap is {max_bytes}")
            resp = self._client.get_object(bucket, key)
            try:
                data = resp.read(max_bytes + 1)
            finally:
                resp.close()
                resp.release_conn()
            if len(data) > max_bytes:
                raise BlobTooLarge(f"{what} exceeds the cap of {max_bytes} bytes")
            return data

        return self.call(fetch, what=what)

    def get_all(self, bucket: str, key: str) -> bytes:
        """The object's bytes, however large (state blobs the service wrote itself)."""
        check_names(bucket, key)

        def fetch() -> bytes:
            resp = self._client.get_object(bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self.call(fetch, what=f"s3://{bucket}/{key}")

    def put(self, bucket: str, key: str, data: bytes, *, create_bucket: bool = True) -> None:
        """Store ``data`` (the bucket is created first when missing and ``create_bucket``)."""
        check_names(bucket, key)
        if create_bucket:
            self.ensure_bucket(bucket)
        self.call(lambda: self._client.put_object(bucket, key, io.BytesIO(data), len(data)),
                  what=f"s3://{bucket}/{key}")

    def ensure_bucket(self, bucket: str) -> None:
        def ensure() -> None:
            if not self._client.bucket_exists(bucket):
                try:
                    self._client.make_bucket(bucket)
                except Exception as exc:  # a concurrent creator wins: fine
                    if getattr(exc, "code", None) not in ("BucketAlreadyOwnedByYou",
                                                          "BucketAlreadyExists"):
                        raise

        self.call(ensure, what=f"s3://{bucket}")

    def bucket_exists(self, bucket: str, *, retries: int | None = None) -> bool:
        """Whether ``bucket`` exists (one HEAD request: also the start-up probe)."""
        return self.call(lambda: self._client.bucket_exists(bucket), what=f"s3://{bucket}",
                         retries=retries)

    def list(self, bucket: str, prefix: str) -> list[str]:
        """Object names under ``prefix``, sorted; ``BlobNotFound`` when the bucket is missing."""
        objs = self.call(
            lambda: list(self._client.list_objects(bucket, prefix=prefix, recursive=True)),
            what=f"s3://{bucket}/{prefix}")
        return sorted(o.object_name for o in objs)

    def delete(self, bucket: str, key: str) -> None:
        check_names(bucket, key)
        self.call(lambda: self._client.remove_object(bucket, key), what=f"s3://{bucket}/{key}")
