"""The learned decision's recipe and training: pairs never cross splits, digits split as the
evaluation splits them, no vtest frames, and the training pipeline (trees, out-of-fold
calibration, cut-offs, report) on a small table."""

import numpy as np
import pytest

from dupstream.lab import decision_train as T
from dupstream.lab.decision_data import (
    Recipe,
    build_cctv,
    build_digits,
    cctv_label,
)
from dupstream.lab.evaluation import metrics as M
from dupstream.lab.evaluation.scene_rule import scene_change
from dupstream.workers.learned import LearnedModel
from dupstream.workers.pairfeatures import NAMES


def _check_splits(ps):
    for a, b, _, _ in ps.pairs:
        assert ps.split[a] == ps.split[b]
    by_split = {}
    for src, sp in zip(ps.source, ps.split, strict=True):
        by_split.setdefault(src, set()).add(sp)
    assert all(len(v) == 1 for v in by_split.values())  # a source lives in one split


def test_digit_pairs_split_by_source_like_the_evaluation():
    from dupstream.lab.evaluation.mnist import build_mnist

    r = Recipe(digits=60, digit_negatives=4, eval_digits=30)
    ps = build_digits(r)
    _check_splits(ps)
    labels = [p[2] for p in ps.pairs]
    assert sum(labels) == 60 and len(labels) - sum(labels) > 60
    kinds = {p[3] for p in ps.pairs if p[2] == 0}
    assert kinds == {"same_digit_other_writer", "different_digit"}
    ev = build_mnist(n_sources=30, seed=0)
    mine = dict(zip(ps.source, ps.split, strict=True))
    assert all(mine[im.source] == im.split for im in ev.images)


def test_cctv_pairs_leave_vtest_out():
    from dupstream.lab.evaluation.sources import video_paths

    if not video_paths():
        pytest.skip("no packaged videos")
    ps = build_cctv(Recipe(cctv_frames=90, cctv_segment=30, cctv_anchor_step=6))
    _check_splits(ps)
    assert ps.pairs and not any("vtest" in f for f in ps.family)
    kinds = {"consecutive", "consecutive_changed", "consecutive_ambiguous", "re_encoded",
             "far_apart", "far_apart_static", "far_apart_ambiguous"}
    assert {p[3] for p in ps.pairs} <= kinds
    assert len(ps.gap_label) == len(ps.scene_label) == len(ps.sampled) == len(ps.pairs)
    by_time = {"consecutive": 1, "re_encoded": 1, "far_apart": 0}
    for (a, b, label, kind), gap, scene, sampled in zip(
            ps.pairs, ps.gap_label, ps.scene_label, ps.sampled, strict=True):
        assert kind.startswith(sampled) and gap == by_time[sampled]  # the time label, always
        if kind == "re_encoded":
            assert label == scene == 1
            continue
        # scene labels: the label is what the frames show; ambiguous pairs kept with label -1
        want = cctv_label(Recipe(), ps.rgbs[a], ps.rgbs[b], -1)
        assert label == scene == (-1 if want is None else want)
        assert kind.endswith("_ambiguous") == (want is None)
    amb = sum(p[2] == -1 for p in ps.pairs)
    assert amb == sum(ps.info["ambiguous"].values())
    gap = build_cctv(Recipe(cctv_frames=90, cctv_segment=30, cctv_anchor_step=6,
                            cctv_labels="gap"))
    assert {(p[3], p[2]) for p in gap.pairs} <= {("consecutive", 1), ("re_encoded", 1),
                                                  ("far_apart", 0)}
    # the same pairs either way, only the training label differs
    assert [p[:2] for p in gap.pairs] == [p[:2] for p in ps.pairs]
    assert [p[2] for p in gap.pairs] == gap.gap_label == ps.gap_label
    assert gap.scene_label == ps.scene_label


def _scene(seed=0, size=(240, 320)):
    import cv2

    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.uniform(0, 255, size).astype(np.float32), (0, 0), 3)
    g = (g - g.min()) / (g.max() - g.min()) * 255
    return np.repeat(g[..., None], 3, axis=-1).astype(np.uint8)


