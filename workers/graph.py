"""The object graph of one image: nodes = top-K objects, edges = spatial proximity + priors.

Nodes: the (already top-K) ``Objects`` of the image. Node features (``NODE_DIM`` = 16, besides
the class index that the GCN embeds): confidence, box centre x/y, width, height, relative size,
log aspect ratio, and the 9-bin colour attribute.

Edges (undirected, stored both ways), between objects i != j when
  * their boxes overlap: IoU > ``iou_min`` (0.1), or
  * their centres are close: distance < ``centre_max`` (0.3 of the image side), or
  * their classes co-occur a priori: ``prior[ci, cj] >= prior_min`` (0.25).
Edge weight: 1 for a spatial edge, else the prior value. ``edge_kind`` says which rule fired
(bit 1: spatial, bit 2: prior).

Co-occurrence priors (``cooccurrence_prior``): we cannot obtain COCO's annotations offline, so the
80x80 prior is built from what the project can obtain and is stored with the GCN weights:
  * structure from the COCO category list itself: the same class 1.0, the same official
    supercategory 0.5 (kitchen items with kitchen items, animals with animals, ...);
  * evidence counted from detections: the Jaccard co-occurrence (images with both / images with
    either) of class pairs over the detections of the training images (``dupstream train`` runs
    the shipped YOLOv3-tiny over its source photos), kept where at least ``min_support`` images
    have both. The element-wise maximum of the two is the prior.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dupstream.workers.coco import NUM_CLASSES, SUPERCATEGORY
from dupstream.workers.semantic import Objects

NODE_DIM = 16
SPATIAL, PRIOR = 1, 2


@dataclass(frozen=True)
class ObjectGraph:
    x: np.ndarray  # (K, NODE_DIM) float32
    labels: np.ndarray  # (K,) int64
    edge_index: np.ndarray  # (2, E) int64, both directions
    edge_weight: np.ndarray  # (E,) float32
    edge_kind: np.ndarray  # (E,) uint8: SPATIAL | PRIOR bits

    @property
    def num_nodes(self) -> int:
        return len(self.labels)


def node_features(objects: Objects) -> np.ndarray:
    b = objects.boxes.astype(np.float32)
    wh = np.clip(b[:, 2:] - b[:, :2], 1e-4, 1.0)
    centre = (b[:, :2] + b[:, 2:]) / 2
    aspect = np.clip(np.log(wh[:, 0] / wh[:, 1]), -3, 3) / 3
    feats = np.concatenate(
        [objects.scores[:, None], centre, wh, objects.sizes[:, None], aspect[:, None],
         objects.colours],
        axis=1,
    ).astype(np.float32)
    return feats.reshape(-1, NODE_DIM)


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def build_graph(
    objects: Objects,
    prior: np.ndarray | None = None,
    *,
    k: int | None = None,
    iou_min: float = 0.1,
    centre_max: float = 0.3,
    prior_min: float = 0.25,
) -> ObjectGraph:
    """The graph of ``objects`` (optionally capped again at ``k`` nodes, in their given order)."""
    if k is not None and len(objects) > k:
        objects = Objects(objects.boxes[:k], objects.labels[:k], objects.scores[:k],
                          objects.colours[:k])
    n = len(objects)
    x = node_features(objects)
    if n < 2:
        empty = np.zeros((2, 0), np.int64)
        return ObjectGraph(x, objects.labels.copy(), empty, np.zeros(0, np.float32),
                           np.zeros(0, np.uint8))
    boxes = objects.boxes.astype(np.float64)
    iou = pairwise_iou(boxes)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = np.linalg.norm(centres[:, None] - centres[None, :], axis=2)
    spatial = (iou > iou_min) | (dist < centre_max)
    if prior is not None:
        p = prior[objects.labels[:, None], objects.labels[None, :]]
    else:
        p = np.zeros((n, n))
    by_prior = p >= prior_min
    off_diag = ~np.eye(n, dtype=bool)
    src, dst = np.nonzero((spatial | by_prior) & off_diag)
    kind = (spatial[src, dst] * SPATIAL + by_prior[src, dst] * PRIOR).astype(np.uint8)
    weight = np.where(spatial[src, dst], 1.0, p[src, dst]).astype(np.float32)
    return ObjectGraph(
        x=x,
        labels=objects.labels.copy(),
        edge_index=np.stack([src, dst]).astype(np.int64),
        edge_weight=weight,
        edge_kind=kind,
    )


def structural_prior() -> np.ndarray:
    sup = np.asarray(SUPERCATEGORY)
    prior = np.where(sup[:, None] == sup[None, :], 0.5, 0.0)
    np.fill_diagonal(prior, 1.0)
    return prior.astype(np.float32)


def cooccurrence_prior(label_sets: Iterable[Iterable[int]], *, min_support: int = 2) -> np.ndarray:
    """80x80 prior in [0, 1]: max(COCO-structure prior, Jaccard co-occurrence of detections)."""
    sets = [sorted(set(int(c) for c in s)) for s in label_sets]
    present = np.zeros((len(sets), NUM_CLASSES), np.float64)
    for row, s in enumerate(sets):
        present[row, s] = 1.0
    both = present.T @ present
    count = np.diag(both)
    either = count[:, None] + count[None, :] - both
    empirical = np.where((both >= min_support) & (either > 0), both / np.maximum(either, 1), 0.0)
    np.fill_diagonal(empirical, 0.0)
    return np.maximum(structural_prior(), empirical).astype(np.float32)
