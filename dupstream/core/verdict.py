"""The verdict schema: the public output contract of every entry point (stream, scan, compare)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VerdictKind = Literal["duplicate", "near_duplicate", "unique"]
VERDICT_SCHEMA_VERSION = 1


class Transform(BaseModel):
    """How the reference maps onto the query (query <- reference)."""

    scale: float = Field(..., description="linear scale (query size / reference size)")
    rotation_deg: float = Field(..., description="rotation in degrees, counter-clockwise")
    flip: bool = Field(..., description="the reference is mirrored left-right first")
    tx: float = Field(..., description="offset of the reference origin, / query width")
    ty: float = Field(..., description="offset of the reference origin, / query height")


class RegistrationEvidence(BaseModel):
    """The verification stage: the reference registered onto the query."""

    model_config = ConfigDict(extra="allow")

    verified: bool = Field(..., description="one transform maps the reference onto the query "
                           "with inlier support inside the picture and a small residual outside "
                           "the edited regions")
    method: Literal["sparse", "dense", "none"] = Field(
        ..., description="sparse: local features + robust fit; dense: ECC alignment (small or "
        "flat images); none: no transform found")
    transform: Transform = Field(..., description="the reference -> query transform")
    inliers: int = Field(..., description="feature matches consistent with the transform")
    matches: int = Field(0, description="ratio-test feature matches")
    inlier_ratio: float = Field(..., description="inliers / matches")
    support: float = Field(..., description="share of the picture's textured grid cells "
                           "holding inliers (low when only an overlay matches)")
    overlap_ref: float = Field(..., description="share of the reference visible in the query")
    overlap_query: float = Field(..., description="share of the query covered by the reference")
    residual: float = Field(..., description="1 - median local correlation over the overlap "
                            "after alignment")
    parallax: float = Field(0.0, description="residual motion after alignment, px per 256 "
                            "(another photo of the scene moves inside)")
    photometric: float = Field(0.0, description="median intensity residual after a gain/bias "
                               "fit, / contrast")
    changed_area: float = Field(..., description="share of the overlap that differs")
    largest_change: float = Field(0.0, description="the largest changed region's share of the "
                                  "overlap")
    changed_regions: list[list[float]] = Field(
        default_factory=list, description="changed boxes [x0, y0, x1, y1], fractions of the "
        "query's width/height")
    same_scene: bool = Field(..., description="the content matches but does not register "
                             "rigidly: another photo of the same scene")
    ecc: float = Field(0.0, description="correlation after dense alignment")


class Evidence(BaseModel):
    """Why a verdict was reached: every score that took part, and the objects compared."""

    model_config = ConfigDict(extra="allow")

    exact_hash: bool = Field(False, description="the bytes are identical (SHA-256) to the match")
    visual: float | None = Field(None, description="Sv: cosine of the visual embeddings")
    pdq_distance: int | None = Field(None, description="PDQ Hamming distance (0..256)")
    pdq_transform: str | None = Field(
        None, description="dihedral transform under which the PDQ distance was found"
    )
    semantic: float | None = Field(None, description="Ss: semantic similarity")
    jaccard: float | None = Field(None, description="multiset Jaccard of the detected object "
                                  "classes (None: no objects on one side)")
    semantic_cosine: float | None = Field(None, description="cosine of the semantic "
                                          "embeddings (object classes, layout, sizes, colours)")
    graph: float | None = Field(None, description="cosine of the object-graph (GCN) "
                                "embeddings")
    fused: float | None = Field(None, description="S = alpha*Sv + (1-alpha)*Ss (Sv: the best of "
                                "visual and content_visual)")
    alpha: float | None = Field(None, description="the fusion weight alpha of S")
    bank: str | None = Field(None, description="the reference bank the match came from (None: "
                             "the tenant's own uploads)")
    content_visual: float | None = Field(
        None, description="visual cosine of the pictures without their frames (borders, "
        "letterbox, screenshot UI): the best of content vs content and content vs whole; a "
        "picture turned by an arbitrary angle on a solid fill compares by its best upright "
        "orientation")
    changed_area: float | None = Field(
        None, description="share of the picture that differs (after registration when it "
        "verified; else on same-aspect thumbnails; None when the geometry differs)")
    changed_regions: list[list[float]] = Field(
        default_factory=list, description="changed boxes [x0, y0, x1, y1] in the query, "
        "fractions of its width/height (verified registrations only)")
    registration: RegistrationEvidence | None = Field(
        None, description="the verification stage's result for the matched pair (absent when "
        "it did not run: identical bytes, a clear same-picture pair, or unrelated pictures)")
    same_scene: bool = Field(False, description="another photo (or moment) of the same scene: "
                             "the content matches but does not register rigidly, or it "
                             "registers and what changed inside the overlap makes the verdict "
                             "unique (a frame later, people moved); never with a copy verdict")
    same_scene_id: str | None = Field(None, description="with same_scene: the indexed image of "
                                      "the same scene - the nearest image (nearest_id), or "
                                      "another registered candidate when the nearest is not "
                                      "of the scene; None otherwise")
    low_information: bool = Field(False, description="one of the pictures is nearly all flat "
                                  "(a blank or nearly black frame) or has no usable PDQ hash "
                                  "(quality 0: uniform, a 1-px line, a thin strip) and the pair "
                                  "is not near-identical by a usable PDQ hash: P(copy) scaled "
                                  "down (the policy's low_information_* settings), a copy only "
                                  "by its bytes or PDQ")
    verifications: int = Field(0, description="registrations run for this query (<= the "
                               "per-query bound)")
    cascade: list[str] = Field(
        default_factory=list, description="the stages this image went through, in order: "
        "exact (SHA-256 lookup; alone when the bytes were seen), embed (hashes, embeddings), "
        "search (index candidates), verify (registration of open candidates), objects "
        "(detector and object graph: run when the verdict is a copy whose objects tell what "
        "changed - something changed in the registered overlap, or nothing registered - when the "
        "tenant's policy needs objects, or when the decision reads them; a copy that is the same "
        "picture or registers with nothing changed carries the note `object detection skipped: "
        "...` instead). Empty from versions before the cascade")
    nearest_id: str | None = Field(None, description="the closest indexed image, also when "
                                   "the verdict is unique")
    objects_matched: list[str] = Field(
        default_factory=list, description="objects in both (through the registration when it ran)")
    objects_added: list[str] = Field(default_factory=list, description="in the query only")
    objects_missing: list[str] = Field(default_factory=list,
                                       description="in the reference only (removed)")
    objects_moved: list[str] = Field(default_factory=list, description="in both, moved "
                                     "relative to the registered picture")
    notes: list[str] = Field(default_factory=list, description="plain-language notes: objects "
                             "added/removed/moved, policy decisions, fast path, late match")


class Verdict(BaseModel):
    """One decision about one image. Keyed by ``image_id`` on the output topic."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(VERDICT_SCHEMA_VERSION, description="version of this schema")
    image_id: str = Field(..., description="the upload judged (the event's image_id)")
    tenant: str | None = Field(None, description="the upload's tenant")
    verdict: VerdictKind = Field(..., description="duplicate: the same picture (re-encoded, "
                                 "resized, lightly recoloured); near_duplicate: an edited copy "
                                 "(crop, rotation/flip, caption, border/screenshot framing, "
                                 "objects pasted/removed); unique: anything else")
    match_id: str | None = Field(None, description="the image it copies (None when unique)")
    match_tenant: str | None = Field(None, description="the tenant of the match")
    score: float = Field(0.0, description="fused similarity to the best match (0 if none)")
    probability: float = Field(
        ...,
        ge=0.0,
        le=1.0,
        description="calibrated P(this verdict is right): P(copy) for duplicate and "
        "near_duplicate, 1 - P(copy of the best candidate) for unique",
    )
    p_copy: float | None = Field(
        None, ge=0.0, le=1.0,
        description="calibrated P(the query is a copy of the best candidate), whatever the "
        "verdict (the learned decision's probability; the verdict compares it with the "
        "cut-off); None when there was no candidate")
    review: bool = Field(False, description="near the decision threshold: worth a human look")
    evidence: Evidence = Field(default_factory=Evidence,
                               description="why: every signal that took part (see Evidence)")
    model_version: str = Field(..., description="embedder / detector / graph / calibration "
                               "and decision artefacts that produced this verdict")
    replica: str | None = Field(None, description="the replica that reached this verdict")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="per-stage time "
                                         "for this image (fetch, decode, hash, embed, detect, "
                                         "graph, search, verify, total)")
