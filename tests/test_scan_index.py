"""`dupstream scan --index DIR`: a second scan of a grown folder judges only the new files."""

import json
import subprocess
import sys

import numpy as np

from dupstream.lab.data import edits

CLI = [sys.executable, "-m", "dupstream"]


def _scan(folder, index, out):
    r = subprocess.run([*CLI, "scan", str(folder), "--detector", "none", "-q", "--index",
                        str(index), "--out", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return r, [json.loads(x) for x in out.read_text().splitlines()]


def test_second_scan_judges_only_the_new_files_against_the_old(tmp_path, photos):
    d, index = tmp_path / "photos", tmp_path / "index"
    d.mkdir()
    old = ["astronaut", "chelsea", "coffee", "rocket"]
    for name in old:
        (d / f"{name}.png").write_bytes(edits.encode(photos[name]))
    r1, rows1 = _scan(d, index, tmp_path / "first.jsonl")
    assert len(rows1) == 4 and {r["verdict"] for r in rows1} == {"unique"}

    rng = np.random.default_rng(11)
    new = {}
    for name in old:  # 4 re-encodes + 4 crops of the old pictures, 2 new pictures
        new[f"new/{name}_small.jpg"] = (name, edits.encode(photos[name], "JPEG", 60))
        new[f"new/{name}_crop.png"] = (name, edits.encode(edits.crop(photos[name], rng)))
    new["new/china.png"] = (None, edits.encode(photos["china"]))
    new["new/grace.png"] = (None, edits.encode(photos["grace_hopper"]))
    (d / "new").mkdir()
    for fname, (_, data) in new.items():
        (d / fname).write_bytes(data)
    assert len(new) == 10

    r2, rows2 = _scan(d, index, tmp_path / "second.jsonl")
    judged = {r["image_id"]: r for r in rows2}
    assert set(judged) == {str(d / f) for f in new}  # only the 10 new files were processed
    assert (f"index {index}: 4 files unchanged since the last scan, 10 judged now; "
            "14 images indexed") in r2.stderr
    for fname, (src, _) in new.items():
        row = judged[str(d / fname)]
        if src is None:
            assert row["verdict"] == "unique", row
        else:  # the crop (judged first) matches the image of the first scan; the re-encode
            # the first scan's image or that crop
            assert row["verdict"] in {"duplicate", "near_duplicate"}, row
            allowed = {str(d / f"{src}.png")}
            if fname.endswith("_small.jpg"):
                allowed.add(str(d / f"new/{src}_crop.png"))
            assert row["match_id"] in allowed, row
    # the groups cover both scans: each old original keeps its two new copies
    for name in old:
        assert f"keep {d / f'{name}.png'}" in r2.stdout, r2.stdout
    # the index is the service's snapshot format
    from dupstream.state.blobstore import FileBlobStore
    from dupstream.state.snapshot import load_latest_snapshot

    restored = load_latest_snapshot(FileBlobStore(index), prefix="dupstream")
    assert len(restored.memory) == 14
    assert restored.manifest["model"]["embedder"] == "sscd"

    r3, rows3 = _scan(d, index, tmp_path / "third.jsonl")  # nothing new: nothing read
    assert rows3 == [] and "14 files unchanged since the last scan, 0 judged now" in r3.stderr
