"""The verification stage between candidate search and the decision.

For a query, the candidates whose decision is open (``DecisionPolicy.needs_verification``) are
registered against it, best visual similarity first, at most ``top`` per query: the registration
(transform, overlap, inlier support, changed regions, same-scene) and the objects matched / added
/ removed / moved through it join the pair's score, and the decision uses them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dupstream.workers.decision import DecisionPolicy
from dupstream.workers.features import ImageFeatures
from dupstream.workers.similarity import PairScore

#: at most this many registrations per query (the cost bound of the stage)
DEFAULT_TOP = 3


@dataclass
class Scored:
    candidate: Any  # state.memory.Candidate
    reference: ImageFeatures
    score: PairScore


@dataclass
class VerifyStats:
    runs: int = 0
    ms: float = 0.0


def verify_candidates(policy: DecisionPolicy, query: ImageFeatures, scored: list[Scored], *,
                      top: int = DEFAULT_TOP) -> VerifyStats:
    """Register the query against the open candidates in place (best ``visual_best`` first)."""
    stats = VerifyStats()
    t0 = time.perf_counter()
    for item in sorted(scored, key=lambda s: -s.score.visual_best):
        if stats.runs >= top:
            break
        if not policy.needs_verification(item.score):
            continue
        item.score = policy.verify(item.score, query, item.reference)
        stats.runs += 1
    stats.ms = (time.perf_counter() - t0) * 1e3
    return stats


def rank_key(policy: DecisionPolicy, item: Scored, tenant: str | None, *,
             query: ImageFeatures | None = None) -> tuple:
    """Best match first: identical bytes, then (with the learned decision and the query's
    features) P(copy); without them, verified pairs, then P(copy) with the evidence; then
    similarity."""
    p = policy.p_copy_verified(item.score, tenant=tenant, query=query, reference=item.reference)
    if policy.uses_learned(query, item.reference):
        return (item.score.exact, p, item.score.visual_best)
    reg = item.score.registration
    verified = reg is not None and reg.verified
    return (item.score.exact, verified, p, item.score.visual_best)
