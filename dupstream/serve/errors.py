"""The server's errors and the HTTP status of every reason code.

Every error a request can meet is a ``DupstreamError`` with a stable ``reason``; the response is
``{"reason": ..., "detail": ...}`` with the status below. Bad input is always a 4xx; 503 means
"try again" (overloaded, a timeout, storage or the broker unavailable) and carries Retry-After.
"""

from __future__ import annotations

from dupstream.core.errors import BlobError, DupstreamError, ImageError, ModelError


class RequestError(DupstreamError):
    """A request the server refuses (bad input, authentication, authorisation)."""

    reason = "bad_request"


class Overloaded(DupstreamError):
    """The request queue is full: try again after Retry-After."""

    reason = "overloaded"
    transient = True


class RequestTimeout(DupstreamError):
    """The request did not finish within the per-request timeout."""

    reason = "timeout"
    transient = True


class NotReady(DupstreamError):
    """The replica has not caught up with the index-updates feed yet."""

    reason = "not_ready"
    transient = True


#: reason -> HTTP status; reasons not listed: 422 for the image's errors (``ImageError``,
#: ``ModelError`` on one image: image_empty, image_not_image, image_truncated, ...), 400 for
#: other request and object errors, 503 for transient errors, else 500
STATUS: dict[str, int] = {
    # request errors
    "bad_request": 422,
    "bad_json": 400,
    "bad_multipart": 400,
    "missing_image": 400,
    "bad_image_id": 422,
    "unsupported_media_type": 415,
    "body_too_large": 413,
    "auth_missing": 401,
    "auth_invalid": 401,
    "tenant_forbidden": 403,
    "bank_forbidden": 403,
    "bucket_forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "image_missing": 404,
    "image_deleted": 409,
    # the image (DupstreamError reasons of decoding and the models)
    "image_corrupt": 422,
    "image_bomb": 413,
    "image_too_large": 413,
    "model_error": 422,
    # the object named by a JSON {bucket, key} lookup
    "blob_missing": 404,
    "blob_invalid_key": 400,
    "blob_invalid_bucket": 400,
    "blob_access_denied": 403,
    "blob_too_large": 413,
    "blob_rejected": 400,
    "blob_error": 400,
    "blob_unavailable": 503,
    # try again
    "overloaded": 503,
    "timeout": 503,
    "not_ready": 503,
    "delivery": 503,
    "record_backlog": 503,
}


def status_for(exc: DupstreamError) -> int:
    status = STATUS.get(exc.reason)
    if status is not None:
        return status
    if exc.transient:
        return 503
    if isinstance(exc, ImageError | ModelError):
        return 422
    if isinstance(exc, RequestError | BlobError):
        return 400
    return 503 if exc.transient else 500
