"""Unit tests of the pure request logic around the engine: micro-batching, the queue bound,
timeouts and cancellation, the token table and status mapping. The engine is an in-process
stand-in (these tests are about scheduling, not about judging images; the real engine is in
test_bad_inputs.py and test_replication.py)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from dupstream.core.errors import BlobUnavailable, DeliveryError, ImageError
from dupstream.core.verdict import Verdict
from dupstream.engine.deduper import Upload
from dupstream.serve.app import ServerParts, create_app
from dupstream.serve.auth import Grant, TokenTable
from dupstream.serve.batcher import Job, MicroBatcher
from dupstream.serve.bodylimit import BodyLimit
from dupstream.serve.errors import Overloaded, RequestError, status_for
from dupstream.serve.metrics import ServeMetrics
from dupstream.serve.scope import ScopedMemory
from dupstream.state.memory import Memory
from tests.serve.conftest import running


class SlowEngine:
    """Judges every upload 'unique' after ``delay_s`` per batch; records the batch sizes."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.batches, self.on_add = delay_s, [], None
        self.gate = threading.Event()
        self.gate.set()

    def process(self, uploads, *, add=True):
        self.gate.wait()
        self.batches.append(len(uploads))
        time.sleep(self.delay_s)
        return [Verdict(image_id=u.image_id, tenant=u.tenant, verdict="unique",
                        probability=1.0, model_version="stand-in") for u in uploads]


def _batcher(engine, **kw) -> MicroBatcher:
    opts = {"queue_max": 8, "batch_max": 4, "wait_s": 0.05, **kw}
    return MicroBatcher(deduper=engine, memory=ScopedMemory(Memory()), publish=lambda r: None,
                        **opts).start()


def test_concurrent_requests_share_a_batch_and_a_full_queue_refuses():
    engine = SlowEngine()
    engine.gate.clear()  # hold the worker: requests pile up
    b = _batcher(engine, queue_max=5)
    try:
        futures = [b.submit(Job("lookup", Upload(f"i{i}", b"x", "t"))) for i in range(5)]
        time.sleep(0.1)  # the worker took the first batch (4) and waits at the gate
        futures.append(b.submit(Job("lookup", Upload("i5", b"x", "t"))))
        futures += [b.submit(Job("lookup", Upload(f"j{i}", b"x", "t"))) for i in range(3)]
        with pytest.raises(Overloaded):  # 1 left + 1 + 3 = 5 waiting
            b.submit(Job("lookup", Upload("over", b"x", "t")))
        engine.gate.set()
        assert [f.result(5).image_id for f in futures][:2] == ["i0", "i1"]
        assert sum(engine.batches) == 9 and engine.batches[0] == 4
    finally:
        engine.gate.set()
        b.stop()


def test_a_cancelled_request_is_skipped_and_groups_keep_their_kind():
    engine = SlowEngine()
    engine.gate.clear()
    b = _batcher(engine, batch_max=8, wait_s=0.2)
    try:
        first = b.submit(Job("lookup", Upload("a", b"x", "t")))
        gone = b.submit(Job("lookup", Upload("gone", b"x", "t")))
        other = b.submit(Job("lookup", Upload("b", b"x", "t"), banks=frozenset({"logos"})))
        assert gone.cancel()
        engine.gate.set()
        assert first.result(5).image_id == "a" and other.result(5).image_id == "b"
        assert engine.batches == [1, 1]  # two scopes: two groups; the cancelled one skipped
    finally:
        engine.gate.set()
        b.stop()


def test_token_table_and_grants():
    table = TokenTable([("secret-a", Grant("a")), ("secret-b", Grant("b", frozenset({"x"})))])
    assert table.check("Bearer secret-a").tenant == "a"
    assert table.check("bearer  secret-b").banks == frozenset({"x"})
    for header, reason in ((None, "auth_missing"), ("Bearer", "auth_missing"),
                           ("Token secret-a", "auth_missing"), ("Bearer nope", "auth_invalid")):
        with pytest.raises(RequestError) as err:
            table.check(header)
        assert err.value.reason == reason
    assert Grant("a").banks_for(None) is None
    assert Grant("b", frozenset({"x"})).banks_for(None) == frozenset({"x"})
    with pytest.raises(RequestError, match="bank"):
        Grant("b", frozenset({"x"})).banks_for(["y"])
    assert "secret" not in repr(table.check("Bearer secret-a"))


def test_status_of_every_error_kind():
    assert status_for(ImageError("x", reason="image_truncated")) == 422
    assert status_for(ImageError("x", reason="image_bomb")) == 413
    assert status_for(BlobUnavailable("x")) == 503
    assert status_for(DeliveryError("x")) == 503
    assert status_for(RequestError("x", reason="something_new")) == 400


def test_a_slow_answer_times_out_with_503_and_retry_after():
    engine = SlowEngine(delay_s=1.5)
    b = _batcher(engine)
    parts = ServerParts(memory=ScopedMemory(Memory()), batcher=b,
                        tokens=TokenTable([("tok", Grant("t"))]), store=None,
                        max_blob_bytes=1000, request_timeout_s=0.3, retry_after_s=2,
                        metrics=ServeMetrics(), ready=lambda: (True, {}))
    try:
        with running(BodyLimit(create_app(parts), max_bytes=1000)) as base:
            r = httpx.post(f"{base}/v1/lookup", content=b"\xff\xd8",
                           headers={"Authorization": "Bearer tok",
                                    "Content-Type": "image/jpeg"})
            assert r.status_code == 503 and r.json()["reason"] == "timeout"
            assert r.headers["retry-after"] == "2"
            parts.ready = lambda: (False, {"feed": "catching up"})
            r = httpx.post(f"{base}/v1/lookup", content=b"\xff\xd8",
                           headers={"Authorization": "Bearer tok",
                                    "Content-Type": "image/jpeg"})
            assert r.status_code == 503 and r.json()["reason"] == "not_ready"
            assert httpx.get(f"{base}/readyz").status_code == 503
            assert httpx.get(f"{base}/healthz").status_code == 200
            assert httpx.get(f"{base}/openapi.json").json()["paths"]["/v1/lookup"]["post"]
    finally:
        b.stop()
