"""The input event schema and its wire decoding (JSON or msgpack, detected per message)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dupstream.core.errors import EventError


class ImageUploaded(BaseModel):
    """One upload: where the image lies in object storage, and whose it is."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    image_id: str = Field(..., min_length=1, max_length=1024,
                          description="the upload's id: the verdict's key and image_id")
    bucket: str = Field(..., min_length=3, max_length=63,
                        description="object-storage bucket holding the image")
    key: str = Field(..., min_length=1, max_length=1024,
                     description="object key of the image in the bucket")
    tenant: str | None = Field(None, max_length=256, description="whose upload it is: matches "
                               "are scoped to the tenant (and its reference banks)")
    ts: datetime | None = Field(None, description="upload time (informational)")


def decode_event(payload: bytes | None) -> ImageUploaded:
    """Decode a JSON or msgpack payload into an ``ImageUploaded``, or raise ``EventError``."""
    if not payload:
        raise EventError("empty event payload", reason="bad_event_empty")
    data: Any
    head = payload.lstrip()[:1]
    try:
        if head in (b"{", b"["):
            data = json.loads(payload)
        else:
            data = msgpack.unpackb(payload, raw=False, timestamp=3)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise EventError(f"payload is neither JSON nor msgpack: {exc}",
                         reason="bad_event_encoding") from exc
    except Exception as exc:  # msgpack raises assorted types on garbage
        raise EventError(f"undecodable payload: {exc}", reason="bad_event_encoding") from exc
    if not isinstance(data, dict):
        raise EventError(f"event must be an object, got {type(data).__name__}",
                         reason="bad_event_schema")
    try:
        return ImageUploaded.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "event" for e in exc.errors())
        raise EventError(f"schema violation ({fields}): {exc.errors()[0]['msg']}",
                         reason="bad_event_schema") from exc


def encode_event(event: ImageUploaded, *, fmt: str = "json") -> bytes:
    if fmt == "json":
        return event.model_dump_json(exclude_none=True).encode()
    if fmt == "msgpack":
        return msgpack.packb(event.model_dump(mode="json", exclude_none=True))
    raise ValueError(f"unknown event format {fmt!r}")
