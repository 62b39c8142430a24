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


# -- framing, borders, rotation, combined edits (issue 12) ----------------------------------------
#: words drawn into synthetic UI frames and captions (never the same line twice in a row)
_WORDS = ("photo", "shared", "today", "friends", "like", "reply", "follow", "new", "story",
          "trip", "home", "weekend", "repost", "view", "comments", "saved", "album", "beach")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _text(img: np.ndarray, xy: tuple[int, int], height: int, colour, rng: np.random.Generator,
          words: int = 3) -> None:
    """A line of ``words`` random words about ``height`` px tall at ``xy`` (bottom-left)."""
    line = " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), words))
    scale = max(0.25, height / 22.0)
    cv2.putText(img, line, xy, _FONT, scale, colour, max(1, int(round(scale * 1.6))), cv2.LINE_AA)


def _icons(img: np.ndarray, y: int, x0: int, x1: int, size: int, n: int, colour,
           rng: np.random.Generator) -> None:
    """``n`` simple icons (circle, square, triangle, heart-like pair of circles) in a row."""
    if n <= 0 or size < 3:
        return
    step = (x1 - x0) / n
    for i in range(n):
        cx, r = int(x0 + step * (i + 0.5)), max(2, size // 2)
        shape = int(rng.integers(0, 4))
        if shape == 0:
            cv2.circle(img, (cx, y), r, colour, max(1, size // 8), cv2.LINE_AA)
        elif shape == 1:
            cv2.rectangle(img, (cx - r, y - r), (cx + r, y + r), colour, max(1, size // 8))
        elif shape == 2:
            pts = np.array([[cx, y - r], [cx - r, y + r], [cx + r, y + r]], np.int32)
            cv2.polylines(img, [pts], True, colour, max(1, size // 8), cv2.LINE_AA)
        else:
            cv2.circle(img, (cx - r // 2, y), r // 2, colour, -1, cv2.LINE_AA)
            cv2.circle(img, (cx + r // 2, y), r // 2, colour, -1, cv2.LINE_AA)


def _place(canvas: np.ndarray, rgb: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Resize ``rgb`` to fit inside ``box`` (x, y, w, h), keep its aspect, paste it centred."""
    x, y, w, h = box
    ih, iw = rgb.shape[:2]
    f = min(w / iw, h / ih)
    nw, nh = max(4, int(iw * f)), max(4, int(ih * f))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    ox, oy = x + (w - nw) // 2, y + (h - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = small


def screenshot_phone(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone screenshot of a social/photo app showing the picture: status bar (clock, signal,
    battery), app header with title and icons, the photo at a random scale and vertical position,
    text lines (likes, comments) and a navigation bar with icons. Light or dark theme."""
    h, w = rgb.shape[:2]
    scale = float(rng.uniform(0.5, 1.0))  # shown photo width / photo width
    cw = max(120, int(w * scale / float(rng.uniform(0.62, 1.0))))
    ch = int(cw * float(rng.uniform(1.75, 2.17)))
    dark = bool(rng.integers(0, 2))
    bg = (18, 18, 18) if dark else (250, 250, 250)
    fg = (235, 235, 235) if dark else (30, 30, 30)
    canvas = np.full((ch, cw, 3), bg, np.uint8)
    u = max(6, ch // 40)  # UI unit
    cv2.putText(canvas, f"{int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}",
                (u, int(u * 1.3)), _FONT, u / 22.0, fg, max(1, u // 10), cv2.LINE_AA)
    for i in range(4):  # signal bars + battery
        bx = cw - 5 * u + i * u // 2
        cv2.rectangle(canvas, (bx, int(u * 1.3) - (i + 1) * u // 4), (bx + u // 3, int(u * 1.3)),
                      fg, -1)
    cv2.rectangle(canvas, (cw - 2 * u, u // 2), (cw - u // 2, int(u * 1.3)), fg, 1)
    header = int(u * 1.8)
    _text(canvas, (u, header + u), u, fg, rng, words=1)
    _icons(canvas, header + u // 2, cw - 4 * u, cw - u // 2, u, 2, fg, rng)
    top = header + 2 * u
    cv2.circle(canvas, (int(1.5 * u), top + u), int(0.7 * u), _colour(rng), -1)  # avatar
    _text(canvas, (3 * u, top + int(1.3 * u)), int(0.8 * u), fg, rng, words=2)
    nav = int(u * 2.5)
    free = ch - nav - (top + 2 * u) - 6 * u
    pw = min(int(w * scale), cw)
    ph = int(h * pw / w)
    if ph > free:
        pw, ph = max(8, int(pw * free / ph)), free
    y = top + 2 * u + int(rng.integers(0, max(1, free - ph + 1)))
    x = int(rng.integers(0, cw - pw + 1))
    _place(canvas, rgb, (x, y, pw, ph))
    ty = y + ph + int(1.5 * u)
    _icons(canvas, ty, u // 2, 5 * u, u, 3, fg, rng)
    for k in range(int(rng.integers(1, 4))):
        yy = ty + (k + 2) * int(1.2 * u)
        if yy < ch - nav - u:
            _text(canvas, (u, yy), int(0.8 * u), fg, rng, words=int(rng.integers(2, 6)))
    cv2.rectangle(canvas, (0, ch - nav), (cw, ch), tuple(max(0, c - 12) for c in bg), -1)
    _icons(canvas, ch - nav // 2, 0, cw, u, 5, fg, rng)
    return canvas


def screenshot_desktop(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A desktop browser screenshot: title bar with window buttons, tab and address bars, a side
    panel with text, the photo at a random scale and position in the page, text around it."""
    h, w = rgb.shape[:2]
    scale = float(rng.uniform(0.4, 1.0))
    pw, ph = max(8, int(w * scale)), max(8, int(h * scale))
    cw = int(max(pw / float(rng.uniform(0.35, 0.7)), 240))
    ch = int(max(cw * float(rng.uniform(0.56, 0.75)), ph + 0.3 * cw))
    bg = _colour(rng, 225, 256)
    fg = (40, 40, 40)
    canvas = np.full((ch, cw, 3), bg, np.uint8)
    u = max(6, ch // 36)
    canvas[: int(2.2 * u)] = _colour(rng, 40, 200)  # title + tab bar
    for i, c in enumerate(((230, 80, 70), (240, 190, 60), (90, 200, 90))):
        cv2.circle(canvas, (u + i * u, u), max(2, u // 3), c, -1, cv2.LINE_AA)
    cv2.rectangle(canvas, (5 * u, u // 3), (5 * u + cw // 5, int(2.2 * u)), bg, -1)
    _text(canvas, (int(5.4 * u), int(1.6 * u)), int(0.7 * u), fg, rng, words=2)
    cv2.rectangle(canvas, (3 * u, int(2.6 * u)), (cw - 3 * u, int(3.8 * u)), (255, 255, 255), -1)
    _text(canvas, (int(3.4 * u), int(3.5 * u)), int(0.7 * u), (90, 90, 90), rng, words=3)
    _icons(canvas, int(3.2 * u), 0, int(2.8 * u), int(0.8 * u), 2, fg, rng)
    top = int(4.4 * u)
    side = int(cw * float(rng.uniform(0.12, 0.22))) if rng.random() < 0.7 else 0
    if side:
        canvas[top:, :side] = tuple(max(0, c - 20) for c in bg)
        for k in range(int((ch - top) / (1.6 * u)) - 1):
            _text(canvas, (u // 2, top + (k + 1) * int(1.6 * u)), int(0.6 * u), fg, rng, 1)
    x0, y0 = side + u, top + 2 * u
    pw = min(pw, cw - x0 - u)
    ph = min(ph, ch - y0 - u)
    x = x0 + int(rng.integers(0, max(1, cw - x0 - u - pw + 1)))
    y = y0 + int(rng.integers(0, max(1, ch - y0 - u - ph + 1)))
    _text(canvas, (x0, top + int(1.4 * u)), u, fg, rng, words=4)
    _place(canvas, rgb, (x, y, pw, ph))
    return canvas


def border_solid(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A solid border of random colour, each side 3-25 % of the picture's size."""
    h, w = rgb.shape[:2]
    t, b = (int(h * float(rng.uniform(0.03, 0.25))) for _ in range(2))
    left, right = (int(w * float(rng.uniform(0.03, 0.25))) for _ in range(2))
    return cv2.copyMakeBorder(rgb, t, b, left, right, cv2.BORDER_CONSTANT,
                              value=list(_colour(rng)))


def border_blurred(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The story/reel style: the picture on a canvas of another aspect (1:1, 4:5, 9:16, 16:9)
    filled with a blurred, enlarged copy of itself."""
    h, w = rgb.shape[:2]
    aspect = float(rng.choice([1.0, 0.8, 9 / 16, 16 / 9]))  # canvas w / h
    inner = float(rng.uniform(0.6, 0.95))
    ch = int(max(h / inner, w / inner / aspect))
    cw = int(ch * aspect)
    bg = cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_LINEAR)
    k = max(3, (min(cw, ch) // 8) | 1)
    canvas = cv2.GaussianBlur(bg, (k, k), 0)
    canvas = np.clip(canvas.astype(np.float32) * float(rng.uniform(0.6, 0.9)), 0, 255)
    canvas = canvas.astype(np.uint8)
    f = inner * min(cw / w, ch / h)
    nw, nh = int(w * f), int(h * f)
    x = int(rng.integers(0, cw - nw + 1)) if rng.random() < 0.3 else (cw - nw) // 2
    y = int(rng.integers(0, ch - nh + 1)) if rng.random() < 0.3 else (ch - nh) // 2
    _place(canvas, rgb, (x, y, nw, nh))
    return canvas


def letterbox(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black (or near-black / white) bars to a 16:9, 9:16, 4:3 or 1:1 frame."""
    h, w = rgb.shape[:2]
    aspect = float(rng.choice([16 / 9, 9 / 16, 4 / 3, 1.0]))
    if abs(w / h - aspect) < 0.05:
        aspect = 16 / 9 if w / h < 1.3 else 9 / 16
    cw, ch = (int(h * aspect), h) if w / h < aspect else (w, int(w / aspect))
    colour = (255, 255, 255) if rng.random() < 0.15 else (int(rng.integers(0, 12)),) * 3
    canvas = np.full((ch, cw, 3), colour, np.uint8)
    _place(canvas, rgb, (0, 0, cw, ch))
    return canvas


def rotate_any(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation by an arbitrary angle (10-350 degrees, away from the 90-degree turns) on an
    expanded canvas, the corners filled with a solid colour (black, white or random)."""
    angle = float(rng.uniform(10, 350))
    while min(abs(angle - a) for a in (90, 180, 270)) < 5:
        angle = float(rng.uniform(10, 350))
    fill = [(0, 0, 0), (255, 255, 255), _colour(rng)][int(rng.integers(0, 3))]
    return rotate_fill(rgb, angle, fill)[0]


def rotate_fill(rgb: np.ndarray, angle: float, fill=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Rotated by ``angle`` degrees on a canvas that holds all of it, the corners ``fill``;
    returns (image, the original -> canvas 2x3 transform)."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * s + w * c), int(h * c + w * s)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(rgb, m, (nw, nh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return out, m


def caption_text(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A meme-style caption band (10-25 % of the height) with large random text, top or bottom."""
    h, w = rgb.shape[:2]
    band = max(12, int(h * float(rng.uniform(0.1, 0.25))))
    out = np.zeros((h + band, w, 3), np.uint8)
    top = bool(rng.integers(0, 2))
    out[:] = _colour(rng)
    out[band:] = rgb if top else out[band:]
    if not top:
        out[:h] = rgb
    y0 = 0 if top else h
    _text(out, (w // 30, y0 + int(band * 0.7)), int(band * 0.45), _colour(rng), rng,
          words=int(rng.integers(2, 5)))
    return out


def combined(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop (65-85 %) + caption band + colour change (gain/bias or hue) + JPEG."""
    out = crop(rgb, rng)
    out = caption_text(out, rng)
    if rng.random() < 0.5:
        out = recolour(out, rng)
    else:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(rng.integers(10, 40))) % 180)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return jpeg(out, rng)


#: edit types of issue 12, name -> edit (used by the COCO-style set and the retrieval bench)
FRAMING_EDITS: dict[str, Edit] = {
    "screenshot_phone": screenshot_phone,
    "screenshot_desktop": screenshot_desktop,
    "border_solid": border_solid,
    "border_blurred": border_blurred,
    "letterbox": letterbox,
    "rotation": rotate_any,
    "combined": combined,
}


# -- overlay traps: one identical overlay on two different photos ---------------------------------
OVERLAYS = ("caption", "watermark", "border", "frame")


def _watermark_big(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A large semi-transparent text + logo mark across the picture."""
    h, w = rgb.shape[:2]
    mark = np.zeros((h, w), np.uint8)
    scale = max(0.8, w / 260)
    cv2.putText(mark, "(c) " + _WORDS[int(rng.integers(len(_WORDS)))].upper(),
                (w // 10, int(h * float(rng.uniform(0.35, 0.7)))), _FONT, scale, 255,
                max(2, int(scale * 3)), cv2.LINE_AA)
    cv2.circle(mark, (int(w * 0.85), int(h * 0.15)), max(6, min(h, w) // 10), 255,
               max(2, min(h, w) // 60))
    alpha = (mark.astype(np.float32) / 255.0)[..., None] * float(rng.uniform(0.45, 0.7))
    return np.clip(rgb.astype(np.float32) * (1 - alpha) + 255 * alpha, 0, 255).astype(np.uint8)


def overlay(kind: str, seed: int, size: tuple[int, int] = (480, 360)) -> Callable[[np.ndarray],
                                                                                  np.ndarray]:
    """An overlay that is pixel-identical on every photo it is applied to: the photo is resized
    to ``size`` (w, h), then the same caption / watermark / border / UI frame (drawn from
    ``seed``) is put on it. Two different photos wearing it are an overlay trap."""
    edit = {"caption": caption_text, "watermark": _watermark_big, "border": border_solid,
            "frame": screenshot_phone}[kind]

    def apply(rgb: np.ndarray) -> np.ndarray:
        fitted = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return edit(fitted, np.random.default_rng(seed))

    return apply
