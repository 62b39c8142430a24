"""The paper's detector: torchvision Faster R-CNN (ResNet-50 FPN, COCO).

Its weights are not in any package here, so this backend is used only where the weights file is
already present: at ``weights_path``, or in the torch hub cache under torchvision's own file name.
It never downloads. ``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors only,
no code); a ``.safetensors`` file works too. GPU timings of this path may use random weights
(``random_init=True``): the FLOPs are the same, the detections are meaningless.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dupstream.core.errors import ModelError, WeightsError
from dupstream.workers.coco import COCO_CLASSES
from dupstream.workers.detector import Detections
from dupstream.workers.weights import WeightsDescriptor

FRCNN_WEIGHTS = {
    "v1": WeightsDescriptor(
        name="fasterrcnn_resnet50_fpn_coco",
        source="torchvision FasterRCNN_ResNet50_FPN_Weights.COCO_V1 "
        "(fasterrcnn_resnet50_fpn_coco-258fb6c6.pth in the torch hub cache, or weights_path)",
        sha256=None,
        sha256_prefix="258fb6c6",
        preprocessing="RGB/255 float, resized inside the model (min side 800, max 1333), "
        "ImageNet mean/std inside the model",
        license="BSD-3-Clause (torchvision)",
    ),
    "v2": WeightsDescriptor(
        name="fasterrcnn_resnet50_fpn_v2_coco",
        source="torchvision FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1 "
        "(fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth in the torch hub cache, or weights_path)",
        sha256=None,
        sha256_prefix="dd69338a",
        preprocessing="RGB/255 float, resized inside the model (min side 800, max 1333), "
        "ImageNet mean/std inside the model",
        license="BSD-3-Clause (torchvision)",
    ),
}
_FILES = {
    "v1": "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
    "v2": "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
}


def weights_file(weights_dir: str | Path, variant: str = "v1") -> Path:
    """The weights of ``variant`` in ``weights_dir``, under torchvision's file name."""
    if variant not in _FILES:
        raise ModelError(f"unknown Faster R-CNN variant {variant!r}")
    return Path(weights_dir) / _FILES[variant]


def _torchvision_label_map() -> np.ndarray:
    """torchvision's 91 COCO category slots -> COCO-80 index (-1 for background / N/A)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    cats = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return np.array([COCO_CLASSES.index(c) if c in COCO_CLASSES else -1 for c in cats])


def build_model(*, variant: str = "v1", conf: float = 0.2):
    """The Faster R-CNN module with random weights (nothing downloaded)."""
    from torchvision.models import detection

    ctor = {
        "v1": detection.fasterrcnn_resnet50_fpn,
        "v2": detection.fasterrcnn_resnet50_fpn_v2,
    }[variant]
    return ctor(weights=None, weights_backbone=None, num_classes=91, box_score_thresh=conf)


class FasterRCNNDetector:
    name = "faster_rcnn"

    def __init__(
        self,
        *,
        variant: str = "v1",
        weights_path: str | Path | None = None,
        random_init: bool = False,
        device: str | None = None,
        half: bool | None = None,
        conf: float = 0.2,
        batch_size: int = 4,
    ) -> None:
        if variant not in FRCNN_WEIGHTS:
            raise ModelError(f"unknown Faster R-CNN variant {variant!r}")
        self.variant = variant
        self.descriptor = FRCNN_WEIGHTS[variant]
        self.weights_path = weights_path
        self.random_init = random_init
        self.conf = conf
        self.batch_size = batch_size
        self._device, self._half = device, half
        self._model = None
        self._lock = threading.Lock()

    def resolve_weights(self) -> Path:
        if self.weights_path is not None:
            path = Path(self.weights_path)
        else:
            import torch

            path = Path(torch.hub.get_dir()) / "checkpoints" / _FILES[self.variant]
        if not path.is_file():
            raise WeightsError(
                f"{self.descriptor.name}: weights not found at {path}; this backend never "
                "downloads: pass weights_path= or place the file in the torch hub cache "
                "(or use the offline default detector 'yolov3_tiny')"
            )
        return self.descriptor.verify(path)

    def load(self):
        with self._lock:
            if self._model is None:
                import torch

                model = build_model(variant=self.variant, conf=self.conf)
                if not self.random_init:
                    path = self.resolve_weights()
                    if path.suffix == ".safetensors":
                        from safetensors.torch import load_file

                        state = load_file(str(path))
                    else:
                        state = torch.load(path, map_location="cpu", weights_only=True)
                    model.load_state_dict(state)
                device = torch.device(
                    self._device or ("cuda" if torch.cuda.is_available() else "cpu")
                )
                half = device.type == "cuda" if self._half is None else self._half
                model = model.eval().to(device)
                if half:
                    model = model.half()
                self.device, self.half = device, half
                self._labels = _torchvision_label_map()
                self._model = model
        return self._model

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        import torch

        model = self.load()
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            dtype = torch.float16 if self.half else torch.float32
            xs = [
                torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1)
                .to(dtype) / 255.0
                for im in chunk
            ]
            try:
                with torch.inference_mode():
                    preds = model(xs)  # one forward for the batch (padded inside)
            except RuntimeError as exc:
                raise ModelError(f"{self.name} inference failed: {exc}") from exc
            for im, p in zip(chunk, preds, strict=True):
                labels = self._labels[p["labels"].cpu().numpy()]
                keep = labels >= 0
                h, w = im.shape[:2]
                out.append(Detections.build(
                    p["boxes"].float().cpu().numpy()[keep], labels[keep],
                    p["scores"].float().cpu().numpy()[keep], width=w, height=h,
                ))
        return out
