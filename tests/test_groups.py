"""dupstream.app.groups: keeper and roles from a pair's evidence (pure logic over real files)."""

import os

import numpy as np
import pytest

from dupstream.app.groups import build_groups
from dupstream.app.probe import Looker, file_facts
from dupstream.lab.data import edits


def _reg(oq=1.0, orf=1.0, **t):
    return {"verified": True, "method": "sparse", "overlap_query": oq, "overlap_ref": orf,
            "changed_area": 0.0, "changed_regions": [], "largest_change": 0.0,
            "transform": {"scale": 1.0, "rotation_deg": 0.0, "flip": False, "tx": 0.0,
                          "ty": 0.0, **t}}


def _rows(first, second, reg, verdict="near_duplicate"):
    return [{"image_id": str(first), "verdict": "unique", "match_id": None},
            {"image_id": str(second), "verdict": verdict, "match_id": str(first),
             "p_copy": 0.9, "evidence": {"registration": reg}}]


@pytest.fixture(scope="module")
def files(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("g")
    rng = np.random.default_rng(1)
    out = {"orig": d / "orig.png", "caption": d / "caption.png", "border": d / "border.png",
           "crop": d / "crop.png"}
    out["orig"].write_bytes(edits.encode(photos["coffee"]))
    out["caption"].write_bytes(edits.encode(edits.caption(photos["coffee"], rng)))
    out["border"].write_bytes(edits.encode(edits.border(photos["coffee"], rng)))
    out["crop"].write_bytes(edits.encode(edits.crop(photos["coffee"], rng)))
    for i, name in enumerate(("caption", "border", "crop", "orig")):  # the copies are OLDER
        os.utime(out[name], (1_600_000_000 + i, 1_600_000_000 + i))
    return out


@pytest.mark.parametrize("order", ["original first", "copy first"])
@pytest.mark.parametrize("edit,reg,role", [
    ("caption", _reg(), "caption"),   # the change map missed the band: the flat band tells
    ("border", None, "border"),
    ("crop", None, "crop"),
])
def test_the_original_is_kept_by_evidence_not_by_time(files, order, edit, reg, role):
    copy = files[edit]
    if order == "original first":  # the copy is the query; the registration maps orig onto it
        if reg is None:
            reg = _reg(oq=0.7, orf=1.0) if edit == "border" else _reg(oq=1.0, orf=0.5)
        rows = _rows(files["orig"], copy, reg)
    else:  # the original is the query
        if reg is None:
            reg = _reg(oq=1.0, orf=0.7) if edit == "border" else _reg(oq=0.5, orf=1.0)
        rows = _rows(copy, files["orig"], reg)
    (group,) = build_groups(rows, facts=file_facts, look=Looker())
    assert group.keeper == str(files["orig"])
    assert role in group.members[1].roles and group.members[1].path == str(copy)


def test_unrelated_and_failed_rows_make_no_group(files):
    rows = [{"image_id": str(files["orig"]), "verdict": "unique", "match_id": None},
            {"image_id": "x.jpg", "verdict": None, "match_id": None, "error": "image_corrupt"}]
    assert build_groups(rows, facts=file_facts, look=Looker()) == []
