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


class BlobTooLarge(BlobError):
    """The blob is larger than the configured size cap."""

    reason = "blob_too_large"


class BlobUnavailable(BlobError):
    """Object storage could not be reached or answered with a server error (transient)."""

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


class DeliveryError(DupstreamError):
    """A verdict or dead-letter record could not be delivered to Kafka (transient)."""

    reason = "delivery"
    transient = True
