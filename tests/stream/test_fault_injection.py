"""Fault injection against the real broker and S3 server: bad input of 44 kinds mixed into the
stream (invalid object keys and buckets among them, the path-traversal key
``../../../etc/passwd`` first), 2-3 consumers, consumers SIGKILLed mid-batch, a TCP proxy in
front of the broker and of S3 that drops and blocks connections, and rebalances by adding and
removing consumers.

Afterwards every good event has a verdict, every bad event is in the dead-letter topic with its
reason (an invalid name: at once, one attempt), nothing else is missing, and no consumer crashed
on input. Replays stay within what the kills can explain: redelivered verdicts are at most the
events in flight at the SIGKILLs (bound below), no dead-letter record is duplicated except for an
event in flight at a kill, and once the stream is quiet the group's committed offsets are at the
end of every partition (lag 0). ``DUPSTREAM_FAULT_SCALE`` multiplies the number of good events
(CI runs the short version, scale 1). A second test stalls S3 under a running service and sends
SIGINT while events wait on transient retries: a clean exit within the stop grace.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from dupstream.core.events import ImageUploaded
from dupstream.lab.data import edits
from dupstream.lab.devservers import service_env
from dupstream.stream.blobs import MinioStore
from dupstream.stream.kafka import ensure_topics
from tests.badinputs import MAX_BLOB_BYTES, MAX_SIDE, catalogue
from tests.conftest import SRV, Server, _port_open, _wait, free_port
from tests.proxy import TcpProxy

pytestmark = pytest.mark.integration
SCALE = int(os.environ.get("DUPSTREAM_FAULT_SCALE", "1"))
# The partition assignment protocol the consumers use: the service's default (cooperative-sticky,
# incremental rebalances) unless DUPSTREAM_FAULT_STRATEGY names another (e.g. range). Measured
# here: with membership changes one at a time (wait_stable) 6/6 runs passed with either protocol;
# when joins, kills and leaves overlapped, Tansu 0.6's group coordinator stalled (a member never
# got an assignment) in 2 of 5 cooperative and 1 of 9 eager runs - a broker gap, see the note.
STRATEGY = os.environ.get("DUPSTREAM_FAULT_STRATEGY", "cooperative-sticky")


@pytest.fixture(scope="module")
def proxied_kafka(tmp_path_factory):
    """A Tansu broker that advertises the proxy's port, so all client traffic crosses it."""
    listen, proxy_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("tansu-proxied") / "tansu.log"
    proc = subprocess.Popen(
        [str(SRV / "bin" / "tansu"), "broker", "--listener-url", f"tcp://127.0.0.1:{listen}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}",
         "--storage-engine", "memory://tansu/"], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    server = Server(proc, listen, log)
    _wait(lambda: _port_open(listen), "Tansu broker")
    proxy = TcpProxy(upstream_port=listen, listen_port=proxy_port)
    yield proxy
    proxy.close()
    server.stop()


@pytest.fixture(scope="module")
def proxied_s3(s3_server):
    proxy = TcpProxy(upstream_port=s3_server.port)
    yield proxy
    proxy.close()


class Collector(threading.Thread):
    """Reads the verdict and dead-letter topics continuously."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(daemon=True)
        self.verdicts: dict[str, list[dict]] = {}
        self.dlq: dict[str, list[dict]] = {}
        self._halt = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"c{time.time_ns()}",
                                   "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                   "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        self._consumer.subscribe(topics)
        self.dlq_topic = topics[1]

    def run(self) -> None:
        while not self._halt.is_set():
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            key = (msg.key() or b"").decode(errors="replace")
            if msg.topic() == self.dlq_topic:
                headers = {k: v.decode() for k, v in (msg.headers() or [])}
                self.dlq.setdefault(key, []).append(headers)
            else:
                self.verdicts.setdefault(key, []).append(json.loads(msg.value()))
        self._consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def test_no_event_is_lost_under_faults(proxied_kafka, proxied_s3, s3_endpoint, photos,
                                       unique_name, tmp_path):
    bootstrap = f"127.0.0.1:{proxied_kafka.port}"
    topics = {k: f"{unique_name}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=bootstrap, topics={t: 3 for t in topics.values()},
                  compacted={topics["updates"]})
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    bucket = f"{unique_name}-faults"
    rng = np.random.default_rng(11)

    events: list[tuple[bytes, bytes]] = []  # (key, payload)
    good: set[str] = set()
    names = list(photos)
    for i in range(60 * SCALE):
        src = photos[names[i % len(names)]]
        edit = [edits.jpeg, edits.crop, edits.caption, edits.recolour][(i // len(names)) % 4]
        big = cv2.resize(edit(src, rng), (1600, 1200), interpolation=cv2.INTER_CUBIC)
        data = edits.encode(big, "JPEG", 90)  # large enough that a batch takes a while
        image_id = f"good-{i}"
        store.put(bucket, f"{image_id}.jpg", data)
        ev = ImageUploaded(image_id=image_id, bucket=bucket, key=f"{image_id}.jpg")
        events.append((image_id.encode(), ev.model_dump_json().encode()))
        good.add(image_id)
    bad = {}
    for case in catalogue(photos["chelsea"]):
        key = f"bad-{case.name}"
        bad[key] = case.reason
        if case.kind == "event":
            events.append((key.encode(), case.payload))
            continue
        obj = f"{key}.bin"
        target_bucket = bucket
        if case.kind == "blob":
            store.put(bucket, obj, case.payload)
        elif case.kind == "missing_bucket":
            target_bucket = f"{unique_name}-nobucket"
        elif case.kind == "invalid_key":
            obj = case.payload.decode()
        elif case.kind == "invalid_bucket":
            target_bucket = case.payload.decode()
        ev = ImageUploaded(image_id=key, bucket=target_bucket, key=obj)
        events.append((key.encode(), ev.model_dump_json().encode()))
    assert len(bad) >= 40
    invalid_names = {f"bad-{c.name}" for c in catalogue(photos["chelsea"])
                     if c.kind in ("invalid_key", "invalid_bucket")}
    assert "bad-path-traversal-key" in invalid_names
    order = rng.permutation(len(events))
    producer = Producer({"bootstrap.servers": bootstrap})
    located: dict[tuple[int, int], str] = {}  # (partition, offset) -> event key

    def on_delivery(err, msg) -> None:
        assert err is None, err
        located[(msg.partition(), msg.offset())] = msg.key().decode()

    for i in order:
        producer.produce(topics["uploads"], key=events[i][0], value=events[i][1],
                         on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(located) == len(events)
    group = f"{unique_name}-svc"
    uploads = [TopicPartition(topics["uploads"], p) for p in range(3)]
    offsets = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                        "enable.auto.commit": False})  # reads the group's offsets, never joins

    env = service_env(bootstrap=bootstrap, s3=f"127.0.0.1:{proxied_s3.port}", topics=topics,
                      group=group, state_bucket=f"{unique_name}-state",
                      overrides={"DUPSTREAM_S3__TIMEOUT_S": "2",
                                 "DUPSTREAM_S3__RETRIES": "1",
                                 "DUPSTREAM_S3__MAX_BLOB_BYTES": str(MAX_BLOB_BYTES),
                                 "DUPSTREAM_IMAGE__MAX_SIDE": str(MAX_SIDE),
                                 "DUPSTREAM_BATCH__MAX_EVENTS": "4",
                                 "DUPSTREAM_KAFKA__ASSIGNMENT_STRATEGY": STRATEGY,
                                 "DUPSTREAM_MODEL__THREADS": "1"})
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str) -> None:
        procs[name] = subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                                       stdout=open(tmp_path / f"{name}.log", "wb"),
                                       stderr=subprocess.STDOUT)

    collector = Collector(bootstrap, [topics["verdicts"], topics["dlq"]])
    collector.start()

    def done() -> int:
        return len(set(collector.verdicts) & good) + len(set(collector.dlq) & set(bad))

    def wait_for(n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while done() < n and time.monotonic() < deadline:
            time.sleep(0.2)

    def owned(name: str) -> set[int]:
        """Partitions the consumer holds now, from its assign/revoke log lines."""
        held: set[int] = set()
        for kind, parts in re.findall(r"(assigned|revoked|lost) (\[.*\])",
                                      (tmp_path / f"{name}.log").read_text()):
            got = {p for _, p in ast.literal_eval(parts)}
            held = got if kind == "assigned" else held - got
        return held

    def wait_stable(live: set[str], timeout: float = 90) -> None:
        """Membership changes one at a time: wait until the live consumers own every partition
        between them (the Tansu broker's group coordinator stalls on overlapping changes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = [owned(n) for n in live]
            if set().union(*held) == {0, 1, 2} and sum(map(len, held)) == 3 and all(held):
                return  # every member holds a share: a joining one has joined
            time.sleep(0.2)
        raise AssertionError(f"group did not settle: { {n: owned(n) for n in live} }")

    def committed() -> dict[int, int]:
        return {tp.partition: tp.offset
                for tp in offsets.committed(uploads, timeout=10)}

    # the end of each partition: one past its last event (nothing else writes to the topic)
    end = {p: 1 + max(off for q, off in located if q == p) for p in range(3)}

    # The bound on replays: an event is replayed only when a consumer dies after its output was
    # acknowledged and before its offset was committed. So at each SIGKILL, the events "in flight"
    # are those of the partitions the victim owned, at or past the group's committed offset, whose
    # verdict or dead letter was already out (read 4 s after the kill: nobody else owns those
    # partitions before the session times out, 10 s). Redelivered verdicts must be at most the
    # sum of these counts over the kills, and a duplicated record must belong to such an event.
    in_flight: dict[str, set[str]] = {}

    def kill(name: str) -> None:
        parts = owned(name)
        procs[name].send_signal(signal.SIGKILL)
        procs[name].wait(10)
        killed.append(name)
        time.sleep(4.0)  # the collector reads through the proxy too: let it catch up
        at = committed()
        out = set(collector.verdicts) | set(collector.dlq)
        in_flight[name] = {key for (p, off), key in located.items()
                           if p in parts and off >= max(at.get(p, 0), 0) and key in out}

    total = len(good) + len(bad)
    killed: list[str] = []
    try:
        start("a")
        start("b")
        wait_stable({"a", "b"})
        wait_for(6)
        time.sleep(0.4)  # land inside the next batch
        kill("a")  # mid-stream, probably mid-batch
        start("c")
        proxied_s3.block(5.0)  # S3 stalls: fetches time out and are retried
        wait_stable({"b", "c"})
        wait_for(total // 3)
        proxied_kafka.drop()  # every broker connection reset
        start("d")  # rebalance: a third consumer joins
        wait_stable({"b", "c", "d"})
        wait_for(total // 2)
        proxied_kafka.block(2.0)
        time.sleep(0.3)
        kill("b")
        start("e")
        proxied_s3.drop()
        wait_stable({"c", "d", "e"})
        wait_for(2 * total // 3)
        procs["d"].send_signal(signal.SIGTERM)  # rebalance: a consumer leaves gracefully
        assert procs["d"].wait(60) == 0
        wait_stable({"c", "e"})
        wait_for(total, timeout=150)
        # quiet now: the committed offsets reach the end of every partition (lag 0)
        deadline = time.monotonic() + 30
        while committed() != end and time.monotonic() < deadline:
            time.sleep(0.5)
        final_committed = committed()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        exit_codes = {name: p.wait(60) for name, p in procs.items()}
        collector.stop()
        offsets.close()

    logs = {name: (tmp_path / f"{name}.log").read_text() for name in procs}
    def late_match(v: dict) -> bool:  # a corrected verdict (replication window), not a replay
        return any(n.startswith("late match") for n in v.get("evidence", {}).get("notes", []))

    judged = {k: [v for v in vs if not late_match(v)] for k, vs in collector.verdicts.items()}
    corrections = sum(len(vs) - len(judged[k]) for k, vs in collector.verdicts.items())
    replays = sum(len(v) - 1 for v in judged.values())
    dlq_replays = sum(len(v) - 1 for v in collector.dlq.values())
    bound = sum(len(keys) for keys in in_flight.values())
    transient = sum(log.count("transient failure") for log in logs.values())
    print(f"\nfault run: {len(good)} good + {len(bad)} bad events, {len(procs)} consumers, "
          f"killed {killed}, in flight at the kills {[len(v) for v in in_flight.values()]}, "
          f"replayed verdicts {replays} (+ {corrections} late-match corrections), "
          f"replayed dead letters {dlq_replays}, "
          f"transient fetch retries {transient}, kafka drops {proxied_kafka.drops}, "
          f"s3 drops {proxied_s3.drops}, committed {final_committed}, ends {end}")
    missing_good = good - set(collector.verdicts)
    missing_bad = set(bad) - set(collector.dlq)
    assert not missing_good and not missing_bad, (missing_good, missing_bad,
                                                  logs["e"][-3000:])
    assert set(collector.verdicts) == good  # nothing else got a verdict
    assert set(collector.dlq) == set(bad)  # no good event was dead-lettered
    for key, reason in bad.items():
        assert {h["dupstream.reason"] for h in collector.dlq[key]} == {reason}, key
    for key in invalid_names:  # refused before any request: one attempt, never deferred
        assert {h["dupstream.attempts"] for h in collector.dlq[key]} == {"1"}, key
    flown = set().union(*in_flight.values())
    assert replays <= bound, (replays, in_flight)
    replayed = {k for k, v in judged.items() if len(v) > 1}
    assert replayed <= flown, replayed - flown
    duplicated_dlq = {k for k, v in collector.dlq.items() if len(v) > 1}
    assert duplicated_dlq <= flown, duplicated_dlq - flown
    assert final_committed == end, (final_committed, end)
    for name, code in exit_codes.items():
        assert code == (-signal.SIGKILL if name in killed else 0), (name, logs[name][-2000:])
        assert "Traceback" not in logs[name], logs[name][-3000:]


def test_sigint_while_events_wait_on_transient_retries(kafka_bootstrap, proxied_s3, s3_endpoint,
                                                       photos, unique_name, tmp_path):
    """S3 stalls after start-up: events wait on transient retries; SIGINT still stops the
    service within its stop grace (5 s), cleanly, and nothing of the waiting events is
    committed (the next owner takes them)."""
    topics = {k: f"{unique_name}.{k}" for k in ("uploads", "verdicts", "dlq", "updates")}
    ensure_topics(bootstrap_servers=kafka_bootstrap, topics={t: 1 for t in topics.values()},
                  compacted={topics["updates"]})
    store = MinioStore(endpoint=s3_endpoint, access_key="x", secret_key="y")
    bucket = f"{unique_name}-sigint"
    group = f"{unique_name}-svc"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        store.put(bucket, f"img-{i}.jpg", edits.encode(photos["coffee"], "JPEG", 80 + i))
    env = service_env(bootstrap=kafka_bootstrap, s3=f"127.0.0.1:{proxied_s3.port}",
                      topics=topics, group=group, state_bucket=f"{unique_name}-state",
                      overrides={"DUPSTREAM_S3__TIMEOUT_S": "1", "DUPSTREAM_S3__RETRIES": "0",
                                 "DUPSTREAM_MODEL__DETECTOR": "none"})
    log_path = tmp_path / "svc.log"
    proc = subprocess.Popen([sys.executable, "-m", "dupstream", "run"], env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        _wait(lambda: "assigned [(" in log_path.read_text(), "assignment", timeout=90)
        proxied_s3.block(25.0)  # S3 stalls: every fetch times out (transient)
        for i in range(3):
            ev = ImageUploaded(image_id=f"img-{i}", bucket=bucket, key=f"img-{i}.jpg")
            producer.produce(topics["uploads"], key=ev.image_id.encode(),
                             value=ev.model_dump_json().encode())
        assert producer.flush(10) == 0
        _wait(lambda: log_path.read_text().count("transient failure") >= 3,
              "transient retries", timeout=30)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    print(f"\nSIGINT during transient retries: exit {code} after {elapsed:.1f}s")
    assert code == 0 and "Traceback" not in log, log[-3000:]
    assert elapsed < 8.0, log[-3000:]  # the 5 s grace, then close
    offsets = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        (tp,) = offsets.committed([TopicPartition(topics["uploads"], 0)], timeout=10)
    finally:
        offsets.close()
    assert tp.offset <= 0  # nothing committed past the waiting events (none, or 0)
