"""Which model wrote a piece of persisted state: snapshot manifests and index updates carry it.

Vectors are only comparable when the same embedder with the same weights produced them; both SSCD
variants are 512-d, so the dimension alone does not tell them apart. ``ModelIdentity`` names the
embedder, the sha256 of its weights and the full model version (dupstream release, detector, GCN,
calibration). Compatibility is decided by the embedder name and weights sha256 only: the vectors
do not depend on the rest, which is recorded for information (a new release or calibration reads
its predecessor's state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dupstream.core.errors import ModelMismatch, StateError

log = logging.getLogger(__name__)

#: how to move an index to another model: docs/STATE.md, "Model identity and migration"
MIGRATION_HINT = (
    "vectors of different models are not comparable: re-embed the images into a new state "
    "prefix and index-updates topic (docs/STATE.md, 'Model identity and migration'), or set "
    "DUPSTREAM_STATE__ALLOW_MODEL_MISMATCH=true to use this state anyway"
)


@dataclass(frozen=True, kw_only=True)
class ModelIdentity:
    embedder: str
    #: sha256 of the embedder's weights file; None for an embedder without a descriptor
    embedder_sha256: str | None = None
    #: the engine's model version (informational: not part of compatibility)
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "embedder_sha256": self.embedder_sha256,
                "model_version": self.model_version}

    @classmethod
    def from_dict(cls, d: Any) -> ModelIdentity | None:
        """None for state written before identities existed (no ``model`` entry)."""
        if d is None:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("embedder"), str):
            raise StateError(f"malformed model identity: {d!r}")
        sha, version = d.get("embedder_sha256"), d.get("model_version")
        return cls(embedder=d["embedder"], embedder_sha256=None if sha is None else str(sha),
                   model_version=None if version is None else str(version))

    def compatible(self, other: ModelIdentity) -> bool:
        """Same embedder, same weights (a missing sha256 on either side is not a difference)."""
        if self.embedder != other.embedder:
            return False
        a, b = self.embedder_sha256, other.embedder_sha256
        return a is None or b is None or a == b

    def __str__(self) -> str:
        return (f"embedder {self.embedder} (weights sha256 {self.embedder_sha256 or 'unknown'}, "
                f"model {self.model_version or 'unknown'})")


def check_identity(
    stored: ModelIdentity | None,
    running: ModelIdentity | None,
    *,
    what: str,
    against: str = "this service runs",
    allow_mismatch: bool = False,
) -> None:
    """Raise ``ModelMismatch`` when ``what`` (e.g. ``"snapshot X"``) was written by a model
    incompatible with ``running``; warn instead with ``allow_mismatch``. A side without an
    identity (older state, or an engine-less tool) is accepted."""
    if stored is None or running is None or stored.compatible(running):
        return
    message = f"{what} was written by {stored}, but {against} {running}"
    if allow_mismatch:
        log.warning("%s; accepted because allow_model_mismatch is set", message)
        return
    raise ModelMismatch(f"{message}; {MIGRATION_HINT}")
