import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dupstream.core.errors import DecompressionBomb, ImageError, ImageTooLarge
from dupstream.lab.data.edits import encode
from dupstream.workers.decode import decode_image


def test_decodes_png_and_jpeg_to_rgb(photos):
    rgb = photos["astronaut"]
    out = decode_image(encode(rgb, "PNG"))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out, rgb)
    jpg = decode_image(encode(rgb, "JPEG", 90))
    assert jpg.shape == rgb.shape


def test_grayscale_and_rgba_become_rgb():
    gray = Image.fromarray(np.full((20, 30), 7, np.uint8))
    buf = io.BytesIO()
    gray.save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (20, 30, 3)
    rgba = Image.fromarray(np.zeros((10, 10, 4), np.uint8))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.shape == (10, 10, 3) and out.min() == 255  # transparent -> white


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "image_empty"),
        (b"hello, this is not an image at all", "image_not_image"),
        (b"%PDF-1.4 ...", "image_not_image"),
    ],
)
def test_garbage_is_rejected_with_reason(data, reason):
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.reason == reason


def test_truncated_jpeg_is_rejected(photos):
    data = encode(photos["chelsea"], "JPEG", 90)
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 3])
    assert info.value.reason in {"image_truncated", "image_corrupt"}


def test_decompression_bomb_is_caught_from_the_header():
    with pytest.raises(DecompressionBomb):
        decode_image(_png_header_only(100_000, 100_000), max_pixels=50_000_000)


def test_side_limit():
    img = Image.fromarray(np.zeros((4, 3000, 3), np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(buf.getvalue(), max_side=2000)


def test_every_bad_image_in_the_catalogue_gets_its_reason(photos):
    from tests.badinputs import MAX_SIDE, catalogue

    for case in catalogue(photos["chelsea"]):
        if case.kind != "blob" or case.reason == "blob_too_large":
            continue
        with pytest.raises(ImageError) as info:
            decode_image(case.payload, max_side=MAX_SIDE)
        assert info.value.reason == case.reason, case.name
