"""Image-level descriptors: what kind of picture this is (a photo, a digit, a CCTV frame, a
screenshot), so a learned decision can tell domains apart without being told.

Eight numbers per image, cheap (one pass over a <= 128-px grey/colour thumbnail), stable names.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

NAMES = ("log_side", "aspect", "colourfulness", "edge_density", "entropy", "mean", "contrast",
         "flat_share")
SIDE = 128


def image_descriptors(rgb: np.ndarray) -> np.ndarray:
    """(8,) float32 in ``NAMES`` order."""
    img = np.asarray(rgb)
    h, w = img.shape[:2]
    s = min(1.0, SIDE / max(h, w))
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA) if s < 1.0 else img
    if small.ndim == 2:
        small = np.stack([small] * 3, axis=-1)
    f = small.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    # Hasler & Suesstrunk colourfulness, / 100
    colourful = (math.hypot(float(rg.std()), float(yb.std()))
                 + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))) / 100.0
    grey = cv2.cvtColor(small.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, 50, 150) if min(grey.shape) >= 3 else np.zeros_like(grey)
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum()) / 8.0
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0) if min(grey.shape) >= 3 else np.zeros(grey.shape)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1) if min(grey.shape) >= 3 else np.zeros(grey.shape)
    flat = float(np.mean(np.hypot(gx, gy) < 8.0))
    return np.array([
        math.log(max(h, w)) / 10.0,
        math.log(w / h),
        colourful,
        float(np.mean(edges > 0)),
        entropy,
        float(grey.mean()) / 255.0,
        float(grey.std()) / 128.0,
        flat,
    ], np.float32)
