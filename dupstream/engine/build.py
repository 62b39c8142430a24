"""Keyword-only builders that wire workers and state into a ``Deduper``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dupstream.core.errors import WeightsError
from dupstream.engine import Deduper
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.workers.calibration import Calibrator
from dupstream.workers.decision import DecisionPolicy, default_calibrator, default_decision_model
from dupstream.workers.detector import DEFAULT_DETECTOR, build_detector
from dupstream.workers.embedder import SSCDEmbedder
from dupstream.workers.features import DEFAULT_DRAFT_SIDE, FeatureExtractor
from dupstream.workers.gcn import GraphEncoder
from dupstream.workers.learned import default_learned_model
from dupstream.workers.semantic import DEFAULT_TOP_K


def build_extractor(
    *,
    embedder: str = "sscd",
    detector: str = DEFAULT_DETECTOR,
    graph: bool = True,
    top_k: int = DEFAULT_TOP_K,
    threads: int = 2,
    max_pixels: int = 50_000_000,
    max_side: int = 20_000,
    detector_weights_dir: str | Path | None = None,
    detector_options: Mapping[str, Any] | None = None,
    draft_side: int | None = DEFAULT_DRAFT_SIDE,
    hash_workers: int = 0,
) -> FeatureExtractor:
    """SSCD visual embedder + a detector backend (``"none"``: visual evidence only) + the shipped
    GCN (``graph=False``: Ss without the graph term). ``detector_weights_dir``: the detector's
    files from there instead of their package (checked against their sha256 all the same).
    ``hash_workers``: threads running a batch's hash stage beside the embedder (0: in line).
    Nothing is loaded here."""
    det = build_detector(detector, **dict(detector_options or {}),
                         **({"weights_dir": detector_weights_dir} if detector_weights_dir else {}))
    return FeatureExtractor(
        embedder=SSCDEmbedder(variant=embedder, threads=threads),
        detector=det,
        graph_encoder=GraphEncoder() if graph and det is not None else None,
        top_k=top_k,
        max_pixels=max_pixels,
        max_side=max_side,
        draft_side=draft_side,
        hash_workers=hash_workers,
    )


def build_deduper(
    *,
    embedder: str = "sscd",
    detector: str = DEFAULT_DETECTOR,
    graph: bool = True,
    top_k: int = DEFAULT_TOP_K,
    threads: int = 2,
    max_pixels: int = 50_000_000,
    max_side: int = 20_000,
    calibration: str | Path | None = None,
    candidates: int = 10,
    memory: Memory | None = None,
    policy: Mapping[str, Any] | None = None,
    detector_weights_dir: str | Path | None = None,
    learned: bool = True,
    cascade: bool = True,
    detector_options: Mapping[str, Any] | None = None,
    draft_side: int | None = DEFAULT_DRAFT_SIDE,
    hash_workers: int = 0,
) -> Deduper:
    """The whole engine. ``policy``: keyword options of ``DecisionPolicy`` (domain, preference,
    tenant maps, review margin, scene-change tenants); the composition root maps settings to them.
    ``learned``: decide with the packaged learned decision model (``decision_model.json``) when
    it is there; False: the fused-score decision. ``cascade``: find objects only where a verdict
    or a policy needs them when the decision does not read them (``Deduper.lazy_objects``);
    False: for every image. Nothing is loaded here: models load on first use or at
    ``warm_up``."""
    extractor = build_extractor(embedder=embedder, detector=detector, graph=graph, top_k=top_k,
                                threads=threads, max_pixels=max_pixels, max_side=max_side,
                                detector_weights_dir=detector_weights_dir,
                                detector_options=detector_options, draft_side=draft_side,
                                hash_workers=hash_workers)
    try:
        calibrator = Calibrator.load(calibration) if calibration else default_calibrator()
        cutoffs = default_decision_model()
        model = default_learned_model() if learned else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"calibration/decision artefact {calibration or '(packaged)'} "
                           f"unreadable: {type(exc).__name__}: {exc}") from exc
    if memory is None:
        spec = IndexSpec(dim=extractor.embedder.dim)
        memory = Memory(MemoryConfig(vectors={"vector": spec, "content": spec}))
    return Deduper(
        extractor=extractor,
        memory=memory,
        policy=DecisionPolicy(
            calibrator=calibrator,
            cutoffs=cutoffs,
            learned=model,
            **dict(policy or {}),
        ),
        candidates=candidates,
        cascade=cascade,
    )
