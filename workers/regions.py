"""Content regions: where the picture is inside its frame.

A frame is what surrounds a picture without being part of it: a solid or blurred border,
letterbox bars, the flat bars, text and icons of a phone or desktop screenshot, or the canvas a
photo was pasted on. A frame is *smooth* (a flat colour or a heavy blur) apart from small islands
(text, icons), and it meets the picture along a *straight line* where the grey level steps.

``content_box`` peels each side: scanning inwards from the border through smooth rows (columns),
it stops at the first straight step line behind which the picture starts; a line behind which
the frame goes on flat (the edge of a UI bar) is crossed. The sides are re-found within each
other's span until they agree. The box is kept only when its outside is smooth, every framed side
is a straight line, and a side framed by a blur (not a flat colour) has a framed opposite side
of comparable size (blurred fills are symmetric): a photo's own sky or background touching the
border then keeps the photo whole.
"""

from __future__ import annotations

import cv2
import numpy as np

from dupstream.workers.register import PixelMemo

#: working resolution (longest side) of the analysis
WORK_SIDE = 256
#: gradient (grey levels per pixel) below which a pixel is smooth / flat
SMOOTH_GRAD = 5.0
FLAT_GRAD = 1.5
SMOOTH_BY = "grad"
LAP_SMOOTH = 2.0
#: a grey-level step across a boundary (over 2 pixels) at least this large makes a line pixel
STEP = 10.0
#: a last try with weaker steps (a blur meeting the photo's own edge) accepts only a centred
#: frame all round, margins within WEAK_RATIO of each other
WEAK_STEP = 5.0
WEAK_RATIO = 1.5
#: share of a side (over the span of the perpendicular sides) that must be line pixels
LINE_COVER = 0.4
#: the final box: every framed side is a line along at least this share of its span
FINAL_COVER = 0.6
#: ... a frame all round (three or four framed sides) is evidence enough with weaker lines
FINAL_COVER_ALL_ROUND = 0.4
#: share of smooth pixels in the frame between the border and a side (text, icons are the rest)
FRAME_SMOOTH = 0.6
#: a side is framed when its margin is at least this share of the dimension
MIN_MARGIN = 0.02
#: a side is found within this share of the dimension from its border
MAX_MARGIN = 0.85
#: the picture holds at least this share of the image, and is not a sliver
MIN_AREA = 0.08
MAX_ASPECT = 4.0
#: smooth share of the whole outside of the box
OUTSIDE_SMOOTH = 0.7
#: a margin with a smaller share of frame colours is a blur (or the photo's own sky): it needs
#: a comparable opposite margin
FLAT_MARGIN = 0.7
MARGIN_RATIO = 2.5
#: ... when it is at least this share of the dimension (a sliver of margin is not evidence)
BLUR_MARGIN = 0.05
#: grey-level tolerance of a frame colour, and the share of the outer ring a colour must hold
COLOUR_TOL = 4
RING_SHARE = 0.015
#: a line is crossed (it is the edge of a UI bar or a strip of text / icons, not of the
#: picture) when within MIN_PICTURE of the dimension behind it a row is made of frame colours
#: for at least this share
FRAME_GOES_ON = 0.6
MIN_PICTURE = 0.1
#: ... and a line at least this much stronger just behind a weak one is the picture's edge
STRONGER = 0.25
#: the last resort (``_closed_rect``): a small picture inside a busy frame (a desktop screenshot
#: with a text sidebar and header) stops every side scan at the text; a closed rectangle of
#: strong lines (Canny thresholds; its convex hull fills RECT_FILL of its bounding box), framed
#: on all four sides, at most RECT_MAX_AREA of the image, whose inside is at least RECT_TEXTURE
#: less smooth than its outside, is the picture. On the retrieval bench's 670 images and the
#: COCO-style eval's 1,500 it fires on no unframed picture (photos or their plain edits) and on
#: 4 of the 5 desktop screenshots the side scans missed
RECT_CANNY = (40, 120)
RECT_FILL = 0.85
RECT_MAX_AREA = 0.8
RECT_TEXTURE = 0.1
#: ... tried only where the page looks like one: at least 3 of the image's 4 outer strips
#: (RECT_STRIP pixels of the working copy) hold RECT_RING of frame colours (70 % of the bench's
#: photos fail it, every desktop screenshot passes: a ~0.6 ms step skipped for most pictures)
RECT_STRIP = 4
RECT_RING = 0.5
#: ... and on working copies at least this size on their shorter side (a 28-px digit on black is
#: not a page: its stroke's outline would pass for a picture)
RECT_MIN_SIDE = 96


