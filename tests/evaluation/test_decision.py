"""Adaptive decisions: per-domain calibrator and cut-off, preferences, difficulty, review."""

from dupstream.workers.calibration import Calibrator
from dupstream.workers.decision import (
    Cutoffs,
    DecisionModel,
    DecisionPolicy,
    difficulty_key,
    score_difficulty,
)
from dupstream.workers.similarity import PairScore


def _score(fused, *, semantic=None):
    return PairScore(exact=False, visual=fused, pdq_distance=100, pdq_variant=0, fused=fused,
                     changed_area=None, semantic=semantic or {})


CAL = Calibrator(method="platt", params={"a": 10.0, "b": -5.0})  # P = 0.5 at S = 0.5


def test_without_a_decision_model_the_cut_off_is_p_copy_min():
    policy = DecisionPolicy(calibrator=CAL)
    assert policy.decide(_score(0.6))[0] == "near_duplicate"
    assert policy.decide(_score(0.4))[0] == "unique"
    assert policy.decide(_score(0.52))[2] is True  # near the cut-off: review


def test_domain_preference_and_difficulty(tmp_path):
    model = DecisionModel(
        default=Cutoffs(balanced=0.5, precision=0.9, recall=0.2,
                        difficulty={"few/disagree": 0.3}),
        domains={"cctv": Cutoffs(balanced=0.8)},
        calibrators={"digits": {"method": "platt", "params": {"a": 10.0, "b": -8.0},
                                "threshold": 0.8}},
    )
    model.save(tmp_path / "decision.json")
    model = DecisionModel.load(tmp_path / "decision.json")
    policy = DecisionPolicy(calibrator=CAL, cutoffs=model,
                            tenant_domains={"cams": "cctv", "ocr": "digits"},
                            tenant_preferences={"strict": "precision", "lenient": "recall"})
    s = _score(0.6)  # P = 0.73
    assert policy.decide(s)[0] == "near_duplicate"
    assert policy.decide(s, tenant="cams")[0] == "unique"  # domain cut-off 0.8
    assert policy.decide(s, tenant="strict")[0] == "unique"  # precision cut-off 0.9
    assert policy.decide(_score(0.45), tenant="lenient")[0] == "near_duplicate"
    assert policy.p_copy(s, tenant="ocr") < 0.2  # the digits calibrator
    hard = _score(0.6, semantic={"semantic": 0.1, "objects_matched": ["person"]})
    assert score_difficulty(hard) == "few/disagree"
    assert policy.cut_off(hard) == 0.8
    assert DecisionPolicy(calibrator=CAL, cutoffs=model, adaptive=False).cut_off(hard) == 0.5


def test_difficulty_key():
    assert difficulty_key(None, 0.9, None) == "none/agree"
    assert difficulty_key(5, 0.9, 0.85) == "many/agree"
    assert difficulty_key(2, 0.9, 0.3) == "few/disagree"
