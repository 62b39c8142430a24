"""A replayed add is published to the index-updates feed again.

When a batch's delivery fails, the batch is rewound and read again; its images are already in
this replica's index (they were added before the delivery), so the engine adds nothing the second
time. Their index updates were never acknowledged, though: without publishing them again the
other replicas would never learn of those images. Driven through the service's real loop and a
real ``Deduper`` + ``Memory`` (a tiny deterministic embedder instead of the models), with the
in-process Kafka fakes; the feed is then applied to a second ``Memory`` as a replica does.
"""

from __future__ import annotations

import pytest

from dupstream.engine import Deduper
from dupstream.lab.data import edits
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.stream.service import StreamService
from dupstream.workers.decision import DecisionPolicy, default_calibrator
from dupstream.workers.features import FeatureExtractor
from tests.stream.fakes import FakeConsumer, FakeProducer, FakeStore, Rig, drain, settled
from tests.tiny import DIM, TinyEmbedder

P0 = ("in", 0)


def _memory(replica: str) -> Memory:
    return Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=DIM, kind="flat")}),
                  replica_id=replica)


def _deduper(memory: Memory) -> Deduper:
    return Deduper(extractor=FeatureExtractor(embedder=TinyEmbedder()), memory=memory,
                   policy=DecisionPolicy(calibrator=default_calibrator()))


@pytest.fixture(scope="module")
def jpegs(photos):
    return {name: edits.encode(img) for name, img in photos.items()}


def make_rig(jpegs: dict[str, bytes], **kw) -> Rig:
    journal: list = []
    consumer = FakeConsumer("in", 1, journal=journal)
    producer = FakeProducer(journal=journal)
    store, deduper = FakeStore(), _deduper(_memory("a"))
    service = StreamService(
        consumer_conf={}, producer_conf={}, input_topic="in", output_topic="verdicts",
        dlq_topic="dlq", updates_topic="updates", store=store, deduper=deduper, batch_max=8,
        batch_wait_s=0.0, fetch_workers=2, consumer_factory=lambda _conf: consumer,
        producer_factory=lambda _conf: producer, **kw)
    rig = Rig(consumer, producer, store, deduper, service)
    for name, data in jpegs.items():
        rig.upload(name, blob=False)
        store.put("bkt", f"{name}.jpg", data)
    return rig


def _replica_from_feed(rig: Rig) -> Memory:
    replica = _memory("b")
    for i, (_key, value, _headers) in enumerate(rig.producer.topics.get("updates", [])):
        replica.apply(value, position=("updates", 0, i))
    return replica


def test_a_rewound_batch_publishes_its_index_updates_again(jpegs):
    rig = make_rig(jpegs, delivery_deadline_s=0.05)
    rig.service.open()
    rig.service.step()  # polled: the batch is ahead, fetching
    rig.producer.down = True  # the broker acknowledges nothing: the batch is rewound
    rig.service.step()
    assert rig.consumer.seeks == [(P0, 0)] and rig.consumer.committed == {}
    assert len(rig.deduper.memory) == len(jpegs)  # added here before the delivery failed
    rig.producer.down = False
    rig.producer.queue.clear()  # what librdkafka gave up on at the deadline is never delivered
    drain(rig, lambda: settled(rig))

    # every image of the replayed batch is in the feed, though this replica already held it
    assert sorted(rig.producer.keys("verdicts")) == sorted(jpegs)
    assert len(rig.producer.topics["updates"]) == len(jpegs)
    replica = _replica_from_feed(rig)
    assert len(replica) == len(jpegs)
    for name in jpegs:
        assert any(rec.image_id == name for rec in replica.records.records())


def test_a_replayed_update_is_applied_by_a_replica_as_a_no_op(jpegs):
    """The feed carries an image twice (its first delivery acknowledged after all, then the
    replay's): the replica holds it once."""
    rig = make_rig(jpegs)
    rig.service.open()
    drain(rig, lambda: settled(rig))
    first = len(rig.producer.topics["updates"])
    assert first == len(jpegs)
    # the same events read again (a kill before the commit reached the broker, say)
    rig.consumer.committed.clear()
    rig.consumer.seek(_tp(P0, 0))
    drain(rig, lambda: len(rig.producer.topics["updates"]) == 2 * first)
    replica = _replica_from_feed(rig)
    assert len(replica) == len(jpegs)
    assert replica.stats()["images"] == len(jpegs)


def _tp(part, offset):
    from confluent_kafka import TopicPartition

    return TopicPartition(part[0], part[1], offset)