def test_scene_change_leaves_camera_shake_out_and_sees_an_object_enter():
    frame = _scene()
    rng = np.random.default_rng(1)
    shaken = np.roll(frame, (3, -2), axis=(0, 1))  # the camera moved a little
    shaken = np.clip(shaken.astype(int) + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
    changed, solid = scene_change(frame, shaken)
    assert solid < 0.005 and changed < 0.03
    assert cctv_label(Recipe(), frame, shaken, 0) == 1  # far apart in time, nothing happened
    entered = shaken.copy()
    entered[150:230, 250:320] = (20, 20, 30)  # a car drives in at the edge (~7 % of the frame)
    changed, solid = scene_change(frame, entered)
    assert solid >= 0.05
    assert cctv_label(Recipe(), frame, entered, 1) == 0  # the next frame, but not a copy
    assert cctv_label(Recipe(cctv_labels="gap"), frame, entered, 1) == 1
    small = shaken.copy()
    small[100:124, 100:140] = 255  # a small change (~1.7 %): neither static nor changed
    assert cctv_label(Recipe(), frame, small, 1) is None
    with pytest.raises(ValueError):
        cctv_label(Recipe(cctv_labels="time"), frame, shaken, 1)


def _table(n=900, seed=0, ambiguous=0.0):
    """A synthetic pair table; ``ambiguous``: the share of CCTV pairs left without a training
    label (label -1), whose label by time (``gap_label``) is a coin toss near the cut."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    x = np.full((n, len(NAMES)), np.nan)
    vis = np.clip(np.where(y == 1, rng.normal(0.8, 0.12, n), rng.normal(0.45, 0.15, n)), -1, 1)
    x[:, NAMES.index("visual")] = vis
    x[:, NAMES.index("visual_best")] = vis
    x[:, NAMES.index("fused")] = vis
    x[:, NAMES.index("pdq_distance")] = np.where(y == 1, rng.uniform(0, 0.3, n),
                                                 rng.uniform(0.2, 0.6, n))
    x[:, NAMES.index("reg_verified")] = (y == 1) & (rng.random(n) < 0.7)
    x[:, NAMES.index("reg_same_scene")] = 0.0
    sources = np.asarray([f"s{i // 6}" for i in range(n)])
    split = np.asarray([("train", "train", "train", "val", "test")[(i // 6) % 5]
                        for i in range(n)])
    sets = np.asarray([("digits", "photos", "cctv")[(i // 6) % 3] for i in range(n)])
    cctv = sets == "cctv"
    amb = cctv & (rng.random(n) < ambiguous)
    gap = np.where(cctv, y, -1)
    gap[amb] = rng.integers(0, 2, int(amb.sum()))
    x[amb, NAMES.index("visual")] = x[amb, NAMES.index("visual_best")] = 0.62
    kind = np.where(y == 1, "copy", "other").astype("<U32")
    kind[amb] = "consecutive_ambiguous"
    sampled = np.where(cctv, np.where(gap == 1, "consecutive", "far_apart"), "")
    label = np.where(amb, -1, y)
    return {"X": x, "label": label, "kind": kind, "split": split, "source": sources,
            "family": np.asarray(["f"] * n), "set": sets, "phash": vis.copy(),
            "verified": np.zeros(n, bool), "names": NAMES, "train_ok": ~amb, "gap_label": gap,
            "scene_label": np.where(cctv, label, -1), "sampled": sampled}


def test_training_pipeline_calibrates_and_reports():
    data = _table()
    train, val = T._masks(data)
    model, info = T.train_model(data, train, val, T.NO_OBJECTS, seed=0)
    assert info["max_abs_margin_vs_sklearn"] < 1e-9  # the JSON trees are sklearn's trees
    assert info["val_auc"] > 0.9
    model = LearnedModel.from_json(model.to_json())
    lo, hi = model.trees.margin_range()
    assert np.all(np.diff(model.calibration(np.linspace(lo, hi, 500))) > 0)
    assert all(c is None or 0 <= c <= 1 for c in model.cutoffs.values())
    te = data["split"] == "test"
    res = T.evaluate_model(model, {}, data, {"all test": te}, val, resamples=20, seed=0,
                           train_mask=train)
    block = res["all test"]
    assert block["auc"]["value"] > 0.9 and 0 <= block["ece"]["value"] <= 0.2
    lo_ci, hi_ci = block["f1"]["ci"]
    assert lo_ci <= block["f1"]["value"] <= hi_ci
    # a lower-is-copy signal is read the right way round
    assert block["signals"]["PDQ distance (dihedral)"]["orientation"] == -1
    rep = {"model": model.version, "bytes": 1, "features": list(model.features),
           "cutoffs": model.cutoffs, "meta": {"command": "c", "seed": 0,
                                              "feature_choice": {"kept": "x"}},
           "test": res, "heldout": {"results": {}}}
    assert "| all test |" in T.markdown(rep)


def test_nearest_negatives_pair_the_most_similar_non_overlapping_pictures():
    from types import SimpleNamespace

    from dupstream.lab.decision_data import PairSet, nearest_pairs

    ps = PairSet("photos")
    px = np.zeros((4, 4, 3), np.uint8)
    # photo p (full, and its copy), its half a, its half b, photo q, photo r (other split)
    for origin, split in [("p|full", "train"), ("p|full", "train"), ("p|a", "train"),
                          ("p|b", "train"), ("q|full", "train"), ("r|full", "test")]:
        ps.add(px, source=origin[0], family="f", split=split, origin=origin)
    v = np.asarray([[1, 0, 0], [0.99, 0.14, 0], [0.9, 0.43, 0], [0.6, 0.8, 0], [0.5, 0.2, 0.84],
                    [1, 0, 0]], np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    feats = [SimpleNamespace(vector=x, content=None) for x in v]
    # by default never within one source group (those are same-scene pairs)
    across, _ = nearest_pairs(ps, feats, k=1, max_visual=0.95)
    assert across and all(ps.source[a] != ps.source[b] for a, b, _, _ in across)
    pairs, dropped = nearest_pairs(ps, feats, k=1, max_visual=0.95, same_source=True)
    got = {(a, b) for a, b, label, kind in pairs if label == 0 and kind == "nearest_other"}
    assert len(got) == len(pairs)
    for a, b in got:
        # never the same picture, an overlapping region, or another split
        assert ps.split[a] == ps.split[b]
        assert not (ps.origin[a] == ps.origin[b] or {ps.origin[a], ps.origin[b]} & {"p|full"}
                    and ps.origin[a].split("|")[0] == ps.origin[b].split("|")[0])
    # the two halves of one photo do not overlap: each is the other's nearest
    assert (2, 3) in got or (3, 2) in got
    # image 5 has nothing in its split; the near-identical halves cap drops nothing here
    assert all(5 not in ab for ab in got) and dropped == 0


def test_ambiguous_cctv_pairs_are_kept_out_of_fitting_and_scored_by_the_time_rule():
    data = _table(n=1200, ambiguous=0.3)
    ok = data["train_ok"]
    assert (~ok).sum() > 50 and np.all(data["label"][~ok] == -1)
    train, val = T._masks(data)
    assert not (train & ~ok).any() and not (val & ~ok).any()
    model, info = T.train_model(data, train, val, T.NO_OBJECTS, seed=0)
    assert info["n_train"] == int(((data["split"] == "train") & ok).sum())
    # the label -1 never reaches the fit: a binary model, the same one as without those rows
    kept = {k: (v[ok] if isinstance(v, np.ndarray) and len(v) == len(ok) else v)
            for k, v in data.items()}
    t2, v2 = T._masks(kept)
    twin, _ = T.train_model(kept, t2, v2, T.NO_OBJECTS, seed=0)
    assert np.allclose(T.predict(model, data, ok),
                       T.predict(twin, kept, np.ones(int(ok.sum()), bool)))
    # set weights count only trainable pairs: each set weighs the same among them
    w = T.set_weights(data["set"], ok)
    sums = [w[(data["set"] == s) & ok].sum() for s in ("digits", "photos", "cctv")]
    assert np.allclose(sums, ok.sum() / 3)
    rule = T.time_rule_blocks(model, data, train, resamples=20, seed=0)
    assert set(rule) == {"cctv val", "cctv test"}
    for name, sp in (("cctv val", "val"), ("cctv test", "test")):
        b, m = rule[name], (data["set"] == "cctv") & (data["split"] == sp)
        assert b["pairs"] == int(m.sum()) and b["ambiguous"] == int((m & ~ok).sum()) > 0
        assert b["positives"] == int(data["gap_label"][m].sum())
        # consecutive recall / far-apart FPR: the share called a copy at the balanced cut-off
        p = T.predict(model, data, m)
        called = p >= model.cut("balanced")
        cons = data["sampled"][m] == "consecutive"
        assert b["consecutive_recall"]["value"] == pytest.approx(called[cons].mean())
        assert b["far_apart_fpr"]["value"] == pytest.approx(called[~cons].mean())
        lo, hi = b["consecutive_recall"]["ci"]
        assert lo <= b["consecutive_recall"]["value"] <= hi
        assert b["auc"]["value"] == pytest.approx(M.auc(data["gap_label"][m], p))
        assert 0.5 < b["best_signal"]["auc"]["value"] <= 1
        assert b["kinds"]["consecutive_ambiguous"]["n"] == int((m & ~ok).sum())
    rep = {"model": model.version, "bytes": 1, "features": list(model.features),
           "cutoffs": model.cutoffs, "meta": {"command": "c", "seed": 0,
                                              "feature_choice": {"kept": "x"}},
           "test": {}, "heldout": {"results": {}}, "cctv_time_rule": rule}
    md = T.markdown(rep)
    assert "CCTV by the time rule (issue 13's definition)" in md and "| cctv test |" in md
    with pytest.raises(ValueError):  # the time rule needs a label by time on every pair
        T.evaluate_time_rule(model, data, data["set"] == "digits", resamples=5, seed=0,
                             signs={c: 1 for c in T.SIGNALS.values()})


def test_decision_cutoffs_keep_the_preference_order():
    from dupstream.lab.decision_train import fit_cutoffs

    rng = np.random.default_rng(0)
    for sep in (0.5, 2.0, 6.0):  # from overlapping to well separated classes
        y = rng.random(600) < 0.3
        p = 1 / (1 + np.exp(-(rng.normal(size=600) + sep * np.where(y, 1, -1))))
        c = fit_cutoffs(p, y.astype(int))
        assert c["recall"] is None or c["recall"] <= c["balanced"]
        assert c["precision"] is None or c["precision"] >= c["balanced"]


def test_sibling_tiles_are_negatives_and_their_copies_positives():
    from dupstream.lab.decision_data import PairSet, Recipe, _overlapping, _sibling_tiles

    rng = np.random.default_rng(0)
    ps = PairSet("photos")
    full = (rng.random((256, 320, 3)) * 255).astype(np.uint8)
    idx = ps.add(full, source="g", family="f", split="train", origin="p|full")
    scenes = [{"region": "full", "scene_only": False, "idx": idx, "photo": "p", "group": "g",
               "family": "f", "split": "train"}]
    _sibling_tiles(ps, scenes, rng, Recipe(tiles=2))
    kinds = [(label, kind) for _, _, label, kind in ps.pairs]
    assert kinds.count((1, "tile_copy")) == 4 and kinds.count((0, "sibling_tile")) == 6
    for a, b, label, _ in ps.pairs:
        assert _overlapping(ps.origin[a], ps.origin[b]) == (label == 1)
    assert _overlapping("p|t0", "p|a") and _overlapping("p|t1", "p|full")
    assert not _overlapping("p|a", "p|b") and not _overlapping("p|t0", "q|t0")
    ps2 = PairSet("photos")
    ps2.add(full, source="g", family="f", split="train", origin="p|full")
    _sibling_tiles(ps2, scenes, rng, Recipe(tiles=0))
    assert ps2.pairs == []
