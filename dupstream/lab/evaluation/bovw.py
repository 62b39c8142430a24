"""SIFT + bag of visual words (OpenCV SIFT, scikit-learn k-means): the classic baseline.

Each image: up to ``n_features`` SIFT descriptors on its grey image (small images are upscaled to
``min_side`` px so tiny digits get keypoints too; large ones shrunk to ``max_side``). Vocabulary:
MiniBatchKMeans on the training split's descriptors; an image's vector = tf-idf weighted word
histogram, L2-normalised; similarity = cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def sift_descriptors(rgb: np.ndarray, *, n_features: int = 300, min_side: int = 112,
                     max_side: int = 320) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    f = max(min_side / min(h, w), 1.0) if min(h, w) < min_side else min(max_side / max(h, w), 1)
    if f != 1.0:
        gray = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))),
                          interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
    _, desc = cv2.SIFT_create(nfeatures=n_features).detectAndCompute(gray, None)
    return np.zeros((0, 128), np.float32) if desc is None else desc.astype(np.float32)


class BoVW:
    def __init__(self, *, words: int = 256, seed: int = 0, max_train: int = 40_000) -> None:
        self.words, self.seed, self.max_train = words, seed, max_train
        self.kmeans = None
        self.idf = None

    def fit(self, descriptors: Sequence[np.ndarray]) -> BoVW:
        from sklearn.cluster import MiniBatchKMeans

        stack = np.concatenate([d for d in descriptors if len(d)] or [np.zeros((1, 128))])
        rng = np.random.default_rng(self.seed)
        if len(stack) > self.max_train:
            stack = stack[rng.choice(len(stack), self.max_train, replace=False)]
        k = max(2, min(self.words, len(stack)))
        self.kmeans = MiniBatchKMeans(n_clusters=k, random_state=self.seed, n_init=3,
                                      batch_size=2048).fit(stack)
        counts = self._counts(descriptors)
        df = (counts > 0).sum(axis=0)
        self.idf = np.log((1 + len(counts)) / (1 + df)) + 1.0
        return self

    def _counts(self, descriptors: Sequence[np.ndarray]) -> np.ndarray:
        k = self.kmeans.n_clusters
        out = np.zeros((len(descriptors), k), np.float32)
        for i, d in enumerate(descriptors):
            if len(d):
                out[i] = np.bincount(self.kmeans.predict(d), minlength=k)
        return out

    def transform(self, descriptors: Sequence[np.ndarray]) -> np.ndarray:
        x = self._counts(descriptors) * self.idf[None, :].astype(np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)
