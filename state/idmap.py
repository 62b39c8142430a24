"""Row ids (int64, dense, in insertion order) <-> ``(image_id, tenant)``, kept compact.

Every store of a collection (vector index, PDQ index, exact hashes, records) labels an image by
the same row, so one map serves them all. Storage is flat arrays, not Python objects per image:
image ids live in one UTF-8 arena with offsets, tenants as small integer codes, and the
``key -> row`` lookup (for idempotent adds) is a ``KeyIndex`` over a 63-bit hash of the key, the
key itself being verified on every hit.

Tenant scoping: ``allowed(tenant)`` gives a packed bitmap of that tenant's rows (LSB first, the
layout of ``faiss.IDSelectorBitmap``), cached per tenant and extended incrementally on growth.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict

import numpy as np

from dupstream.core.errors import StateError
from dupstream.state.keyindex import KeyIndex

Key = tuple[str, str | None]  # (image_id, tenant)


def key64(image_id: str, tenant: str | None) -> int:
    """Stable 63-bit hash of ``(tenant, image_id)``; identical on every replica."""
    t = "\x00" if tenant is None else "\x01" + tenant
    h = hashlib.blake2b(f"{t}\x1f{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


class Allowed:
    """A packed row bitmap (LSB first) that a search is restricted to; ``None`` = every row."""

    __slots__ = ("bitmap", "n")

    def __init__(self, bitmap: np.ndarray, n: int) -> None:
        self.bitmap = bitmap
        self.n = n

    def mask(self, n: int) -> np.ndarray:
        """Boolean mask over rows ``[0, n)``."""
        bits = np.unpackbits(self.bitmap, bitorder="little", count=min(n, self.bitmap.size * 8))
        out = np.zeros(n, dtype=bool)
        out[: bits.size] = bits.astype(bool)
        return out


class IdMap:
    def __init__(self, *, bitmap_cache: int = 64) -> None:
        self._arena = bytearray()
        self._offsets = array("q", [0])
        self._tcode = array("i")
        self._keys = array("q")
        self._tenants: list[str | None] = []
        self._tenant_code: dict[str | None, int] = {}
        self._tenant_count: list[int] = []
        self._by_key = KeyIndex()
        self._bitmaps: OrderedDict[int, tuple[np.ndarray, int]] = OrderedDict()
        self._bitmap_cache = bitmap_cache

    def __len__(self) -> int:
        return len(self._tcode)

    # -- lookups -----------------------------------------------------------------------------
    def image_id(self, row: int) -> str:
        return self._arena[self._offsets[row] : self._offsets[row + 1]].decode()

    def tenant(self, row: int) -> str | None:
        return self._tenants[self._tcode[row]]

    def key(self, row: int) -> Key:
        return self.image_id(row), self.tenant(row)

    def tenant_code(self, tenant: str | None) -> int | None:
        return self._tenant_code.get(tenant)

    def tenant_of_rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tenant codes of rows ``[start, stop)`` (a copy: the backing array keeps growing)."""
        stop = len(self) if stop is None else stop
        if stop <= start:
            return np.zeros(0, np.int32)
        view = np.frombuffer(self._tcode, dtype=np.int32, offset=4 * start, count=stop - start)
        out = view.copy()
        del view
        return out

    def row(self, image_id: str, tenant: str | None) -> int | None:
        for r in self._by_key.get(key64(image_id, tenant)):
            if self.key(r) == (image_id, tenant):  # a 63-bit collision is told apart here
                return r
        return None

    def __contains__(self, key: Key) -> bool:
        return self.row(*key) is not None

    # -- growth ------------------------------------------------------------------------------
    def append(self, image_id: str, tenant: str | None) -> int:
        """Give a new key the next row. The key must not be present (check with ``row``)."""
        if not isinstance(image_id, str) or not image_id:
            raise StateError("image_id must be a non-empty string")
        code = self._tenant_code.get(tenant)
        if code is None:
            code = len(self._tenants)
            self._tenants.append(tenant)
            self._tenant_code[tenant] = code
            self._tenant_count.append(0)
        row = len(self)
        k = key64(image_id, tenant)
        self._by_key.add(k, row)
        self._arena += image_id.encode()
        self._offsets.append(len(self._arena))
        self._tcode.append(code)
        self._keys.append(k)
        self._tenant_count[code] += 1
        return row

    # -- tenant scoping ----------------------------------------------------------------------
    def allowed(self, tenant: str | None) -> Allowed | None:
        """Bitmap of ``tenant``'s rows, or ``None`` when every row is the tenant's.

        Returns an empty bitmap when the tenant has no rows.
        """
        n = len(self)
        code = self._tenant_code.get(tenant)
        if code is None:
            return Allowed(np.zeros(1, dtype=np.uint8), 0)
        if self._tenant_count[code] == n:
            return None
        bitmap, covered = self._bitmaps.pop(code, (np.zeros(0, dtype=np.uint8), 0))
        need = (n + 7) // 8
        if bitmap.size < need:
            grown = np.zeros(max(need, bitmap.size * 2, 1024), dtype=np.uint8)
            grown[: bitmap.size] = bitmap
            bitmap = grown
        if covered < n:
            tail = np.flatnonzero(self.tenant_of_rows(covered, n) == code) + covered
            np.bitwise_or.at(bitmap, tail >> 3, (1 << (tail & 7)).astype(np.uint8))
        self._bitmaps[code] = (bitmap, n)
        while len(self._bitmaps) > self._bitmap_cache:
            self._bitmaps.popitem(last=False)
        return Allowed(bitmap, n)

    # -- size and serialisation --------------------------------------------------------------
    def nbytes(self) -> int:
        """Approximate resident bytes (arrays + the key dict)."""
        arrays = len(self._arena) + 8 * len(self._offsets) + 4 * len(self._tcode)
        arrays += 8 * len(self._keys)
        return arrays + self._by_key.nbytes()

    def to_state(self) -> dict:
        return {
            "arena": bytes(self._arena),
            "offsets": np.array(self._offsets, dtype=np.int64),
            "tcode": np.array(self._tcode, dtype=np.int32),
            "keys": np.array(self._keys, dtype=np.int64),
            "tenants": list(self._tenants),
        }

    @classmethod
    def from_state(cls, state: dict) -> IdMap:
        m = cls()
        try:
            m._arena = bytearray(state["arena"])
            m._offsets = array("q", np.asarray(state["offsets"], dtype=np.int64).tobytes())
            m._tcode = array("i", np.asarray(state["tcode"], dtype=np.int32).tobytes())
            keys = np.asarray(state["keys"], dtype=np.int64)
            m._keys = array("q", keys.tobytes())
            m._tenants = list(state["tenants"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"bad id map: {exc}") from exc
        n = len(m._tcode)
        if len(m._offsets) != n + 1 or len(m._keys) != n or m._offsets[-1] != len(m._arena):
            raise StateError("id map arrays disagree in length")
        m._tenant_code = {t: i for i, t in enumerate(m._tenants)}
        counts = np.bincount(m.tenant_of_rows(), minlength=len(m._tenants))
        m._tenant_count = [int(c) for c in counts]
        m._by_key = KeyIndex.build(keys)
        return m
