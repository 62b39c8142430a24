"""Helpers for the state tests: unit vectors and records."""

from __future__ import annotations

import hashlib

import numpy as np

from dupstream.state.records import ImageRecord


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, v: np.ndarray, noise: float = 0.05) -> np.ndarray:
    x = v + noise * rng.standard_normal(v.shape).astype(np.float32)
    return (x / np.linalg.norm(x)).astype(np.float32)


def make_record(
    image_id: str,
    tenant: str | None = None,
    *,
    vector: np.ndarray,
    pdq: np.ndarray | None = None,
    digest: str | None = None,
    bank: str | None = None,
    **meta,
) -> ImageRecord:
    if pdq is None:
        seed = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:4], "little")
        pdq = np.random.default_rng(seed).integers(0, 256, (8, 32), dtype=np.uint8)
    return ImageRecord(
        image_id=image_id,
        tenant=tenant,
        digest=digest or hashlib.sha256(image_id.encode()).hexdigest(),
        pdq=pdq,
        arrays={"vector": vector, "thumb": np.zeros((8, 8), np.uint8)},
        meta={"width": 64, "height": 48, **meta},
        bank=bank,
    )
