from __future__ import annotations

import hashlib
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from state.records import ImageRecord

MOTO = Path("/work/main/.servers/moto/bin/moto_server")


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, v: np.ndarray, noise: float = 0.05) -> np.ndarray:
    x = v + noise * rng.standard_normal(v.shape).astype(np.float32)
    return (x / np.linalg.norm(x)).astype(np.float32)


def make_record(
    image_id: str,
    tenant: str | None = None,
    *,
    vector: np.ndarray,
    pdq: np.ndarray | None = None,
    digest: str | None = None,
    bank: str | None = None,
    **meta,
) -> ImageRecord:
    if pdq is None:
        seed = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:4], "little")
        pdq = np.random.default_rng(seed).integers(0, 256, (8, 32), dtype=np.uint8)
    return ImageRecord(
        image_id=image_id,
        tenant=tenant,
        digest=digest or hashlib.sha256(image_id.encode()).hexdigest(),
        pdq=pdq,
        arrays={"vector": vector, "thumb": np.zeros((8, 8), np.uint8)},
        meta={"width": 64, "height": 48, **meta},
        bank=bank,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    if not MOTO.exists():
        pytest.skip("moto server not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto server did not start")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
