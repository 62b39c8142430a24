"""The registered difference map: the reference warped onto the query, a gain/bias fit over the
overlap, and what differs (residual, changed area, changed boxes)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dupstream.workers.register import corners, project

#: blur (pixels) applied to both images before differencing: tolerates resampling and JPEG
BLUR_SIGMA = 1.2
#: a flat pixel differs when its residual exceeds this many grey levels ...
CHANGE_ABS = 28.0
#: ... and this share of the query's contrast (std) over the overlap
CHANGE_REL = 0.6
#: local normalised cross-correlation window (pixels) and the variance that makes a window
#: textured; below CHANGE_NCC a textured pixel differs
NCC_WIN = 9
NCC_MIN_VAR = 25.0
CHANGE_NCC = 0.5
#: the residual is measured over the unchanged textured pixels when they make at least half of
#: the textured ones, or this share of the overlap where at most EDIT_MAX_CHANGED of it changed
#: (a pasted object on a low-contrast picture holds most of its texture)
KEPT_MIN = 0.02
#: changed pixels are set aside (residual, parallax) only up to this share of the overlap: a
#: caption, watermark or pasted object; more is another picture or another moment
EDIT_MAX_CHANGED = 0.2
#: changed components smaller than this share of the overlap are noise
MIN_REGION = 0.004
#: parallax: dense flow between the aligned images is measured on images at least this size
FLOW_MIN_SIDE = 64
#: textured pixels (gradient, grey levels per pixel) where the flow is trusted
FLOW_TEXTURE = 6.0
#: at most this many flow vectors enter the affine refit
FLOW_POINTS = 1500
#: the flow's refit replaces the model when it moves a corner by more than this (px per 256)
REFINE_PX = 1.0


@dataclass(frozen=True)
class DiffMap:
    overlap: np.ndarray  # (h, w) bool, query pixels the reference covers
    overlap_query: float
    overlap_ref: float
    #: 1 - median local NCC over the textured overlap (0: same structure; ~1: unrelated)
    residual: float
    #: median |q - (gain r + bias)| / query contrast over the overlap (one global gain/bias)
    photometric: float
    changed_area: float
    changed_regions: tuple[tuple[float, float, float, float], ...]
    gain: float
    bias: float
    #: median residual motion (pixels per 256 px of query side) left after the best affine fit
    #: to the dense flow between the aligned images: ~0 for a copy, >= 1 where the scene moved
    #: (parallax of another viewpoint, another moment). 0 when not measured (tiny images).
    parallax: float = 0.0
    #: the reference -> query model the map was measured with (refined by the flow or not)
    matrix: np.ndarray | None = None
    #: pixels of the largest changed region / overlap pixels (one replaced block of content)
    largest_change: float = 0.0


def warp(img: np.ndarray, m: np.ndarray, shape: tuple[int, int], interp: int) -> np.ndarray:
    h, w = shape
    if np.allclose(m[2], [0.0, 0.0, 1.0]):
        return cv2.warpAffine(img, m[:2], (w, h), flags=interp, borderValue=0)
    return cv2.warpPerspective(img, m, (w, h), flags=interp, borderValue=0)


def overlap_masks(m: np.ndarray, qshape: tuple[int, int], rshape: tuple[int, int]
                  ) -> tuple[np.ndarray, float, float]:
    """(query pixels covered by the reference, share of the query, share of the reference)."""
    ones = np.full(rshape, 255, np.uint8)
    cover = warp(ones, m, qshape, cv2.INTER_NEAREST) > 0
    # share of the reference that lands inside the query: the query frame mapped back
    inv = np.linalg.inv(m)
    back = warp(np.full(qshape, 255, np.uint8), inv, rshape, cv2.INTER_NEAREST) > 0
    return cover, float(cover.mean()), float(back.mean())


def _local_ncc(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean normalised cross-correlation in NCC_WIN windows (a local gain/bias fit: robust
    to recolouring) and the textured pixels where it is defined."""
    box = (NCC_WIN, NCC_WIN)
    mq, mr = cv2.boxFilter(q, -1, box), cv2.boxFilter(r, -1, box)
    vq = cv2.boxFilter(q * q, -1, box) - mq * mq
    vr = cv2.boxFilter(r * r, -1, box) - mr * mr
    cov = cv2.boxFilter(q * r, -1, box) - mq * mr
    ncc = cov / np.sqrt(np.maximum(vq, 1.0) * np.maximum(vr, 1.0))
    tex = (vq > NCC_MIN_VAR) | (vr > NCC_MIN_VAR)
    return ncc, tex


