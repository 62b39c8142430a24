"""`dupstream scan --groups`: connected groups, the original as keeper whatever the file order."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dupstream.lab.data import edits

CLI = [sys.executable, "-m", "dupstream"]


@pytest.fixture(scope="module")
def copies_first(tmp_path_factory, photos):
    """Every edited copy sorts BEFORE its original (a_... < z_...), so the scan meets the copy
    first and the original is the one judged a near-duplicate; the originals are older files."""
    d = tmp_path_factory.mktemp("copies_first")
    (d / "edited").mkdir()
    rng = np.random.default_rng(3)
    originals = {}
    for i, name in enumerate(("astronaut", "chelsea", "coffee", "rocket", "china")):
        f = d / f"z_{name}.png"
        f.write_bytes(edits.encode(photos[name]))
        os.utime(f, (1_600_000_000 + i, 1_600_000_000 + i))
        originals[name] = f
    made = {
        "astronaut": ("a_astronaut.jpg", edits.encode(photos["astronaut"], "JPEG", 70)),
        "chelsea": ("edited/a_chelsea.png", edits.encode(edits.crop(photos["chelsea"], rng))),
        "coffee": ("a_coffee.png", edits.encode(edits.caption(photos["coffee"], rng))),
        "rocket": ("a_rocket.png", edits.encode(edits.hflip(photos["rocket"], rng))),
        "china": ("a_china.png", edits.encode(edits.border(photos["china"], rng))),
    }
    copies = {}
    for name, (fname, data) in made.items():
        (d / fname).write_bytes(data)
        copies[name] = d / fname
    (d / "unrelated.png").write_bytes(edits.encode(photos["grace_hopper"]))
    return d, originals, copies


@pytest.fixture(scope="module")
def scanned(copies_first, tmp_path_factory):
    d, _, _ = copies_first
    o = tmp_path_factory.mktemp("out")
    r = subprocess.run([*CLI, "scan", str(d), "--detector", "none", "-q", "--out",
                        str(o / "v.jsonl"), "--groups", str(o / "groups.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r, json.loads((o / "groups.json").read_text()), o / "v.jsonl"


def test_the_original_is_the_keeper_in_every_group(copies_first, scanned):
    _, originals, copies = copies_first
    _, doc, _ = scanned
    groups = {g["keeper"]: g for g in doc["groups"]}
    assert set(groups) == {str(f) for f in originals.values()}  # unrelated.png: in no group
    roles = {}
    for name, orig in originals.items():
        g = groups[str(orig)]
        assert [m["path"] for m in g["members"]] == [str(orig), str(copies[name])]
        assert g["members"][0]["roles"] == ["keeper"]
        copy = g["members"][1]
        assert copy["compared_to"] == str(orig) and copy["reason"]
        assert 0.5 <= copy["p_copy"] <= 1.0
        roles[name] = copy["roles"]
    assert "re-encode" in roles["astronaut"]
    assert "crop" in roles["chelsea"]
    assert "caption" in roles["coffee"]
    assert "flip" in roles["rocket"]
    assert "border" in roles["china"]
    caption = groups[str(originals["coffee"])]["members"][1]
    assert caption["reason"].startswith("caption or band added at the")
    crop = groups[str(originals["chelsea"])]["members"][1]["reason"]
    assert crop.startswith("cropped to ") and crop.endswith(" % of the area")


def test_the_rows_match_originals_to_copies_yet_groups_do_not(copies_first, scanned):
    """The per-image rows depend on order (the original 'copies' the earlier file); the
    groups read the evidence for direction instead."""
    _, originals, copies = copies_first
    _, _, rows_file = scanned
    rows = {json.loads(x)["image_id"]: json.loads(x) for x in rows_file.read_text().splitlines()}
    assert rows[str(originals["chelsea"])]["match_id"] == str(copies["chelsea"])


def test_keepers_hold_by_evidence_when_times_tie(scanned, copies_first):
    """Without the modification-time tie-break only the mirror image (which no picture can tell
    apart from its source) is undecided: every other keeper comes from the evidence."""
    from dupstream.app.groups import build_groups
    from dupstream.app.probe import Looker, file_facts

    _, originals, copies = copies_first
    _, _, rows_file = scanned
    rows = [json.loads(x) for x in rows_file.read_text().splitlines()]

    def same_time(p):
        f = file_facts(p)
        return type(f)(f.path, f.width, f.height, f.bytes, 0.0, f.format)

    keepers = {g.keeper for g in build_groups(rows, facts=same_time, look=Looker())}
    for name in ("astronaut", "chelsea", "coffee", "china"):
        assert str(originals[name]) in keepers, name


def test_summary_on_stdout(scanned, copies_first):
    r, _, _ = scanned
    _, originals, copies = copies_first
    assert r.stdout.startswith("5 duplicate groups, 5 files besides their keepers:")
    assert f"keep {originals['chelsea']}" in r.stdout
    assert f"crop         {copies['chelsea']}" in r.stdout
