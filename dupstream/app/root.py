"""The composition root: everything the running service (and the ``index`` commands) is made of,
built from one ``Settings``.

The CLI parses arguments and calls these builders; nothing below this module reads settings.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dupstream.app.settings import PolicySettings, Settings, StateSettings
from dupstream.core.errors import DupstreamError
from dupstream.engine import Deduper
from dupstream.engine.build import build_deduper
from dupstream.state.blobstore import BlobStore, MinioBlobStore
from dupstream.state.identity import ModelIdentity
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.state.records import BlobRecordStore
from dupstream.state.snapshot import load_latest_snapshot
from dupstream.stream.blobs import MinioStore
from dupstream.stream.kafkalog import LibrdkafkaLog

log = logging.getLogger("dupstream")
T = TypeVar("T")
#: librdkafka's log lines (every client of this process) through Python logging, repeats folded
KAFKA_LOG = LibrdkafkaLog()


def policy_options(policy: PolicySettings) -> dict[str, Any]:
    """``DecisionPolicy`` keyword options from the policy settings."""
    return {
        "domain": policy.domain,
        "preference": policy.preference,
        "adaptive": policy.adaptive,
        "tenant_domains": dict(policy.tenant_domains),
        "tenant_preferences": dict(policy.tenant_preferences),
        "review_margin": policy.review_margin,
        "scene_change_tenants": frozenset(policy.scene_change_tenants),
        "low_information_flat_min": policy.low_information_flat_min,
        "low_information_p_scale": policy.low_information_p_scale,
        "low_information_pdq_quality": policy.low_information_pdq_quality,
        "verify_stop_p_copy": policy.verify_stop_p_copy,
    }


def memory_config(state: StateSettings, *, dim: int = 512) -> MemoryConfig:
    """Two indexed arrays per image: ``vector`` (the whole image) and ``content`` (the picture
    without its frame; the same vector when there is no frame), so a framed copy finds a clean
    original and the reverse."""
    spec = IndexSpec(dim=dim, kind=state.index_kind, switch_at=state.index_switch_at,
                     nlist=state.index_nlist, nprobe=state.index_nprobe)
    return MemoryConfig(
        vectors={"vector": spec, "content": spec},
        scope=state.scope,
        records_max_items=state.records_max_items,
        records_max_bytes=state.records_max_bytes,
        record_queue_max_items=state.record_queue_max_items,
        record_queue_max_bytes=state.record_queue_max_bytes,
        record_queue_wait_s=state.record_queue_wait_s,
        record_writers=state.record_writers,
        replication_window_s=state.replication_window_s,
        allow_model_mismatch=state.allow_model_mismatch,
    )


def build_memory(
    *,
    state: StateSettings,
    blobstore: BlobStore | None,
    dim: int = 512,
    identity: ModelIdentity | None = None,
) -> tuple[Memory, str | None]:
    """The replica's memory: the latest snapshot from ``blobstore`` when there is one (and
    ``state.restore``), else empty. Returns (memory, snapshot id or None). ``identity``: the
    configured model; another model's snapshot raises ``ModelMismatch``."""
    replica_id = state.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    config = memory_config(state, dim=dim)
    records = (BlobRecordStore(blobstore, prefix=state.prefix)
               if blobstore is not None and state.record_store else None)
    if state.backend == "milvus":  # the shared index: nothing to restore, no feed
        return milvus_memory(state, config, replica_id=replica_id, records=records,
                             identity=identity), None
    if blobstore is not None and state.restore:
        restored = load_latest_snapshot(blobstore, prefix=state.prefix, config=config,
                                        replica_id=replica_id, record_store=records,
                                        identity=identity)
        if restored is not None:
            return restored.memory, restored.snapshot_id
    return Memory(config, replica_id=replica_id, record_store=records, identity=identity), None


