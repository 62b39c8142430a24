"""The learned decision model: the JSON tree evaluator reproduces scikit-learn exactly, the
calibration is strictly increasing, malformed artefacts fail loudly, and ``DecisionPolicy`` uses
it (domain-free cut-offs per preference) when the pair's image features are at hand."""

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from dupstream.core.errors import WeightsError
from dupstream.workers.decision import DecisionPolicy, default_calibrator
from dupstream.workers.features import ImageFeatures
from dupstream.workers.hashing import PDQ
from dupstream.workers.learned import (
    LearnedModel,
    MarginCalibration,
    TreeEnsemble,
    default_learned_model,
)
from dupstream.workers.similarity import PairScore


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)
    x[rng.random((n, 4)) < 0.15] = np.nan  # missing values take the learned branch
    return x, y


def _fit(x, y, **kw):
    return HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=7, random_state=0,
                                          **kw).fit(x, y)


def test_exported_trees_give_sklearns_margin_exactly_and_survive_json():
    x, y = _data()
    clf = _fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf)
    xt, _ = _data(300, seed=1)
    np.testing.assert_allclose(trees.margin(xt), clf.decision_function(xt), rtol=0, atol=1e-12)
    again = TreeEnsemble.from_dict(json.loads(json.dumps(trees.to_dict())))
    np.testing.assert_array_equal(again.margin(xt), trees.margin(xt))
    lo, hi = trees.margin_range()
    assert lo <= trees.margin(xt).min() and trees.margin(xt).max() <= hi
    # one row at a time (the engine's case) is the same as the batch
    assert again.margin(xt[:1])[0] == trees.margin(xt)[0]


def _calibration():
    return MarginCalibration(x=(-2.0, 0.0, 0.0, 2.0), y=(0.0, 0.0, 1.0, 1.0), a=1.5, b=0.0,
                             weight=0.05)


def test_calibration_is_strictly_increasing_without_flat_plateaus():
    cal = _calibration()
    m = np.linspace(-15, 15, 4001)  # sigmoid(a*m) stays below 1.0 in float64 here
    p = cal(m)
    assert np.all(np.diff(p) > 0)
    assert p.min() > 0 and p.max() < 1
    with pytest.raises(ValueError):
        MarginCalibration(x=(0.0,), y=(0.5,), a=-1.0, b=0.0, weight=0.1)
    with pytest.raises(ValueError):
        MarginCalibration(x=(0.0,), y=(0.5,), a=1.0, b=0.0, weight=0.0)


def _model(features=("visual", "pdq_distance", "reg_verified", "q_log_side")) -> LearnedModel:
    rng = np.random.default_rng(3)
    n = 400
    x = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 0.5, n),
                         rng.integers(0, 2, n), rng.uniform(0.3, 0.7, n)])
    y = (x[:, 0] > 0.6).astype(int)
    trees = TreeEnsemble.from_sklearn(_fit(x, y))
    model = LearnedModel(features=features, trees=trees, calibration=_calibration(),
                         cutoffs={"balanced": 0.5, "precision": 0.8, "recall": 0.2})
    return LearnedModel.from_json(model.to_json())


def test_artefact_round_trip_and_malformed_artefacts_fail_loudly():
    model = _model()
    assert model.version.startswith("dm-") and len(model.sha256) == 64
    d = json.loads(model.to_json())
    bad_feature = {**d, "features": ["visual", "no_such_signal", "reg_verified", "q_log_side"]}
    with pytest.raises(WeightsError, match="no_such_signal"):
        LearnedModel.from_json(json.dumps(bad_feature))
    with pytest.raises(WeightsError, match="format"):
        LearnedModel.from_json(json.dumps({**d, "format": "pickle"}))
    broken = json.loads(model.to_json())
    broken["trees"]["left"] = broken["trees"]["left"][:-1]
    with pytest.raises(WeightsError):
        LearnedModel.from_json(json.dumps(broken))


def _features(width=512, height=384) -> ImageFeatures:
    return ImageFeatures(digest="d", pdq=PDQ(variants=np.zeros((8, 32), np.uint8), quality=100),
                         vector=np.zeros(4, np.float32), width=width, height=height,
                         thumb=np.zeros((64, 64), np.uint8),
                         descriptors=np.full(8, 0.5, np.float32))


def _score(visual: float) -> PairScore:
    return PairScore(exact=False, visual=visual, pdq_distance=10, pdq_variant=0, fused=visual,
                     changed_area=0.001)


def test_policy_decides_with_the_learned_model_when_the_features_are_given():
    model = _model()
    policy = DecisionPolicy(calibrator=default_calibrator(), learned=model,
                            tenant_preferences={"strict": "precision", "lenient": "recall"})
    q, r = _features(), _features()
    hi, lo = _score(0.95), _score(0.2)
    d_hi = policy.decision(hi, query=q, reference=r)
    d_lo = policy.decision(lo, query=q, reference=r)
    assert d_hi.kind in ("duplicate", "near_duplicate") and d_lo.kind == "unique"
    assert d_hi.p_copy > d_lo.p_copy and d_hi.cut == 0.5
    assert d_lo.probability == pytest.approx(1 - d_lo.p_copy)
    # one cut-off for every domain; the tenant's preference picks it
    assert policy.decision(hi, query=q, reference=r, domain="cctv").cut == 0.5
    assert policy.decision(hi, tenant="strict", query=q, reference=r).cut == 0.8
    assert policy.decision(hi, tenant="lenient", query=q, reference=r).cut == 0.2
    # without the image features: the fused-score decision, as before
    fallback = DecisionPolicy(calibrator=default_calibrator())
    assert policy.p_copy(hi) == fallback.p_copy(hi)
    assert policy.decide(hi) == fallback.decide(hi)
    # identical bytes stay certain
    same = PairScore(exact=True, visual=1.0, pdq_distance=0, pdq_variant=0, fused=1.0,
                     changed_area=0.0)
    assert policy.p_copy(same, query=q, reference=r) == 1.0


def test_packaged_model_is_small_json_with_its_recipe():
    from importlib import resources

    model = default_learned_model()
    if model is None:
        pytest.skip("no packaged decision_model.json")
    ref = resources.files("dupstream.workers") / "assets" / "decision_model.json"
    assert len(ref.read_bytes()) < 1_200_000
    assert model.meta["seed"] is not None and model.meta["recipe"]
    p = model.p_copy_matrix(np.full((3, len(model.features)), np.nan))
    assert np.all((p > 0) & (p < 1))
    lo, hi = model.trees.margin_range()
    m = np.linspace(lo, hi, 2001)  # every margin the trees can give
    assert np.all(np.diff(model.calibration(m)) > 0)
