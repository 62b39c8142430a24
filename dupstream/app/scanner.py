"""``dupstream scan`` over local files: which files, in which order, and one row per image.

Pure orchestration over a ``Deduper``: the CLI and the Python API (``dupstream.api``) share it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: file name endings ``scan`` treats as images when it walks a directory
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class FileSet:
    """The files a scan will judge, in order, and what it left out and why."""

    files: list[Path] = field(default_factory=list)
    #: paths given on the command line that do not exist
    missing: list[str] = field(default_factory=list)
    #: files found in directories but not scanned, counted by reason (e.g. ``not an image (.txt)``)
    skipped: Counter = field(default_factory=Counter)


def collect(paths: Sequence[str | os.PathLike]) -> FileSet:
    """Files in the given order; a directory contributes its image files sorted by path (hidden
    files and folders left out). A file named explicitly is always scanned."""
    out = FileSet()
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if not f.is_file():
                    continue
                if any(part.startswith(".") for part in rel):
                    out.skipped["hidden"] += 1
                elif f.suffix.lower() not in IMAGE_SUFFIXES:
                    out.skipped[f"not an image ({f.suffix.lower() or 'no suffix'})"] += 1
                elif f not in seen:
                    seen.add(f)
                    out.files.append(f)
        elif p.exists():
            if p not in seen:
                seen.add(p)
                out.files.append(p)
        else:
            out.missing.append(str(p))
    return out


def read_bytes(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes, or ``b""`` and why it could not be read."""
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return b"", f"{exc.strerror or exc}"


def judge_files(
    deduper: Any,
    files: Iterable[Path],
    *,
    tenant: str | None = None,
    batch: int = 16,
    on_row: Callable[[dict], None] | None = None,
    overlap: bool = True,
    ahead: int = 2,
) -> Iterator[dict]:
    """One JSON-ready row per file, in order, each judged against everything before it
    (and everything already in the deduper's memory). ``overlap``: the next ``ahead`` batches
    are read and embedded while one is judged (``Deduper.process_many``); False: batch by
    batch (``Deduper.process``). The rows are the same either way."""
    from dupstream.core.errors import ImageError
    from dupstream.engine import Failed, Upload

    files = list(files)
    unreadable: dict[str, str] = {}

    def batches() -> Iterator[list]:
        for start in range(0, len(files), batch):
            uploads = []
            for p in files[start : start + batch]:
                data, why = read_bytes(p)
                if why is not None:
                    unreadable[str(p)] = why
                uploads.append(Upload(str(p), data, tenant))
            yield uploads

    # the next batches are read, decoded, hashed and embedded while this one is judged
    # (``Deduper.process_many``: the same verdicts as batch by batch)
    judged = (deduper.process_many(batches(), ahead=ahead) if overlap
              else map(deduper.process, batches()))
    for results in judged:
        for res in results:
            if isinstance(res, Failed):
                err = res.error
                if res.image_id in unreadable:
                    err = ImageError(f"cannot read the file: {unreadable[res.image_id]}",
                                     reason="image_unreadable")
                row = {"image_id": res.image_id, "verdict": None, "match_id": None,
                       "probability": None, "p_copy": None, "error": err.reason,
                       "message": str(err)}
            else:
                row = res.model_dump(mode="json")
            if on_row is not None:
                on_row(row)
            yield row


@dataclass
class ScanResult:
    """What one scan found: every file's row (reused ones from an index included), in order."""

    rows: list[dict] = field(default_factory=list)
    #: how many files were judged now (the rest came from the index unchanged)
    judged: int = 0
    reused: int = 0
    failed: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    groups: list = field(default_factory=list)


def run_scan(
    deduper: Any,
    found: FileSet,
    *,
    tenant: str | None = None,
    batch: int = 16,
    index: Any = None,
    on_row: Callable[[dict], None] | None = None,
    look: bool = True,
    overlap: bool = True,
) -> ScanResult:
    """Judge ``found.files`` (those an ``index`` knows unchanged are not read again; their
    earlier rows are reused), call ``on_row`` for each new row, then group everything."""
    from dupstream.app.groups import build_groups
    from dupstream.app.probe import Looker, file_facts

    res = ScanResult(skipped=Counter(found.skipped))
    reused = {p: row for p in found.files
              if index is not None and (row := index.known(p)) is not None}
    todo = [p for p in found.files if p not in reused]
    new: dict[Path, dict] = {}
    for path, row in zip(todo, judge_files(deduper, todo, tenant=tenant, batch=batch,
                                                overlap=overlap),
                         strict=True):
        new[path] = row
        if row.get("error"):
            res.failed.append(row)
            res.counts["error"] += 1
        else:
            res.counts[row["verdict"]] += 1
        if index is not None:
            index.remember(path, row)
        if on_row is not None:
            on_row(row)
    res.rows = [reused.get(p) or new[p] for p in found.files]
    res.judged, res.reused = len(todo), len(reused)
    res.groups = build_groups(res.rows, facts=file_facts, look=Looker() if look else None)
    return res
