"""The retrieval benchmark's image set and its scoring (the engine run itself is the bench)."""

import numpy as np
import pytest

from dupstream.bench.retrieval import same_scene_evidence, score, sscd_alone, tune_threshold
from dupstream.lab.evaluation.retrieval import Item, build_bench
from dupstream.lab.evaluation.sources import pixel_digest


@pytest.fixture(scope="module")
def bench():
    return build_bench(photos=40, seed=0, copies_per_edit=1, traps_per_kind=1)


def test_index_photos_are_distinct_and_queries_are_well_formed(bench):
    assert len(bench.originals) == 40
    digests = [pixel_digest(o.rgb) for o in bench.originals]
    assert len(set(digests)) == len(digests)
    index = {o.name for o in bench.originals}
    sources = {o.source for o in bench.originals}
    roles = {q.role for q in bench.queries}
    assert {"copy", "trap"} <= roles
    for q in bench.queries:
        if q.role == "copy":
            assert q.cluster in index
        elif q.role == "trap":
            assert q.source not in sources  # held out: a trap has no original in the index
            assert q.partner and q.cluster == ""
        else:
            assert q.partner in index
    copies = {q.kind for q in bench.queries if q.role == "copy"}
    assert {"screenshot_phone", "screenshot_desktop", "border_solid", "border_blurred",
            "letterbox", "rotation", "combined"} <= copies


def test_bench_is_seeded(bench):
    again = build_bench(photos=40, seed=0, copies_per_edit=1, traps_per_kind=1)
    assert [q.name for q in again.queries] == [q.name for q in bench.queries]
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(again.queries, bench.queries,
                                                            strict=True))


def _items():
    return [Item("o1", np.zeros((1, 1, 3), np.uint8), "original", "o1", "original",
                 source="p:a.jpg[t00]"),
            Item("o2", np.zeros((1, 1, 3), np.uint8), "original", "o2", "original",
                 source="p:a.jpg[t01]"),
            Item("c1", np.zeros((1, 1, 3), np.uint8), "copy", "o1", "crop"),
            Item("c2", np.zeros((1, 1, 3), np.uint8), "copy", "o1", "border_solid"),
            Item("c3", np.zeros((1, 1, 3), np.uint8), "copy", "o2", "crop"),
            Item("ta", np.zeros((1, 1, 3), np.uint8), "trap", "", "trap_caption", "tb"),
            Item("tb", np.zeros((1, 1, 3), np.uint8), "trap", "", "trap_caption", "ta"),
            Item("s1", np.zeros((1, 1, 3), np.uint8), "same_scene", "", "same_scene", "o2")]


def test_score_counts_right_wrong_missed_and_false_matches():
    items = _items()
    cluster = {it.name: it.cluster for it in items}
    # c2 matches c1 (a copy of its own original: right), c3 matches o1 (wrong), tb its partner
    matches = [None, "o1", "o1", "c1", "o1", None, "ta", "o2"]
    s = score(items, matches, cluster)
    assert s["per_edit"]["crop"] == {"n": 2, "right": 1, "original": 1, "wrong": 1, "missed": 0,
                                     "recall": 0.5, "wrong_rate": 0.5}
    assert s["per_edit"]["border_solid"]["right"] == 1
    assert s["per_edit"]["border_solid"]["original"] == 0
    fm = s["false_matches"]
    assert fm["distinct photos"]["matched"] == 1 and fm["distinct photos"]["n"] == 2
    assert fm["distinct photos (a sibling tile of one photo)"]["matched"] == 1
    assert fm["distinct photos (another source photo)"]["matched"] == 0
    assert fm["overlay traps"]["matched"] == 1 and fm["overlay traps (to partner)"]["matched"] == 1
    assert fm["same scene (to its scene)"]["matched"] == 1
    assert s["right_recall"] == pytest.approx(2 / 3) and s["wrong_rate"] == pytest.approx(1 / 3)


def test_sscd_alone_nearest_earlier_and_threshold():
    items = _items()
    rng = np.random.default_rng(0)
    base = {n: rng.normal(size=8) for n in ("o1", "o2", "ta", "tb", "s1")}
    vec = {**base, "c1": base["o1"] + 0.01, "c2": base["o1"] + 0.02, "c3": base["o2"] + 0.01}
    vec = {k: (v / np.linalg.norm(v)).astype(np.float32) for k, v in vec.items()}
    nn = sscd_alone(items, vec)
    assert nn[0] == (None, -1.0)
    assert nn[2][0] == "o1" and nn[2][1] > 0.99
    assert nn[4][0] == "o2"
    thr = tune_threshold(items, nn, max_fpr=0.0)
    negs = [s for it, (_, s) in zip(items, nn, strict=True) if it.role in ("original", "trap")]
    assert all(s < thr for s in negs) and thr <= max(negs) + 1e-6


def test_static_camera_frames_are_scored_apart_from_edits_and_negatives():
    items = [*_items()[:2], Item("s2", np.zeros((1, 1, 3), np.uint8), "static", "o2",
                                 "static_frames", "o2")]
    cluster = {it.name: it.cluster for it in items}
    s = score(items, [None, None, "o2"], cluster)
    assert s["static_frames"] == {"n": 1, "right": 1, "wrong": 0}
    assert s["copies"] == 0 and s["false_matches"]["same scene"]["n"] == 0
    s = score(items, [None, None, "o1"], cluster)
    assert s["static_frames"] == {"n": 1, "right": 0, "wrong": 1}


def test_same_scene_evidence_counts_unique_same_scene_rows():
    items = _items()
    rows = [{"verdict": "unique"}] * 7 + [{"verdict": "unique", "same_scene": True}]
    out = same_scene_evidence(items, rows)
    assert {k: out[k] for k in ("n", "unique", "n_recorded", "unique_with_evidence")} == {
        "n": 1, "unique": 1, "n_recorded": 1, "unique_with_evidence": 1}
    assert out["other_negatives_with_evidence"] == {"original": {"n": 0, "evidence": 0},
                                                    "trap": {"n": 0, "evidence": 0}}
    rows[0] = {"verdict": "unique", "same_scene": True}
    assert same_scene_evidence(items, rows)["other_negatives_with_evidence"]["original"] == {
        "n": 1, "evidence": 1}
    rows[-1] = {"verdict": "near_duplicate", "same_scene": False}
    assert same_scene_evidence(items, rows)["unique_with_evidence"] == 0
    rows[-1] = {"verdict": "unique"}  # a saved run from before the field was recorded
    assert same_scene_evidence(items, rows)["n_recorded"] == 0
