"""Settings -> the running lookup server: the composition of ``dupstream serve``.

The same builders as the stream (``dupstream.app.root``): the object store, the replica's memory
restored from the latest snapshot, the engine (warmed up: every model verified), a follower of
the index-updates feed and a producer for this replica's own adds and removals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from dupstream.app.root import build_engine, kafka_auth, restore_replica
from dupstream.app.settings import Settings
from dupstream.serve.app import ServerParts, create_app
from dupstream.serve.auth import Grant, TokenTable
from dupstream.serve.batcher import MicroBatcher
from dupstream.serve.bodylimit import BodyLimit
from dupstream.serve.metrics import ServeMetrics
from dupstream.serve.replica import FeedPublisher, FeedThread
from dupstream.serve.scope import ScopedMemory

log = logging.getLogger("dupstream.serve")


@dataclass
class Server:
    """A built lookup server: ``asgi`` to run (uvicorn), ``close`` when it stops."""

    asgi: Any
    app: FastAPI
    parts: ServerParts
    snapshot_id: str | None
    _closers: list = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing everything regardless
                log.warning("closing: %s", exc)


def token_table(settings: Settings) -> TokenTable:
    return TokenTable(
        (t.token.get_secret_value(),
         Grant(t.tenant, None if t.banks is None else frozenset(t.banks)))
        for t in settings.serve.tokens)


def build_server(settings: Settings, *, follow: bool = True) -> Server:
    """``follow``: follow and publish to the index-updates feed (off: a standalone index)."""
    from confluent_kafka import Producer

    from dupstream.stream.kafka import consumer_config, producer_config
    from dupstream.stream.replication import FeedFollower

    sv, k, st = settings.serve, settings.kafka, settings.state
    store, blobstore, memory, snapshot_id = restore_replica(settings)
    scoped = ScopedMemory(memory)
    deduper = build_engine(settings, memory=scoped)
    log.info("models verified: %s", deduper.warm_up())
    closers: list = []
    auth = kafka_auth(settings)
    publisher = feed = None
    if follow and st.replication:
        publisher = FeedPublisher(
            producer=Producer(producer_config(bootstrap_servers=k.bootstrap_servers, **auth)),
            topic=st.updates_topic, timeout_s=sv.publish_timeout_s)
        cconf = consumer_config(bootstrap_servers=k.bootstrap_servers,
                                group_id=f"{k.group_id}.serve", **auth)
        feed = FeedThread(lambda: FeedFollower(consumer_conf=cconf, topic=st.updates_topic,
                                               memory=memory), memory).start()
        closers += [publisher.close, feed.stop]
    metrics = ServeMetrics()

    def published(recs) -> None:
        if publisher is not None:
            publisher.adds(recs)

    batcher = MicroBatcher(deduper=deduper, memory=scoped, publish=published,
                           queue_max=sv.queue_max, batch_max=sv.batch_max,
                           wait_s=sv.batch_wait_ms / 1e3,
                           on_batch=metrics.batch.observe).start()
    closers.append(batcher.stop)
    closers.append(lambda: memory.flush_records(st.record_flush_timeout_s))

    def ready() -> tuple[bool, dict]:
        detail = {"images": len(memory), "snapshot": snapshot_id,
                  "feed": None if feed is None else {"caught_up": feed.caught_up,
                                                      "applied": feed.applied,
                                                      "error": feed.error}}
        if feed is not None:
            metrics.feed_applied.set(feed.applied)
        return (feed is None or feed.caught_up) and batcher.alive(), detail

    tokens = token_table(settings)
    if not len(tokens):
        log.warning("no tokens configured (DUPSTREAM_SERVE__TOKENS): every request is refused")
    parts = ServerParts(
        memory=scoped, batcher=batcher, tokens=tokens, store=store,
        max_blob_bytes=settings.s3.max_blob_bytes, request_timeout_s=sv.request_timeout_s,
        retry_after_s=sv.retry_after_s, metrics=metrics, ready=ready,
        publish_removal=(None if publisher is None
                         else lambda key, origin: publisher.removal(key, origin=origin)),
        buckets=frozenset(sv.buckets), model_version=deduper.model_version)
    app = create_app(parts)
    return Server(asgi=BodyLimit(app, max_bytes=sv.max_body_bytes), app=app, parts=parts,
                  snapshot_id=snapshot_id, _closers=closers)
