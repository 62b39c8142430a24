"""Object storage behind a small interface; the real implementation is the shared S3 adapter
(``dupstream.state.objectstore.S3ObjectStore``), so blob fetch and the state store map S3 errors
the same way: invalid names, 4xx answers and unknown failures are permanent (dead-lettered at
once with a specific reason), only connection errors, timeouts, 5xx and throttling are transient.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dupstream.state.objectstore import S3ObjectStore, check_names, classify

__all__ = ["MinioStore", "ObjectStore", "S3ObjectStore", "check_names", "classify"]


@runtime_checkable
class ObjectStore(Protocol):
    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes: ...

    def put(self, bucket: str, key: str, data: bytes) -> None: ...


#: the S3 object store the service fetches blobs through (the name the service has always used)
MinioStore = S3ObjectStore
