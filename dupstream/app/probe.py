"""Facts about image files that the grouping weighs: size on disk and in pixels, format, time, and
how *flat* a part of the picture is (solid or blurred fills are what borders, caption bands and
screenshot frames add; photographs rarely have them). PIL and numpy only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

#: formats that keep every pixel: a lossless file beside a JPEG of the same picture is the source
LOSSLESS = {"PNG", "TIFF", "BMP", "PPM", "GIF"}
#: |difference| to a neighbour, in 8-bit grey levels, under which a pixel counts as flat
FLAT_STEP = 3
#: pictures are looked at with their longer side scaled to this
LOOK_SIDE = 256
#: width of the outer ring examined for borders and frames (share of the shorter side)
RING = 0.04


@dataclass(frozen=True)
class FileFacts:
    path: str
    width: int = 0
    height: int = 0
    bytes: int = 0
    mtime: float = 0.0
    format: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def lossless(self) -> bool:
        return self.format in LOSSLESS


def file_facts(path: str) -> FileFacts:
    """Size, format and modification time (the image header only; an unreadable file: zeros)."""
    try:
        st = os.stat(path)
    except OSError:
        return FileFacts(path)
    try:
        with Image.open(path) as im:
            w, h, fmt = im.width, im.height, im.format
    except (OSError, ValueError, Image.DecompressionBombError):
        w, h, fmt = 0, 0, None
    return FileFacts(path, w, h, st.st_size, st.st_mtime, fmt)


@lru_cache(maxsize=64)
def _grey(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("L", (LOOK_SIDE, LOOK_SIDE))
            im = im.convert("L")
            im.thumbnail((LOOK_SIDE, LOOK_SIDE))
            return np.asarray(im, dtype=np.int16)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _flat_share(g: np.ndarray) -> float:
    if g.size == 0 or min(g.shape) < 2:
        return 0.0
    dx = np.abs(np.diff(g, axis=1))[:-1, :]
    dy = np.abs(np.diff(g, axis=0))[:, :-1]
    return float(np.mean(np.maximum(dx, dy) < FLAT_STEP))


class Looker:
    """How flat parts of the files are (0: all texture, 1: a solid fill)."""

    def ring(self, path: str) -> float | None:
        """The outer ring (borders, letterboxes, screenshot frames)."""
        g = _grey(path)
        if g is None:
            return None
        h, w = g.shape
        r = max(2, int(round(min(h, w) * RING)))
        parts = [g[:r, :], g[-r:, :], g[:, :r].T, g[:, -r:].T]
        return float(np.mean([_flat_share(p) for p in parts]))

    def region(self, path: str, box: list[float] | tuple[float, ...]) -> float | None:
        """A box ``[x0, y0, x1, y1]`` in fractions of the picture (caption bands, stickers)."""
        g = _grey(path)
        if g is None:
            return None
        h, w = g.shape
        x0, y0, x1, y1 = box
        sub = g[int(y0 * h) : max(int(y0 * h) + 2, int(np.ceil(y1 * h))),
                int(x0 * w) : max(int(x0 * w) + 2, int(np.ceil(x1 * w)))]
        return _flat_share(sub)