def _grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return img


class _Maps:
    """Per-pixel smooth / flat masks and the line evidence of the four sides, all for the image
    seen from the top (the other sides are handled by transposing / flipping)."""

    def __init__(self, g: np.ndarray):
        f = cv2.GaussianBlur(g.astype(np.float32), (0, 0), 0.7)
        grad = cv2.magnitude(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1)) / 8
        if SMOOTH_BY == "laplacian":
            lap = np.abs(cv2.Laplacian(cv2.GaussianBlur(f, (0, 0), 1.0), cv2.CV_32F, ksize=1))
            self.smooth = lap < LAP_SMOOTH
        else:
            self.smooth = grad < SMOOTH_GRAD
        self.flat = grad < FLAT_GRAD
        self.g = f
        self.framey = _frame_colours(g) & self.flat
        self.step = STEP
        self._lines: dict[tuple[int, float], np.ndarray] = {}
        self._sums: dict[tuple, np.ndarray] = {}
        # the sides seen from the left and the right are the transposed image's top and bottom:
        # its maps made contiguous once; a bottom's rows are its top's in reverse
        self._upright: dict[bool, dict[str, np.ndarray]] = {
            False: {"g": f, "smooth": self.smooth, "framey": self.framey},
            True: {k: np.ascontiguousarray(v.T) for k, v in
                   (("g", f), ("smooth", self.smooth), ("framey", self.framey))}}
        self._steps: dict[bool, np.ndarray] = {}

    def row_sums(self, side: int, name: str) -> np.ndarray:
        """(h, w + 1) int32: per row of ``side``'s view of the mask ``name`` ("smooth",
        "framey" or "lines" at the current step), the running count of true pixels along the
        row - any span's row means in O(h), exactly as ``mask[:, a:b].mean(axis=1)``."""
        key = (side, name, self.step if name == "lines" else None)
        if key not in self._sums:
            if name == "lines":
                self._sums[key] = _running(self.lines(side))
            elif side in (1, 3):  # the opposite side's rows, in reverse
                self._sums[key] = self.row_sums(side - 1, name)[::-1]
            else:
                self._sums[key] = _running(self._upright[side == 2][name])
        return self._sums[key]

    def view(self, side: int, a: np.ndarray) -> np.ndarray:
        """``a`` seen from side 0 top, 1 bottom, 2 left, 3 right (that side on top)."""
        return (a, a[::-1], a.T, a.T[::-1])[side]

    def lines(self, side: int) -> np.ndarray:
        """Line evidence of ``side`` (seen from that side), cached per step: a step across the
        boundary (``_steps``) with smooth frame 3 rows above it."""
        key = (side, self.step)
        if key not in self._lines:
            maps = self._upright[side >= 2]
            steps = self._steps.get(side >= 2)
            if steps is None:
                steps = self._steps[side >= 2] = _steps(maps["g"])
            h = steps.shape[0] - 1
            # seen from the bottom, boundary b is the top's boundary h - b (the same four rows)
            step = steps[:h] if side in (0, 2) else steps[h:0:-1]
            smooth = maps["smooth"] if side in (0, 2) else maps["smooth"][::-1]
            above = np.zeros(smooth.shape, bool)
            above[3:] = smooth[:-3]
            self._lines[key] = (step >= self.step) & above
        return self._lines[key]


def _running(mask: np.ndarray) -> np.ndarray:
    """(h, w + 1) int32 running count of true pixels along each row of ``mask``."""
    out = np.zeros((mask.shape[0], mask.shape[1] + 1), np.int32)
    np.cumsum(mask, axis=1, dtype=np.int32, out=out[:, 1:])
    return out


def _steps(g: np.ndarray) -> np.ndarray:
    """(h + 1, w): the grey-level step across each top-side boundary b = 0..h (frame rows < b),
    over two rows: max(|g[b] - g[b-2]|, |g[b+1] - g[b-1]|), rows clamped to the image."""
    h = g.shape[0]
    pad = np.concatenate([g[:1], g[:1], g, g[-1:], g[-1:], g[-1:]])  # pad[i] = g[clamp(i - 2)]
    return np.maximum(np.abs(pad[2:h + 3] - pad[0:h + 1]), np.abs(pad[3:h + 4] - pad[1:h + 2]))


