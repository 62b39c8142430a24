"""The engine ranks candidates with the learned decision's P(copy), computed for all of a
query's candidates in one call of the model: the same values as one pair at a time."""

from __future__ import annotations

import pytest

from dupstream.engine.build import build_deduper
from dupstream.engine.verification import Scored, best_match, rank_key
from dupstream.lab.data import edits as E
from dupstream.lab.data.photos import load_photos
from dupstream.workers.pairfeatures import pair_features
from dupstream.workers.similarity import score_pair


@pytest.fixture(scope="module")
def extracted():
    d = build_deduper(detector="none", threads=2)
    photos = load_photos(["motorcycle_left", "motorcycle_right", "coffee", "camera"])
    copy = E.overlay("watermark", 3)(photos["motorcycle_left"])
    blobs = [E.encode(p, "JPEG", 90) for p in [*photos.values(), copy]]
    feats = d.extractor.extract(blobs, objects=False)
    return d.policy, dict(zip([*photos, "copy"], feats, strict=True))


def test_p_copy_many_equals_one_pair_at_a_time(extracted):
    policy, f = extracted
    assert policy.learned is not None
    query = f["copy"]
    refs = [f[n] for n in ("motorcycle_left", "motorcycle_right", "coffee", "camera")]
    pairs = [(policy.score(query, r), r) for r in refs]
    many = policy.p_copy_many(pairs, query=query)
    one = [policy.learned.p_copy(pair_features(s, query, r)) for s, r in pairs]
    assert many == one
    assert [policy.p_copy(s, query=query, reference=r) for s, r in pairs] == one
    assert max(many) == many[0]  # the watermarked copy's original ranks first


def test_best_match_is_the_rank_key_maximum(extracted):
    policy, f = extracted
    query = f["copy"]
    scored = [Scored(candidate=n, reference=f[n], score=policy.score(query, f[n]))
              for n in ("camera", "motorcycle_right", "motorcycle_left", "coffee")]
    best = best_match(policy, scored, None, query=query)
    assert best is max(scored, key=lambda s: rank_key(policy, s, None, query=query))
    assert best.candidate == "motorcycle_left"
    assert best_match(policy, [], None, query=query) is None
    # without the query's features the rule-based ranking is used (no learned P(copy))
    plain = [Scored(candidate=n, reference=f[n], score=score_pair(query, f[n]))
             for n in ("coffee", "motorcycle_left")]
    assert best_match(policy, plain, None, query=None).candidate == "motorcycle_left"


def test_an_open_candidate_left_unregistered_is_never_the_match(extracted):
    from dupstream.engine.verification import verify_candidates

    policy, f = extracted
    query = f["copy"]
    names = ("motorcycle_left", "motorcycle_right", "coffee", "camera")
    scored = [Scored(candidate=n, reference=f[n], score=score_pair(query, f[n])) for n in names]
    stats = verify_candidates(policy, query, scored, top=1)
    assert stats.runs == 1
    left = [s.candidate for s in scored if s.unverified]
    assert left and all(s.score.registration is None for s in scored if s.unverified)
    best = best_match(policy, scored, None, query=query)
    assert not best.unverified
    # with the bound spent on another candidate, the original is not taken unregistered
    scored = [Scored(candidate=n, reference=f[n], score=score_pair(query, f[n]),
                     unverified=n == "motorcycle_left") for n in names]
    assert best_match(policy, scored, None, query=query).candidate != "motorcycle_left"


def test_a_query_placed_by_a_verified_copy_registers_no_further_candidate(extracted):
    """Registration stops once one verifies with P(copy) >= ``verify_stop_p_copy``: the less
    similar open candidates (another copy of the same photo here) are left unregistered; with
    the stop switched off (> 1) they are registered up to the bound."""
    import dataclasses

    from dupstream.engine.verification import verify_candidates

    policy, f = extracted
    query = f["copy"]
    names = ("motorcycle_left", "motorcycle_right", "coffee", "camera")

    def fresh():
        return [Scored(candidate=n, reference=f[n], score=score_pair(query, f[n]))
                for n in names]

    scored = fresh()
    stats = verify_candidates(policy, query, scored)
    first = next(s for s in scored if s.score.registration is not None)
    assert stats.runs == 1 and first.candidate == "motorcycle_left"
    assert first.score.registration.verified
    opened = [s for s in scored if s.unverified]
    assert opened and all(s.score.registration is None for s in opened)
    assert best_match(policy, scored, None, query=query).candidate == "motorcycle_left"
    off = dataclasses.replace(policy, verify_stop_p_copy=1.01)
    scored = fresh()
    assert verify_candidates(off, query, scored).runs > 1
    assert best_match(off, scored, None, query=query).candidate == "motorcycle_left"
