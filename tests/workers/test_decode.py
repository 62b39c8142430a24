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


def _jpeg(rgb: np.ndarray, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92, **({"exif": exif} if exif else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def big(photos):
    import cv2

    return cv2.resize(photos["astronaut"], (2048, 1536), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize(("side", "expected"), [(416, (512, 384)), (256, (256, 192)),
                                                (1024, (1024, 768)), (100, (256, 192)),
                                                (1025, (2048, 1536))])
def test_draft_decode_gives_the_size_asked(big, side, expected):
    from dupstream.workers.decode import decode

    d = decode(_jpeg(big), draft_side=side)
    h, w = d.rgb.shape[:2]
    assert (w, h) == expected  # the largest 1/2^k reduction with longest side >= side
    assert max(w, h) >= min(side, 2048)
    assert (d.width, d.height) == (2048, 1536)  # the picture's own size
    assert d.scale == w / 2048 and d.full_resolution == (w == 2048)


def test_draft_pixels_match_a_full_decode_resized(big):
    import cv2

    from dupstream.workers.decode import decode

    data = _jpeg(big)
    draft = decode(data, draft_side=416).rgb
    full = cv2.resize(decode_image(data), draft.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(draft.astype(int) - full.astype(int)).mean() < 3.0


def test_draft_leaves_other_formats_and_small_jpegs_whole(photos, big):
    from dupstream.workers.decode import decode

    png = decode(encode(big, "PNG"), draft_side=416)
    assert png.full_resolution and png.rgb.shape == big.shape
    small = photos["coffee"]  # 600 x 400: less than twice 416
    d = decode(_jpeg(small), draft_side=416)
    assert d.full_resolution and d.rgb.shape == small.shape


def test_draft_with_exif_rotation_reports_the_upright_size(big):
    from dupstream.workers.decode import decode

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    d = decode(_jpeg(big, exif), draft_side=416)
    assert d.rgb.shape[:2] == (512, 384)  # upright: portrait
    assert (d.width, d.height) == (1536, 2048)


def test_limits_apply_to_the_declared_size_in_draft_mode(big):
    from dupstream.workers.decode import decode

    with pytest.raises(DecompressionBomb):
        decode(_jpeg(big), draft_side=256, max_pixels=2048 * 1536 - 1)
    with pytest.raises(ImageTooLarge):
        decode(_jpeg(big), draft_side=256, max_side=2000)
