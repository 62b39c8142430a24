"""The Python API (dupstream.api): find_duplicates and open_deduper, in process."""

import subprocess
import sys

import numpy as np
import pytest

import dupstream
from dupstream.lab.data import edits


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(7)
    (d / "a_chelsea_crop.png").write_bytes(edits.encode(edits.crop(photos["chelsea"], rng)))
    (d / "a_coffee.jpg").write_bytes(edits.encode(photos["coffee"], "JPEG", 60))
    (d / "z_chelsea.png").write_bytes(edits.encode(photos["chelsea"]))
    (d / "z_coffee.png").write_bytes(edits.encode(photos["coffee"]))
    (d / "readme.md").write_text("x")
    (d / "bad.jpg").write_bytes(b"nope")
    return d


@pytest.fixture(scope="module")
def dd(tmp_path_factory):
    return dupstream.open_deduper(detector="none", index=tmp_path_factory.mktemp("ix"))


def test_find_duplicates_groups_a_folder(folder, dd):
    found = dupstream.find_duplicates(folder, deduper=dd)
    assert {g.keeper for g in found.groups} == {str(folder / "z_chelsea.png"),
                                                str(folder / "z_coffee.png")}
    roles = {m.path.rsplit("/", 1)[1]: m.roles for g in found.groups for m in g.members}
    assert "crop" in roles["a_chelsea_crop.png"] and "re-encode" in roles["a_coffee.jpg"]
    assert [r["image_id"].rsplit("/", 1)[1] for r in found.failed] == ["bad.jpg"]
    assert found.skipped == {"not an image (.md)": 1}
    assert found.judged == 5 and len(found.rows) == 5
    assert found.to_dict()["groups"][0]["members"][0]["roles"] == ["keeper"]


def test_lookup_compare_and_a_persistent_index(folder, dd, photos, tmp_path):
    n = len(dd)
    copy = tmp_path / "coffee_again.jpg"
    copy.write_bytes(edits.encode(photos["coffee"], "JPEG", 80))
    v = dd.lookup(copy)
    assert v.verdict == "duplicate" and v.match_id in {str(folder / "z_coffee.png"),
                                                      str(folder / "a_coffee.jpg")}
    assert len(dd) == n  # a lookup does not add
    pair = dd.compare(folder / "z_chelsea.png", folder / "a_chelsea_crop.png")
    assert pair["verdict"] == "near_duplicate" and pair["p_copy"] > 0.5
    assert dd.save() is not None
    again = dupstream.find_duplicates(folder, deduper=dd)  # every file known: none judged
    assert again.judged == 1  # only the failed file is tried again
    with pytest.raises(FileNotFoundError, match="not found: /no/such"):
        dupstream.find_duplicates(["/no/such"], deduper=dd)


def test_import_dupstream_stays_light():
    code = ("import sys, dupstream; "
            "print('torch' in sys.modules, callable(dupstream.find_duplicates))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
