"""Write a benchmark's result: ``<out>/<stem>.json`` and ``<out>/<stem>.md``, the Markdown also
printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out: str | Path, stem: str, result: dict[str, Any], md: str) -> Path:
    """Write ``result`` (JSON) and ``md`` under the folder ``out`` (made if missing), print
    ``md``; returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(md)
    print(md, end="")
    return folder
