"""The paper's semantic embedding: what is in the picture, where, how big, and what colour.

From one image's detections:

1. ``select_objects``: the top-K objects by confidence x relative size (relative size = square
   root of box area / image area, i.e. the object's linear size as a share of the picture), with
   boxes in [0, 1] image coordinates and a colour attribute per object;
2. ``semantic_vector``: a fixed-length (``SEMANTIC_DIM`` = 476) non-negative unit vector, the
   concatenation of four L2-normalised blocks, each scaled by the square root of its share of the
   cosine (``BLOCK_SHARES``):

   * class histogram (80): sum over objects of confidence x relative size, per COCO class;
   * spatial pyramid (12 supercategories x 21 cells = 252): each object's confidence spread over
     the cells of 1x1, 2x2 and 4x4 grids in proportion to how much of its box lies in each cell;
   * sizes (12 supercategories x 3 = 36): confidence per size bin (relative size < 0.1, < 0.3,
     larger) and supercategory;
   * colour attributes (12 supercategories x 9 = 108): per supercategory, the confidence-weighted
     mean of its objects' 9-bin colour histograms (``COLOUR_NAMES``).

An image with no objects has the zero vector; callers treat it as "no semantic evidence".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dupstream.workers.coco import COCO_CLASSES, NUM_CLASSES, NUM_SUPERCATEGORIES, SUPERCATEGORY
from dupstream.workers.detector import Detections

COLOUR_NAMES = ("red", "yellow", "green", "cyan", "blue", "magenta", "black", "grey", "white")
NUM_COLOURS = len(COLOUR_NAMES)
PYRAMID_LEVELS = (1, 2, 4)
PYRAMID_CELLS = sum(n * n for n in PYRAMID_LEVELS)
SIZE_EDGES = (0.1, 0.3)
NUM_SIZES = len(SIZE_EDGES) + 1
BLOCK_DIMS = {
    "classes": NUM_CLASSES,
    "pyramid": NUM_SUPERCATEGORIES * PYRAMID_CELLS,
    "sizes": NUM_SUPERCATEGORIES * NUM_SIZES,
    "colours": NUM_SUPERCATEGORIES * NUM_COLOURS,
}
#: each block's share of the cosine of two semantic vectors (when both blocks are non-zero)
BLOCK_SHARES = {"classes": 0.4, "pyramid": 0.3, "sizes": 0.1, "colours": 0.2}
SEMANTIC_DIM = sum(BLOCK_DIMS.values())
DEFAULT_TOP_K = 12
_SUPER = np.asarray(SUPERCATEGORY, np.int64)


@dataclass(frozen=True)
class Objects:
    """The top-K objects of one image: small, plain arrays (cheap to keep per indexed image)."""

    boxes: np.ndarray  # (K, 4) float32, x1 y1 x2 y2 as fractions of width / height
    labels: np.ndarray  # (K,) int64, COCO-80
    scores: np.ndarray  # (K,) float32
    colours: np.ndarray  # (K, NUM_COLOURS) float32, each row sums to 1

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return [COCO_CLASSES[int(c)] for c in self.labels]

    @property
    def sizes(self) -> np.ndarray:
        """Relative (linear) size of each object: sqrt(box area / image area)."""
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0.0, 1.0)
        return np.sqrt(wh[:, 0] * wh[:, 1]).astype(np.float32)

    @classmethod
    def empty(cls) -> Objects:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            labels=np.zeros((0,), np.int64),
            scores=np.zeros((0,), np.float32),
            colours=np.zeros((0, NUM_COLOURS), np.float32),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"boxes": self.boxes, "labels": self.labels, "scores": self.scores,
                "colours": self.colours}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> Objects:
        return cls(
            boxes=np.asarray(d["boxes"], np.float32).reshape(-1, 4),
            labels=np.asarray(d["labels"], np.int64).reshape(-1),
            scores=np.asarray(d["scores"], np.float32).reshape(-1),
            colours=np.asarray(d["colours"], np.float32).reshape(-1, NUM_COLOURS),
        )


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """9-bin colour-name histogram of an RGB patch: 6 hues (saturated pixels), black/grey/white."""
    if rgb.size == 0:
        return np.full(NUM_COLOURS, 1.0 / NUM_COLOURS, np.float32)
    h, w = rgb.shape[:2]
    scale = min(1.0, 32.0 / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3)
    hue = hsv[:, 0].astype(np.float32) * (360.0 / 256.0)
    sat = hsv[:, 1].astype(np.float32) / 255.0
    val = hsv[:, 2].astype(np.float32) / 255.0
    chromatic = (sat > 0.25) & (val > 0.2)
    bins = np.where(
        chromatic,
        ((hue + 30.0) % 360.0 // 60.0).astype(np.int64),  # red centred on 0 degrees
        np.where(val < 0.2, 6, np.where(val > 0.8, 8, 7)),
    )
    hist = np.bincount(bins, minlength=NUM_COLOURS).astype(np.float32)
    return hist / hist.sum()


def select_objects(rgb: np.ndarray, dets: Detections, *, k: int = DEFAULT_TOP_K) -> Objects:
    """Top-``k`` objects by confidence x relative size, with their colour attributes."""
    if len(dets) == 0 or k <= 0:
        return Objects.empty()
    w, h = float(dets.width), float(dets.height)
    boxes = dets.boxes / np.array([w, h, w, h], np.float32)
    boxes = np.clip(boxes, 0.0, 1.0)
    wh = boxes[:, 2:] - boxes[:, :2]
    size = np.sqrt(wh[:, 0] * wh[:, 1])
    order = np.argsort(-(dets.scores * size), kind="stable")[:k]
    colours = []
    ih, iw = rgb.shape[:2]
    for i in order:
        x1, y1, x2, y2 = boxes[i] * np.array([iw, ih, iw, ih])
        patch = rgb[int(y1) : max(int(y1) + 1, int(np.ceil(y2))),
                    int(x1) : max(int(x1) + 1, int(np.ceil(x2)))]
        colours.append(colour_histogram(patch))
    return Objects(
        boxes=np.ascontiguousarray(boxes[order], np.float32),
        labels=np.ascontiguousarray(dets.labels[order]),
        scores=np.ascontiguousarray(dets.scores[order], np.float32),
        colours=np.asarray(colours, np.float32).reshape(-1, NUM_COLOURS),
    )


def _pyramid(objects: Objects) -> np.ndarray:
    out = np.zeros((NUM_SUPERCATEGORIES, PYRAMID_CELLS), np.float64)
    sup = _SUPER[objects.labels]
    col = 0
    for n in PYRAMID_LEVELS:
        edges = np.linspace(0.0, 1.0, n + 1)
        for gy in range(n):
            for gx in range(n):
                ix = np.clip(np.minimum(objects.boxes[:, 2], edges[gx + 1])
                             - np.maximum(objects.boxes[:, 0], edges[gx]), 0, None)
                iy = np.clip(np.minimum(objects.boxes[:, 3], edges[gy + 1])
                             - np.maximum(objects.boxes[:, 1], edges[gy]), 0, None)
                wh = np.maximum(objects.boxes[:, 2:] - objects.boxes[:, :2], 1e-6)
                share = ix * iy / (wh[:, 0] * wh[:, 1])
                np.add.at(out[:, col], sup, objects.scores * share / len(PYRAMID_LEVELS))
                col += 1
    return out.ravel()


def semantic_blocks(objects: Objects) -> dict[str, np.ndarray]:
    """The four raw (un-normalised) blocks of the semantic embedding."""
    blocks = {name: np.zeros(dim, np.float64) for name, dim in BLOCK_DIMS.items()}
    if len(objects) == 0:
        return blocks
    conf = objects.scores.astype(np.float64)
    size = objects.sizes.astype(np.float64)
    sup = _SUPER[objects.labels]
    np.add.at(blocks["classes"], objects.labels, conf * size)
    blocks["pyramid"] = _pyramid(objects)
    size_bin = np.searchsorted(np.asarray(SIZE_EDGES), size, side="right")
    np.add.at(blocks["sizes"], sup * NUM_SIZES + size_bin, conf)
    colours = np.zeros((NUM_SUPERCATEGORIES, NUM_COLOURS), np.float64)
    np.add.at(colours, sup, conf[:, None] * objects.colours)
    blocks["colours"] = colours.ravel()
    return blocks


def semantic_vector(objects: Objects) -> np.ndarray:
    """The fixed-length semantic embedding (``SEMANTIC_DIM``), unit norm, or zeros if empty."""
    parts = []
    for name, block in semantic_blocks(objects).items():
        norm = np.linalg.norm(block)
        unit = block / norm if norm > 0 else block
        parts.append(unit * np.sqrt(BLOCK_SHARES[name]))
    v = np.concatenate(parts)
    norm = np.linalg.norm(v)
    return (v / norm if norm > 0 else v).astype(np.float32)
