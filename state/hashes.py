"""Hash stores for the fast path: exact content hash, and PDQ (with dihedral variants).

Both are row-level, like the vector index: row ``r`` is the ``r``-th image of the collection
(see ``state.idmap``), and tenant scoping is applied by the caller (exact) or pushed into FAISS
as a row bitmap (PDQ).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from dupstream.core.errors import StateError
from dupstream.state.idmap import Allowed
from dupstream.state.index import cores, omp_threads
from dupstream.state.keyindex import KeyIndex

PDQ_BYTES = 32  # 256 bits, packed


def digest_bytes(digest: str | bytes) -> bytes:
    """A content digest as 32 raw bytes (a SHA-256 hex string is decoded, anything else hashed)."""
    if isinstance(digest, bytes):
        return digest if len(digest) == 32 else hashlib.sha256(digest).digest()
    if len(digest) == 64:
        try:
            return bytes.fromhex(digest)
        except ValueError:
            pass
    return hashlib.sha256(digest.encode()).digest()


class ExactHashStore:
    """content digest -> rows holding it, first seen first; 48 bytes per row.

    The full digests are kept (32 bytes a row) and looked up by their first 8 bytes.
    """

    def __init__(self) -> None:
        self._digests = bytearray()
        self._rows = KeyIndex()

    def __len__(self) -> int:
        return len(self._digests) // 32

    def add(self, row: int, digest: str | bytes) -> None:
        if row != len(self):
            raise StateError(f"exact store expected row {len(self)}, got {row}")
        d = digest_bytes(digest)
        self._digests += d
        self._rows.add(int.from_bytes(d[:8], "little", signed=True), row)

    def rows(self, digest: str | bytes) -> list[int]:
        """Rows whose digest equals ``digest``, in insertion order."""
        d = digest_bytes(digest)
        cands = self._rows.get(int.from_bytes(d[:8], "little", signed=True))
        return [r for r in cands if self._digests[32 * r : 32 * r + 32] == d]

    def digest(self, row: int) -> bytes:
        return bytes(self._digests[32 * row : 32 * row + 32])

    def nbytes(self) -> int:
        return len(self._digests) + self._rows.nbytes()

    def to_state(self) -> dict[str, Any]:
        return {"digests": bytes(self._digests)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ExactHashStore:
        self = cls()
        blob = bytes(state["digests"])
        if len(blob) % 32:
            raise StateError("exact store: digest blob is not a multiple of 32 bytes")
        self._digests = bytearray(blob)
        heads = np.frombuffer(blob, dtype="<i8").reshape(-1, 4)[:, 0] if blob else np.zeros(0)
        self._rows = KeyIndex.build(heads.astype(np.int64))
        return self


def as_pdq(bits: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(np.asarray(bits, dtype=np.uint8))
    if b.ndim == 1:
        b = b.reshape(1, -1)
    if b.ndim != 2 or b.shape[1] != PDQ_BYTES:
        raise StateError(f"PDQ hashes must be packed (n, {PDQ_BYTES}) uint8, got {b.shape}")
    return b


class PDQStore:
    """Near-exact lookup by PDQ Hamming distance, growing in place.

    Stored: the identity hash of each image. Query: the 8 dihedral variants of the new image, so a
    flipped or 90°-rotated copy is found together with the transform that matches.

    Exact (``IndexBinaryFlat``, tenant bitmap pushed into FAISS) up to ``switch_at`` hashes; then
    a binary IVF (``IndexBinaryIVF``, ``nlist`` lists, ``nprobe`` probed) trained on the hashes
    held, answered by a range search within ``max_distance`` and filtered by tenant afterwards.
    Near-exact copies sit far closer to their original (<= 31 of 256 bits) than unrelated hashes
    (~128), so probing a few lists finds them; the vector index backs up any miss.
    """

    def __init__(
        self, *, switch_at: int = 200_000, nlist: int = 1024, nprobe: int = 32,
        train_max: int = 100_000, seed: int = 1234,
    ) -> None:
        import faiss

        self._faiss = faiss
        self.switch_at, self.nlist, self.nprobe = switch_at, nlist, nprobe
        self.train_max, self.seed = train_max, seed
        self._index = faiss.IndexBinaryFlat(PDQ_BYTES * 8)
        self._ivf = False
        self._usable = bytearray()  # 0 for rows whose hash is too low-quality to match on
        self._unusable = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def approximate(self) -> bool:
        return self._ivf

    def add(self, row: int, bits: np.ndarray, *, usable: bool = True) -> None:
        """Store row ``row``'s identity hash; ``usable=False`` keeps the row but never matches it
        (PDQ hashes of near-uniform images are unreliable)."""
        if row != len(self):
            raise StateError(f"PDQ store expected row {len(self)}, got {row}")
        self.add_many(as_pdq(bits)[:1], b"\x01" if usable else b"\x00")

    def add_many(self, bits: np.ndarray, usable: bytes | None = None) -> None:
        b = as_pdq(bits)
        if usable is not None and len(usable) != len(b):
            raise StateError("PDQ store: one usable flag per hash")
        self._index.add(b)
        flags = usable if usable is not None else b"\x01" * len(b)
        self._usable += flags
        self._unusable += flags.count(0)
        if not self._ivf and len(self) >= self.switch_at:
            self._switch()

    def _switch(self) -> None:
        faiss = self._faiss
        n = len(self)
        codes = faiss.vector_to_array(self._index.xb).reshape(n, PDQ_BYTES)
        nlist = max(1, min(self.nlist, n // 39))
        quantizer = faiss.IndexBinaryFlat(PDQ_BYTES * 8)
        ivf = faiss.IndexBinaryIVF(quantizer, PDQ_BYTES * 8, nlist)
        self._quantizer = quantizer  # the IVF does not own it: keep it alive
        sample = codes
        if n > self.train_max:
            rng = np.random.default_rng(self.seed)
            sample = codes[np.sort(rng.choice(n, self.train_max, replace=False))]
        with omp_threads(cores()):
            ivf.train(sample)
            ivf.add(codes)  # labels are 0..n-1: the rows
        ivf.nprobe = self.nprobe
        self._index, self._ivf = ivf, True

    def nearest(
        self, variants: np.ndarray, *, allowed: Allowed | None = None, max_distance: int = 256
    ) -> tuple[int, int, int] | None:
        """(row, distance, variant) of the stored hash closest to any query variant, or None."""
        n = len(self)
        if n == 0 or (allowed is not None and allowed.n == 0):
            return None
        q = as_pdq(variants)
        if self._ivf and max_distance < PDQ_BYTES * 8:
            return self._nearest_ivf(q, allowed, max_distance)
        params = None
        if allowed is not None and not self._ivf:
            sel = self._faiss.IDSelectorBitmap(allowed.n, self._faiss.swig_ptr(allowed.bitmap))
            params = self._faiss.SearchParameters(sel=sel)
        k = 1 if not self._unusable and (allowed is None or not self._ivf) else min(n, 64)
        dist, rows = self._index.search(q, k, params=params)
        best: tuple[int, int, int] | None = None
        for v in range(len(q)):
            for d, r in zip(dist[v], rows[v], strict=True):
                if r < 0 or d > max_distance or not self._ok(int(r), allowed):
                    continue
                if best is None or d < best[1]:
                    best = (int(r), int(d), v)
                break
        return best

    def _ok(self, row: int, allowed: Allowed | None) -> bool:
        if not self._usable[row]:
            return False
        if allowed is None:
            return True
        return row < allowed.n and bool(allowed.bitmap[row >> 3] >> (row & 7) & 1)

    def _nearest_ivf(
        self, q: np.ndarray, allowed: Allowed | None, max_distance: int
    ) -> tuple[int, int, int] | None:
        lims, dist, rows = self._index.range_search(q, max_distance + 1)  # radius is exclusive
        lims = lims.astype(np.int64)
        best: tuple[int, int, int] | None = None
        for v in range(len(q)):
            for j in np.argsort(dist[lims[v] : lims[v + 1]], kind="stable"):
                d, r = int(dist[lims[v] + j]), int(rows[lims[v] + j])
                if self._ok(r, allowed):
                    if best is None or d < best[1]:
                        best = (r, d, v)
                    break
        return best

    def nbytes(self) -> int:
        return len(self) * (PDQ_BYTES + 1 + (8 if self._ivf else 0))

    def to_state(self) -> dict[str, Any]:
        faiss = self._faiss
        return {
            "index": faiss.serialize_index_binary(self._index).tobytes(),
            "usable": bytes(self._usable),
            "params": {"switch_at": self.switch_at, "nlist": self.nlist, "nprobe": self.nprobe,
                       "train_max": self.train_max, "seed": self.seed},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PDQStore:
        import faiss

        self = cls(**state.get("params", {}))
        try:
            index = faiss.deserialize_index_binary(np.frombuffer(state["index"], np.uint8))
        except RuntimeError as exc:
            raise StateError(f"FAISS could not read the PDQ index: {exc}") from exc
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = self.nprobe
            self._ivf = True
        self._index = index
        self._usable = bytearray(state["usable"])
        self._unusable = self._usable.count(0)
        if len(self._usable) != len(self):
            raise StateError("PDQ store: usable flags and hashes differ in number")
        return self
