"""The lookup server on the real broker and S3 server of tests/conftest.py: topics, settings, a
real uvicorn on 127.0.0.1 in a thread, and edited copies of real photos."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from dupstream.app.settings import Settings
from dupstream.lab.data import edits
from dupstream.lab.devservers import free_port
from dupstream.stream.kafka import ensure_topics

TOKENS = {
    "acme": "tok-acme-0123456789",
    "zeta": "tok-zeta-0123456789",
    "acme-logos": "tok-acme-logos-0123",  # acme, granted bank "logos" only
    "acme-nobank": "tok-acme-nobank-012",  # acme, no bank
    "archive": "tok-archive-0123456",  # the tenant of the image only the snapshot holds
}
#: what every process of these tests runs (the stream child gets them as DUPSTREAM_* too):
#: objects do not matter here, so no detector (faster); the same model everywhere
MODEL_ENV = {"DUPSTREAM_MODEL__DETECTOR": "none", "DUPSTREAM_MODEL__THREADS": "1"}


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@pytest.fixture(scope="session")
def serve_names(kafka_bootstrap) -> dict[str, str]:
    run = f"sv{uuid.uuid4().hex[:8]}"
    names = {k: f"{run}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=kafka_bootstrap, topics={n: 3 for n in names.values()},
                  compacted={names["updates"]})
    names["group"] = run
    names["state_bucket"] = f"{run}-state"
    names["uploads_bucket"] = f"{run}-uploads"
    return names


def serve_env(kafka_bootstrap: str, s3_endpoint: str, names: dict[str, str]) -> dict[str, str]:
    """DUPSTREAM_* of every process of these tests (stream and servers)."""
    import json

    return {
        "DUPSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DUPSTREAM_KAFKA__INPUT_TOPIC": names["uploads"],
        "DUPSTREAM_KAFKA__OUTPUT_TOPIC": names["verdicts"],
        "DUPSTREAM_KAFKA__DLQ_TOPIC": names["dlq"],
        "DUPSTREAM_KAFKA__GROUP_ID": names["group"],
        "DUPSTREAM_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "DUPSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "DUPSTREAM_S3__ENDPOINT": s3_endpoint,
        "DUPSTREAM_S3__ACCESS_KEY": "test-access",
        "DUPSTREAM_S3__SECRET_KEY": "test-secret",
        "DUPSTREAM_STATE__UPDATES_TOPIC": names["updates"],
        "DUPSTREAM_STATE__BUCKET": names["state_bucket"],
        "DUPSTREAM_SERVE__TOKENS": json.dumps([
            {"token": TOKENS["acme"], "tenant": "acme"},
            {"token": TOKENS["zeta"], "tenant": "zeta"},
            {"token": TOKENS["acme-logos"], "tenant": "acme", "banks": ["logos"]},
            {"token": TOKENS["acme-nobank"], "tenant": "acme", "banks": []},
            {"token": TOKENS["archive"], "tenant": "archive"},
        ]),
        "DUPSTREAM_SERVE__MAX_BODY_BYTES": str(2 * 1024 * 1024),
        "DUPSTREAM_SERVE__QUEUE_MAX": "4",
        "DUPSTREAM_SERVE__BATCH_MAX": "4",
        "DUPSTREAM_S3__MAX_BLOB_BYTES": str(1024 * 1024),
        "DUPSTREAM_BATCH__MAX_EVENTS": "4",
        **MODEL_ENV,
    }


@contextlib.contextmanager
def running(asgi, *, port: int | None = None) -> Iterator[str]:
    """A real uvicorn serving ``asgi`` on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait_ready(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} not ready within {timeout_s}s")


def _write_snapshot(settings: Settings) -> None:
    """A snapshot in the state bucket holding one image the feed never carried (tenant
    ``archive``, so no other tenant's lookup can meet its synthetic vectors): a replica that
    shows it was restored from the snapshot."""
    from dupstream.app.root import build_object_store, build_state_store, memory_config
    from dupstream.state.memory import Memory
    from dupstream.state.records import ImageRecord
    from dupstream.state.snapshot import write_snapshot

    rng = np.random.default_rng(3)
    v = rng.standard_normal(512).astype(np.float32)
    v /= np.linalg.norm(v)
    mem = Memory(memory_config(settings.state), replica_id="snapshot-writer")
    mem.add(ImageRecord("snap-img", "archive", "ab" * 32, rng.integers(0, 256, (8, 32),
                                                                      dtype=np.uint8),
                        arrays={"vector": v, "content": v}, meta={"width": 7, "height": 5}))
    store = build_state_store(settings, build_object_store(settings, pool=False))
    write_snapshot(mem, store, prefix=settings.state.prefix)


@pytest.fixture(scope="session")
def replica_a(kafka_bootstrap, s3_endpoint, serve_names):
    """Replica A: a lookup server built from settings (the composition of `dupstream serve`),
    following and publishing to the feed, served by a real uvicorn."""
    from dupstream.serve.build import build_server

    env = serve_env(kafka_bootstrap, s3_endpoint, serve_names)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        settings = Settings.load()
    _write_snapshot(settings)
    server = build_server(settings)
    try:
        with running(server.asgi) as base:
            wait_ready(base)
            yield base, server
    finally:
        server.close()


@pytest.fixture(scope="session")
def copies(photos):
    """Originals and edited copies of real photos (JPEG bytes)."""
    rng = np.random.default_rng(17)
    out = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        out[name] = edits.encode(photos[name], "JPEG", 92)
        out[f"{name}-crop"] = edits.encode(edits.crop(photos[name], rng), "JPEG", 90)
        out[f"{name}-caption"] = edits.encode(edits.caption(photos[name], rng), "JPEG", 90)
    return out
