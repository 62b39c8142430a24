"""Object storage behind a small interface; the real implementation speaks S3 through minio."""

from __future__ import annotations

import random
import time
from typing import Protocol, runtime_checkable

import urllib3
from minio import Minio
from minio.error import S3Error

from dupstream.core.errors import BlobError, BlobNotFound, BlobTooLarge, BlobUnavailable

_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound", "InvalidBucketName"}


@runtime_checkable
class ObjectStore(Protocol):
    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes: ...

    def put(self, bucket: str, key: str, data: bytes) -> None: ...


class MinioStore:
    """S3 via the minio client. Errors map to ``BlobNotFound`` / ``BlobTooLarge`` (permanent)
    and ``BlobUnavailable`` (transient, retried with jittered exponential backoff)."""

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

    def __repr__(self) -> str:  # never print credentials
        return f"MinioStore(endpoint={self.endpoint!r})"

    @property
    def client(self) -> Minio:
        return self._client

    def _retry(self, fn, what: str):
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except BlobError:
                raise
            except S3Error as exc:
                if exc.code in _MISSING:
                    raise BlobNotFound(f"{what}: {exc.code}") from exc
                if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    raise BlobError(f"{what}: {exc.code}", reason="blob_denied") from exc
                err: Exception = exc
            except Exception as exc:  # connection refused/reset, timeouts, 5xx
                err = exc
            if attempt > self.retries:
                raise BlobUnavailable(
                    f"{what}: {type(err).__name__}: {err}", attempts=attempt
                ) from err
            time.sleep(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
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

        return self._retry(fetch, what)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        import io

        def upload() -> None:
            if not self._client.bucket_exists(bucket):
                self._client.make_bucket(bucket)
            self._client.put_object(bucket, key, io.BytesIO(data), len(data))

        self._retry(upload, f"s3://{bucket}/{key}")
