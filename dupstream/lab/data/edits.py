"""Image edits used to make copies: the product's duplicate / near-duplicate semantics.

``DUPLICATE_EDITS`` keep the same picture (re-encode, resize, light recolour);
``NEAR_DUPLICATE_EDITS`` make an edited copy (crop, flip, rotation, overlay, border, screenshot
framing, an object pasted in). Every edit is deterministic given its ``rng``.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw

Edit = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def jpeg(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(rng.integers(35, 80)))
    return np.asarray(Image.open(buf).convert("RGB"))


def resize(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = float(rng.uniform(0.4, 0.8))
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)


def recolour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain = float(rng.uniform(0.85, 1.2))
    bias = float(rng.uniform(-12, 12))
    return np.clip(rgb.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def crop(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    f = float(rng.uniform(0.65, 0.85))
    ch, cw = int(h * f), int(w * f)
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(rgb[y : y + ch, x : x + cw])


def hflip(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, ::-1])


def rotate(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    angle = float(rng.choice([-1, 1]) * rng.uniform(5, 15))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def caption(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = Image.fromarray(rgb).copy()
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    band = max(12, h // 8)
    top = int(rng.integers(0, 2)) == 0
    y0 = 0 if top else h - band
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    draw.rectangle([0, y0, w, y0 + band], fill=colour)
    draw.text((w // 20, y0 + band // 4), "SHARED  #repost  dupstream", fill=(255, 255, 255))
    return np.asarray(img)


def watermark(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    h, w = rgb.shape[:2]
    mark = np.zeros((h, w), np.uint8)
    scale = max(0.6, w / 400)
    cv2.putText(mark, "(c) stock", (w // 6, h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, int(scale * 2)))
    alpha = (mark.astype(np.float32) / 255.0)[..., None] * 0.5
    return np.clip(out * (1 - alpha) + 255 * alpha, 0, 255).astype(np.uint8)


def border(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    p = max(4, int(min(h, w) * float(rng.uniform(0.05, 0.12))))
    colour = [int(c) for c in rng.integers(0, 255, 3)]
    return cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_CONSTANT, value=colour)


def screenshot(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo shown smaller inside a phone-like frame with UI bars."""
    h, w = rgb.shape[:2]
    inner = cv2.resize(rgb, (int(w * 0.8), int(h * 0.8)), interpolation=cv2.INTER_AREA)
    canvas = np.full((int(h * 1.1), w, 3), 245, np.uint8)
    canvas[: int(h * 0.06)] = (30, 30, 30)
    y = int(h * 0.12)
    x = (w - inner.shape[1]) // 2
    canvas[y : y + inner.shape[0], x : x + inner.shape[1]] = inner
    return canvas


def paste(rgb: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None) -> np.ndarray:
    """Paste a patch (from ``donor`` if given, else a solid shape) onto ~10 % of the image."""
    out = rgb.copy()
    h, w = rgb.shape[:2]
    ph, pw = max(4, h // 4), max(4, w // 4)
    y = int(rng.integers(0, h - ph + 1))
    x = int(rng.integers(0, w - pw + 1))
    if donor is not None:
        patch = cv2.resize(donor, (pw, ph), interpolation=cv2.INTER_AREA)
    else:
        patch = np.zeros((ph, pw, 3), np.uint8)
        cv2.circle(patch, (pw // 2, ph // 2), min(ph, pw) // 2,
                   [int(c) for c in rng.integers(0, 255, 3)], -1)
    out[y : y + ph, x : x + pw] = patch
    return out


DUPLICATE_EDITS: dict[str, Edit] = {"jpeg": jpeg, "resize": resize, "recolour": recolour}
NEAR_DUPLICATE_EDITS: dict[str, Edit] = {
    "crop": crop,
    "hflip": hflip,
    "rotate": rotate,
    "caption": caption,
    "watermark": watermark,
    "border": border,
    "screenshot": screenshot,
    "paste": paste,
}


def encode(rgb: np.ndarray, fmt: str = "PNG", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()
