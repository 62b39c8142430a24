"""A compact int64 -> row multimap: sorted numpy arrays plus a small dict of recent inserts.

Python dicts cost ~100 bytes per entry (the entry, a boxed int key and a boxed int value); this
costs 16 bytes per entry once merged. Inserts go to ``pending`` (a dict); when it outgrows
``max(min_merge, len/8)`` it is sorted and merged into the arrays with one ``np.insert`` (a
memory copy, ~50 ms at 10M entries), so the cost stays amortised O(log n) per insert. A lookup
checks ``pending`` and binary-searches the arrays.
"""

from __future__ import annotations

import numpy as np


class KeyIndex:
    def __init__(self, *, min_merge: int = 65_536) -> None:
        self._keys = np.zeros(0, dtype=np.int64)
        self._rows = np.zeros(0, dtype=np.int64)
        self._pending: dict[int, list[int]] = {}
        self._n_pending = 0
        self.min_merge = min_merge

    def __len__(self) -> int:
        return len(self._keys) + self._n_pending

    def add(self, key: int, row: int) -> None:
        self._pending.setdefault(key, []).append(row)
        self._n_pending += 1
        if self._n_pending > max(self.min_merge, len(self._keys) // 8):
            self.merge()

    def merge(self) -> None:
        if not self._pending:
            return
        keys = np.fromiter(
            (k for k, rows in self._pending.items() for _ in rows), np.int64, self._n_pending
        )
        rows = np.fromiter(
            (r for rs in self._pending.values() for r in rs), np.int64, self._n_pending
        )
        order = np.lexsort((rows, keys))  # by key, then row: insertion order within a key
        keys, rows = keys[order], rows[order]
        at = np.searchsorted(self._keys, keys, side="right")  # after older rows of equal keys
        self._keys = np.insert(self._keys, at, keys)
        self._rows = np.insert(self._rows, at, rows)
        self._pending, self._n_pending = {}, 0

    def get(self, key: int) -> list[int]:
        """Rows stored under ``key``, in insertion (row) order."""
        lo = int(np.searchsorted(self._keys, key, side="left"))
        out: list[int] = []
        if lo < len(self._keys) and self._keys[lo] == key:
            hi = int(np.searchsorted(self._keys, key, side="right"))
            out = self._rows[lo:hi].tolist()
        more = self._pending.get(key)
        return out + more if more else out

    def nbytes(self) -> int:
        return 16 * len(self._keys) + 120 * self._n_pending

    @classmethod
    def build(cls, keys: np.ndarray, *, min_merge: int = 65_536) -> KeyIndex:
        """Index ``keys[row] -> row`` for every row at once."""
        self = cls(min_merge=min_merge)
        keys = np.asarray(keys, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self._keys, self._rows = keys[order], order.astype(np.int64)
        return self