def diff_map(query: np.ndarray, ref: np.ndarray, m: np.ndarray,
             picture: np.ndarray | None = None, *, refine: bool = True) -> DiffMap:
    """Warp ``ref`` onto ``query`` with ``m`` (reference -> query) and measure what differs over
    the overlap (inside ``picture``, the query's content region, when given). With ``refine``,
    a model the dense flow corrects by more than REFINE_PX is replaced by the flow's affine
    refit and the map is measured again (a sparse fit from few features is imprecise)."""
    qshape, rshape = query.shape[:2], ref.shape[:2]
    cover, oq, orf = overlap_masks(m, qshape, rshape)
    k = max(1, round(min(qshape) / 128))
    inner = cv2.erode(cover.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
    if picture is not None and (inner & picture).sum() >= 16:
        inner &= picture
    if inner.sum() < 16:
        return DiffMap(cover, oq, orf, 2.0, 1.0, 1.0, (), 1.0, 0.0, 0.0, m)
    sig = BLUR_SIGMA * max(1.0, min(qshape) / 256)
    q = cv2.GaussianBlur(query.astype(np.float32), (0, 0), sig)
    # outside the overlap the warped reference takes the query's pixels: windows (blur, local
    # correlation, flow) that straddle the overlap's edge then see no false edge there
    rw = warp(_antialias(ref, m), m, qshape, cv2.INTER_LINEAR)
    rw[~cover] = query[~cover]
    r = cv2.GaussianBlur(rw.astype(np.float32), (0, 0), sig)
    qv, rv = q[inner], r[inner]
    step = max(1, len(qv) // 4000)
    gain, bias = _gain_bias(qv[::step], rv[::step])
    d = np.abs(q - (gain * r + bias))
    contrast = max(float(qv.std()), 8.0)
    photometric = float(np.median(d[inner])) / contrast
    ncc, tex = _local_ncc(q, r)
    tex_in = tex & inner
    # changed: structure differs where there is structure; grey level differs where flat
    changed = np.where(tex, ncc < CHANGE_NCC, d > max(CHANGE_ABS, CHANGE_REL * contrast)) & inner
    changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    changed = changed.astype(bool) & inner
    if tex_in.sum() >= 16:
        # the residual is the misregistration of what did not change: a pasted, highly
        # textured object must not dominate it (it is counted in the changed area); where
        # most of the structure changed and what is left is a sliver (< KEPT_MIN of the
        # overlap), the residual is over all of it
        kept = tex_in & ~changed
        edit = changed.sum() <= EDIT_MAX_CHANGED * inner.sum()
        enough = max(16.0, min(0.5 * tex_in.sum(), KEPT_MIN * inner.sum()) if edit
                     else 0.5 * tex_in.sum())
        pool = kept if kept.sum() >= enough else tex_in
        residual = 1.0 - float(np.median(ncc[pool]))
    else:  # flat overlap: fall back on the photometric residual
        residual = photometric
    n_in = float(inner.sum())
    boxes, largest = _regions(changed, n_in, qshape)
    # the motion left after alignment is measured where nothing changed: a pasted object or a
    # caption band (counted in the changed area) is no parallax of the picture
    still = inner & ~changed
    flow_in = still if changed.sum() <= EDIT_MAX_CHANGED * inner.sum() else inner
    plx, refit = parallax(q, r, flow_in, m) if min(qshape) >= FLOW_MIN_SIDE else (0.0, None)
    if refine and refit is not None and _moved(m, refit, qshape, rshape) > REFINE_PX:
        better = diff_map(query, ref, refit, picture, refine=False)
        if better.residual <= residual and better.parallax <= plx:
            return better
    return DiffMap(cover, oq, orf, residual, photometric, float(changed.sum()) / n_in, boxes,
                   gain, bias, plx, m, largest)


def _antialias(ref: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The reference low-passed for a model that shrinks it (a linear warp would alias)."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if scale >= 0.8:
        return ref
    return cv2.GaussianBlur(ref, (0, 0), 0.5 / max(scale, 0.05))


def _moved(a: np.ndarray, b: np.ndarray, qshape: tuple[int, int], rshape: tuple[int, int]
           ) -> float:
    """Largest displacement (query px per 256) between two models at the reference corners."""
    c = corners(rshape)
    d = project(a, c) - project(b, c)
    return float(np.linalg.norm(d, axis=1).max()) * 256.0 / max(qshape)


def _edges(img: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Gradient magnitude, scaled to uint8 by its 99th percentile over the overlap: the flow is
    measured on edges, so a colour change that remaps grey levels does not look like motion."""
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1)
    g = cv2.magnitude(gx, gy)
    top = float(np.percentile(g[inner][::7], 99)) if inner.any() else 1.0
    return cv2.convertScaleAbs(g, alpha=255.0 / max(top, 1e-3))


def parallax(q: np.ndarray, r: np.ndarray, inner: np.ndarray, m: np.ndarray
             ) -> tuple[float, np.ndarray | None]:
    """Residual motion after alignment (see ``DiffMap.parallax``), and the affine reference ->
    query model refitted to the dense flow (None when it could not be fitted). ``q``, ``r``:
    blurred float query and reference warped onto it; ``m``: the reference -> query model."""
    eq, er = _edges(q, inner), _edges(r, inner)
    eq[~inner] = er[~inner]
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST).calc(eq, er, None)
    tex = inner & (cv2.magnitude(cv2.Sobel(q, cv2.CV_32F, 1, 0),
                                 cv2.Sobel(q, cv2.CV_32F, 0, 1)) > 8.0 * FLOW_TEXTURE)
    ys, xs = np.nonzero(tex)
    if len(xs) < 50:
        return 0.0, None
    step = max(1, len(xs) // FLOW_POINTS)
    ys, xs = ys[::step], xs[::step]
    dst = np.stack([xs, ys], 1).astype(np.float32)
    moved = dst + flow[ys, xs]
    # the flow points at where each query pixel sits in the warped reference: map it back to the
    # reference and fit one affine reference -> query; what it cannot explain is parallax
    inv = np.linalg.inv(m)
    hom = np.hstack([moved, np.ones((len(moved), 1), np.float32)]) @ inv.T
    src = (hom[:, :2] / hom[:, 2:3]).astype(np.float32)
    a, _ = cv2.estimateAffine2D(src, dst, method=cv2.LMEDS)
    if a is None:
        return 0.0, None
    err = np.linalg.norm(np.hstack([src, np.ones((len(src), 1), np.float32)]) @ a.T - dst, axis=1)
    return float(np.median(err)) * 256.0 / max(q.shape), np.vstack([a, [0.0, 0.0, 1.0]])


def _gain_bias(q: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """q ~ gain * r + bias, least squares refitted on the better half (edits are outliers)."""
    keep = np.ones(len(q), bool)
    gain, bias = 1.0, 0.0
    for _ in range(2):
        rv, qv = r[keep], q[keep]
        var = float(rv.var())
        if var < 1e-6:
            gain, bias = 1.0, float(qv.mean() - rv.mean())
        else:
            gain = float(np.clip(np.mean((rv - rv.mean()) * (qv - qv.mean())) / var, 0.2, 5.0))
            bias = float(qv.mean() - gain * rv.mean())
        res = np.abs(q - (gain * r + bias))
        keep = res <= np.quantile(res, 0.6)
    return gain, bias


def _regions(changed: np.ndarray, n_in: float, shape: tuple[int, int]
             ) -> tuple[tuple[tuple[float, float, float, float], ...], float]:
    """Boxes of the changed components (largest first) and the largest one's share."""
    h, w = shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), connectivity=8)
    largest = float(stats[1:, cv2.CC_STAT_AREA].max()) / n_in if n > 1 else 0.0
    out = []
    for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:16] + 1:
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < MIN_REGION * n_in:
            continue
        out.append((round(x / w, 4), round(y / h, 4), round((x + bw) / w, 4),
                    round((y + bh) / h, 4)))
    return tuple(out), largest
