"""Per-image features: everything the comparison needs, computed once per image, in batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dupstream.core.errors import DupstreamError, ModelError
from dupstream.workers.decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, decode_image
from dupstream.workers.detector import Detections, Detector
from dupstream.workers.embedder import Embedder
from dupstream.workers.hashing import PDQ, content_hash, pdq_hash
from dupstream.workers.semantic import DEFAULT_TOP_K, Objects, select_objects, semantic_vector

if TYPE_CHECKING:
    from dupstream.workers.gcn import GraphEncoder

THUMB = 64


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


@dataclass
class ImageFeatures:
    digest: str
    pdq: PDQ
    vector: np.ndarray  # (dim,) float32, unit norm
    width: int
    height: int
    thumb: np.ndarray  # (THUMB, THUMB) uint8 luminance: where two copies differ
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: semantic part, all optional. ``objects`` is None when no detector ran (or it failed on
    #: this image), ``Objects.empty()`` when it ran and found nothing.
    objects: Objects | None = None
    semantic: np.ndarray | None = None  # (SEMANTIC_DIM,) float32, unit norm or zeros
    graph: np.ndarray | None = None  # (gcn dim,) float32, unit norm or zeros


class FeatureExtractor:
    """Decode, hash, embed and (optionally) detect objects in a batch of image blobs; one call
    per model per batch.

    Per-image failures (bad bytes, bombs) come back in place as ``DupstreamError`` values so the
    rest of the batch continues. A detector failure does not fail the image: its semantic fields
    stay ``None`` and the comparison falls back to visual evidence.
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        detector: Detector | None = None,
        graph_encoder: GraphEncoder | None = None,
        top_k: int = DEFAULT_TOP_K,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        self.embedder = embedder
        self.detector = detector
        self.graph_encoder = graph_encoder
        self.top_k = top_k
        self.max_pixels = max_pixels
        self.max_side = max_side

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray | DupstreamError]:
        out: list[np.ndarray | DupstreamError] = []
        for data in blobs:
            try:
                out.append(decode_image(data, max_pixels=self.max_pixels, max_side=self.max_side))
            except DupstreamError as exc:
                out.append(exc)
        return out

    def extract(self, blobs: Sequence[bytes]) -> list[ImageFeatures | DupstreamError]:
        t0 = time.perf_counter()
        decoded = self.decode(blobs)
        t1 = time.perf_counter()
        return self.extract_decoded(blobs, decoded, decode_ms=(t1 - t0) * 1e3 / max(1, len(blobs)))

    def extract_decoded(
        self,
        blobs: Sequence[bytes],
        decoded: Sequence[np.ndarray | DupstreamError],
        *,
        decode_ms: float = 0.0,
    ) -> list[ImageFeatures | DupstreamError]:
        good = [i for i, d in enumerate(decoded) if not isinstance(d, DupstreamError)]
        results: list[ImageFeatures | DupstreamError] = list(decoded)  # errors stay in place
        if not good:
            return results
        t0 = time.perf_counter()
        hashes = {
            i: (content_hash(blobs[i]), pdq_hash(decoded[i]), thumbnail(decoded[i])) for i in good
        }
        t1 = time.perf_counter()
        try:
            vectors = self.embedder.embed([decoded[i] for i in good])
        except ModelError:
            vectors = None
        t2 = time.perf_counter()
        if vectors is None:  # isolate the image that breaks the model, keep the others
            vectors = []
            for i in good:
                try:
                    vectors.append(self.embedder.embed([decoded[i]])[0])
                except ModelError as exc:
                    vectors.append(exc)
        images = [decoded[i] for i in good]
        objects = self.detect(images)
        t3 = time.perf_counter()
        graphs = self.embed_graphs(objects)
        t4 = time.perf_counter()
        n = len(good)
        for j, i in enumerate(good):
            vec = vectors[j]
            if isinstance(vec, DupstreamError):
                results[i] = vec
                continue
            rgb = decoded[i]
            digest, pdq, thumb = hashes[i]
            results[i] = ImageFeatures(
                digest=digest,
                pdq=pdq,
                vector=np.asarray(vec, dtype=np.float32),
                width=int(rgb.shape[1]),
                height=int(rgb.shape[0]),
                thumb=thumb,
                timings_ms={
                    "decode": decode_ms,
                    "hash": (t1 - t0) * 1e3 / n,
                    "embed": (t2 - t1) * 1e3 / n,
                    **({"detect": (t3 - t2) * 1e3 / n} if self.detector is not None else {}),
                    **({"graph": (t4 - t3) * 1e3 / n} if self.graph_encoder is not None else {}),
                },
                objects=objects[j],
                semantic=None if objects[j] is None else semantic_vector(objects[j]),
                graph=None if graphs is None or objects[j] is None else graphs[j],
            )
        return results

    def detect(self, images: Sequence[np.ndarray]) -> list[Objects | None]:
        """Top-K objects per image (one detector call for the batch); None where it failed."""
        if self.detector is None:
            return [None] * len(images)
        try:
            dets: list[Detections | None] = list(self.detector.detect(images))
        except ModelError:
            dets = []
            for im in images:  # isolate the image that breaks the detector
                try:
                    dets.append(self.detector.detect([im])[0])
                except ModelError:
                    dets.append(None)
        return [
            None if d is None else select_objects(im, d, k=self.top_k)
            for im, d in zip(images, dets, strict=True)
        ]

    def embed_graphs(self, objects: Sequence[Objects | None]) -> np.ndarray | None:
        if self.graph_encoder is None:
            return None
        return self.graph_encoder.embed([o if o is not None else Objects.empty() for o in objects])

