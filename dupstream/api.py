"""The Python API, for notebooks and scripts.

Find the duplicates in a photo folder in one call::

    import dupstream

    found = dupstream.find_duplicates("~/Pictures", detector="none")
    for group in found.groups:
        print("keep", group.keeper)
        for m in group.members[1:]:
            print("   ", m.roles, m.path, m.reason, m.p_copy)

Or keep an engine and ask it about single images::

    dd = dupstream.open_deduper(detector="none")
    dd.add_files(["a.jpg", "b.jpg"])          # index them (judged in order, like scan)
    dd.lookup("c.jpg")                        # a Verdict against the index, c not added
    dd.compare("a.jpg", "a_crop.jpg")         # p_copy, verdict and every per-signal score

Models load on first use (about 6 s on a CPU) and are reused by later calls on the same
``Deduper``. Everything here is keyword-only beyond the paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dupstream.app.groups import Group, Member
from dupstream.app.scanner import FileSet, collect, run_scan
from dupstream.core.verdict import Verdict
from dupstream.engine import Failed, Upload
from dupstream.engine.deduper import Deduper as Engine

__all__ = ["Deduper", "Duplicates", "Group", "Member", "find_duplicates", "open_deduper"]

PathLike = str | os.PathLike


@dataclass
class Duplicates:
    """The answer of :func:`find_duplicates`."""

    #: connected duplicate groups, each with its suggested keeper first (``Group.members[0]``)
    groups: list[Group]
    #: one verdict row per image file, in scan order (the ``dupstream scan`` JSON lines)
    rows: list[dict]
    #: rows of files that could not be judged (``error``: a reason code, ``message``)
    failed: list[dict] = field(default_factory=list)
    #: files left out of the folders, counted by reason (``not an image (.txt)``, ``hidden``)
    skipped: dict[str, int] = field(default_factory=dict)
    #: files judged now; the rest came unchanged from ``index``
    judged: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The ``scan --groups`` document."""
        return {"groups": [g.to_dict() for g in self.groups],
                "failed": [{"path": r["image_id"], "error": r["error"],
                            "message": r["message"]} for r in self.failed]}


class Deduper:
    """A de-duplication engine with its index, for interactive use.

    Build it with :func:`open_deduper`. ``engine`` is the underlying
    ``dupstream.engine.Deduper`` (what the stream and ``scan`` use)."""

    def __init__(self, engine: Engine, *, index: Any = None) -> None:
        self.engine = engine
        self.index = index

    def __len__(self) -> int:
        """Images in the index."""
        return len(self.engine)

    def add_files(self, paths: PathLike | Sequence[PathLike], *, tenant: str | None = None,
                  batch: int = 16) -> list[dict]:
        """Judge and index files (folders: their images, sorted by path), each against
        everything before it. Returns one verdict row per file (``error`` rows for failures)."""
        found = _collect(paths)
        res = run_scan(self.engine, found, tenant=tenant, batch=batch, index=self.index,
                       look=False)
        return res.rows

    def lookup(self, image: PathLike | bytes, *, tenant: str | None = None) -> Verdict:
        """The verdict for one image against the index, without adding it. Raises the image's
        ``DupstreamError`` (``ImageError`` etc.) when it cannot be judged."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        name = "<bytes>" if isinstance(image, bytes) else str(image)
        (res,) = self.engine.process([Upload(name, data, tenant)], add=False)
        if isinstance(res, Failed):
            raise res.error
        return res

    def compare(self, a: PathLike | bytes, b: PathLike | bytes) -> dict:
        """Score one pair (no index involved): ``p_copy`` (P(b is a copy of a)), ``verdict``,
        ``review`` and every per-signal score."""
        def read(x: PathLike | bytes) -> bytes:
            return x if isinstance(x, bytes) else Path(x).read_bytes()

        return self.engine.compare(read(a), read(b))

    def save(self) -> str | None:
        """Write the index to its folder (when opened with ``index=``); returns the snapshot id."""
        return None if self.index is None else self.index.save(self.engine)


def open_deduper(
    *,
    embedder: str = "sscd",
    detector: str = "yolov3_tiny_ort",
    graph: bool = True,
    threads: int = 2,
    preference: str = "balanced",
    domain: str | None = None,
    max_pixels: int = 50_000_000,
    index: PathLike | None = None,
    warm_up: bool = True,
) -> Deduper:
    """A ready engine. ``detector="none"``: visual evidence only (faster, no objects);
    ``preference``: ``balanced``, ``precision`` or ``recall`` cut-off; ``domain``: a calibration
    domain (``photos``, ``digits``, ``cctv``); ``index``: a folder to keep the index in between
    sessions (the ``scan --index`` format; call ``save()``); ``warm_up``: load and verify the
    models now (else on first use). Raises ``WeightsError`` / ``ConfigError`` / ``ModelMismatch``
    (an index written by another model)."""
    from dupstream.engine.build import build_deduper

    policy: dict[str, Any] = {"preference": preference}
    if domain:
        policy["domain"] = domain
    engine = build_deduper(embedder=embedder, detector=detector, graph=graph, threads=threads,
                           max_pixels=max_pixels, policy=policy)
    if warm_up:
        engine.warm_up()
    local = None
    if index is not None:
        from dupstream.app.localindex import LocalIndex

        local = LocalIndex(Path(index).expanduser()).open(engine)
    return Deduper(engine, index=local)


def find_duplicates(
    path_or_paths: PathLike | Sequence[PathLike],
    *,
    deduper: Deduper | None = None,
    tenant: str | None = None,
    batch: int = 16,
    **options: Any,
) -> Duplicates:
    """Duplicate groups among image files and folders (folders: every image below, sorted by
    path; hidden and non-image files skipped and counted).

    Each group's first member is the suggested keeper (the least edited, then the largest, then
    the oldest file); every other member has ``roles`` (``re-encode``, ``crop``, ``caption``,
    ``border``, ``flip``, ...), a one-line ``reason`` and ``p_copy``. ``deduper``: reuse an engine
    from :func:`open_deduper` (its index grows); else ``options`` go to :func:`open_deduper`
    (``detector="none"``, ``preference=...``, ``index=...``; with ``index`` the index is saved
    at the end). Raises ``FileNotFoundError`` for a path that does not exist."""
    own = deduper is None
    dd = deduper if deduper is not None else open_deduper(**options)
    found = _collect(path_or_paths)
    res = run_scan(dd.engine, found, tenant=tenant, batch=batch, index=dd.index)
    if own and dd.index is not None:
        dd.save()
    return Duplicates(groups=res.groups, rows=res.rows, failed=res.failed,
                      skipped=dict(res.skipped), judged=res.judged)


def _collect(paths: PathLike | Sequence[PathLike]) -> FileSet:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found = collect([Path(p).expanduser() for p in paths])
    if found.missing:
        raise FileNotFoundError(f"not found: {', '.join(found.missing)}")
    return found
