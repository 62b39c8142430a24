"""``dupstream scan --index DIR``: a persistent index of a local folder.

``DIR`` holds the service's own state format (``state/snapshot.py``: the id maps, exact digests,
PDQ codes, FAISS indexes and the compact records, a manifest with every blob's SHA-256 and the
model identity) in a local-filesystem blob store, under the same ``dupstream/snapshots/`` layout as
the service's bucket, plus a catalogue of the files already judged::

    DIR/dupstream/snapshots/{id}/...        the index (two snapshots kept)
    DIR/dupstream/snapshots/LATEST
    DIR/dupstream/local/files.json          path -> size, mtime_ns, the row it was given

A file whose (path, size, mtime) is in the catalogue is not read again: its row is reused and
the image stays in the index, so new files are judged against it. Written after a scan: the
snapshot first, the catalogue last (a scan that dies in between re-judges its new files next
time; an image already in the index is not added twice and never matches itself).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dupstream.core.errors import DupstreamError
from dupstream.state.blobstore import BlobStore, FileBlobStore
from dupstream.state.snapshot import load_latest_snapshot, write_snapshot

PREFIX = "dupstream"
CATALOGUE = f"{PREFIX}/local/files.json"
CATALOGUE_FORMAT = 1


def file_key(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class LocalIndex:
    """The index of one folder (or several), kept in ``root`` between scans."""

    def __init__(self, root: str | Path, *, store: BlobStore | None = None) -> None:
        self.root = Path(root)
        self.store = store if store is not None else FileBlobStore(self.root)
        self.files: dict[str, dict[str, Any]] = {}
        self.snapshot_id: str | None = None

    def open(self, deduper: Any) -> LocalIndex:
        """Load the latest snapshot into ``deduper`` (refused, ``ModelMismatch``, when another
        model wrote it) and the catalogue. An empty ``root`` starts an empty index."""
        restored = load_latest_snapshot(self.store, prefix=PREFIX, identity=deduper.identity)
        if restored is not None:
            deduper.use_memory(restored.memory)
            self.snapshot_id = restored.snapshot_id
            try:
                doc = json.loads(self.store.get_bytes(CATALOGUE))
                self.files = dict(doc["files"])
            except (DupstreamError, ValueError, KeyError, TypeError):
                self.files = {}  # an index without a catalogue: every file is judged again
        return self

    def known(self, path: Path) -> dict | None:
        """The row a file got in an earlier scan, when it has not changed since."""
        entry = self.files.get(str(path))
        key = file_key(path)
        if entry is None or key is None or [entry["size"], entry["mtime_ns"]] != list(key):
            return None
        return entry["row"]

    def remember(self, path: Path, row: dict) -> None:
        """A judged file (failed ones are not kept: they are tried again next time)."""
        key = file_key(path)
        if key is None or row.get("error"):
            return
        self.files[str(path)] = {"size": key[0], "mtime_ns": key[1], "row": row}

    def save(self, deduper: Any) -> str:
        info = write_snapshot(deduper.memory, self.store, prefix=PREFIX, keep=2)
        doc = {"format": CATALOGUE_FORMAT, "snapshot": info.snapshot_id, "files": self.files}
        self.store.put_bytes(CATALOGUE, json.dumps(doc).encode())
        self.snapshot_id = info.snapshot_id
        return info.snapshot_id