def milvus_memory(state: StateSettings, config: MemoryConfig, *, replica_id: str,
                  records: BlobRecordStore | None,
                  identity: ModelIdentity | None = None) -> Memory:
    """A memory whose vectors and PDQ hashes are in Milvus (``state.backend: milvus``); the
    collections are created when absent and checked (schema, dimension, model) when present."""
    from dupstream.state.milvus import MilvusCollection, MilvusConfig, MilvusStore

    m = state.milvus
    prefix = re.sub(r"[^0-9A-Za-z_]", "_", m.collection_prefix or state.prefix)
    cfg = MilvusConfig(
        uri=m.uri, token=None if m.token is None else m.token.get_secret_value(),
        db_name=m.db_name, secure=m.secure, server_pem_path=m.server_pem_path,
        server_name=m.server_name, prefix=prefix, consistency=m.consistency,
        float_index=m.float_index, nlist=m.nlist, nprobe=m.nprobe, hnsw_m=m.hnsw_m,
        hnsw_ef_construction=m.hnsw_ef_construction, hnsw_ef=m.hnsw_ef, pdq_nlist=m.pdq_nlist,
        pdq_nprobe=m.pdq_nprobe, partitions=m.partitions, timeout_s=m.timeout_s)
    store = MilvusStore(cfg, dims={f: s.dim for f, s in config.vectors.items()},
                        identity=identity)
    if identity is not None:
        store.bind(identity, allow_mismatch=config.allow_model_mismatch)
    return Memory(config, replica_id=replica_id, record_store=records, identity=identity,
                  collections=lambda name: MilvusCollection(name=name, store=store))


def with_retries(fn: Callable[[], T], *, what: str, budget_s: float) -> T:
    """Call ``fn``, retrying transient failures (storage starting up or briefly down) until
    ``budget_s`` (the start-up budget) has passed; permanent failures are raised at once."""
    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return fn()
        except DupstreamError as exc:
            left = deadline - time.monotonic()
            if not exc.transient or left <= 0:
                raise
            wait = min(delay, left)
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, wait)
            time.sleep(wait)
            delay = min(10.0, delay * 2)


def build_object_store(settings: Settings, *, pool: bool = True) -> MinioStore:
    s3 = settings.s3
    return MinioStore(endpoint=s3.endpoint, access_key=s3.access_key.get_secret_value(),
                      secret_key=s3.secret_key.get_secret_value(), secure=s3.secure,
                      region=s3.region, timeout_s=s3.timeout_s, retries=s3.retries,
                      **({"max_pool": s3.fetch_workers * 2} if pool else {}))


def build_state_store(settings: Settings, store: MinioStore) -> MinioBlobStore:
    return MinioBlobStore(store.client, settings.state.bucket)


def build_engine(settings: Settings, *, memory: Memory | None = None) -> Deduper:
    m = settings.model
    return build_deduper(embedder=m.embedder, detector=m.detector, graph=m.graph, top_k=m.top_k,
                         threads=m.threads, max_pixels=settings.image.max_pixels,
                         max_side=settings.image.max_side, memory=memory,
                         policy=policy_options(settings.policy),
                         detector_weights_dir=m.detector_weights_dir, cascade=m.cascade,
                         detector_options={"size": m.detector_size,
                                           "threads": m.detector_threads,
                                           **({"cache_dir": m.detector_cache_dir}
                                              if m.detector_cache_dir else {})},
                         draft_side=m.draft_side, hash_workers=m.hash_workers)


def kafka_auth(settings: Settings) -> dict[str, Any]:
    """Connection keywords of every Kafka client the service builds: the extra librdkafka
    properties (librdkafka's log lines routed through Python logging) and the credentials."""
    k = settings.kafka
    secret = k.sasl_password.get_secret_value() if k.sasl_password else None
    extra = {"logger": KAFKA_LOG, **k.extra}
    return {"extra": extra, "sasl_username": k.sasl_username, "sasl_password": secret}


def restore_replica(settings: Settings) -> tuple[MinioStore, BlobStore, Memory, str | None]:
    """A replica's state: the object store, the state store on it, and the memory restored from
    the latest snapshot (retried within the start-up budget) or empty. Shared by the stream
    service and the lookup server."""
    store = build_object_store(settings)
    blobstore = build_state_store(settings, store)
    memory, snapshot_id = with_retries(
        lambda: build_memory(state=settings.state, blobstore=blobstore),
        what="loading the index snapshot", budget_s=settings.startup.budget_s)
    log.info("replica %s: %s", memory.replica_id,
             f"restored snapshot {snapshot_id} ({len(memory)} images)" if snapshot_id
             else "no snapshot: empty index")
    return store, blobstore, memory, snapshot_id


