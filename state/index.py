"""Vector index behind a small interface, with a FAISS implementation and a numpy oracle.

Vectors are L2-normalised, so inner product = cosine. Each vector gets an int64 id; an id map
keeps the ``image_id`` and tenant it belongs to. Adds are incremental (no rebuild).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dupstream.errors import StateError


@dataclass(frozen=True)
class Hit:
    image_id: str
    tenant: str | None
    score: float
    vid: int


@runtime_checkable
class VectorIndex(Protocol):
    dim: int

    def add(self, image_id: str, tenant: str | None, vector: np.ndarray) -> int: ...

    def search(self, vector: np.ndarray, k: int, *, tenant: str | None = None) -> list[Hit]: ...

    def __len__(self) -> int: ...


class _IdMap:
    """int64 vector id <-> (image_id, tenant)."""

    def __init__(self) -> None:
        self.meta: dict[int, tuple[str, str | None]] = {}
        self.by_key: dict[tuple[str, str | None], int] = {}
        self.next_id = 0

    def assign(self, image_id: str, tenant: str | None) -> tuple[int, bool]:
        key = (image_id, tenant)
        if key in self.by_key:
            return self.by_key[key], False
        vid = self.next_id
        self.next_id += 1
        self.meta[vid] = key
        self.by_key[key] = vid
        return vid, True


def _check(vector: np.ndarray, dim: int) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if v.shape[1] != dim:
        raise StateError(f"vector has dimension {v.shape[1]}, index expects {dim}")
    return np.ascontiguousarray(v)


class FaissIndex:
    """Exact inner-product FAISS index (``IndexIDMap2`` over ``IndexFlatIP``).

    Adding an ``(image_id, tenant)`` that is already present is a no-op, so replays are harmless.
    Tenant scoping: a search with ``tenant`` set returns only that tenant's images (the search
    widens ``k`` until it has enough, or has seen the whole index).
    """

    def __init__(self, *, dim: int) -> None:
        import faiss

        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ids = _IdMap()

    def add(self, image_id: str, tenant: str | None, vector: np.ndarray) -> int:
        v = _check(vector, self.dim)
        vid, new = self._ids.assign(image_id, tenant)
        if new:
            self._index.add_with_ids(v, np.array([vid], dtype=np.int64))
        return vid

    def search(self, vector: np.ndarray, k: int, *, tenant: str | None = None) -> list[Hit]:
        n = self._index.ntotal
        if n == 0 or k <= 0:
            return []
        v = _check(vector, self.dim)
        want = k
        while True:
            kk = min(n, want if tenant is None else want * 4)
            scores, ids = self._index.search(v, kk)
            hits = []
            for s, i in zip(scores[0], ids[0], strict=True):
                if i < 0:
                    continue
                image_id, t = self._ids.meta[int(i)]
                if tenant is not None and t != tenant:
                    continue
                hits.append(Hit(image_id=image_id, tenant=t, score=float(s), vid=int(i)))
            if len(hits) >= k or kk >= n:
                return hits[:k]
            want *= 4

    def __len__(self) -> int:
        return int(self._index.ntotal)


class NumpyIndex:
    """Brute-force oracle: the reference the FAISS index is tested against."""

    def __init__(self, *, dim: int) -> None:
        self.dim = dim
        self._vectors: list[np.ndarray] = []
        self._ids = _IdMap()

    def add(self, image_id: str, tenant: str | None, vector: np.ndarray) -> int:
        v = _check(vector, self.dim)
        vid, new = self._ids.assign(image_id, tenant)
        if new:
            self._vectors.append(v[0])
        return vid

    def search(self, vector: np.ndarray, k: int, *, tenant: str | None = None) -> list[Hit]:
        if not self._vectors or k <= 0:
            return []
        v = _check(vector, self.dim)[0]
        scores = np.stack(self._vectors) @ v
        hits = []
        for i in np.argsort(-scores, kind="stable"):
            image_id, t = self._ids.meta[int(i)]
            if tenant is not None and t != tenant:
                continue
            hits.append(Hit(image_id=image_id, tenant=t, score=float(scores[i]), vid=int(i)))
            if len(hits) == k:
                break
        return hits

    def __len__(self) -> int:
        return len(self._vectors)
