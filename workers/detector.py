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


@runtime_checkable
class Detector(Protocol):
    """Images (RGB uint8, any size) in, one ``Detections`` per image out, in order."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


DETECTORS = ("yolov3_tiny", "yolov3_tiny_cv2", "faster_rcnn", "none")


def build_detector(kind: str = "yolov3_tiny", **kwargs) -> Detector | None:
    """The backend named ``kind`` (see ``DETECTORS``); ``"none"`` gives no detector (visual only).

    Keyword arguments go to the backend's constructor. ``weights_dir`` (None: the packaged
    weights) is the folder holding the backend's files under their usual names
    (``yolov3-tiny.cfg`` + ``yolov3-tiny.weights``; torchvision's ``.pth`` name for Faster
    R-CNN); they are checked against their sha256 when loaded. Nothing is loaded here.
    """
    if kind == "none":
        return None
    if kind == "yolov3_tiny":
        from dupstream.workers.yolo import TorchYoloDetector

        return TorchYoloDetector(**kwargs)
    if kind == "yolov3_tiny_cv2":
        from dupstream.workers.yolo import OpenCVYoloDetector

        return OpenCVYoloDetector(**kwargs)
    if kind == "faster_rcnn":
        from dupstream.workers.frcnn import FasterRCNNDetector, weights_file

        weights_dir = kwargs.pop("weights_dir", None)
        if weights_dir is not None and kwargs.get("weights_path") is None:
            kwargs["weights_path"] = weights_file(weights_dir, kwargs.get("variant", "v1"))
        return FasterRCNNDetector(**kwargs)
    raise ConfigError(f"unknown detector {kind!r}; known: {', '.join(DETECTORS)}")
