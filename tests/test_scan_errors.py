"""`dupstream scan` errors and exit codes, through the console script (README: "Exit codes")."""

import json
import os
import subprocess
import sys

import pytest

from dupstream.lab.data import edits

CLI = [sys.executable, "-m", "dupstream"]


def _run(*args, env=None, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("errs")
    (d / "coffee.png").write_bytes(edits.encode(photos["coffee"]))
    (d / "coffee_copy.jpg").write_bytes(edits.encode(photos["coffee"], "JPEG", 70))
    (d / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (d / "notes.txt").write_text("not a picture")
    (d / "list.csv").write_text("a,b\n")
    return d


@pytest.fixture(scope="module")
def default_scan(folder, tmp_path_factory):
    """One scan with the default models (the detector's torch code is what warns)."""
    out = tmp_path_factory.mktemp("o") / "v.jsonl"
    return _run("scan", str(folder), "--out", str(out)), out


def test_missing_path_says_not_found_and_exits_2(folder):
    r = _run("scan", str(folder / "nope"), "/no/such/dir")
    assert r.returncode == 2
    assert "not found: /no/such/dir" in r.stderr and "nope" in r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr


def test_a_failed_file_exits_1_and_says_which(default_scan, folder):
    r, out = default_scan
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image_id"].rsplit("/", 1)[1] for row in rows] == [
        "coffee.png", "coffee_copy.jpg", "zz_broken.jpg"]
    assert rows[2]["error"].startswith("image_")
    assert f"failed: {folder / 'zz_broken.jpg'}: image_" in r.stderr
    # non-image files in the folder are counted by reason, not scanned
    skipped = next(line for line in r.stderr.splitlines() if line.startswith("skipped"))
    assert json.loads(skipped.split(": ", 1)[1]) == {"not an image (.csv)": 1,
                                                      "not an image (.txt)": 1}


def test_no_library_warnings_on_stderr(default_scan):
    r, _ = default_scan
    assert "Warning" not in r.stderr and "warnings.warn" not in r.stderr, r.stderr
    assert "loading models" in r.stderr  # the model-loading line (not --quiet)


def test_allow_errors_exits_0_and_policy_options(folder):
    """--allow-errors; and the policy settings `run` takes: --preference, --domain, --max-pixels
    (the 600 x 400 photo has more pixels than allowed)."""
    r = _run("scan", str(folder / "zz_broken.jpg"), str(folder / "coffee.png"),
             "--allow-errors", "-q", "--detector", "none", "--preference", "precision",
             "--domain", "photos", "--max-pixels", "100000")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["error"].startswith("image_") and rows[1]["error"] == "image_bomb"
    assert "loading models" not in r.stderr  # --quiet
    bad = _run("scan", str(folder), "--preference", "lenient")
    assert bad.returncode == 2 and "invalid choice: 'lenient'" in bad.stderr


@pytest.mark.parametrize("bad", ["0", "-3", "abc"])
def test_bad_batch_is_one_line_usage_error(folder, bad):
    r = _run("scan", str(folder), "--batch", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--batch" in r.stderr.splitlines()[-1]


def test_unwritable_out_is_one_line(folder, tmp_path):
    r = _run("scan", str(folder), "--out", str(tmp_path / "missing" / "v.jsonl"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"dupstream: cannot write {tmp_path / 'missing' / 'v.jsonl'}: No such file or directory"]


def test_closed_pipe_stops_quietly(folder):
    p = subprocess.Popen([*CLI, "scan", str(folder / "coffee.png"), "-q", "--detector", "none"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first row (`| head` that exited)
    err = p.stderr.read().decode()
    assert p.wait(300) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception" not in err, err


def test_bad_env_setting_names_the_variable():
    r = _run("run", "--max-events", "1", env={"DUPSTREAM_BATCH__MAX_EVENTS": "abc"})
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].startswith(
        "dupstream: config: DUPSTREAM_BATCH__MAX_EVENTS='abc': ")


def test_unknown_yaml_key_is_rejected(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("batch:\n  max_event: 3\nmodel:\n  detector: none\n")
    r = _run("run", "--config", str(cfg), "--max-events", "1")
    assert r.returncode == 3
    assert "unknown setting(s) batch.max_event" in r.stderr.strip().splitlines()[-1]


def test_progress_on_a_terminal_moves_per_image(folder):
    """On a terminal: the model-loading line, then a bar that counts every image (with the
    rate and an ETA); nothing of it with --quiet (test_allow_errors_...)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # 120 columns
    p = subprocess.Popen([*CLI, "scan", str(folder / "coffee.png"),
                          str(folder / "coffee_copy.jpg"), "--detector", "none", "--batch", "1"],
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(300) == 0
    os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    assert "loading models (sscd, detector none)" in err and "models ready in" in err
    assert "1/2" in err and "2/2" in err and "img/s" in err, err
