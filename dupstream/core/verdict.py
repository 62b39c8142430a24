"""The verdict schema: the public output contract of every entry point (stream, scan, compare)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VerdictKind = Literal["duplicate", "near_duplicate", "unique"]
VERDICT_SCHEMA_VERSION = 1


class Evidence(BaseModel):
    """Why a verdict was reached: every score that took part, and the objects compared."""

    model_config = ConfigDict(extra="allow")

    exact_hash: bool = False
    visual: float | None = Field(None, description="Sv: cosine of the visual embeddings")
    pdq_distance: int | None = Field(None, description="PDQ Hamming distance (0..256)")
    pdq_transform: str | None = Field(
        None, description="dihedral transform under which the PDQ distance was found"
    )
    semantic: float | None = Field(None, description="Ss: semantic similarity")
    jaccard: float | None = None
    semantic_cosine: float | None = None
    graph: float | None = None
    fused: float | None = Field(None, description="S = alpha*Sv + (1-alpha)*Ss")
    objects_matched: list[str] = Field(default_factory=list)
    objects_added: list[str] = Field(default_factory=list)
    objects_missing: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Verdict(BaseModel):
    """One decision about one image. Keyed by ``image_id`` on the output topic."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = VERDICT_SCHEMA_VERSION
    image_id: str
    tenant: str | None = None
    verdict: VerdictKind
    match_id: str | None = None
    match_tenant: str | None = None
    score: float = Field(0.0, description="fused similarity to the best match (0 if none)")
    probability: float = Field(
        ...,
        ge=0.0,
        le=1.0,
        description="calibrated P(this verdict is right): P(copy) for duplicate and "
        "near_duplicate, 1 - P(copy of the best candidate) for unique",
    )
    review: bool = Field(False, description="near the decision threshold: worth a human look")
    evidence: Evidence = Field(default_factory=Evidence)
    model_version: str
    replica: str | None = Field(None, description="the replica that reached this verdict")
    timings_ms: dict[str, float] = Field(default_factory=dict)
