"""The de-duplication engine: features from ``workers``, memory from ``state``, one verdict each.

Used identically by the streaming service, ``dupstream scan`` and the evaluation. Images of one
batch are matched against each other too: each is judged, then added, in order.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dupstream import __version__
from dupstream.errors import DupstreamError
from dupstream.verdict import Evidence, Verdict
from state.hashes import ExactHashStore, PDQStore
from state.index import VectorIndex
from workers.decision import DecisionPolicy
from workers.features import FeatureExtractor, ImageFeatures
from workers.similarity import score_pair


@dataclass(frozen=True)
class Upload:
    image_id: str
    data: bytes
    tenant: str | None = None


@dataclass(frozen=True)
class Failed:
    image_id: str
    tenant: str | None
    error: DupstreamError


class Deduper:
    def __init__(
        self,
        *,
        extractor: FeatureExtractor,
        index: VectorIndex,
        policy: DecisionPolicy,
        candidates: int = 10,
    ) -> None:
        self.extractor = extractor
        self.index = index
        self.policy = policy
        self.candidates = candidates
        self.exact = ExactHashStore()
        self.pdq = PDQStore()
        self._features: dict[tuple[str, str | None], ImageFeatures] = {}
        cal = hashlib.sha256(policy.calibrator.to_json().encode()).hexdigest()[:8]
        det = extractor.detector.name if extractor.detector is not None else "nodet"
        graph = "gcn" if extractor.graph_encoder is not None else "nogcn"
        self.model_version = (
            f"dupstream-{__version__}/{extractor.embedder.name}/{det}/{graph}/cal-{cal}"
        )

    def __len__(self) -> int:
        return len(self.index)

    def process(self, uploads: Sequence[Upload], *, add: bool = True) -> list[Verdict | Failed]:
        """Judge each upload against everything seen before it (earlier batch members included)."""
        t0 = time.perf_counter()
        features = self.extractor.extract([u.data for u in uploads])
        per_image_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(uploads))
        out: list[Verdict | Failed] = []
        for upload, feat in zip(uploads, features, strict=True):
            if isinstance(feat, DupstreamError):
                out.append(Failed(upload.image_id, upload.tenant, feat))
                continue
            t1 = time.perf_counter()
            verdict = self.judge(upload.image_id, upload.tenant, feat)
            search_ms = (time.perf_counter() - t1) * 1e3
            verdict.timings_ms.update({k: round(v, 3) for k, v in feat.timings_ms.items()})
            verdict.timings_ms["search"] = round(search_ms, 3)
            verdict.timings_ms["total"] = round(per_image_ms + search_ms, 3)
            if add:
                self.add(upload.image_id, upload.tenant, feat)
            out.append(verdict)
        return out

    def add(self, image_id: str, tenant: str | None, feat: ImageFeatures) -> None:
        self.index.add(image_id, tenant, feat.vector)
        self.exact.add(feat.digest, tenant, image_id)
        self.pdq.add(image_id, tenant, feat.pdq.bits)
        self._features.setdefault((image_id, tenant), feat)

    def judge(self, image_id: str, tenant: str | None, feat: ImageFeatures) -> Verdict:
        ids: list[str] = []
        exact_id = self.exact.lookup(feat.digest, tenant)
        if exact_id is not None:
            ids.append(exact_id)
        hit = self.pdq.nearest(feat.pdq.variants, tenant)
        if hit is not None:
            ids.append(hit.image_id)
        ids.extend(h.image_id for h in self.index.search(feat.vector, self.candidates + 1,
                                                          tenant=tenant))
        best = None
        for cid in dict.fromkeys(ids):
            if cid == image_id:  # a replay of the same event: never match yourself
                continue
            ref = self._features.get((cid, tenant))
            if ref is None:
                continue
            score = score_pair(feat, ref)
            p = self.policy.p_copy(score, tenant=tenant)
            if best is None or (p, score.fused) > (best[1], best[2].fused):
                best = (cid, p, score)
        if best is None:
            return Verdict(
                image_id=image_id,
                tenant=tenant,
                verdict="unique",
                probability=1.0,
                evidence=Evidence(notes=["no candidate in the index"]),
                model_version=self.model_version,
            )
        cid, _, score = best
        kind, probability, review = self.policy.decide(score, tenant=tenant)
        return Verdict(
            image_id=image_id,
            tenant=tenant,
            verdict=kind,
            match_id=cid if kind != "unique" else None,
            match_tenant=tenant if kind != "unique" else None,
            score=round(score.fused, 6),
            probability=round(probability, 6),
            review=review,
            evidence=Evidence(**score.evidence(), nearest_id=cid),
            model_version=self.model_version,
        )

    def compare(self, a: bytes, b: bytes) -> dict:
        """Score one pair of image blobs (no state involved)."""
        fa, fb = self.extractor.extract([a, b])
        for f in (fa, fb):
            if isinstance(f, DupstreamError):
                raise f
        score = score_pair(fb, fa)
        kind, probability, review = self.policy.decide(score)
        return {
            "probability": round(self.policy.p_copy(score), 6),
            "verdict": kind,
            "verdict_probability": round(probability, 6),
            "review": review,
            **score.evidence(),
        }
