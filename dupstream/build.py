"""Keyword-only builders that wire workers and state into a ``Deduper``."""

from __future__ import annotations

from pathlib import Path

from dupstream.engine import Deduper
from state.index import FaissIndex
from workers.calibration import Calibrator
from workers.decision import DecisionPolicy, default_calibrator, default_decision_model
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
) -> Deduper:
    extractor = build_extractor(embedder=embedder, threads=threads, max_pixels=max_pixels,
                                max_side=max_side)
    calibrator = Calibrator.load(calibration) if calibration else default_calibrator()
    return Deduper(
        extractor=extractor,
        index=FaissIndex(dim=extractor.embedder.dim),
        policy=DecisionPolicy(calibrator=calibrator, cutoffs=default_decision_model()),
        candidates=candidates,
    )
