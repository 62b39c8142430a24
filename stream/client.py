"""Client-side helpers: submit uploads (blob to S3 + event to Kafka) and read topics back.

Used by the demo and the integration tests; also what a platform's producer looks like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Producer

from dupstream.core.events import ImageUploaded, encode_event
from dupstream.stream.blobs import ObjectStore


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int
    timestamp_ms: int | None = None


def submit(
    *,
    producer: Producer,
    store: ObjectStore | None,
    topic: str,
    event: ImageUploaded,
    data: bytes | None,
    fmt: str = "json",
) -> None:
    """Upload the blob (when given) and produce its event, keyed by image_id."""
    if store is not None and data is not None:
        store.put(event.bucket, event.key, data)
    producer.produce(topic, key=event.image_id.encode(), value=encode_event(event, fmt=fmt))


def read_topic(
    *,
    bootstrap_servers: str,
    topic: str,
    expect: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 3.0,
) -> list[Record]:
    """Read a topic from the beginning (a throwaway group) until ``expect`` records arrived, or
    nothing new came for ``idle_s`` after the first, or ``timeout_s`` passed."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"reader-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([topic])
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            if expect is None and out and time.monotonic() - last > idle_s:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(msg.error()))
                continue
            kind, ts = msg.timestamp()
            out.append(Record(msg.key(), msg.value(), dict(msg.headers() or []),
                              msg.partition(), msg.offset(), ts if kind else None))
            last = time.monotonic()
    finally:
        consumer.close()
    return out
