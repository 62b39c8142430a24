"""Content regions: where the picture is inside its frame.

A frame is what surrounds a picture without being part of it: a solid or blurred border,
letterbox bars, the flat bars, text and icons of a phone or desktop screenshot, or the canvas a
photo was pasted on. All of these are *smooth* (a flat colour or a heavy blur) apart from small
islands (text, icons), and they meet the picture along straight lines.

``content_box`` finds the smooth region connected to the image border, takes the largest
non-smooth component as the picture, and accepts it only when its box is a real frame: the
outside of the box is almost all smooth and each framed side of the box is a straight line (the
row or column just outside is smooth, the one just inside is mostly picture). A photo whose own
sky or background touches the border fails the straight-line test and keeps its full extent.
"""

from __future__ import annotations

import cv2
import numpy as np

#: working resolution (longest side) of the analysis
WORK_SIDE = 256
#: a gradient (grey levels per pixel, after a light blur) below this is "smooth"
SMOOTH_GRAD = 5.0
#: a side counts as framed when its margin is at least this share of the dimension
MIN_MARGIN = 0.02
#: the picture must hold at least this share of the image
MIN_AREA = 0.08
#: a picture is not a sliver: its aspect ratio stays within 1/MAX_ASPECT .. MAX_ASPECT
MAX_ASPECT = 4.0
#: share of the outside of the box that must be smooth (text and icons are the rest)
OUTSIDE_SMOOTH = 0.80
#: share of a framed side along which the picture starts at the side
INSIDE_EDGE = 0.55
#: how far (working pixels) inside a side the picture may start
EDGE_BAND = 3


def _grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return img


def _smooth_mask(g: np.ndarray) -> np.ndarray:
    f = g.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.hypot(gx, gy) < SMOOTH_GRAD


def _border_connected(smooth: np.ndarray) -> np.ndarray:
    """Smooth pixels connected to the image border (the frame candidates)."""
    n, labels = cv2.connectedComponents(smooth.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(smooth)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.zeros(n, bool)
    keep[np.unique(edge)] = True
    keep[0] = False
    return keep[labels]


def _picture_box(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box of the largest non-frame component, grown by components that overlap it."""
    # opening breaks the thin bridges (gradient halos) between the picture and nearby text
    inner = cv2.morphologyEx((~frame).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inner, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    x, y, w, h = (int(v) for v in stats[best, :4])
    x0, y0, x1, y1 = x, y, x + w, y + h
    # a picture split by a smooth band (a flat stripe inside it) is one box: absorb components
    # whose boxes mostly lie inside the current one
    for i in range(1, n):
        if i == best or stats[i, cv2.CC_STAT_AREA] < 0.02 * areas.max():
            continue
        bx, by, bw, bh = (int(v) for v in stats[i, :4])
        ix = max(0, min(x1, bx + bw) - max(x0, bx))
        iy = max(0, min(y1, by + bh) - max(y0, by))
        if ix * iy >= 0.5 * bw * bh:
            x0, y0, x1, y1 = min(x0, bx), min(y0, by), max(x1, bx + bw), max(y1, by + bh)
    return x0, y0, x1, y1


def _straight_sides(frame: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Every framed side is a straight line: along most of it the picture starts right there
    (within ``EDGE_BAND`` pixels), as it does along a photo's edge and not along a horizon."""
    h, w = frame.shape
    x0, y0, x1, y1 = box
    pic = ~frame
    b = EDGE_BAND
    sides = []
    if y0 >= MIN_MARGIN * h:
        sides.append(pic[y0 : y0 + b, x0:x1].any(axis=0))
    if y1 <= h - MIN_MARGIN * h:
        sides.append(pic[y1 - b : y1, x0:x1].any(axis=0))
    if x0 >= MIN_MARGIN * w:
        sides.append(pic[y0:y1, x0 : x0 + b].any(axis=1))
    if x1 <= w - MIN_MARGIN * w:
        sides.append(pic[y0:y1, x1 - b : x1].any(axis=1))
    return bool(sides) and all(side.mean() >= INSIDE_EDGE for side in sides)


def _frame_box(frame: np.ndarray) -> tuple[tuple[int, int, int, int] | None, str]:
    h, w = frame.shape
    if frame.mean() < MIN_MARGIN:
        return None, "no_frame"
    box = _picture_box(frame)
    if box is None:
        return None, "no_picture"
    x0, y0, x1, y1 = box
    if (x1 - x0) * (y1 - y0) < MIN_AREA * h * w:
        return None, "small"
    if not 1 / MAX_ASPECT <= (x1 - x0) / max(1, y1 - y0) <= MAX_ASPECT:
        return None, "sliver"
    if (x0 < MIN_MARGIN * w and y0 < MIN_MARGIN * h and x1 > w - MIN_MARGIN * w
            and y1 > h - MIN_MARGIN * h):
        return None, "fills"
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    if frame[outside].mean() < OUTSIDE_SMOOTH:
        return None, "outside_textured"
    if not _straight_sides(frame, box):
        return None, "not_straight"
    return box, "ok"


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the picture inside its frame, in pixels of ``rgb`` (x1, y1 exclusive).

    Frames: uniform or blurred borders, letterboxing, screenshot / phone / desktop UI frames (flat
    bars, text, icons around a photo), a photo pasted on a larger canvas. ``None`` when the
    picture fills the image (no frame found). Accepts RGB or grey uint8.
    """
    g = _grey(np.asarray(rgb))
    h0, w0 = g.shape[:2]
    if min(h0, w0) < 16:
        return None
    s = min(1.0, WORK_SIDE / max(h0, w0))
    if s < 1.0:
        g = cv2.resize(g, (max(1, round(w0 * s)), max(1, round(h0 * s))),
                       interpolation=cv2.INTER_AREA)
    h, w = g.shape
    frame = _border_connected(_smooth_mask(g))
    box, why = _frame_box(frame)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return (int(round(x0 / s)), int(round(y0 / s)),
            min(w0, int(round(x1 / s))), min(h0, int(round(y1 / s))))
