"""Shared fixtures: real local servers (Tansu Kafka broker, moto S3 server) on free ports of
127.0.0.1, started here by the test setup, and real photos from installed packages."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dupstream.lab.devservers import free_port

ROOT = Path(__file__).resolve().parents[1]
SRV = Path(os.environ.get("SRV_DIR", ROOT / ".servers"))


def _wait(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _binary(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` (installs the local servers)")
    return path


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory) -> Server:
    tansu = _binary(SRV / "bin" / "tansu")
    port = free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    server = Server(proc, port, log)
    try:
        _wait(lambda: _port_open(port), "Tansu broker")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server) -> str:
    return f"127.0.0.1:{kafka_server.port}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Server:
    moto = _binary(SRV / "moto" / "bin" / "moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    server = Server(proc, port, log)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1) as r:
            return r.status == 200

    try:
        _wait(ready, "moto S3 server")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server) -> str:
    return f"127.0.0.1:{s3_server.port}"


@pytest.fixture()
def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def photos():
    from dupstream.lab.data.photos import load_photos

    return load_photos(["astronaut", "chelsea", "coffee", "rocket", "china", "grace_hopper"])


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Server:
    """A real Milvus standalone server (PyPI ``milvus`` 2.3.x, in .servers/milvus, installed by
    scripts/setup.sh) on a free port of 127.0.0.1, started once per session (~10-20 s) and
    stopped at the end. Its proxy time tick is 20 ms (Milvus's default: 200 ms), which a Strong
    search waits for: ~30 ms a search instead of ~200 ms. Skips (with the reason) where it is
    not installed or pymilvus is not."""
    py = SRV / "milvus" / "bin" / "python"
    if not py.exists():
        pytest.skip(f"{py} is missing: the Milvus server is not installed on this machine "
                    "(scripts/setup.sh installs it where the milvus wheel can be installed)")
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        pytest.skip("pymilvus is not installed (scripts/setup.sh installs it)")
    port = free_port()
    tmp = tmp_path_factory.mktemp("milvus")
    log, ready = tmp / "milvus.log", tmp / "ready"
    proc = subprocess.Popen(
        [str(py), str(ROOT / "scripts" / "milvus_server.py"), "--data-dir", str(tmp / "data"),
         "--port", str(port), "--ready-file", str(ready), "--time-tick-ms", "20"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    server = Server(proc, port, log)
    try:
        _wait(lambda: ready.exists() or proc.poll() is not None, "Milvus server", timeout=120)
        if proc.poll() is not None:
            raise RuntimeError(f"the Milvus server exited: {log.read_text()[-2000:]}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_uri(milvus_server) -> str:
    return f"http://127.0.0.1:{milvus_server.port}"
