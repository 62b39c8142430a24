"""A catalogue of bad input, each with the dead-letter reason it must produce.

``event`` cases are raw event payloads; ``blob`` cases are valid events whose blob is bad;
``missing`` cases name a blob or bucket that does not exist; ``invalid_key`` / ``invalid_bucket``
cases are valid events naming an object key / bucket no S3 request can carry (``payload`` is the
name): a dead letter at once, never a transient retry.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass

import msgpack
import numpy as np
from PIL import Image

MAX_BLOB_BYTES = 2_000_000  # the cap the fault tests configure
MAX_SIDE = 20_000


@dataclass(frozen=True)
class Bad:
    name: str
    kind: str  # "event" | "blob" | "missing_key" | "missing_bucket" | "invalid_key" | ...
    payload: bytes | None
    reason: str


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def png_header(width: int, height: int, *, idat: bytes | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr)
    if idat is not None:
        body += _png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + body


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def catalogue(photo: np.ndarray) -> list[Bad]:
    jpeg = _encode(photo, "JPEG", quality=90)
    png = _encode(photo[:128, :128], "PNG")
    gif = _encode(photo[:64, :64], "GIF")
    tiff = _encode(photo[:64, :64], "TIFF")
    webp = _encode(photo[:64, :64], "WEBP")
    bmp = _encode(photo[:64, :64], "BMP")
    rng = np.random.default_rng(5)
    ok = {"image_id": "x", "bucket": "bkt", "key": "k"}
    cases = [
        # -- the event itself ------------------------------------------------------------------
        Bad("empty-payload", "event", b"", "bad_event_empty"),
        Bad("broken-json", "event", b'{"image_id": "x", "bucket": ', "bad_event_encoding"),
        Bad("binary-garbage", "event", b"\xc1\xc1\xc1\xc1", "bad_event_encoding"),
        Bad("json-array", "event", b"[1, 2, 3]", "bad_event_schema"),
        Bad("msgpack-int", "event", msgpack.packb(7), "bad_event_schema"),
        Bad("msgpack-list", "event", msgpack.packb(["a", "b"]), "bad_event_schema"),
        Bad("missing-image-id", "event", json.dumps({"bucket": "bkt", "key": "k"}).encode(),
            "bad_event_schema"),
        Bad("missing-bucket", "event", json.dumps({"image_id": "x", "key": "k"}).encode(),
            "bad_event_schema"),
        Bad("missing-key", "event", msgpack.packb({"image_id": "x", "bucket": "bkt"}),
            "bad_event_schema"),
        Bad("empty-image-id", "event", json.dumps({**ok, "image_id": ""}).encode(),
            "bad_event_schema"),
        Bad("numeric-image-id", "event", json.dumps({**ok, "image_id": 12}).encode(),
            "bad_event_schema"),
        Bad("bucket-too-short", "event", json.dumps({**ok, "bucket": "b"}).encode(),
            "bad_event_schema"),
        Bad("bad-timestamp", "event", json.dumps({**ok, "ts": "yesterday-ish"}).encode(),
            "bad_event_schema"),
        Bad("huge-key", "event", json.dumps({**ok, "key": "k" * 5000}).encode(),
            "bad_event_schema"),
        Bad("null-tenant-object", "event", json.dumps({**ok, "tenant": {"a": 1}}).encode(),
            "bad_event_schema"),
        # -- object storage --------------------------------------------------------------------
        Bad("missing-blob", "missing_key", None, "blob_missing"),
        Bad("missing-bucket-blob", "missing_bucket", None, "blob_missing"),
        Bad("blob-over-cap", "blob", rng.integers(0, 256, MAX_BLOB_BYTES + 10, np.uint8)
            .tobytes(), "blob_too_large"),
        # -- names no S3 request can carry (refused client-side, never retried) ----------------
        Bad("path-traversal-key", "invalid_key", b"../../../etc/passwd", "blob_invalid_key"),
        Bad("dotdot-segment-key", "invalid_key", b"uploads/../secret.jpg", "blob_invalid_key"),
        Bad("dot-segment-key", "invalid_key", b"./a.jpg", "blob_invalid_key"),
        Bad("trailing-dot-key", "invalid_key", b"uploads/.", "blob_invalid_key"),
        Bad("dotdot-key", "invalid_key", b"..", "blob_invalid_key"),
        Bad("key-over-1024-bytes", "invalid_key", ("\u00e9" * 513).encode(), "blob_invalid_key"),
        Bad("bucket-ip-address", "invalid_bucket", b"192.168.1.1", "blob_invalid_bucket"),
        Bad("bucket-double-dot", "invalid_bucket", b"bkt..name", "blob_invalid_bucket"),
        Bad("bucket-uppercase", "invalid_bucket", b"BadBucket!", "blob_invalid_bucket"),
        # -- the image bytes -------------------------------------------------------------------
        Bad("zero-byte", "blob", b"", "image_empty"),
        Bad("plain-text", "blob", b"hello, I am a text file\n" * 10, "image_not_image"),
        Bad("html", "blob", b"<!doctype html><html><body>404</body></html>", "image_not_image"),
        Bad("pdf", "blob", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
            "image_not_image"),
        Bad("random-bytes", "blob", rng.integers(0, 256, 4096, np.uint8).tobytes(),
            "image_not_image"),
        Bad("zip", "blob", b"PK\x03\x04" + b"\0" * 100, "image_not_image"),
        Bad("jpeg-truncated", "blob", jpeg[: len(jpeg) // 2], "image_truncated"),
        Bad("jpeg-header-only", "blob", jpeg[:200], "image_truncated"),
        Bad("png-truncated", "blob", png[: len(png) // 2], "image_truncated"),
        Bad("png-bad-idat", "blob", png_header(64, 64, idat=b"\x00garbage-not-zlib"),
            "image_corrupt"),
        Bad("png-bomb", "blob", png_header(200_000, 200_000, idat=zlib.compress(b"\0" * 1000)),
            "image_bomb"),
        Bad("png-too-wide", "blob", png_header(MAX_SIDE + 5000, 10,
                                               idat=zlib.compress(b"\0" * 100)),
            "image_too_large"),
        Bad("gif-truncated", "blob", gif[: len(gif) // 2], "image_truncated"),
        Bad("tiff-truncated", "blob", tiff[: len(tiff) // 3], "image_truncated"),
        Bad("webp-truncated", "blob", webp[: len(webp) // 2], "image_corrupt"),
        Bad("bmp-truncated", "blob", bmp[: len(bmp) // 2], "image_truncated"),
        Bad("png-zero-size", "blob", png_header(0, 0, idat=zlib.compress(b"")),
            "image_not_image"),
    ]
    return cases
