"""The memory seen through one request's grant: its tenant's uploads and its banks only.

The engine asks its memory for candidates; the server's engine holds a ``ScopedMemory`` whose
candidates are filtered by the scope the batch worker sets for each group of requests. Uploads
match only the query's own tenant whatever ``state.scope`` says (a token never sees another
tenant's image); banks only when granted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from dupstream.state.memory import Candidate, Memory
from dupstream.state.records import ImageRecord


class ScopedMemory:
    """A ``Memory`` whose ``candidates`` honour the scope set by ``scoped`` (per thread)."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)

    def __len__(self) -> int:
        return len(self.memory)

    def __contains__(self, key) -> bool:
        return key in self.memory

    @contextlib.contextmanager
    def scoped(self, banks: frozenset[str] | None) -> Iterator[None]:
        """Within: candidates from the query's tenant and ``banks`` (None: every bank)."""
        old = getattr(self._local, "banks", None)
        self._local.banks = banks
        try:
            yield
        finally:
            self._local.banks = old

    def candidates(self, query: ImageRecord, *, k: int = 10) -> list[Candidate]:
        banks = getattr(self._local, "banks", None)
        return [c for c in self.memory.candidates(query, k=k)
                if (c.tenant == query.tenant if c.bank is None
                    else banks is None or c.bank in banks)]