def _frame_colours(g: np.ndarray) -> np.ndarray:
    """Pixels (flat or not) within COLOUR_TOL of a dominant grey level of the image's outer
    ring: the colours a flat frame is made of (a UI's bars and background, a border, a canvas)."""
    ring = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]]).astype(np.int32)
    hist = np.bincount(ring, minlength=256).astype(np.float64)
    hist = np.convolve(hist, np.ones(2 * COLOUR_TOL + 1), mode="same")
    out = np.zeros(g.shape, bool)
    gi = g.astype(np.int32)
    for _ in range(5):
        c = int(np.argmax(hist))
        if hist[c] < RING_SHARE * len(ring):
            break
        out |= np.abs(gi - c) <= COLOUR_TOL
        hist[max(0, c - 2 * COLOUR_TOL) : c + 2 * COLOUR_TOL + 1] = 0
    return out


def _span_means(sums: np.ndarray, a: int, b: int) -> np.ndarray:
    """Row means of a mask over columns ``a:b`` from its ``_Maps.row_sums``."""
    return (sums[:, b] - sums[:, a]) / (b - a)


def _find_side(m: _Maps, side: int, span: tuple[int, int], cross: bool) -> int:
    """Boundary row of ``side`` (seen from that side: the top) within columns ``span`` (0: not
    framed)."""
    h = m.view(side, m.g).shape[0]
    a, b = span
    if b - a < 8:
        return 0
    cover = _span_means(m.row_sums(side, "lines"), a, b)
    smooth_rows = _span_means(m.row_sums(side, "smooth"), a, b)
    frame_rows = _span_means(m.row_sums(side, "framey"), a, b)
    # rows on (or in the gradient halo of) a line are not frame texture: skip them
    on_line = np.convolve((cover >= LINE_COVER).astype(np.float32), np.ones(5), mode="same") > 0
    # the scan goes on while the rows crossed so far (lines and their halo left out) are
    # smooth on average: it stops at the first row y where they are not any more
    end = int(MAX_MARGIN * h)
    if end <= 3:
        return 0
    counted = ~on_line[: end - 3]
    # (a running sum and count, as a row-by-row loop would add them: the same floats)
    acc = np.cumsum(np.where(counted, smooth_rows[: end - 3], 0.0))
    n = np.cumsum(counted)
    stops = np.flatnonzero((n > 0) & (acc / np.maximum(n, 1) < FRAME_SMOOTH))
    stop = 3 + int(stops[0]) if len(stops) else end
    found = 0
    for y in (3 + np.flatnonzero(cover[3:stop] >= LINE_COVER)).tolist():
        if y <= found + 3:
            continue
        # the step spans two rows: the boundary is where the line is strongest
        found = y + int(np.argmax(cover[y : y + 3]))
        behind = frame_rows[y + 2 : y + 2 + max(4, int(MIN_PICTURE * h))]
        if cross and len(behind) and behind.max() >= FRAME_GOES_ON:
            continue  # a UI bar's edge, or a strip of text / icons: the frame goes on
        if cross:
            # a weak line (a strip of text) just before a much stronger one: the stronger one
            # is the picture's edge
            ahead = cover[found + 3 : found + 3 + max(4, int(MIN_PICTURE * h))]
            if len(ahead) and ahead.max() >= max(cover[found] + STRONGER, FINAL_COVER):
                found = found + 3 + int(np.argmax(ahead))
        break  # the picture starts behind this line
    return found


def _sides(m: _Maps, box: tuple[int, int, int, int], cross: bool) -> tuple[int, int, int, int]:
    """Re-find the four sides within the span of the current box (``cross``: lines behind which
    the frame goes on are crossed)."""
    x0, y0, x1, y1 = box
    h, w = m.g.shape
    spans = ((x0, x1), (x0, x1), (y0, y1), (y0, y1))
    backs = (lambda b: b, lambda b: h - b, lambda b: b, lambda b: w - b)
    top, bottom, left, right = (
        backs[i](_find_side(m, i, spans[i], cross))
        for i in range(4))
    return left, top, right, bottom


