"""One root exception type, with specific subclasses.

Every error that can be attributed to one input carries a stable ``reason`` code: it is what the
dead-letter record says, and what the metrics count by.
"""

from __future__ import annotations


class DupstreamError(Exception):
    """Root of every error raised by dupstream."""

    reason: str = "error"
    #: True when retrying the same input later may succeed (network, a server down).
    transient: bool = False

    def __init__(
        self, message: str = "", *, reason: str | None = None, attempts: int = 1
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.reason)
        if reason is not None:
            self.reason = reason
        #: how many times the operation was tried before this error was final
        self.attempts = attempts


class ConfigError(DupstreamError):
    """Invalid or missing configuration."""

    reason = "config"


class EventError(DupstreamError):
    """The event payload could not be decoded or does not match the schema."""

    reason = "bad_event"


class BlobError(DupstreamError):
    """The image blob could not be fetched from object storage."""

    reason = "blob_error"


class BlobNotFound(BlobError):
    """The bucket or key named by the event does not exist."""

    reason = "blob_missing"


class BlobInvalidKey(BlobError):
    """The object key cannot name an S3 object (empty, a '.' or '..' path segment, over 1,024
    UTF-8 bytes, not encodable; or the server answered InvalidObjectName / KeyTooLongError)."""

    reason = "blob_invalid_key"


class BlobInvalidBucket(BlobInvalidKey):
    """The bucket name is not a valid S3 bucket name."""

    reason = "blob_invalid_bucket"


class BlobAccessDenied(BlobError):
    """Object storage refused access (AccessDenied, bad credentials or signature, clock skew)."""

    reason = "blob_access_denied"


class BlobRejected(BlobError):
    """Object storage rejected the request with a client error (4xx) no other class names;
    retrying the same request will not help."""

    reason = "blob_rejected"


class BlobTooLarge(BlobError):
    """The blob is larger than the configured size cap."""

    reason = "blob_too_large"


class BlobUnavailable(BlobError):
    """Object storage could not be reached, timed out, answered with a server error (5xx) or
    asked the client to slow down (transient)."""

    reason = "blob_unavailable"
    transient = True


class ImageError(DupstreamError):
    """The bytes are not a decodable image within the configured limits."""

    reason = "image_corrupt"


class DecompressionBomb(ImageError):
    """The image header announces more pixels than allowed."""

    reason = "image_bomb"


class ImageTooLarge(ImageError):
    """A side of the image exceeds the configured limit."""

    reason = "image_too_large"


class ModelError(DupstreamError):
    """A model failed on an input, or its weights are missing or do not match their descriptor."""

    reason = "model_error"


class WeightsError(ModelError):
    """Model weights are missing or their checksum does not match the descriptor."""

    reason = "weights"


class StateError(DupstreamError):
    """Index, snapshot or id-map inconsistency."""

    reason = "state"


class ModelMismatch(StateError):
    """Persisted state (a snapshot, an index update) was written by another model than the one
    running: its vectors are not comparable with this service's."""

    reason = "model_mismatch"


class RecordBacklog(StateError):
    """The record store's write-behind queue stayed full (the store is down or slower than the
    stream): the image was not added; retry it later (transient)."""

    reason = "record_backlog"
    transient = True


class RecordFlushTimeout(StateError):
    """Records added before a flush were not all written to the record store within its timeout
    (transient: they stay queued and are retried)."""

    reason = "record_flush_timeout"
    transient = True


class DeliveryError(DupstreamError):
    """A verdict or dead-letter record could not be delivered to Kafka (transient)."""

    reason = "delivery"
    transient = True


class ServerUnavailable(DupstreamError):
    """A server the service needs (S3, the Kafka broker) did not answer within the start-up
    budget."""

    reason = "unavailable"
    transient = True

