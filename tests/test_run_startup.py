"""`dupstream run` refuses to start on a deployment fault, with one clear line and the documented
exit code, before any Kafka client exists: corrupted detector weights (ExitCode.MODEL, whatever
state the servers are in) and a snapshot written by another embedder (ExitCode.STATE)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from dupstream.cli import ExitCode
from dupstream.lab.devservers import free_port
from dupstream.workers.embedder import SSCD_WEIGHTS
from dupstream.workers.weights import sha256_file
from dupstream.workers.yolo import YOLOV3_TINY_WEIGHTS, yolo_files

CLI = [sys.executable, "-m", "dupstream"]


def _env(**overrides: str) -> dict[str, str]:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: the run must not need it to fail
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPSTREAM_")}
    return {**env, "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS": dead, "DUPSTREAM_S3__ENDPOINT": dead,
            "DUPSTREAM_S3__TRANSIENT_BUDGET_S": "0", "DUPSTREAM_S3__RETRIES": "0", **overrides}


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_corrupted_detector_weights_stop_run_at_start(tmp_path):
    for f in yolo_files():
        shutil.copy(f, tmp_path / f.name)
    weights = tmp_path / "yolov3-tiny.weights"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 0xFF
    weights.write_bytes(bytes(data))
    env = _env(DUPSTREAM_MODEL__DETECTOR_WEIGHTS_DIR=str(tmp_path),
               DUPSTREAM_STATE__RESTORE="false")
    t0 = time.monotonic()
    run = subprocess.run([*CLI, "run", "--create-topics"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == ExitCode.MODEL == 4
    assert time.monotonic() - t0 < 60  # no broker wait: it failed before connecting
    assert _last_line(run.stderr) == (
        f"dupstream: weights: yolov3-tiny: weights file {weights} has sha256 "
        f"{sha256_file(weights)}, expected {YOLOV3_TINY_WEIGHTS.sha256}")
    assert "Traceback" not in run.stderr
    assert "processed" not in run.stderr


@pytest.mark.integration
def test_snapshot_of_another_embedder_stops_run_at_start(kafka_bootstrap, s3_endpoint,
                                                          unique_name, photos):
    from dupstream.engine import Upload
    from dupstream.engine.build import build_deduper
    from dupstream.lab.data import edits
    from dupstream.state.blobstore import MinioBlobStore
    from dupstream.state.snapshot import write_snapshot
    from dupstream.stream.blobs import MinioStore

    bucket = f"{unique_name}-state"
    store = MinioBlobStore(MinioStore(endpoint=s3_endpoint, access_key="x",
                                      secret_key="y").client, bucket)
    writer = build_deduper(embedder="sscd", detector="none")
    writer.process([Upload("a", edits.encode(photos["coffee"]), "t")])
    info = write_snapshot(writer.memory, store, prefix="svc")
    assert info.manifest["model"]["embedder"] == "sscd"

    env = _env(DUPSTREAM_S3__ENDPOINT=s3_endpoint,
               DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
               DUPSTREAM_STATE__BUCKET=bucket,
               DUPSTREAM_STATE__PREFIX="svc", DUPSTREAM_MODEL__EMBEDDER="sscd_distilled",
               DUPSTREAM_MODEL__DETECTOR="none", DUPSTREAM_S3__ACCESS_KEY="x",
               DUPSTREAM_S3__SECRET_KEY="y")
    run = subprocess.run([*CLI, "run"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == ExitCode.STATE == 5
    line = _last_line(run.stderr)
    assert line.startswith(f"dupstream: model_mismatch: snapshot {info.snapshot_id} was written "
                           f"by embedder sscd (weights sha256 {SSCD_WEIGHTS['sscd'].sha256}")
    assert (f"but this service runs embedder sscd_distilled (weights sha256 "
            f"{SSCD_WEIGHTS['sscd_distilled'].sha256}") in line
    assert "docs/STATE.md" in line and "Traceback" not in run.stderr

    # the index tools: restore refuses it for the configured model too; stats shows who wrote it
    restore = subprocess.run([*CLI, "index", "restore", "--snapshot", info.snapshot_id],
                             env=env, capture_output=True, text=True, timeout=120)
    assert restore.returncode == ExitCode.STATE
    assert _last_line(restore.stderr).startswith(
        f"dupstream: model_mismatch: snapshot {info.snapshot_id} was written by embedder sscd (")
    stats = subprocess.run([*CLI, "index", "stats"], env=env, capture_output=True, text=True,
                           timeout=120, check=True)
    assert json.loads(stats.stdout)["stats"]["model"] == writer.identity.to_dict()
