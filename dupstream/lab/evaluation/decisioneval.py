"""The shipped learned decision (``workers/assets/decision_model.json``) on an evaluation set's
test pairs, through the engine's own path: the production pair scores (``score_pair``, and
``verify_pair`` where ``DecisionPolicy.needs_verification``: ``signals.product_signals``), then
``DecisionPolicy.decision`` with both images' features - the same artefact and code as
``compare``, ``scan`` and the stream, no domain given.

The training recipe (``lab.decision_data``) splits MNIST digits and the catalogue photos exactly
as the evaluation does, so these test pairs were not trained on; the CCTV segments are split
differently there (other frame counts per video), so CCTV test frames may have been trained on.
"""

from __future__ import annotations

import numpy as np

from dupstream.lab.evaluation import metrics as M


def learned_decisions(res, table) -> dict | None:
    """Verdicts, P(copy) and summary metrics of the shipped learned decision on ``res``'s test
    pairs (``table``: the set's per-image features); None when no model is packaged.
    ``same_scene_evidence``: per negative kind, the test pairs, those called unique, and those
    with ``same_scene`` evidence (``DecisionPolicy.same_scene``, as on a verdict): it belongs on
    ``same_scene`` pairs (another photo of the scene), may be on ``scene_part`` pairs (two
    halves, little or no content in common), and on no other kind."""
    from dupstream.workers.decision import (
        DecisionPolicy,
        default_calibrator,
        default_decision_model,
    )
    from dupstream.workers.learned import default_learned_model

    model = default_learned_model()
    if model is None:
        return None
    policy = DecisionPolicy(calibrator=default_calibrator(), cutoffs=default_decision_model(),
                            learned=model)
    arr = res.ds.arrays()
    te = np.flatnonzero(res.split == "test")
    kinds, probs, scene = [], [], {}
    for i in te:
        q, r = table.features[arr["b"][i]], table.features[arr["a"][i]]
        d = policy.decision(res.scores[i], query=q, reference=r)
        kinds.append(d.kind)
        probs.append(d.p_copy)
        if arr["label"][i] == 0:
            c = scene.setdefault(str(arr["kind"][i]), {"n": 0, "unique": 0, "evidence": 0})
            c["n"] += 1
            c["unique"] += int(d.kind == "unique")
            c["evidence"] += int(policy.same_scene(res.scores[i], d.kind, q, r))
    y = arr["label"][te]
    pred = np.asarray([k != "unique" for k in kinds], bool)
    p = np.asarray(probs, np.float64)
    prec, rec, f1 = M.prf(y, pred)
    return {"model": model.version, "precision": prec, "recall": rec, "f1": f1,
            "auc": M.auc(y, p), "ece": M.ece(y, p), "pred": pred, "prob": p,
            "verdicts": {k: kinds.count(k) for k in ("duplicate", "near_duplicate", "unique")},
            "same_scene_evidence": scene}
