"""The shipped decision artefacts, fitted here: ``calibration.json`` (Platt vs isotonic on the
production fused score S, fitted on train, chosen by validation log-loss) and ``decision.json``
(cut-offs per preference, domain and difficulty, and a calibrator per domain), from the train /
validation splits of the evaluation data sets; then the policy they make, on each test split."""

from __future__ import annotations

import json

import numpy as np

from dupstream.lab.evaluation import metrics as M
from dupstream.lab.evaluation.evaluate import SetResult
from dupstream.lab.fit import fit_calibrator, fit_cutoffs
from dupstream.workers.calibration import Calibrator
from dupstream.workers.decision import DecisionModel, DecisionPolicy, score_difficulty


def _p(cal: Calibrator, res: SetResult, mask: np.ndarray) -> np.ndarray:
    p = np.asarray(cal(res.cols["fused"][mask]), np.float64).reshape(-1)
    return np.where(res.cols["exact"][mask], 1.0, p)


def _keys(res: SetResult, mask: np.ndarray) -> np.ndarray:
    return np.asarray([score_difficulty(s) for s, m in zip(res.scores, mask, strict=True) if m])


def fit_shipping(results: list[SetResult], *, meta: dict,
                 default_domain: str = "photos") -> tuple[Calibrator, DecisionModel]:
    """Default calibrator and cut-offs: fitted on the ``default_domain`` data sets (a tenant
    without a domain is a photo service) when there are any, else on all of them pooled; every
    domain also gets its own calibrator and cut-offs."""
    everything = results
    results = [r for r in results if r.ds.domain == default_domain] or results

    def pooled(split: str, col: str) -> np.ndarray:
        return np.concatenate([r.cols[col][r.split == split] if col != "label"
                               else r.label[r.split == split] for r in results])

    cal = fit_calibrator(pooled("train", "fused"), pooled("train", "label"),
                         pooled("val", "fused"), pooled("val", "label"),
                         meta={**meta, "data": "dupstream eval data sets "
                               f"{[r.ds.name for r in results]}: pooled train (fit) and "
                               "validation (Platt vs isotonic by log-loss) splits",
                               "n_train": int(sum((r.split == 'train').sum() for r in results)),
                               "n_val": int(sum((r.split == 'val').sum() for r in results))})
    p_val = np.concatenate([_p(cal, r, r.split == "val") for r in results])
    k_val = np.concatenate([_keys(r, r.split == "val") for r in results])
    y_val = np.concatenate([r.label[r.split == "val"] for r in results])
    model = DecisionModel(default=fit_cutoffs(p_val, y_val, k_val), meta={
        **meta, "fitted_on": "validation splits of the data sets named in calibration.json",
        "precision_target": 0.99, "recall_target": 0.99})
    for r in everything:
        tr, va = r.split == "train", r.split == "val"
        dcal = fit_calibrator(r.cols["fused"][tr], r.label[tr], r.cols["fused"][va],
                              r.label[va], meta={"domain": r.ds.domain, "data": r.ds.name})
        model.calibrators[r.ds.domain] = json.loads(dcal.to_json())
        model.domains[r.ds.domain] = fit_cutoffs(_p(dcal, r, va), r.label[va], _keys(r, va))
    return cal, model


def evaluate_policy(res: SetResult, cal: Calibrator, model: DecisionModel | None,
                    *, domain: str | None) -> dict:
    """The production decision (``DecisionPolicy.decide``) on every test pair."""
    policy = DecisionPolicy(calibrator=cal, cutoffs=model, domain=domain)
    te = res.split == "test"
    y = res.label[te]
    kinds, probs, reviews = [], [], []
    for s, m in zip(res.scores, te, strict=True):
        if m:
            kind, _, review = policy.decide(s)
            kinds.append(kind)
            probs.append(policy.p_copy(s, domain=domain))
            reviews.append(review)
    pred = np.asarray([k != "unique" for k in kinds])
    p = np.asarray(probs)
    prec, rec, f1 = M.prf(y, pred)
    return {"precision": prec, "recall": rec, "f1": f1, "ece": M.ece(y, p),
            "auc": M.auc(y, p), "review": float(np.mean(reviews)), "pred": pred, "prob": p,
            "reliability": M.reliability(y, p),
            "verdicts": {k: kinds.count(k) for k in ("duplicate", "near_duplicate", "unique")}}
