"""`dupstream scan` and `dupstream compare` on real photos, through the console script."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from dupstream.lab.data import edits

CLI = [sys.executable, "-m", "dupstream"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(3)
    files = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        files[name] = d / f"a_{name}.png"
        files[name].write_bytes(edits.encode(photos[name]))
    copies = {
        "b_astronaut_jpeg.jpg": ("astronaut", edits.encode(photos["astronaut"], "JPEG", 70)),
        "b_chelsea_crop.png": ("chelsea", edits.encode(edits.crop(photos["chelsea"], rng))),
        "b_coffee_caption.png": ("coffee", edits.encode(edits.caption(photos["coffee"], rng))),
        "b_rocket_flip.png": ("rocket", edits.encode(edits.hflip(photos["rocket"], rng))),
    }
    for fname, (_, data) in copies.items():
        (d / fname).write_bytes(data)
    (d / "c_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d, files, {fname: src for fname, (src, _) in copies.items()}


def test_scan_flags_copies_and_keeps_originals_unique(image_dir, tmp_path):
    d, files, copies = image_dir
    out = tmp_path / "verdicts.jsonl"
    subprocess.run([*CLI, "scan", str(d), "--out", str(out), "-q", "--allow-errors"], check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [r["image_id"] for r in rows]
    assert paths == sorted(paths)  # a directory is scanned in path order
    by_name = {r["image_id"].rsplit("/", 1)[1]: r for r in rows}
    for name in files:
        row = by_name[f"a_{name}.png"]
        assert row["verdict"] == "unique" and row["match_id"] is None
    for fname, src in copies.items():
        row = by_name[fname]
        assert row["verdict"] in {"duplicate", "near_duplicate"}, row
        assert row["match_id"] == str(files[src])
        assert 0.5 <= row["probability"] <= 1.0
    assert by_name["b_astronaut_jpeg.jpg"]["verdict"] == "duplicate"
    assert by_name["b_chelsea_crop.png"]["verdict"] == "near_duplicate"
    assert by_name["b_rocket_flip.png"]["verdict"] == "near_duplicate"
    broken = by_name["c_broken.jpg"]
    assert broken["verdict"] is None and broken["error"].startswith("image_")


def test_compare_one_pair_and_a_pairs_file(image_dir, tmp_path):
    d, files, _ = image_dir
    one = subprocess.run([*CLI, "compare", str(files["chelsea"]), str(d / "b_chelsea_crop.png")],
                         check=True, capture_output=True, text=True)
    res = json.loads(one.stdout)
    assert res["verdict"] == "near_duplicate" and res["probability"] > 0.5
    for key in ("visual", "pdq_distance", "fused", "changed_area"):
        assert key in res

    pairs = tmp_path / "pairs.csv"
    rows = [(files["astronaut"], d / "b_astronaut_jpeg.jpg"), (files["astronaut"], files["coffee"]),
            (files["coffee"], d / "b_coffee_caption.png")]
    with pairs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b"])
        w.writerows(rows)
    out = tmp_path / "scores.jsonl"
    subprocess.run([*CLI, "compare", "--pairs", str(pairs), "--out", str(out)], check=True)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["a"], g["b"]) for g in got] == [(str(a), str(b)) for a, b in rows]
    assert got[0]["verdict"] == "duplicate"
    assert got[1]["verdict"] == "unique" and got[1]["probability"] < 0.5
    assert got[2]["verdict"] == "near_duplicate"
    assert got[0]["visual"] > got[2]["visual"] > got[1]["visual"]


#: every subcommand and options its help must document (a command or option that disappears
#: from the parser, or loses its help text, fails here)
COMMANDS = {
    "run": ["--config", "--create-topics", "--max-events", "--idle-exit", "DUPSTREAM_"],
    "scan": ["--out", "--tenant", "--batch", "--embedder", "--detector", "--no-graph",
             "--groups", "--report", "--index", "--allow-errors", "--preference", "--domain",
             "--max-pixels", "--quiet"],
    "compare": ["--pairs", "--out", "--embedder", "--detector"],
    "train": ["--out", "--seed", "--epochs", "--embedder"],
    "index": ["snapshot", "restore", "stats", "list", "--snapshot", "--replay"],
    "bench": ["--images", "--batches", "--modes", "--e2e", "--workload", "--rounds"],
    "eval": ["--dataset", "--pairs", "--ship", "--quick", "--resamples"],
    "serve": ["--config", "--host", "--port", "/v1/lookup", "DUPSTREAM_SERVE__TOKENS"],
}


def test_help_explains_every_command():
    from dupstream.cli import build_parser

    top = subprocess.run([*CLI, "--help"], check=True, capture_output=True, text=True).stdout
    sub_action = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub_action.choices) == set(COMMANDS)  # a new command needs its help checked here
    helps = {a.dest: a.help for a in sub_action._choices_actions}
    for cmd, options in COMMANDS.items():
        assert cmd in top and helps[cmd] and helps[cmd] in " ".join(top.split())
        out = subprocess.run([*CLI, cmd, "--help"], check=True, capture_output=True,
                             text=True).stdout
        assert out.startswith(f"usage: dupstream {cmd}"), out[:80]
        description = sub_action.choices[cmd].description
        assert description and " ".join(description.split()[:6]) in " ".join(out.split())
        for opt in options:
            assert opt in out, (cmd, opt)


def test_usage_errors_exit_with_the_documented_code():
    from dupstream.cli import ExitCode

    bad = subprocess.run([*CLI, "compare", "only-one.png"], capture_output=True, text=True)
    assert bad.returncode == ExitCode.USAGE == 2 and "exactly two images" in bad.stderr
    nocmd = subprocess.run([*CLI, "frobnicate"], capture_output=True, text=True)
    assert nocmd.returncode == ExitCode.USAGE and "invalid choice" in nocmd.stderr


def test_a_user_folder_named_like_our_packages_changes_nothing(image_dir, tmp_path):
    """Decoys in the working directory (state.py, stream.py, a workers/ package) are not imported:
    the folders at the repository root are installed as dupstream.state etc. only."""
    d, files, _ = image_dir
    pair = [str(files["chelsea"]), str(d / "b_chelsea_crop.png")]
    here = subprocess.run([*CLI, "compare", *pair], check=True, capture_output=True, text=True)
    decoy = tmp_path / "user"
    (decoy / "workers").mkdir(parents=True)
    for name in ("state.py", "stream.py", "workers/__init__.py", "bench.py"):
        (decoy / name).write_text("raise ImportError('a user file, not dupstream')\n")
    there = subprocess.run([*CLI, "compare", *pair], check=True, capture_output=True, text=True,
                           cwd=decoy)
    assert json.loads(there.stdout) == json.loads(here.stdout)


def test_compare_of_missing_files_says_not_found_without_a_traceback(tmp_path):
    from dupstream.cli import ExitCode

    pairs = subprocess.run([*CLI, "compare", "--pairs", str(tmp_path / "nope.csv")],
                           capture_output=True, text=True)
    assert pairs.returncode == ExitCode.USAGE and "not found" in pairs.stderr
    assert "Traceback" not in pairs.stderr
    images = subprocess.run([*CLI, "compare", str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                            capture_output=True, text=True)
    assert images.returncode == ExitCode.USAGE and "not found" in images.stderr
    assert "Traceback" not in images.stderr


def test_scan_rows_carry_their_own_timings_and_no_transform_for_unrelated_images(image_dir,
                                                                                 tmp_path):
    d, files, _ = image_dir
    out = tmp_path / "rows.jsonl"
    run = subprocess.run([*CLI, "scan", str(files["astronaut"]), str(files["coffee"]),
                          str(d / "b_astronaut_jpeg.jpg"), "--detector", "none", "--out",
                          str(out), "-q"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr  # no library warnings by default
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # one model batch, but decode/hash are each image's own
    assert len({(r["timings_ms"]["decode"], r["timings_ms"]["hash"]) for r in rows}) == 3
    coffee = next(r for r in rows if r["image_id"] == str(files["coffee"]))
    assert coffee["verdict"] == "unique" and coffee["evidence"]["pdq_transform"] is None
