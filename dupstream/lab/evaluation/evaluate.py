"""One data set through every method: thresholds and alpha on validation, metrics on test."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dupstream.lab.evaluation import metrics as M
from dupstream.lab.evaluation.dataset import EvalSet
from dupstream.lab.evaluation.methods import METHODS, OURS, available, caveat, semantic_score
from dupstream.lab.evaluation.signals import ImageTable, pair_signals, product_signals
from dupstream.lab.evaluation.stats import bootstrap_ci, mcnemar
from dupstream.lab.fit import fit_calibrator, fit_cutoffs, grid_alpha, max_f1_cut
from dupstream.workers.decision import difficulty_key


@dataclass
class MethodResult:
    name: str
    group: str
    note: str | None = None
    available: bool = True
    alpha: float | None = None
    cut: float | None = None
    precision: float = float("nan")
    recall: float = float("nan")
    f1: float = float("nan")
    f1_ci: tuple[float, float] = (float("nan"), float("nan"))
    auc: float = float("nan")
    auc_ci: tuple[float, float] = (float("nan"), float("nan"))
    map: float = float("nan")
    map_ci: tuple[float, float] = (float("nan"), float("nan"))
    ece: float = float("nan")
    calibration: str = ""
    roc: tuple[np.ndarray, np.ndarray] | None = None
    reliability: dict | None = None
    pred: np.ndarray | None = None  # test predictions
    prob: np.ndarray | None = None  # calibrated test P(copy)
    mcnemar: dict | None = None  # ours vs this method


@dataclass
class SetResult:
    ds: EvalSet
    cols: dict[str, np.ndarray]  # pair columns (every split)
    split: np.ndarray
    label: np.ndarray
    methods: list[MethodResult] = field(default_factory=list)
    adaptive: dict = field(default_factory=dict)
    scores: list = field(default_factory=list)  # production PairScore per pair
    n_queries: int = 0
    timings_s: dict = field(default_factory=dict)
    #: the shipped learned decision on the test pairs (``decisioneval``); None: not packaged
    learned: dict | None = None


def ranking_columns(ds: EvalSet, table: ImageTable) -> tuple[dict, np.ndarray, np.ndarray]:
    """Test-split ranking: each query (the copy of a positive test pair) against every other
    test image; relevant = same cluster. Returns (columns, query ids, relevance)."""
    test = np.asarray([i for i, im in enumerate(ds.images) if im.split == "test"])
    queries = sorted({p.b for p in ds.pairs if p.label == 1 and ds.images[p.b].split == "test"})
    qa, ga = [], []
    for q in queries:
        g = test[test != q]
        qa.append(np.full(len(g), q))
        ga.append(g)
    if not qa:
        return pair_signals(table, np.zeros(0, int), np.zeros(0, int)), np.zeros(0), np.zeros(0)
    q = np.concatenate(qa)
    g = np.concatenate(ga)
    clusters = np.asarray([im.cluster for im in ds.images])
    return pair_signals(table, g, q), q, clusters[q] == clusters[g]


def _ci(values: np.ndarray, fn, resamples: int, seed: int) -> tuple[float, float]:
    return bootstrap_ci(lambda idx: fn(idx), len(values), resamples=resamples, seed=seed)


def evaluate_set(ds: EvalSet, table: ImageTable, *, seed: int = 0,
                 resamples: int = 1000) -> SetResult:
    arr = ds.arrays()
    cols = pair_signals(table, arr["a"], arr["b"])
    prod = product_signals(table, arr["a"], arr["b"])
    scores = prod.pop("scores")
    cols.update(prod)
    res = SetResult(ds=ds, cols=cols, split=arr["split"], label=arr["label"], scores=scores)
    rank_cols, rank_q, rank_rel = ranking_columns(ds, table)
    res.n_queries = len(set(rank_q.tolist()))
    y = arr["label"]
    sp = {s: arr["split"] == s for s in ("train", "val", "test")}
    yt = y[sp["test"]]
    for m in METHODS:
        r = MethodResult(m.name, m.group)
        why = available(m, cols)
        if why is not None:
            r.available, r.note = False, why
            res.methods.append(r)
            continue
        r.note = caveat(m, cols)
        alpha = 1.0
        if m.uses_alpha:
            ss = semantic_score(cols, graph=m.name == OURS)
            alpha, cut, _ = grid_alpha(cols["visual"][sp["val"]], ss[sp["val"]], y[sp["val"]])
        s = m.score(cols, alpha)
        if not m.uses_alpha:
            cut, _ = max_f1_cut(s[sp["val"]], y[sp["val"]])
        r.alpha, r.cut = (alpha if m.uses_alpha else None), cut
        st = s[sp["test"]]
        r.pred = st >= cut
        r.precision, r.recall, r.f1 = M.prf(yt, r.pred)
        r.f1_ci = _ci(yt, lambda i, p=r.pred: M.prf(yt[i], p[i])[2], resamples, seed)
        r.auc = M.auc(yt, st)
        r.auc_ci = _ci(yt, lambda i, st=st: M.auc(yt[i], st[i]), resamples, seed)
        r.roc = M.roc(yt, st)
        cal = fit_calibrator(s[sp["train"]], y[sp["train"]], s[sp["val"]], y[sp["val"]])
        r.calibration = cal.method
        r.prob = np.asarray(cal(st), np.float64)
        r.ece = M.ece(yt, r.prob)
        r.reliability = M.reliability(yt, r.prob)
        if len(rank_q):
            aps = M.per_query_ap(rank_q, m.score(rank_cols, alpha), rank_rel)
            r.map = float(aps.mean()) if len(aps) else float("nan")
            r.map_ci = _ci(aps, lambda i, aps=aps: float(aps[i].mean()), resamples, seed)
        res.methods.append(r)
    ours = next(m for m in res.methods if m.name == OURS)
    for r in res.methods:
        if r.available and r is not ours:
            r.mcnemar = mcnemar(yt, ours.pred, r.pred)
    res.adaptive = adaptive_study(res, ours)
    return res


def pair_keys(cols: dict, mask: np.ndarray) -> np.ndarray:
    ss = semantic_score(cols)
    nb = cols["n_objects_b"]
    return np.asarray([difficulty_key(int(n) if n >= 0 else None, float(v),
                                      None if np.isnan(x) else float(x))
                       for n, v, x in zip(nb[mask], cols["visual"][mask], ss[mask],
                                          strict=True)])


def adaptive_study(res: SetResult, ours: MethodResult) -> dict:
    """Ours with cut-offs on calibrated P fitted on validation: balanced vs difficulty-adaptive,
    precision- and recall-preferring; share of test pairs flagged for review."""
    cols, y, split = res.cols, res.label, res.split
    from dupstream.lab.evaluation.methods import by_name

    m = by_name(OURS)
    s = m.score(cols, ours.alpha or 1.0)
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    cal = fit_calibrator(s[tr], y[tr], s[va], y[va])
    pv, pt = np.asarray(cal(s[va])), np.asarray(cal(s[te]))
    cut = fit_cutoffs(pv, y[va], pair_keys(cols, va))
    keys_t = pair_keys(cols, te)
    yt = y[te]
    out = {"cutoffs": cut, "calibration": cal.method}
    for name, cuts in (
        ("balanced", np.full(len(pt), cut.cut("balanced"))),
        ("balanced + difficulty", np.asarray([cut.cut("balanced", k) for k in keys_t])),
        ("precision-preferring", np.full(len(pt), cut.cut("precision"))),
        ("recall-preferring", np.full(len(pt), cut.cut("recall"))),
    ):
        pred = pt >= cuts
        p, r, f = M.prf(yt, pred)
        review = float(np.mean(np.abs(pt - cuts) < 0.15))
        out[name] = {"precision": p, "recall": r, "f1": f, "review": review,
                     "cut": float(np.median(cuts))}
    return out
