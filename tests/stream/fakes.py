"""In-process fakes of the Kafka consumer/producer/message (``dupstream.stream.ports``), object
storage and the engine, for unit tests of the stream service's rules without a broker.

They model what the rules depend on: a partitioned log with per-partition fetch positions that
``seek`` moves, pause/resume, synchronous commits, delivery callbacks that can fail, and the
rebalance callbacks (assign, revoke, lost) fired from inside ``consume`` as librdkafka does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

from confluent_kafka import KafkaException, TopicPartition

from dupstream.core.errors import BlobNotFound, BlobUnavailable
from dupstream.core.events import ImageUploaded
from dupstream.core.verdict import Verdict
from dupstream.engine import Extracted, Upload
from dupstream.stream.ports import Part


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _error: object = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self):
        return self._error


class FakeConsumer:
    """A consumer of one topic with ``partitions`` partitions; all are assigned on the first
    ``consume`` (from the committed offsets). ``before_consume`` hooks run inside ``consume``,
    where librdkafka fires rebalance callbacks."""

    def __init__(self, topic: str, partitions: int = 1, *, journal: list | None = None) -> None:
        self.topic = topic
        #: ("commit", part, offset) entries, shared with a FakeProducer's ("ack", topic, key)
        self.journal = journal if journal is not None else []
        self.log: dict[Part, list[FakeMessage]] = {(topic, p): [] for p in range(partitions)}
        self.position: dict[Part, int] = {}
        self.committed: dict[Part, int] = {}
        self.commits: list[dict[Part, int]] = []
        self.paused: set[Part] = set()
        self.seeks: list[tuple[Part, int]] = []
        self.before_consume: list[Callable[[], None]] = []
        self.fail_commits = 0
        self.closed = False
        self._cb: dict[str, Callable] = {}
        self._subscribed = False

    # -- test side ---------------------------------------------------------------------------
    def append(self, partition: int, key: bytes | None, value: bytes | None) -> FakeMessage:
        part = (self.topic, partition)
        msg = FakeMessage(self.topic, partition, len(self.log[part]), key, value)
        self.log[part].append(msg)
        return msg

    def end(self, part: Part) -> int:
        return len(self.log[part])

    def revoke(self, parts: list[Part]) -> None:
        self._cb["on_revoke"](self, [TopicPartition(t, p) for t, p in parts])
        for part in parts:
            self.position.pop(part, None)
            self.paused.discard(part)

    def lose(self, parts: list[Part]) -> None:
        self._cb["on_lost"](self, [TopicPartition(t, p) for t, p in parts])
        for part in parts:
            self.position.pop(part, None)
            self.paused.discard(part)

    def assign(self, parts: list[Part]) -> None:
        self._subscribed = True
        for part in parts:
            self.position[part] = self.committed.get(part, 0)
        if "on_assign" in self._cb:
            self._cb["on_assign"](self, [TopicPartition(t, p) for t, p in parts])

    # -- the consumer API --------------------------------------------------------------------
    def subscribe(self, topics, *, on_assign, on_revoke, on_lost) -> None:
        assert topics == [self.topic]
        self._cb = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        if not self._subscribed:
            self._subscribed = True
            self.assign(sorted(self.log))
        while self.before_consume:
            self.before_consume.pop(0)()
        out: list[FakeMessage] = []
        for part in sorted(self.position):
            if part in self.paused:
                continue
            while len(out) < num_messages and self.position[part] < len(self.log[part]):
                out.append(self.log[part][self.position[part]])
                self.position[part] += 1
        return out

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        assert asynchronous is False
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaException("fake: commit failed")
        done = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        for part in done:
            assert part in self.position, f"commit of unassigned {part}"
        self.committed.update(done)
        self.commits.append(done)
        self.journal.extend(("commit", part, off) for part, off in done.items())

    def seek(self, tp: TopicPartition) -> None:
        part = (tp.topic, tp.partition)
        if part not in self.position:
            raise KafkaException(f"fake: {part} not assigned")
        self.position[part] = tp.offset
        self.seeks.append((part, tp.offset))

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Queues records; ``flush``/``poll`` acknowledge them. ``fail_next`` records get an error
    in their delivery callback; while ``down`` nothing is acknowledged."""

    def __init__(self, *, journal: list | None = None) -> None:
        self.journal = journal if journal is not None else []
        self.queue: list[tuple[str, bytes | None, bytes | None, list | None, Callable]] = []
        self.topics: dict[str, list[tuple[bytes | None, bytes | None, dict]]] = {}
        self.fail_next = 0
        self.down = False
        self.produced = 0

    def produce(self, topic, value=None, key=None, *, headers=None, on_delivery=None) -> None:
        self.produced += 1
        self.queue.append((topic, key, value, headers, on_delivery))

    def poll(self, timeout: float = -1) -> int:
        return self.flush(timeout)

    def flush(self, timeout: float = -1) -> int:
        if self.down:
            return len(self.queue)
        queue, self.queue = self.queue, []
        for topic, key, value, headers, cb in queue:
            if self.fail_next:
                self.fail_next -= 1
                if cb:
                    cb("fake: delivery failed", None)
                continue
            self.topics.setdefault(topic, []).append((key, value, dict(headers or [])))
            self.journal.append(("ack", topic, key))
            if cb:
                cb(None, None)
        return 0

    def keys(self, topic: str) -> list[str]:
        return [k.decode() for k, _, _ in self.topics.get(topic, [])]


