"""Object storage as ``state`` needs it: a four-method ``BlobStore`` Protocol and three stores.

- ``MemoryBlobStore``: a dict, for unit tests.
- ``FileBlobStore``: a directory; ``put_bytes`` is atomic (write to a temp file, then rename).
- ``MinioBlobStore``: an S3 bucket through the ``minio`` client (MinIO, AWS S3, moto).

Names are ``/``-separated keys. ``get_bytes`` raises ``BlobNotFound`` for a missing name; the S3
store raises the ``BlobError`` subclasses of the shared mapping (``BlobUnavailable`` only when
the server cannot be reached, timed out, failed or throttled).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dupstream.core.errors import BlobNotFound, StateError
from dupstream.state.objectstore import S3ObjectStore


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


class MinioBlobStore:
    """Blobs in one S3 bucket through the shared adapter (``dupstream.state.objectstore``: one
    error mapping for blob fetch and state I/O). The bucket is created on the first write when
    missing; no I/O in ``__init__``. ``store`` is an ``S3ObjectStore`` (a bare ``minio.Minio``
    is wrapped in one)."""

    def __init__(self, store: S3ObjectStore | Any, bucket: str, *, create: bool = True) -> None:
        self.store = store if isinstance(store, S3ObjectStore) else S3ObjectStore.wrap(store)
        self.bucket = bucket
        self._ensured = not create

    @property
    def client(self) -> Any:
        return self.store.client

    def __repr__(self) -> str:
        return f"MinioBlobStore({self.store!r}, bucket={self.bucket!r})"

    def put_bytes(self, name: str, data: bytes) -> None:
        name = _check_name(name)
        if not self._ensured:
            self.store.ensure_bucket(self.bucket)
            self._ensured = True
        self.store.put(self.bucket, name, data, create_bucket=False)

    def get_bytes(self, name: str) -> bytes:
        return self.store.get_all(self.bucket, name)

    def list(self, prefix: str) -> list[str]:
        try:
            return self.store.list(self.bucket, prefix)
        except BlobNotFound:  # no bucket yet: nothing stored
            return []

    def delete(self, name: str) -> None:
        self.store.delete(self.bucket, name)
