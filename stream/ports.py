"""The small slices of the Kafka client API the stream modules depend on.

``confluent_kafka.Consumer``, ``Producer`` and ``Message`` satisfy these Protocols as they are;
the unit tests satisfy them with in-process fakes, so the commit, rewind, defer and on_lost rules
are exercised without a broker. Partitions are passed as ``confluent_kafka.TopicPartition`` (a
plain value type that needs no broker).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import TopicPartition

#: (topic, partition)
Part = tuple[str, int]


class KafkaMessage(Protocol):
    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def error(self) -> Any: ...


class KafkaConsumer(Protocol):
    def subscribe(self, topics: list[str], *, on_assign: Callable = ..., on_revoke: Callable = ...,
                  on_lost: Callable = ...) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[KafkaMessage]: ...

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> Any: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def close(self) -> None: ...


class KafkaProducer(Protocol):
    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                headers: Sequence[tuple[str, bytes]] | None = None,
                on_delivery: Callable | None = None) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...


def part_of(msg: KafkaMessage) -> Part:
    return msg.topic(), msg.partition()


def position_of(msg: KafkaMessage) -> tuple[str, int, int]:
    return msg.topic(), msg.partition(), msg.offset()
