"""The shape every evaluation data set has, and the source-level 60/20/20 split.

A data set is a list of images (each with the *source* it was made from, its split and its
*cluster*: images of one cluster are copies of each other) and labelled pairs of image indices.
A source belongs to exactly one split and a pair never joins two splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class EvalImage:
    rgb: np.ndarray  # HxWx3 uint8
    source: str  # the real image (or video segment) it comes from: the unit of the split
    cluster: str  # copies of one picture share a cluster (relevance for the ranking metric)
    split: str
    note: str = ""  # how it was made ("original", an edit name, "frame 12", ...)


@dataclass
class EvalPair:
    a: int  # reference image index
    b: int  # query image index
    label: int  # 1 = b is a copy of a
    kind: str  # edit name for positives, negative kind ("different", "same_class", ...)


@dataclass
class EvalSet:
    name: str
    images: list[EvalImage] = field(default_factory=list)
    pairs: list[EvalPair] = field(default_factory=list)
    domain: str = "photos"  # decision domain (per-domain cut-offs)
    info: dict = field(default_factory=dict)  # what was used: sources, sizes, seeds

    def add(self, rgb: np.ndarray, *, source: str, cluster: str, split: str, note: str) -> int:
        self.images.append(EvalImage(np.ascontiguousarray(rgb), source, cluster, split, note))
        return len(self.images) - 1

    def pair(self, a: int, b: int, label: int, kind: str) -> None:
        sa, sb = self.images[a].split, self.images[b].split
        if sa != sb:
            raise ValueError(f"pair crosses splits: {sa} / {sb}")
        self.pairs.append(EvalPair(a, b, int(label), kind))

    def pair_split(self, p: EvalPair) -> str:
        return self.images[p.a].split

    def arrays(self) -> dict[str, np.ndarray]:
        """Pair columns: a, b, label, split (str), kind (str)."""
        return {
            "a": np.asarray([p.a for p in self.pairs], np.int64),
            "b": np.asarray([p.b for p in self.pairs], np.int64),
            "label": np.asarray([p.label for p in self.pairs], np.int64),
            "split": np.asarray([self.pair_split(p) for p in self.pairs]),
            "kind": np.asarray([p.kind for p in self.pairs]),
        }

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        cols = self.arrays()
        for s in SPLITS:
            m = cols["split"] == s
            out[s] = {
                "sources": len({im.source for im in self.images if im.split == s}),
                "images": sum(im.split == s for im in self.images),
                "pairs": int(m.sum()),
                "positives": int(cols["label"][m].sum()),
            }
        return out


def split_groups(groups: list[str], *, seed: int, fractions=(0.6, 0.2, 0.2)) -> dict[str, str]:
    """group -> split, a seeded permutation cut 60/20/20 (every split non-empty when possible)."""
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n = len(order)
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * fractions[1]))
    if n >= 3:
        n_train = min(max(n_train, 1), n - 2)
        n_val = min(max(n_val, 1), n - n_train - 1)
    out = {}
    for i, g in enumerate(order):
        out[g] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return out


def grid_tiles(rgb: np.ndarray, rows: int, cols: int) -> list[tuple[int, int, np.ndarray]]:
    """(row, column, tile view) of ``rgb`` cut into a ``rows`` x ``cols`` grid of equal tiles
    (the remainder pixels at the right and bottom left out), row by row."""
    h, w = rgb.shape[:2]
    th, tw = h // rows, w // cols
    return [(r, c, rgb[r * th : (r + 1) * th, c * tw : (c + 1) * tw])
            for r in range(rows) for c in range(cols)]


def fit_max_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    f = max_side / max(h, w)
    if f >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))),
                      interpolation=cv2.INTER_AREA)
