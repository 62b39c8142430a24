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
    #: its decision was open but the query's registrations were spent on more similar
    #: candidates: it is not registered, so it cannot be the match (the decision was trained
    #: on pairs registered wherever their decision is open)
    unverified: bool = False


@dataclass
class VerifyStats:
    runs: int = 0
    ms: float = 0.0


def verify_candidates(policy: DecisionPolicy, query: ImageFeatures, scored: list[Scored], *,
                      top: int = DEFAULT_TOP) -> VerifyStats:
    """Register the query against the open candidates in place (best ``visual_best`` first, at
    most ``top``; the open ones beyond are marked ``unverified``). Once a registration verifies
    with P(copy) >= ``policy.verify_stop_p_copy`` the query is placed: the less similar open
    candidates are not registered (marked ``unverified``) - they are other copies of that
    picture or less similar pictures."""
    stats = VerifyStats()
    t0 = time.perf_counter()
    placed = False
    for item in sorted(scored, key=lambda s: -s.score.visual_best):
        if not policy.needs_verification(item.score):
            continue
        if placed or stats.runs >= top:
            item.unverified = True
            continue
        item.score = policy.verify(item.score, query, item.reference)
        stats.runs += 1
        reg = item.score.registration
        if reg is not None and reg.verified:
            p = policy.p_copy_verified(item.score, query=query, reference=item.reference)
            placed = p >= policy.verify_stop_p_copy
    stats.ms = (time.perf_counter() - t0) * 1e3
    return stats


def best_match(policy: DecisionPolicy, scored: list[Scored], tenant: str | None, *,
               query: ImageFeatures | None = None) -> Scored | None:
    """The best candidate by ``rank_key``; with the learned decision, every candidate's P(copy)
    in one call of the model (the same values as one pair at a time)."""
    if not scored:
        return None
    learned = [s for s in scored if policy.uses_learned(query, s.reference)]
    if not learned:
        return max(scored, key=lambda s: rank_key(policy, s, tenant, query=query))
    ps = policy.p_copy_many([(s.score, s.reference) for s in learned], query=query)
    p_of = {id(s): p for s, p in zip(learned, ps, strict=True)}
    return max(scored, key=lambda s: rank_key(policy, s, tenant, query=query,
                                              p=p_of.get(id(s))))


def rank_key(policy: DecisionPolicy, item: Scored, tenant: str | None, *,
             query: ImageFeatures | None = None, p: float | None = None) -> tuple:
    """Best match first: identical bytes, then (with the learned decision and the query's
    features) P(copy); without them, verified pairs, then P(copy) with the evidence; then
    similarity; a candidate left ``unverified`` after every other. ``p``: the pair's P(copy)
    when already computed."""
    if p is None:
        p = policy.p_copy_verified(item.score, tenant=tenant, query=query,
                                   reference=item.reference)
    if policy.uses_learned(query, item.reference):
        return (not item.unverified, item.score.exact, p, item.score.visual_best)
    reg = item.score.registration
    verified = reg is not None and reg.verified
    return (not item.unverified, item.score.exact, verified, p, item.score.visual_best)
