"""The product's rule for two frames of one static camera: what changed between them.

A platform's CCTV feed and a photographer's tripod burst both send frames of one camera a
moment apart. The product's meaning (README "Product semantics", issue 13's CCTV meaning): two
such frames where nothing solid changed are one picture - a copy, as ``tree.avi``'s frames
always were in the evaluation; a frame where a solid region appeared, vanished or moved (an
object entering) is another moment - not a copy; in between the rule does not decide and the
pair is left out of fitting and scoring (kept and reported as ambiguous).

``scene_change`` measures it; ``static_frame_label`` applies the thresholds (the shipped decision
recipe's ``cctv_static_max`` / ``cctv_noise_max`` / ``cctv_changed_min``, the same defaults).
The training data (``lab.decision_data``), the COCO-style evaluation and the retrieval benchmark
use this one rule for every pair of static-camera frames.
"""

from __future__ import annotations

import numpy as np

#: a copy: the solid changed share below this and ...
STATIC_MAX = 0.005
#: ... the changed share (sensor noise, edges of shaken pixels) below this
NOISE_MAX = 0.03
#: not a copy: the solid changed share at least this (an object entered, left or moved)
CHANGED_MIN = 0.03


def _grey(rgb: np.ndarray, side: int) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = g.shape
    k = side / max(h, w)
    return cv2.resize(g, (max(1, round(w * k)), max(1, round(h * k))),
                      interpolation=cv2.INTER_AREA)


def scene_change(a: np.ndarray, b: np.ndarray, *, side: int = 128, level: float = 30.0,
                 max_shift: float = 0.1) -> tuple[float, float]:
    """What changed between two frames of one camera, camera motion left out: (changed, solid).

    ``b``'s ``side``-px grey thumbnail is aligned onto ``a``'s by their global shift (phase
    correlation; a shift over ``max_shift`` of the side is not trusted and not applied) and a
    gain / bias fit (refitted without the pixels that changed); ``changed``: the share of the
    overlap whose residual exceeds ``level``;
    ``solid``: the same after a 3x3 opening, which removes the one-pixel edges a sub-pixel shake
    and sensor noise leave - what is left is a region that appeared, vanished or moved (an
    object entering the scene). Frames of different sizes are compared at ``a``'s size.
    """
    import cv2

    ga = _grey(a, side)
    gb = cv2.resize(_grey(b, side), ga.shape[::-1], interpolation=cv2.INTER_AREA)
    window = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_32F)
    # (copies: OpenCV applies the window to its inputs in place)
    (dx, dy), _ = cv2.phaseCorrelate(ga.copy(), gb.copy(), window)
    if max(abs(dx), abs(dy)) > max_shift * max(ga.shape):
        dx = dy = 0.0
    shift = np.float32([[1, 0, -dx], [0, 1, -dy]])
    gb = cv2.warpAffine(gb, shift, ga.shape[::-1], flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
    m = int(np.ceil(max(abs(dx), abs(dy)))) + 1  # the border the shift exposed
    pa, pb = ga[m:-m, m:-m].ravel(), gb[m:-m, m:-m].ravel()
    design = np.stack([pb, np.ones_like(pb)], axis=1)
    keep = np.ones(len(pa), bool)
    for _ in range(2):  # refit without what changed: a large object must not bend the fit
        coef, *_ = np.linalg.lstsq(design[keep], pa[keep], rcond=None)
        residual = np.abs(pa - design @ coef)
        keep = residual <= level
        if keep.sum() < 0.5 * len(pa):
            break
    mask = (residual > level).reshape(ga[m:-m, m:-m].shape).astype(np.uint8)
    solid = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return float(mask.mean()), float(solid.mean())


def static_frame_label(a: np.ndarray, b: np.ndarray, *, static_max: float = STATIC_MAX,
                       noise_max: float = NOISE_MAX,
                       changed_min: float = CHANGED_MIN) -> int | None:
    """1 (a copy: nothing solid changed), 0 (a solid region changed: another moment) or None
    (ambiguous: the rule does not decide) for two frames of one static camera."""
    changed, solid = scene_change(a, b)
    if solid >= changed_min:
        return 0
    if solid < static_max and changed < noise_max:
        return 1
    return None