def _margin_flat(m: _Maps, box: tuple[int, int, int, int]) -> list[float | None]:
    """Share of frame-colour pixels among the smooth pixels of each framed margin strip (top,
    bottom, left, right): ~1 for flat bars (text and icons are not smooth), lower for a blur;
    None: not framed."""
    x0, y0, x1, y1 = box
    out: list[float | None] = []
    for sl in ((slice(0, y0), slice(x0, x1)), (slice(y1, None), slice(x0, x1)),
               (slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, None))):
        sm, fr = m.smooth[sl], m.framey[sl]
        out.append(float(fr.sum()) / max(1, int(sm.sum())) if sm.size else None)
    return out


def _side_cover(m: _Maps, box: tuple[int, int, int, int]) -> list[float]:
    """Line cover of each side of ``box`` along its span (top, bottom, left, right), best of
    the boundary and its two neighbours."""
    h, w = m.g.shape
    x0, y0, x1, y1 = box
    out = []
    for i, (b, (a0, a1)) in enumerate(((y0, (x0, x1)), (h - y1, (x0, x1)), (x0, (y0, y1)),
                                       (w - x1, (y0, y1)))):
        if b < 3 or a1 - a0 < 2:
            out.append(1.0 if b < 3 else 0.0)
            continue
        out.append(float(m.lines(i)[b - 1 : b + 2, a0:a1].any(axis=0).mean()))
    return out


