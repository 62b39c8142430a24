"""The index-updates feed on the real broker: an update written by another model (embedder or
weights) is refused and counted, never applied; the rest of the feed flows."""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka import Producer

from dupstream.state.identity import ModelIdentity
from dupstream.state.memory import Memory, MemoryConfig, encode_update, update_key
from dupstream.stream.kafka import consumer_config, ensure_topics
from dupstream.stream.replication import FeedFollower
from dupstream.workers.embedder import SSCD_WEIGHTS
from tests.state.helpers import make_record, unit

pytestmark = pytest.mark.integration

SSCD = ModelIdentity(embedder="sscd", embedder_sha256=SSCD_WEIGHTS["sscd"].sha256)
DISTILLED = ModelIdentity(embedder="sscd_distilled",
                          embedder_sha256=SSCD_WEIGHTS["sscd_distilled"].sha256)


def test_feed_refuses_updates_of_another_model(kafka_bootstrap, unique_name):
    topic = f"{unique_name}.updates"
    ensure_topics(bootstrap_servers=kafka_bootstrap, topics={topic: 1}, compacted={topic})
    vecs = unit(np.random.default_rng(0), 4, 512)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, model in enumerate([SSCD, DISTILLED, None, SSCD]):
        rec = make_record(f"img{i}", "t", vector=vecs[i])
        rec.origin, rec.ts, rec.model = "replica-b", 1.0, model
        producer.produce(topic, key=update_key(rec), value=encode_update(rec))
    producer.flush(10)

    memory = Memory(MemoryConfig(), identity=SSCD)
    feed = FeedFollower(consumer_conf=consumer_config(bootstrap_servers=kafka_bootstrap,
                                                      group_id=unique_name),
                        topic=topic, memory=memory)
    try:
        assert feed.start(timeout_s=60) == 3 and feed.caught_up
    finally:
        feed.close()
    assert feed.refused == 1
    assert (None, "t", "img1") not in memory
    assert all((None, "t", f"img{i}") in memory for i in (0, 2, 3))
    stats = memory.stats()
    assert stats["updates_refused"] == 1 and stats["updates_unidentified"] == 1
    assert stats["positions"] == {f"{topic}/0": 4}  # the feed moved on past the refused one
