"""Hash stores for the fast path: exact content hash, and PDQ (with dihedral variants)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HashMatch:
    image_id: str
    tenant: str | None
    distance: int
    variant: int  # index into the query's dihedral variants (0 = identity)


class ExactHashStore:
    """content hash -> first (image_id, tenant) seen with it, per tenant."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str | None, str], str] = {}

    def lookup(self, digest: str, tenant: str | None) -> str | None:
        return self._seen.get((tenant, digest))

    def add(self, digest: str, tenant: str | None, image_id: str) -> None:
        self._seen.setdefault((tenant, digest), image_id)

    def __len__(self) -> int:
        return len(self._seen)


class PDQStore:
    """Near-exact lookup by PDQ Hamming distance, tenant-scoped, growing in place.

    Stored: the identity hash of each image (packed 32 bytes). Query: the 8 dihedral variants of
    the new image, so a flipped or 90°-rotated copy is found with the transform that matches.
    """

    def __init__(self, *, capacity: int = 1024) -> None:
        self._bits = np.zeros((capacity, 32), dtype=np.uint8)
        self._meta: list[tuple[str, str | None]] = []
        self._keys: set[tuple[str, str | None]] = set()

    def add(self, image_id: str, tenant: str | None, bits: np.ndarray) -> None:
        key = (image_id, tenant)
        if key in self._keys:
            return
        n = len(self._meta)
        if n == len(self._bits):
            self._bits = np.concatenate([self._bits, np.zeros_like(self._bits)])
        self._bits[n] = bits
        self._meta.append(key)
        self._keys.add(key)

    def nearest(self, variants: np.ndarray, tenant: str | None) -> HashMatch | None:
        """Closest stored hash to any of the query's variants ((8, 32) or (32,) packed)."""
        n = len(self._meta)
        if n == 0:
            return None
        q = np.atleast_2d(variants)
        xor = np.bitwise_xor(self._bits[:n][None, :, :], q[:, None, :])  # (V, n, 32)
        dist = np.unpackbits(xor, axis=-1).sum(axis=-1)  # (V, n)
        if tenant is not None or any(t is not None for _, t in self._meta):
            mask = np.array([t == tenant for _, t in self._meta])
            if not mask.any():
                return None
            dist = np.where(mask[None, :], dist, 10_000)
        v, i = np.unravel_index(int(np.argmin(dist)), dist.shape)
        image_id, t = self._meta[i]
        return HashMatch(image_id=image_id, tenant=t, distance=int(dist[v, i]), variant=int(v))

    def __len__(self) -> int:
        return len(self._meta)
