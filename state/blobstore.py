"""Object storage as ``state`` needs it: a four-method ``BlobStore`` Protocol and three stores.

- ``MemoryBlobStore``: a dict, for unit tests.
- ``FileBlobStore``: a directory; ``put_bytes`` is atomic (write to a temp file, then rename).
- ``MinioBlobStore``: an S3 bucket through the ``minio`` client (MinIO, AWS S3, moto).

Names are ``/``-separated keys. ``get_bytes`` raises ``BlobNotFound`` for a missing name and
``BlobUnavailable`` when the server cannot be reached.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dupstream.core.errors import BlobNotFound, BlobUnavailable, StateError


@runtime_checkable
class BlobStore(Protocol):
    def put_bytes(self, name: str, data: bytes) -> None: ...

    def get_bytes(self, name: str) -> bytes: ...

    def list(self, prefix: str) -> list[str]:
        """Names starting with ``prefix``, sorted."""
        ...

    def delete(self, name: str) -> None:
        """Remove ``name``; a missing name is not an error."""
        ...


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StateError(f"bad blob name {name!r}")
    return name


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_bytes(self, name: str, data: bytes) -> None:
        with self._lock:
            self._blobs[_check_name(name)] = bytes(data)

    def get_bytes(self, name: str) -> bytes:
        with self._lock:
            try:
                return self._blobs[name]
            except KeyError:
                raise BlobNotFound(f"no blob {name!r}") from None

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(n for n in self._blobs if n.startswith(prefix))

    def delete(self, name: str) -> None:
        with self._lock:
            self._blobs.pop(name, None)


class FileBlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / _check_name(name)

    def put_bytes(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {name!r}") from None

    def list(self, prefix: str) -> list[str]:
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                name = p.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


try:  # urllib3 (minio's transport) raises timeouts that are not OSErrors
    from urllib3.exceptions import HTTPError
except ImportError:  # pragma: no cover
    HTTPError = OSError  # noqa: N816


class MinioBlobStore:
    """Blobs in one S3 bucket (created on the first write if missing; no I/O in ``__init__``).
    ``client`` is a ``minio.Minio``."""

    def __init__(self, client: Any, bucket: str, *, create: bool = True) -> None:
        self.client = client
        self.bucket = bucket
        self._ensured = not create

    def _ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)
        self._ensured = True

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from minio.error import S3Error

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                raise BlobNotFound(f"{self.bucket}: {exc.code}") from exc
            raise BlobUnavailable(f"S3 error {exc.code}: {exc.message}") from exc
        except (OSError, ValueError, HTTPError) as exc:  # connection errors, timeouts
            raise BlobUnavailable(f"S3 unreachable: {exc}") from exc

    def put_bytes(self, name: str, data: bytes) -> None:
        if not self._ensured:
            self._call(self._ensure_bucket)
        self._call(
            self.client.put_object, self.bucket, _check_name(name), io.BytesIO(data), len(data)
        )

    def get_bytes(self, name: str) -> bytes:
        def get() -> bytes:
            resp = self.client.get_object(self.bucket, name)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(get)

    def list(self, prefix: str) -> list[str]:
        try:
            objs = self._call(
                lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))
            )
        except BlobNotFound:  # no bucket yet: nothing stored
            return []
        return sorted(o.object_name for o in objs)

    def delete(self, name: str) -> None:
        self._call(self.client.remove_object, self.bucket, name)