@dataclass
class Service:
    """A built, not yet running, stream service with its health endpoint (if configured)."""

    service: Any  # dupstream.stream.service.StreamService
    metrics: Any
    memory: Memory
    snapshot_id: str | None
    metrics_port: int | None


def build_service(settings: Settings, *, create_topics: bool = False,
                  partitions: int = 3, engine: Deduper | None = None) -> Service:
    """The streaming service from settings: object store, the replica's memory (the latest
    snapshot restored), the engine, the index-updates feed, snapshots, Kafka clients.
    ``engine``: one built (and warmed up) before, given the restored memory here."""
    from dupstream.stream.heap import HeapTrimmer
    from dupstream.stream.kafka import consumer_config, ensure_topics, producer_config
    from dupstream.stream.metrics import Metrics
    from dupstream.stream.replication import FeedFollower, Snapshotter
    from dupstream.stream.service import StreamService

    k, s3, st = settings.kafka, settings.s3, settings.state
    auth = kafka_auth(settings)
    store, blobstore, memory, snapshot_id = restore_replica(settings)
    deduper = (build_engine(settings, memory=memory) if engine is None
               else engine.use_memory(memory))
    # deployment faults fail here at the latest, before any Kafka client: every model verified
    log.info("models verified: %s", deduper.warm_up())
    if create_topics:
        ensure_topics(bootstrap_servers=k.bootstrap_servers, extra=auth["extra"],
                      topics={k.input_topic: partitions, k.output_topic: partitions,
                              k.dlq_topic: partitions, st.updates_topic: partitions},
                      compacted={st.updates_topic})
    metrics = Metrics()
    cconf = consumer_config(
        bootstrap_servers=k.bootstrap_servers, group_id=k.group_id,
        session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        assignment_strategy=k.assignment_strategy, **auth)
    feed = (FeedFollower(consumer_conf=cconf, topic=st.updates_topic, memory=memory,
                         deduper=deduper) if st.replication else None)
    snapshotter = Snapshotter(memory=memory, store=blobstore, prefix=st.prefix,
                              interval_s=st.snapshot_interval_s, keep=st.snapshot_keep)
    service = StreamService(
        consumer_conf=cconf,
        producer_conf=producer_config(bootstrap_servers=k.bootstrap_servers, **auth),
        updates_topic=st.updates_topic if st.replication else None,
        feed=feed, snapshotter=snapshotter,
        input_topic=k.input_topic, output_topic=k.output_topic, dlq_topic=k.dlq_topic,
        store=store, deduper=deduper, metrics=metrics,
        max_blob_bytes=s3.max_blob_bytes, batch_max=settings.batch.max_events,
        batch_wait_s=settings.batch.max_wait_ms / 1e3, fetch_workers=s3.fetch_workers,
        extract_ahead=settings.batch.extract_ahead,
        transient_budget_s=s3.transient_budget_s,
        records=memory.records.writes, record_flush_s=st.record_flush_timeout_s,
        heap=HeapTrimmer(interval_s=settings.heap_trim_interval_s),
    )
    return Service(service=service, metrics=metrics, memory=memory, snapshot_id=snapshot_id,
                   metrics_port=settings.metrics_port or None)


def build_feed_replayer(settings: Settings, memory: Memory):
    """A follower of the index-updates feed that applies it to ``memory`` (the index commands)."""
    from dupstream.stream.kafka import consumer_config
    from dupstream.stream.replication import FeedFollower

    k = settings.kafka
    return FeedFollower(
        consumer_conf=consumer_config(bootstrap_servers=k.bootstrap_servers,
                                      group_id=k.group_id, **kafka_auth(settings)),
        topic=settings.state.updates_topic, memory=memory)
