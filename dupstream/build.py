"""Keyword-only builders that wire workers and state into a ``Deduper``."""

from __future__ import annotations

from pathlib import Path

from dupstream.engine import Deduper
from state.index import IndexSpec
from state.memory import Memory, MemoryConfig
from workers.calibration import Calibrator
from workers.decision import DecisionPolicy, default_calibrator
from workers.embedder import SSCDEmbedder
from workers.features import FeatureExtractor


def build_extractor(
    *,
    embedder: str = "sscd",
    threads: int = 2,
    max_pixels: int = 50_000_000,
    max_side: int = 20_000,
) -> FeatureExtractor:
    return FeatureExtractor(
        embedder=SSCDEmbedder(variant=embedder, threads=threads),
        max_pixels=max_pixels,
        max_side=max_side,
    )


def build_deduper(
    *,
    embedder: str = "sscd",
    threads: int = 2,
    max_pixels: int = 50_000_000,
    max_side: int = 20_000,
    calibration: str | Path | None = None,
    candidates: int = 10,
    memory: Memory | None = None,
) -> Deduper:
    extractor = build_extractor(embedder=embedder, threads=threads, max_pixels=max_pixels,
                                max_side=max_side)
    calibrator = Calibrator.load(calibration) if calibration else default_calibrator()
    if memory is None:
        spec = IndexSpec(dim=extractor.embedder.dim)
        memory = Memory(MemoryConfig(vectors={"vector": spec}))
    return Deduper(
        extractor=extractor,
        memory=memory,
        policy=DecisionPolicy(calibrator=calibrator),
        candidates=candidates,
    )