class FakeStore:
    """Blobs by (bucket, key); ``transient[key]`` failures of a key before it succeeds."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.transient: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        self.gets[key] += 1
        if self.transient[key] > 0:
            self.transient[key] -= 1
            raise BlobUnavailable(f"fake: s3://{bucket}/{key} unavailable")
        try:
            return self.blobs[(bucket, key)]
        except KeyError:
            raise BlobNotFound(f"fake: s3://{bucket}/{key}") from None

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.blobs[(bucket, key)] = data


class FakeDeduper:
    """Every upload is unique; counts how often each image was processed."""

    def __init__(self) -> None:
        self.processed: Counter[str] = Counter()
        self.on_add = self.on_replay = None
        self.extractor = SimpleNamespace(embedder=SimpleNamespace(embed=lambda imgs: None))
        self.memory = SimpleNamespace(stats=lambda: {})

        self.warmed = 0
        #: uploads extracted ahead, and how many of those ``process`` was given
        self.ahead = self.given_ahead = 0
        #: image_id -> exception raised when that image is processed
        self.raises: dict[str, Exception] = {}

    def __len__(self) -> int:
        return len(self.processed)

    def warm_up(self) -> dict:
        self.warmed += 1
        return {}

    def extract_ahead(self, uploads: list[Upload]) -> list[Extracted]:
        """Nothing to extract: every upload is unique. Counts the uploads seen ahead."""
        self.ahead += len(uploads)
        return [Extracted(digest=up.image_id, features=None) for up in uploads]

    def process(self, uploads: list[Upload], *, extracted=None) -> list[Verdict]:
        if extracted is not None:
            assert len(extracted) == len(uploads)
            self.given_ahead += sum(e is not None for e in extracted)
        out = []
        for up in uploads:
            if up.image_id in self.raises:
                raise self.raises[up.image_id]
            self.processed[up.image_id] += 1
            out.append(Verdict(image_id=up.image_id, tenant=up.tenant, verdict="unique",
                               probability=1.0, model_version="fake"))
        return out


@dataclass
class Rig:
    """A service wired to fakes, with helpers to feed it events."""

    consumer: FakeConsumer
    producer: FakeProducer
    store: FakeStore
    deduper: FakeDeduper
    service: object
    images: dict[str, tuple[int, int]] = field(default_factory=dict)

    def upload(self, image_id: str, *, partition: int = 0, blob: bool = True) -> FakeMessage:
        key = f"{image_id}.jpg"
        if blob:
            self.store.put("bkt", key, b"bytes of " + image_id.encode())
        ev = ImageUploaded(image_id=image_id, bucket="bkt", key=key)
        msg = self.consumer.append(partition, image_id.encode(), ev.model_dump_json().encode())
        self.images[image_id] = (partition, msg.offset())
        return msg

    def verdicts(self) -> list[str]:
        return self.producer.keys("verdicts")

    def dead_letters(self) -> list[str]:
        return self.producer.keys("dlq")


def drain(rig: Rig, until, *, timeout: float = 5.0) -> None:
    """Step the service's loop until ``until()`` holds (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        rig.service.step()


def settled(rig: Rig) -> bool:
    """Every partition committed up to its end."""
    c = rig.consumer
    return all(c.committed.get(p, 0) == c.end(p) for p in c.log)