def _tidy(m: _Maps, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A thin margin that is not made of frame colours is the photo's own edge: unframe it."""
    h, w = m.g.shape
    x0, y0, x1, y1 = box
    flats = _margin_flat(m, box)
    margins = (y0, h - y1, x0, w - x1)
    dims = (h, h, w, w)
    reset = [mg < BLUR_MARGIN * d and (f is None or f < FLAT_MARGIN)
             for mg, d, f in zip(margins, dims, flats, strict=True)]
    return (0 if reset[2] else x0, 0 if reset[0] else y0, w if reset[3] else x1,
            h if reset[1] else y1)


def _bad_sides(m: _Maps, box: tuple[int, int, int, int]) -> list[int] | None:
    """Framed sides (0 top, 1 bottom, 2 left, 3 right) that are not a frame's: a weak line, or
    a blur (or the photo's own sky) without a comparable opposite margin. None: the box as a
    whole is not a picture in a frame (too small, a sliver, no framed side, textured outside)."""
    h, w = m.g.shape
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if bw <= 0 or bh <= 0 or bw * bh < MIN_AREA * h * w:
        return None
    if not 1 / MAX_ASPECT <= bw / bh <= MAX_ASPECT:
        return None
    margins = (y0, h - y1, x0, w - x1)
    dims = (h, h, w, w)
    framed = [mg >= MIN_MARGIN * d for mg, d in zip(margins, dims, strict=True)]
    if not any(framed):
        return None
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    if m.smooth[outside].mean() < OUTSIDE_SMOOTH:
        return None
    cover = _side_cover(m, box)
    need = FINAL_COVER if sum(framed) < 3 else FINAL_COVER_ALL_ROUND
    bad = [i for i in range(4) if framed[i] and cover[i] < need]
    flats = _margin_flat(m, box)
    opposite = (1, 0, 3, 2)
    for i in range(4):
        if margins[i] < BLUR_MARGIN * dims[i] or flats[i] is None or flats[i] >= FLAT_MARGIN:
            continue
        j = opposite[i]
        if not framed[j] or not 1 / MARGIN_RATIO <= margins[i] / max(margins[j], 1) <= MARGIN_RATIO:
            bad.append(i)
    return sorted(set(bad))


def _unframe(box: tuple[int, int, int, int], sides: list[int], w: int, h: int
             ) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (0 if 2 in sides else x0, 0 if 0 in sides else y0, w if 3 in sides else x1,
            h if 1 in sides else y1)


def _settle(m: _Maps, box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The box if it is a frame's; else the box with its bad sides unframed, if that is."""
    h, w = m.g.shape
    for _ in range(2):
        bad = _bad_sides(m, box)
        if bad is None:
            return None
        if not bad:
            return box
        box = _unframe(box, bad, w, h)
    return None


def _centred(box: tuple[int, int, int, int], w: int, h: int) -> bool:
    """Framed on all four sides, each margin within WEAK_RATIO of its opposite: a centred fill
    (blurred "fit to square" borders), the only frame accepted on weak lines."""
    x0, y0, x1, y1 = box
    pairs = ((y0, h - y1, h), (x0, w - x1, w))
    return all(min(a, b) >= MIN_MARGIN * d and max(a, b) <= WEAK_RATIO * max(1, min(a, b))
               for a, b, d in pairs)


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the picture inside its frame, in pixels of ``rgb`` (x1, y1 exclusive).

    Frames: uniform or blurred borders, letterboxing, screenshot / phone / desktop UI frames (flat
    bars, text, icons around a photo), a photo pasted on a larger canvas. ``None`` when the
    picture fills the image (no frame found). Accepts RGB or grey uint8.
    """
    g = _grey(np.asarray(rgb))
    h0, w0 = g.shape[:2]
    s = min(1.0, WORK_SIDE / max(h0, w0))
    if s < 1.0:
        g = cv2.resize(g, (max(1, round(w0 * s)), max(1, round(h0 * s))),
                       interpolation=cv2.INTER_AREA)
    return content_box_of_work(g, (h0, w0))


def content_box_of_work(g: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``content_box`` of an image of ``size`` (h, w) from its working copy ``g``: grey, longest
    side ``min(WORK_SIDE, max(size))``, resized with INTER_AREA - exactly what
    ``verify.registration_thumb`` makes, so the extractor finds the box on that thumbnail."""
    h0, w0 = size
    if min(h0, w0) < 16:
        return None
    settled = _work_box(g)
    if settled is None:
        return None
    s = min(1.0, WORK_SIDE / max(h0, w0))
    x0, y0, x1, y1 = settled
    return (int(round(x0 / s)), int(round(y0 / s)),
            min(w0, int(round(x1 / s))), min(h0, int(round(y1 / s))))


def _box_of_work(g: np.ndarray) -> tuple[int, int, int, int] | None:
    """The settled box in pixels of the working copy ``g`` (None: no frame)."""
    m = _Maps(g)
    h, w = g.shape
    # UI frames need lines crossed (bars, text); a simple border or letterbox must not (the
    # photo's own flat sky behind the line may share the ring's colours): the first valid wins
    settled = None
    for cross, step in ((True, STEP), (False, STEP), (False, WEAK_STEP)):
        m.step = step
        box = (0, 0, w, h)
        for _ in range(3):
            new = _sides(m, box, cross)
            if new == box:
                break
            box = new
        settled = _settle(m, _tidy(m, box))
        if settled is not None and step != STEP and not _centred(settled, w, h):
            settled = None
        if settled is not None:
            break
    if settled is None and _page_like(m):
        m.step = STEP
        settled = _closed_rect(m, g)
    return settled


def _page_like(m: _Maps) -> bool:
    """Is the working copy large enough and are at least 3 of its 4 outer strips mostly frame
    colours (a page around a picture)?"""
    if min(m.framey.shape) < RECT_MIN_SIDE:
        return False
    f, k = m.framey, RECT_STRIP
    strips = (f[:k], f[-k:], f[:, :k], f[:, -k:])
    return sum(float(s.mean()) >= RECT_RING for s in strips) >= 3


def _closed_rect(m: _Maps, g: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest closed rectangle of lines framed all round in the grey uint8 working copy
    ``g`` whose inside is more textured than its outside (see RECT_CANNY); None: none."""
    h, w = g.shape
    edges = cv2.dilate(cv2.Canny(g, *RECT_CANNY), np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    best, best_area = None, 0
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        area = bw * bh
        if not MIN_AREA * h * w <= area <= RECT_MAX_AREA * h * w or area <= best_area:
            continue
        if not 1 / MAX_ASPECT <= bw / bh <= MAX_ASPECT:
            continue
        if min(x, y, w - x - bw, h - y - bh) < MIN_MARGIN * min(h, w):
            continue
        if cv2.contourArea(cv2.convexHull(c)) < RECT_FILL * area:
            continue
        box = (x + 1, y + 1, x + bw - 1, y + bh - 1)
        if min(_side_cover(m, box)) < FINAL_COVER:
            continue
        inside = np.zeros((h, w), bool)
        inside[box[1]:box[3], box[0]:box[2]] = True
        if m.smooth[inside].mean() > m.smooth[~inside].mean() - RECT_TEXTURE:
            continue
        best, best_area = box, area
    return best


#: the box of a working copy, keyed by its pixels: found once per thumbnail however often it is
#: asked for. The engine asks once per image (the hash stage, on the thumbnail before it is
#: stored; verification takes the query's picture from that box, ``similarity.thumb_box``);
#: ``verify.register`` without a ``picture_box`` asks again on the thumbnail it is given
_work_box = PixelMemo(_box_of_work)
