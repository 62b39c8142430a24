"""Safe image decoding: bytes in, RGB uint8 array out, or a specific ``ImageError``.

Guards: zero-byte and non-image input, truncated files, decompression bombs (the pixel count is
checked from the header before any pixel is decoded), and a limit on each side. The limits apply
to the size the header declares, whatever resolution is then decoded.

JPEG draft mode (``draft_side``): libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the DCT
coefficients, so a 12-megapixel photo needed at model resolution is never decoded whole. The
largest reduction whose longest side still is at least ``draft_side`` is used; other formats and
smaller JPEGs decode at full resolution. ``decode`` says the picture's own size alongside the
pixels, so sizes and boxes can still be given in the picture's pixels.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dupstream.core.errors import DecompressionBomb, ImageError, ImageTooLarge

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_SIDE = 20_000


@dataclass(frozen=True)
class Decoded:
    """Decoded pixels and the picture's own size (EXIF orientation applied to both)."""

    rgb: np.ndarray  # (h, w, 3) uint8: full resolution, or the JPEG draft reduction
    width: int  # the picture's width as its header declares it
    height: int

    @property
    def scale(self) -> float:
        """Decoded pixels per picture pixel: 1.0 at full resolution, 1/2, 1/4 or 1/8 in draft."""
        return self.rgb.shape[1] / self.width

    @property
    def full_resolution(self) -> bool:
        return self.rgb.shape[1] == self.width and self.rgb.shape[0] == self.height


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    draft_side: int | None = None,
) -> np.ndarray:
    """Decode ``data`` into an ``HxWx3`` RGB ``uint8`` array (EXIF orientation applied).
    ``draft_side``: see ``decode``."""
    return decode(data, max_pixels=max_pixels, max_side=max_side, draft_side=draft_side).rgb


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    draft_side: int | None = None,
) -> Decoded:
    """Decode ``data``; with ``draft_side`` a JPEG at least twice that size (longest side)
    decodes at the largest DCT reduction (1/2, 1/4, 1/8) whose longest side is still at least
    ``draft_side``. None: always full resolution."""
    if draft_side is not None and draft_side < 1:
        raise ValueError(f"draft_side must be positive, got {draft_side}")
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
            if draft_side is not None and img.format == "JPEG":
                s = draft_side / max(width, height)
                if s <= 0.5:  # a reduction is possible: ask for the size the models need
                    img.draft(None, (math.ceil(width * s), math.ceil(height * s)))
            img.load()
            loaded = img.size
            img = ImageOps.exif_transpose(img)
            swap = img.size != loaded  # a 90-degree orientation: the picture is the other way
            rgb = _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(str(exc)) from exc
    except OSError as exc:
        raise ImageError(f"cannot decode image: {exc}", reason=_reason(exc)) from exc
    except Exception as exc:
        raise ImageError(f"cannot decode image: {exc}") from exc
    if swap:
        width, height = height, width
    return Decoded(rgb=rgb, width=width, height=height)


def _reason(exc: Exception) -> str:
    return "image_truncated" if "truncated" in str(exc).lower() else "image_corrupt"


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)
