"""librdkafka configuration builders and topic administration."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


def _security(extra: dict[str, str] | None, sasl_username: str | None,
              sasl_password: str | None) -> dict[str, str]:
    conf = dict(extra or {})
    if sasl_username is not None:
        conf.setdefault("sasl.username", sasl_username)
    if sasl_password is not None:
        conf.setdefault("sasl.password", sasl_password)
    return conf


def consumer_config(
    *,
    bootstrap_servers: str,
    group_id: str,
    session_timeout_ms: int = 10000,
    heartbeat_interval_ms: int = 1000,
    max_poll_interval_ms: int = 300000,
    assignment_strategy: str = "cooperative-sticky",
    statistics_interval_ms: int = 5000,
    extra: dict[str, str] | None = None,
    sasl_username: str | None = None,
    sasl_password: str | None = None,
) -> dict:
    """At-least-once consumer: no auto commit, no auto offset store, cooperative rebalancing."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": assignment_strategy,
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms,
        "max.poll.interval.ms": max_poll_interval_ms,
        "statistics.interval.ms": statistics_interval_ms,
        **_security(extra, sasl_username, sasl_password),
    }


def producer_config(
    *,
    bootstrap_servers: str,
    extra: dict[str, str] | None = None,
    sasl_username: str | None = None,
    sasl_password: str | None = None,
) -> dict:
    """Idempotent producer, acks from all in-sync replicas."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        **_security(extra, sasl_username, sasl_password),
    }


def ensure_topics(
    *,
    bootstrap_servers: str,
    topics: dict[str, int],
    compacted: set[str] | frozenset[str] = frozenset(),
    extra: dict[str, str] | None = None,
    timeout_s: float = 15.0,
) -> None:
    """Create the topics that do not exist yet (name -> partitions)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(extra or {})})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(name, num_partitions=parts, replication_factor=1,
                 config={"cleanup.policy": "compact"} if name in compacted else {})
        for name, parts in topics.items()
        if name not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
            log.info("created topic %s", name)
        except Exception as exc:  # a concurrent creator wins: fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
