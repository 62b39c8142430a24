"""A picture turned by an arbitrary angle on a solid fill, and the picture cut back upright.

A copy rotated by tens of degrees (a meme turned for effect, a scan put in crooked) sits on an
expanded canvas whose corners are one colour. A global descriptor of that canvas is far from the
original's (SSCD is not rotation invariant), so the index does not put the original among the
candidates and the copy is never registered. Found here on the grey registration thumbnail: the
four corners agree (the fill), the pixels that differ from the fill form one region that fills
its minimum-area rectangle (a turned photo; a drawing on a plain ground does not), turned at
least ``ROTATED_MIN_DEG`` off the axes. ``upright_turns`` cuts that rectangle out of the full
picture, turned back onto the axes, in its four orientations (which of them is upright is not
known: the search and the comparison take the best).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: the corners agree within this many grey levels, and a pixel is the picture where it differs
#: from the fill by more than FILL_TOL
FILL_CORNER_TOL = 6.0
FILL_TOL = 10.0
#: the picture's rectangle is turned by at least this many degrees off the axes, fills at least
#: ROTATED_FILLED of it, and the thumbnail is at least ROTATED_MIN_SIDE px
ROTATED_MIN_DEG = 2.0
ROTATED_FILLED = 0.9
ROTATED_MIN_SIDE = 64
#: the rectangle covers at least this share of the canvas
ROTATED_MIN_AREA = 0.1
#: pixels cut from each side of the upright picture (the rim the turn blended with the fill)
RIM = 2


@dataclass(frozen=True)
class TurnedRect:
    """The turned picture's rectangle in the coordinates of the image it was found on: centre,
    side lengths along its own axes, and ``phi`` (degrees) the direction of its first side."""

    cx: float
    cy: float
    w: float
    h: float
    phi: float

    def scaled(self, k: float) -> TurnedRect:
        return TurnedRect(self.cx * k, self.cy * k, self.w * k, self.h * k, self.phi)


def turned_rect(grey: np.ndarray) -> TurnedRect | None:
    """The turned rectangle of a picture on a solid fill, or None (see the module)."""
    q = np.asarray(grey, np.float32)
    h, w = q.shape[:2]
    if min(h, w) < ROTATED_MIN_SIDE:
        return None
    k = max(1, min(h, w) // 32)
    corners = np.array([q[:k, :k].mean(), q[:k, -k:].mean(), q[-k:, :k].mean(),
                        q[-k:, -k:].mean()])
    if corners.max() - corners.min() > FILL_CORNER_TOL:
        return None
    mask = (np.abs(q - float(np.median(corners))) > FILL_TOL).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    big = max(contours, key=cv2.contourArea)
    rect = cv2.minAreaRect(big)
    (cx, cy), (rw, rh), _ = rect
    # a turned photo fills its rectangle; a drawing on a plain ground (a digit) does not
    if rw * rh < ROTATED_MIN_AREA * h * w or cv2.contourArea(big) < ROTATED_FILLED * rw * rh:
        return None
    p = cv2.boxPoints(rect)
    phi = float(np.degrees(np.arctan2(p[1, 1] - p[0, 1], p[1, 0] - p[0, 0])))
    if abs((phi + 45.0) % 90.0 - 45.0) < ROTATED_MIN_DEG:
        return None
    # the side lengths along phi and phi + 90 degrees
    side0 = float(np.hypot(*(p[1] - p[0])))
    side1 = float(np.hypot(*(p[2] - p[1])))
    return TurnedRect(float(cx), float(cy), side0, side1, phi)


def upright_turns(rgb: np.ndarray, rect: TurnedRect) -> list[np.ndarray]:
    """The rectangle cut out of ``rgb`` (the coordinates ``rect`` was found in) and turned back
    onto the axes, in its four orientations (0, 90, 180, 270 degrees)."""
    # inset by the anti-aliased rim the turn blended with the fill
    w, h = max(1, round(rect.w) - 2 * RIM), max(1, round(rect.h) - 2 * RIM)
    a = np.radians(rect.phi)
    # the upright picture's pixel (u, v) sits at centre + u' * e0 + v' * e1 in the canvas,
    # e0 along the first side (phi), e1 perpendicular; u' = u - w/2, v' = v - h/2
    e0 = np.array([np.cos(a), np.sin(a)])
    e1 = np.array([-np.sin(a), np.cos(a)])
    centre = np.array([rect.cx, rect.cy])
    m = np.column_stack([e0, e1, centre - e0 * (w - 1) / 2.0 - e1 * (h - 1) / 2.0])
    up = cv2.warpAffine(np.ascontiguousarray(rgb), m.astype(np.float64), (w, h),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)
    return [np.ascontiguousarray(np.rot90(up, k)) for k in range(4)]
