"""`dupstream eval --pairs` on four labelled pairs of packaged photos writes the report."""

import subprocess
import sys

import numpy as np

from dupstream.lab.data import edits


def test_eval_pairs_writes_the_report(tmp_path, photos):
    rng = np.random.default_rng(0)
    files = {
        "chelsea.png": photos["chelsea"],
        "chelsea_crop.jpg": edits.crop(photos["chelsea"], rng),
        "coffee.png": photos["coffee"],
        "coffee_caption.png": edits.caption(photos["coffee"], rng),
        "rocket.png": photos["rocket"],
    }
    for name, rgb in files.items():
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        (tmp_path / name).write_bytes(edits.encode(rgb, fmt))
    (tmp_path / "pairs.csv").write_text(
        "a,b,label\nchelsea.png,chelsea_crop.jpg,1\ncoffee.png,coffee_caption.png,1\n"
        "chelsea.png,rocket.png,0\ncoffee.png,rocket.png,0\n")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "dupstream", "eval", "--pairs", str(tmp_path / "pairs.csv"),
         "--out", str(out), "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert "Your labelled pairs" in md and "Shipped policy" in md
    assert "chelsea_crop.jpg" in md
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    for method in ("pHash", "PDQ", "SIFT + BoVW", "full (ours)"):
        assert method in md
