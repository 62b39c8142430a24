"""Object detection boundary: the ``Detector`` protocol, its output, and the backend factory.

Every backend maps its labels into the COCO-80 space of ``workers.coco`` (0-based) and returns
boxes in pixels of the image it was given (``x1, y1, x2, y2``). Backends load their weights
lazily (``load()``), check them against a ``WeightsDescriptor``, and run one forward per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dupstream.core.errors import ConfigError
from dupstream.workers.coco import COCO_CLASSES


@dataclass(frozen=True)
class Detections:
    """Objects found in one image, sorted by descending score."""

    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in pixels of the input image
    labels: np.ndarray  # (N,) int64, COCO-80 0-based
    scores: np.ndarray  # (N,) float32 in [0, 1]
    width: int
    height: int

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,):
            raise ValueError("boxes, labels and scores must describe the same objects")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return [COCO_CLASSES[int(c)] for c in self.labels]

    @classmethod
    def empty(cls, width: int, height: int) -> Detections:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            labels=np.zeros((0,), np.int64),
            scores=np.zeros((0,), np.float32),
            width=width,
            height=height,
        )

    @classmethod
    def build(cls, boxes, labels, scores, *, width: int, height: int) -> Detections:
        """Clip boxes to the image, drop empty ones, sort by score."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        labels = np.asarray(labels, np.int64).reshape(-1)
        scores = np.asarray(scores, np.float32).reshape(-1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        order = np.argsort(-scores[keep], kind="stable")
        return cls(
            boxes=np.ascontiguousarray(boxes[keep][order]),
            labels=np.ascontiguousarray(labels[keep][order]),
            scores=np.ascontiguousarray(scores[keep][order]),
            width=int(width),
            height=int(height),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (safetensors / npz): ``boxes``, ``labels``, ``scores``, ``size``."""
        return {
            "boxes": self.boxes,
            "labels": self.labels,
            "scores": self.scores,
            "size": np.array([self.width, self.height], np.int64),
        }

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> Detections:
        w, h = (int(v) for v in d["size"])
        return cls(
            boxes=np.asarray(d["boxes"], np.float32).reshape(-1, 4),
            labels=np.asarray(d["labels"], np.int64),
            scores=np.asarray(d["scores"], np.float32),
            width=w,
            height=h,
        )


@dataclass(frozen=True)
class Agreement:
    """How far one detector's output holds against a reference's on the same image."""

    #: IoU of each confident reference object with its same-label match (greedy, best IoU first)
    ious: tuple[float, ...]
    #: confident reference objects without a same-label match at ``min_iou``
    missing: tuple[str, ...]
    #: confident objects of the other detector without a same-label reference match
    extra: tuple[str, ...]
    #: largest score difference over the matched pairs
    max_score_diff: float

    @property
    def holds(self) -> bool:
        return not self.missing and not self.extra


def agreement(ref: Detections, other: Detections, *, min_score: float = 0.0,
              min_iou: float = 0.9) -> Agreement:
    """Compare ``other`` with ``ref``: every object scoring at least ``min_score`` on either side
    must have a same-label partner on the other side (any score) with IoU >= ``min_iou``.
    Objects below ``min_score`` on both sides are the tolerated band near the threshold."""
    iou = box_iou(ref.boxes, other.boxes)
    iou[ref.labels[:, None] != other.labels[None, :]] = 0.0
    pairs: list[tuple[int, int]] = []
    got_r: set[int] = set()
    got_c: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = (int(v) for v in np.unravel_index(flat, iou.shape))
        if iou[r, c] < min_iou:
            break
        if r not in got_r and c not in got_c:
            pairs.append((r, c))
            got_r.add(r)
            got_c.add(c)
    missing = tuple(ref.names[i] for i in range(len(ref))
                    if i not in got_r and ref.scores[i] >= min_score)
    extra = tuple(other.names[j] for j in range(len(other))
                  if j not in got_c and other.scores[j] >= min_score)
    return Agreement(
        ious=tuple(float(iou[r, c]) for r, c in pairs if ref.scores[r] >= min_score),
        missing=missing, extra=extra,
        max_score_diff=max((abs(float(ref.scores[r] - other.scores[c])) for r, c in pairs),
                           default=0.0))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of two ``(N, 4)`` / ``(M, 4)`` x1 y1 x2 y2 box arrays."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@runtime_checkable
class Detector(Protocol):
    """Images (RGB uint8, any size) in, one ``Detections`` per image out, in order."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


DETECTORS = ("yolov3_tiny", "yolov3_tiny_cv2", "yolov3_tiny_ort", "yolov3_tiny_ort_int8",
             "faster_rcnn", "none")
#: the fastest path whose boxes equal the torch module's on the golden photos (ONNX Runtime
#: fp32: the same boxes to 1e-5 at ~2x the speed on CPU; docs/PERFORMANCE.md)
DEFAULT_DETECTOR = "yolov3_tiny_ort"
#: options only the ONNX Runtime kinds have
ORT_ONLY = ("threads", "cache_dir", "spinning")


def build_detector(kind: str = DEFAULT_DETECTOR, **kwargs) -> Detector | None:
    """The backend named ``kind`` (see ``DETECTORS``); ``"none"`` gives no detector (visual only).

    Keyword arguments go to the backend's constructor. ``weights_dir`` (None: the packaged
    weights) is the folder holding the backend's files under their usual names
    (``yolov3-tiny.cfg`` + ``yolov3-tiny.weights``; torchvision's ``.pth`` name for Faster
    R-CNN); they are checked against their sha256 when loaded. Nothing is loaded here.

    The YOLOv3-tiny kinds take ``size`` (input side, default 416); the ONNX Runtime kinds
    (``yolov3_tiny_ort``: fp32, ``yolov3_tiny_ort_int8``: int8) also ``threads`` (intra-op,
    default 1) and ``cache_dir`` (where the exported file lives; default ``onnx/`` next to the
    darknet files; exported on first load when missing, checked against its manifest's sha256).
    Those two (``ORT_ONLY``) are dropped for the other kinds, so one set of detector settings
    serves every kind.
    """
    if kind == "none":
        return None
    if not kind.startswith("yolov3_tiny_ort"):  # ONNX Runtime options; the others have none
        for key in ORT_ONLY:
            kwargs.pop(key, None)
    if kind == "yolov3_tiny":
        from dupstream.workers.yolo import TorchYoloDetector

        return TorchYoloDetector(**kwargs)
    if kind == "yolov3_tiny_cv2":
        from dupstream.workers.yolo import OpenCVYoloDetector

        return OpenCVYoloDetector(**kwargs)
    if kind in ("yolov3_tiny_ort", "yolov3_tiny_ort_int8"):
        from dupstream.workers.yolo_onnx import OnnxYoloDetector

        precision = "int8" if kind.endswith("_int8") else "fp32"
        return OnnxYoloDetector(precision=precision, **kwargs)
    if kind == "faster_rcnn":
        from dupstream.workers.frcnn import FasterRCNNDetector, weights_file

        weights_dir = kwargs.pop("weights_dir", None)
        kwargs.pop("size", None)  # torchvision's transform sizes the input itself
        if weights_dir is not None and kwargs.get("weights_path") is None:
            kwargs["weights_path"] = weights_file(weights_dir, kwargs.get("variant", "v1"))
        return FasterRCNNDetector(**kwargs)
    raise ConfigError(f"unknown detector {kind!r}; known: {', '.join(DETECTORS)}")
