"""``dupstream eval --pairs labeled.csv``: a user's own labelled pairs (CSV header a,b,label;
paths relative to the CSV's folder or absolute). Images go through the production decoder;
unreadable ones are reported and their pairs skipped. All pairs form the test split."""

from __future__ import annotations

import csv
from pathlib import Path

from dupstream.core.errors import DupstreamError
from dupstream.lab.evaluation.dataset import EvalSet
from dupstream.workers.features import FeatureExtractor


def load_user_pairs(path: str | Path, extractor: FeatureExtractor) -> EvalSet:
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"a", "b", "label"} <= set(reader.fieldnames):
            raise ValueError("the pairs CSV needs a header with columns a,b,label")
        rows = list(reader)
    ds = EvalSet("pairs", domain="photos", info={"csv": str(path), "skipped": []})
    index: dict[str, int | None] = {}

    def image(name: str) -> int | None:
        if name not in index:
            p = Path(name) if Path(name).is_absolute() else path.parent / name
            try:
                rgb = extractor.decode([p.read_bytes()])[0]
            except OSError as exc:
                rgb = DupstreamError(str(exc))
            if isinstance(rgb, DupstreamError):
                ds.info["skipped"].append(f"{name}: {rgb}")
                index[name] = None
            else:
                index[name] = ds.add(rgb, source=name, cluster=name, split="test", note=name)
        return index[name]

    for row in rows:
        label = str(row["label"]).strip().lower()
        y = 1 if label in ("1", "true", "yes", "duplicate", "copy") else 0
        a, b = image(row["a"]), image(row["b"])
        if a is not None and b is not None:
            ds.pair(a, b, y, "labelled duplicate" if y else "labelled different")
    return ds
