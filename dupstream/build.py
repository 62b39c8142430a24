"""Keyword-only builders that wire workers and state into a ``Deduper``."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from dupstream.engine import Deduper
from state.blobstore import BlobStore
from state.index import IndexSpec
from state.memory import Memory, MemoryConfig
from state.records import BlobRecordStore
from state.snapshot import load_latest_snapshot
from workers.calibration import Calibrator
from workers.decision import DecisionPolicy, default_calibrator, default_decision_model
from workers.detector import build_detector
from workers.embedder import SSCDEmbedder
from workers.features import FeatureExtractor
from workers.gcn import GraphEncoder
from workers.semantic import DEFAULT_TOP_K

if TYPE_CHECKING:
    from dupstream.settings import PolicySettings, StateSettings


def build_extractor(
    *,
    embedder: str = "sscd",
    detector: str = "yolov3_tiny",
    graph: bool = True,
    top_k: int = DEFAULT_TOP_K,
    threads: int = 2,
    max_pixels: int = 50_000_000,
    max_side: int = 20_000,
) -> FeatureExtractor:
    """SSCD visual embedder + a detector backend (``"none"``: visual evidence only) + the shipped
    GCN (``graph=False``: Ss without the graph term). Nothing is loaded here."""
    det = build_detector(detector)
    return FeatureExtractor(
        embedder=SSCDEmbedder(variant=embedder, threads=threads),
        detector=det,
        graph_encoder=GraphEncoder() if graph and det is not None else None,
        top_k=top_k,
        max_pixels=max_pixels,
        max_side=max_side,
    )


def build_deduper(
    *,
    embedder: str = "sscd",
    detector: str = "yolov3_tiny",
    graph: bool = True,
    top_k: int = DEFAULT_TOP_K,
    threads: int = 2,
    max_pixels: int = 50_000_000,
    max_side: int = 20_000,
    calibration: str | Path | None = None,
    candidates: int = 10,
    memory: Memory | None = None,
    policy: PolicySettings | None = None,
) -> Deduper:
    extractor = build_extractor(embedder=embedder, detector=detector, graph=graph, top_k=top_k,
                                threads=threads, max_pixels=max_pixels, max_side=max_side)
    calibrator = Calibrator.load(calibration) if calibration else default_calibrator()
    if memory is None:
        spec = IndexSpec(dim=extractor.embedder.dim)
        memory = Memory(MemoryConfig(vectors={"vector": spec}))
    return Deduper(
        extractor=extractor,
        memory=memory,
        policy=DecisionPolicy(
            calibrator=calibrator,
            cutoffs=default_decision_model(),
            **({} if policy is None else {
                "domain": policy.domain,
                "preference": policy.preference,
                "adaptive": policy.adaptive,
                "tenant_domains": dict(policy.tenant_domains),
                "tenant_preferences": dict(policy.tenant_preferences),
                "review_margin": policy.review_margin,
                "scene_change_tenants": frozenset(policy.scene_change_tenants),
            }),
        ),
        candidates=candidates,
    )


def memory_config(state: StateSettings, *, dim: int = 512) -> MemoryConfig:
    return MemoryConfig(
        vectors={"vector": IndexSpec(dim=dim, kind=state.index_kind,
                                     switch_at=state.index_switch_at, nlist=state.index_nlist,
                                     nprobe=state.index_nprobe)},
        scope=state.scope,
        records_max_items=state.records_max_items,
        records_max_bytes=state.records_max_bytes,
        replication_window_s=state.replication_window_s,
    )


def build_memory(
    *,
    state: StateSettings,
    blobstore: BlobStore | None,
    dim: int = 512,
) -> tuple[Memory, str | None]:
    """The replica's memory: the latest snapshot from ``blobstore`` when there is one (and
    ``state.restore``), else empty. Returns (memory, snapshot id or None)."""
    replica_id = state.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    config = memory_config(state, dim=dim)
    records = (BlobRecordStore(blobstore, prefix=state.prefix)
               if blobstore is not None and state.record_store else None)
    if blobstore is not None and state.restore:
        restored = load_latest_snapshot(blobstore, prefix=state.prefix, config=config,
                                        replica_id=replica_id, record_store=records)
        if restored is not None:
            return restored.memory, restored.snapshot_id
    return Memory(config, replica_id=replica_id, record_store=records), None
