"""Safe image decoding: bytes in, RGB uint8 array out, or a specific ``ImageError``.

Guards: zero-byte and non-image input, truncated files, decompression bombs (the pixel count is
checked from the header before any pixel is decoded), and a limit on each side.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dupstream.core.errors import DecompressionBomb, ImageError, ImageTooLarge

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_SIDE = 20_000


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> np.ndarray:
    """Decode ``data`` into an ``HxWx3`` RGB ``uint8`` array (EXIF orientation applied)."""
    if not data:
        raise ImageError("zero-byte image", reason="image_empty")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError("not an image: no known image format signature",
                         reason="image_not_image") from exc
    except Image.DecompressionBombError as exc:
        raise DecompressionBomb(str(exc)) from exc
    except Exception as exc:  # PIL raises many types on garbage headers
        raise ImageError(f"unreadable image header: {exc}", reason=_reason(exc)) from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecompressionBomb(
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )
    if max(width, height) > max_side:
        raise ImageTooLarge(f"{width}x{height} exceeds the side limit of {max_side}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL warns (not raises) on some bombs / bad data
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(str(exc)) from exc
    except OSError as exc:
        raise ImageError(f"cannot decode image: {exc}", reason=_reason(exc)) from exc
    except Exception as exc:
        raise ImageError(f"cannot decode image: {exc}") from exc
    return rgb


def _reason(exc: Exception) -> str:
    return "image_truncated" if "truncated" in str(exc).lower() else "image_corrupt"


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)
