"""``dupstream train --decision``: the learned pair classifier, its calibration and cut-offs.

1. Data (``decision_data``): generated digit, photo and CCTV-frame pairs, split by source, their
   ``pair_features`` computed as the engine computes them (cached per set under ``.data``).
2. Model: scikit-learn's ``HistGradientBoostingClassifier`` on the train split (each set weighted
   equally; monotone in the visual similarities and the PDQ distance), exported to the JSON node
   table of ``workers.learned`` (no pickle).
3. Calibration: 5-fold out-of-fold margins on train (folds grouped by source) -> isotonic fit
   (interpolated) blended with a Platt fit: strictly increasing; the blend weight by validation
   log-loss. Cut-offs on validation: max F1 (``balanced``), precision / recall >= 0.99.
4. Feature set: the full set vs the same without the object / semantic / graph features; the
   object features are kept only when they improve validation log-loss (they must pay).
5. Report (``report.json`` / ``report.md`` beside the artefact): on each test split and on a
   held-out source family (the whole pipeline refitted without that family; tested on all of its
   pairs), with source-level bootstrap CIs: AUC of P(copy) vs every single signal, ECE, F1 of the
   verdict, CCTV consecutive recall / far-apart FPR, the visual-only ablation, pHash, SSCD alone
   at its validation cut, and the fused-score decision shipped before. Ambiguous CCTV pairs
   (``train_ok`` False: the frames neither clearly agree nor clearly differ) are left out of all of
   that, and of fitting, calibration and cut-offs.
6. CCTV by the time rule (issue 13's definition, ``cctv_time_rule``): on the CCTV validation and
   test splits, ALL pairs (ambiguous ones included) with the label by time (``gap_label``: the next
   frames and re-encodings are copies, a frame >= ``cctv_min_gap`` later that changed >= 2 % is
   not): consecutive recall, far-apart FPR, AUC / ECE / F1 of P(copy) and the best single signal's
   AUC, with the same bootstrap intervals.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dupstream.lab import fit as F
from dupstream.lab.decision_data import SETS, TABLE_FORMAT, Recipe, load_or_build
from dupstream.lab.evaluation import metrics as M
from dupstream.lab.fit import max_f1_cut
from dupstream.workers.learned import LearnedModel, MarginCalibration, TreeEnsemble
from dupstream.workers.pairfeatures import NAMES, OBJECT_NAMES

ASSETS = Path(__file__).resolve().parents[2] / "workers" / "assets"
CACHE = Path(__file__).resolve().parents[2] / ".data" / "decision"

VISUAL = ("visual", "content_visual", "visual_best")
#: object / semantic / graph features (the paper's semantic branch)
OBJECT_FEATURES = OBJECT_NAMES
NO_OBJECTS = tuple(n for n in NAMES if n not in OBJECT_FEATURES)
#: +1: P(copy) never decreases as it grows; -1: never increases
MONOTONE = {"visual": 1, "content_visual": 1, "visual_best": 1, "pdq_distance": -1}
HGB = {"max_iter": 250, "learning_rate": 0.06, "max_leaf_nodes": 15, "min_samples_leaf": 20,
       "l2_regularization": 1.0, "early_stopping": False}
BLEND_WEIGHTS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5)
#: single signals compared with P(copy): name -> column (each oriented by its AUC on the
#: training split: a signal is read in the direction that ranks copies higher there)
SIGNALS = {"SSCD cosine (visual)": "visual", "content-region cosine": "content_visual",
           "best visual": "visual_best", "fused S": "fused", "PDQ distance (dihedral)":
           "pdq_distance", "pHash": "phash", "thumbnail changed area": "thumb_changed_area",
           "semantic Ss": "semantic", "object Jaccard": "jaccard",
           "semantic cosine": "semantic_cosine", "graph": "graph",
           "registration support": "reg_support", "registration inlier ratio": "reg_inlier_ratio",
           "registration overlap": "reg_overlap_query", "registration residual": "reg_residual",
           "registration changed area": "reg_changed_area"}


def log(msg: str) -> None:
    print(f"[decision-train] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------
def load_data(recipe: Recipe, *, cache: Path = CACHE, extractor_factory=None) -> dict:
    """All sets' pair tables concatenated (columns of ``decision_data.pair_table``)."""
    if extractor_factory is None:
        made = {}

        def extractor_factory():
            if "x" not in made:
                made["x"] = recipe_extractor(recipe)
            return made["x"]

    tables = [load_or_build(name, recipe, cache, extractor_factory) for name in SETS]
    out = {}
    for key in ("label", "train_ok", "gap_label", "scene_label", "sampled", "kind", "split",
                "source", "family", "set", "phash", "verified", "a", "b"):
        if any(key not in t for t in tables):
            raise ValueError(f"cached pair tables in {cache} lack {key!r} (an older table "
                             "format); delete them and rebuild")
        out[key] = np.concatenate([t[key] for t in tables])
    cached = [tuple(str(n) for n in t["names"]) for t in tables]
    if len(set(cached)) != 1 or any(n not in NAMES for n in cached[0]):
        raise ValueError(f"cached features in {cache} do not match pairfeatures.NAMES; delete "
                         "them and rebuild")
    # columns in today's NAMES order; a feature added since the cache was built stays NaN and
    # is not offered to the model (``available``)
    x = np.concatenate([t["X"] for t in tables])
    out["X"] = np.full((len(x), len(NAMES)), np.nan)
    out["X"][:, [NAMES.index(n) for n in cached[0]]] = x
    out["available"] = cached[0]
    out["names"] = NAMES
    out["seconds"] = {name: t["seconds"].tolist() for name, t in zip(SETS, tables, strict=True)}
    return out


def recipe_extractor(recipe: Recipe):
    """The engine's extractor as the recipe asks: with the detector and GCN only when the model
    may read the object features (``recipe.objects``)."""
    from dupstream.engine.build import build_extractor

    if recipe.objects:
        return build_extractor(threads=2)
    return build_extractor(threads=2, detector="none", graph=False)


def column(data: dict, name: str) -> np.ndarray:
    if name == "phash":
        return data["phash"]
    return data["X"][:, NAMES.index(name)]


def train_ok(data: dict) -> np.ndarray:
    """Pairs with a training label (not an ambiguous CCTV pair); all where the table has no
    ``train_ok`` column."""
    return np.asarray(data.get("train_ok", np.ones(len(data["label"]), bool)), bool)


def set_weights(sets: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """Each set weighs the same in training, whatever its number of (``ok``) pairs."""
    ok = np.ones(len(sets), bool) if ok is None else ok
    w = np.ones(len(sets))
    names = np.unique(sets[ok])
    for s in names:
        m = sets == s
        w[m] = ok.sum() / (len(names) * (m & ok).sum())
    return w


# -- model -----------------------------------------------------------------------------------------
def fit_trees(x: np.ndarray, y: np.ndarray, w: np.ndarray, features: tuple[str, ...], seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    cst = [MONOTONE.get(n, 0) for n in features]
    empty = np.all(np.isnan(x), axis=0)
    if empty.any():  # a column never observed here: constant (never split on), not all-NaN
        x = x.copy()
        x[:, empty] = 0.0
    from threadpoolctl import threadpool_limits

    # one OpenMP thread: on a shared 2-core machine, more threads spin and take 30x longer
    with threadpool_limits(1):
        return HistGradientBoostingClassifier(**HGB, monotonic_cst=cst, random_state=seed).fit(
            x, y, sample_weight=w)


def oof_margins(x, y, w, groups, features, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold margins, folds grouped by source (no source in its own model's training)."""
    from sklearn.model_selection import GroupKFold

    out = np.empty(len(y))
    for tr, te in GroupKFold(n_splits=folds).split(x, y, groups):
        clf = fit_trees(x[tr], y[tr], w[tr], features, seed)
        out[te] = TreeEnsemble.from_sklearn(clf).margin(x[te])
    return out


def fit_calibration(m_fit, y_fit, m_val, y_val) -> tuple[MarginCalibration, dict]:
    """Isotonic (interpolated) + Platt on the out-of-fold margins; the blend weight with the
    lowest validation log-loss."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(m_fit, y_fit)
    lr = LogisticRegression(C=1e4).fit(m_fit.reshape(-1, 1), y_fit)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a <= 0:
        raise ValueError("the margin does not rank copies above non-copies (Platt slope <= 0)")
    xs, ys = iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()
    scores = {}
    for wgt in BLEND_WEIGHTS:
        cal = MarginCalibration(x=tuple(xs), y=tuple(ys), a=a, b=b, weight=wgt)
        scores[wgt] = log_loss(y_val, cal(m_val))
    best = min(scores, key=scores.get)
    return (MarginCalibration(x=tuple(xs), y=tuple(ys), a=a, b=b, weight=best),
            {"val_log_loss": {str(k): v for k, v in scores.items()}, "weight": best})


def log_loss(y, p) -> float:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_cutoffs(p_val, y_val) -> dict[str, float | None]:
    """``lab.fit.fit_cutoffs`` (balanced = max F1; the precision / recall preferences at 0.99
    never on the wrong side of it) as the learned model's plain cut-off dict."""
    c = F.fit_cutoffs(p_val, y_val)
    return {"balanced": float(c.balanced), "precision": c.precision, "recall": c.recall}


def train_model(data: dict, train: np.ndarray, val: np.ndarray, features: tuple[str, ...], *,
                seed: int, meta: dict | None = None) -> tuple[LearnedModel, dict]:
    """Trees on ``train``, calibration on its out-of-fold margins, cut-offs on ``val``."""
    cols = [NAMES.index(n) for n in features]
    x, y = data["X"][:, cols], data["label"]
    w = set_weights(data["set"], train_ok(data))
    m_oof = oof_margins(x[train], y[train], w[train], data["source"][train], features, seed)
    clf = fit_trees(x[train], y[train], w[train], features, seed)
    trees = TreeEnsemble.from_sklearn(clf)
    m_val = trees.margin(x[val])
    cal, cal_info = fit_calibration(m_oof, y[train], m_val, y[val])
    p_val = cal(m_val)
    model = LearnedModel(features=features, trees=trees, calibration=cal,
                         cutoffs=fit_cutoffs(p_val, y[val]), meta=dict(meta or {}))
    model.sha256 = ""
    info = {"n_train": int(train.sum()), "n_val": int(val.sum()), "calibration": cal_info,
            "val_log_loss": log_loss(y[val], p_val), "val_auc": M.auc(y[val], p_val),
            "oof_auc": M.auc(y[train], m_oof),
            "max_abs_margin_vs_sklearn": _sklearn_gap(clf, trees, x[val])}
    return model, info


def _sklearn_gap(clf, trees: TreeEnsemble, x: np.ndarray) -> float:
    """Largest |exported margin - scikit-learn's decision_function| (should be ~1e-14)."""
    from threadpoolctl import threadpool_limits

    if not len(x):
        return 0.0
    with threadpool_limits(1):
        return float(np.max(np.abs(trees.margin(x) - clf.decision_function(x))))


def predict(model: LearnedModel, data: dict, mask: np.ndarray) -> np.ndarray:
    cols = [NAMES.index(n) for n in model.features]
    return model.p_copy_matrix(data["X"][mask][:, cols])


# -- evaluation ------------------------------------------------------------------------------------
def group_bootstrap(stat, groups: np.ndarray, *, resamples: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of ``stat(indices)`` resampling sources with replacement."""
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(resamples):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        v = stat(idx)
        if v == v:
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def _f1(y, pred) -> float:
    return M.prf(y, pred)[2]


def _with_ci(stat, groups, resamples, seed) -> dict:
    n = len(groups)
    return {"value": stat(np.arange(n)),
            "ci": group_bootstrap(stat, groups, resamples=resamples, seed=seed)}


def _headline(y: np.ndarray, p: np.ndarray, pred: np.ndarray, groups: np.ndarray, *,
              resamples: int, seed: int) -> dict:
    """AUC, ECE and F1 of a block's pairs with bootstrap CIs over ``groups``, its precision and
    recall."""
    precision, recall, _ = M.prf(y, pred)
    return {"auc": _with_ci(lambda i: M.auc(y[i], p[i]), groups, resamples, seed),
            "ece": _with_ci(lambda i: M.ece(y[i], p[i]), groups, resamples, seed),
            "f1": _with_ci(lambda i: _f1(y[i], pred[i]), groups, resamples, seed),
            "precision": precision, "recall": recall}


def orientation(data: dict, col: str, fit_mask: np.ndarray) -> int:
    """+1 when higher values rank copies higher on ``fit_mask`` (the training pairs), else -1."""
    v, y = column(data, col)[fit_mask], data["label"][fit_mask]
    have = ~np.isnan(v)
    if have.sum() < 10 or len(np.unique(y[have])) < 2:
        return 1
    return 1 if M.auc(y[have], v[have]) >= 0.5 else -1


def evaluate_block(data: dict, mask: np.ndarray, p: np.ndarray, cut: float, *,
                   baselines: dict[str, tuple[np.ndarray, float]], resamples: int,
                   seed: int, signs: dict[str, int]) -> dict:
    """Metrics of one block of pairs (a set's test split, or the held-out family)."""
    y = data["label"][mask]
    g = data["source"][mask]
    kind = data["kind"][mask]
    pred = p >= cut
    out = {"pairs": int(mask.sum()), "positives": int(y.sum()), "sources": len(np.unique(g)),
           **_headline(y, p, pred, g, resamples=resamples, seed=seed),
           "reliability": {k: np.asarray(v).tolist()
                           for k, v in M.reliability(y, p).items()}}
    for name, (bp, bcut) in baselines.items():
        bpred = bp >= bcut
        out.setdefault("baselines", {})[name] = {
            "f1": _with_ci(lambda i, bpred=bpred: _f1(y[i], bpred[i]), g, resamples, seed),
            "auc": M.auc(y, bp)}
    sig = {}
    for name, col in SIGNALS.items():
        v = column(data, col)[mask] * signs[col]
        have = ~np.isnan(v)
        if have.sum() < 10 or len(np.unique(y[have])) < 2:
            sig[name] = {"coverage": float(have.mean()), "auc": None}
            continue
        sig[name] = {"coverage": float(have.mean()), "auc": M.auc(y[have], v[have]),
                     "orientation": signs[col],
                     "auc_p_copy_same_pairs": M.auc(y[have], p[have])}
    out["signals"] = sig
    kinds = {}
    for k in np.unique(kind):
        m = kind == k
        rate = float(np.mean(pred[m]))
        kinds[str(k)] = {"label": int(y[m][0]), "n": int(m.sum()),
                         ("recall" if y[m][0] == 1 else "fpr"): rate}
    out["kinds"] = kinds
    return out


def old_decision(data: dict) -> tuple[np.ndarray, float]:
    """The fused-score decision shipped before (domain-free default: calibration.json, the
    verified / same-scene rules, decision.json's default balanced cut-off without the
    difficulty offsets - an approximation of ``DecisionPolicy`` without the learned model)."""
    from dupstream.workers.decision import (
        DecisionPolicy,
        default_calibrator,
        default_decision_model,
    )

    policy = DecisionPolicy(calibrator=default_calibrator())
    cm = default_decision_model()
    p = np.asarray(default_calibrator()(column(data, "fused")), np.float64)
    ver = column(data, "reg_verified") > 0.5
    same = (column(data, "reg_same_scene") > 0.5) & ~ver
    p = np.where(ver, np.maximum(p, policy.verified_p_copy), p)
    p = np.where(same, np.minimum(p, 1 - policy.same_scene_p_unique), p)
    return p, (cm.default.balanced if cm is not None else policy.p_copy_min)


def _tuned(data, col, sign, fit_mask, mask) -> tuple[np.ndarray, float]:
    v = np.nan_to_num(column(data, col) * sign, nan=-1e9)
    cut, _ = max_f1_cut(v[fit_mask], data["label"][fit_mask])
    return v[mask], cut


def evaluate_model(model: LearnedModel, ablations: dict[str, LearnedModel], data: dict,
                   blocks: dict[str, np.ndarray], fit_mask: np.ndarray, *, resamples: int,
                   seed: int, train_mask: np.ndarray) -> dict:
    old_p, old_cut = old_decision(data)
    signs = {col: orientation(data, col, train_mask) for col in SIGNALS.values()}
    out = {}
    for name, mask in blocks.items():
        if not mask.any():
            continue
        p = predict(model, data, mask)
        base = {"fused-score decision shipped before": (old_p[mask], old_cut),
                "SSCD alone (val cut)": _tuned(data, "visual", 1, fit_mask, mask),
                "best visual alone (val cut)": _tuned(data, "visual_best", 1, fit_mask, mask),
                "pHash alone (val cut)": _tuned(data, "phash", 1, fit_mask, mask)}
        for an, am in ablations.items():
            base[an] = (predict(am, data, mask), am.cut("balanced"))
        out[name] = evaluate_block(data, mask, p, model.cut("balanced"), baselines=base,
                                   resamples=resamples, seed=seed, signs=signs)
    return out


def evaluate_time_rule(model: LearnedModel, data: dict, mask: np.ndarray, *, resamples: int,
                       seed: int, signs: dict[str, int]) -> dict:
    """CCTV by the time rule (issue 13's definition) on ``mask``'s pairs, ambiguous ones
    included: the truth is ``gap_label`` (1: the next frames t+1 / t+2, near frames, the same frame
    re-encoded; 0: a frame >= ``cctv_min_gap`` later whose thumbnail changed >= 2 %). The decision
    is the model's balanced cut-off."""
    y = data["gap_label"][mask]
    if np.any(y < 0):
        raise ValueError("the time rule needs a gap label on every pair (CCTV pairs only)")
    g, sampled = data["source"][mask], data["sampled"][mask]
    p = predict(model, data, mask)
    pred = p >= model.cut("balanced")
    cons, far = sampled == "consecutive", sampled == "far_apart"

    def rate(sel):
        return lambda i: float(np.mean(pred[i][sel[i]])) if sel[i].any() else float("nan")

    out = {"truth": "gap_label (time: consecutive / near / re-encoded = copy, far apart = not)",
           "pairs": int(mask.sum()), "positives": int(y.sum()), "sources": len(np.unique(g)),
           "ambiguous": int((mask & ~train_ok(data)).sum()),
           "consecutive": int(cons.sum()), "far_apart": int(far.sum()),
           "consecutive_recall": _with_ci(rate(cons), g, resamples, seed),
           "far_apart_fpr": _with_ci(rate(far), g, resamples, seed),
           **_headline(y, p, pred, g, resamples=resamples, seed=seed)}
    best = None
    for name, col in SIGNALS.items():
        v = column(data, col)[mask] * signs[col]
        have = ~np.isnan(v)
        if have.all() and len(np.unique(y)) == 2:  # a signal on every pair (a fair comparison)
            auc = M.auc(y, v)
            if best is None or auc > best[1]:
                best = (name, auc, v)
    if best is not None:
        v = best[2]
        out["best_signal"] = {"name": best[0], "auc": _with_ci(lambda i: M.auc(y[i], v[i]), g,
                                                                 resamples, seed)}
    out["kinds"] = {str(k): {"gap_label": int(y[kind][0]), "n": int(kind.sum()),
                             "rate_called_copy": float(np.mean(pred[kind]))}
                    for k in np.unique(data["kind"][mask])
                    for kind in [data["kind"][mask] == k]}
    return out


def code_identity() -> dict:
    """The git commit and a hash of the feature code (workers/*.py) the run used."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for f in sorted((root / "workers").glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        head = None
    return {"git_head": head, "workers_sha256": h.hexdigest()[:16]}


def skew_check(model: LearnedModel, recipe: Recipe, data: dict, *, per_set: int, seed: int,
               cache: Path) -> dict:
    """Train / serve skew: ``per_set`` random test pairs of each set recomputed with the code as
    it is now, compared with the cached features the model was trained on."""
    from dupstream.lab.decision_data import recompute

    extractor = recipe_extractor(recipe)
    rng = np.random.default_rng(seed)
    out = {}
    for name in SETS:
        idx = np.flatnonzero(data["set"] == name)
        local = np.flatnonzero(data["split"][idx] == "test")
        if not len(local):
            continue
        rows = np.sort(rng.choice(local, min(per_set, len(local)), replace=False))
        pairs = np.stack([data["a"][idx[rows]], data["b"][idx[rows]]], axis=1)
        now = recompute(name, recipe, pairs, extractor)
        then = data["X"][idx[rows]]
        cols = [NAMES.index(n) for n in model.features]
        now_m, then_m = now[:, cols], then[:, cols]  # the features the model reads
        same = np.isclose(now_m, then_m, atol=1e-6) | (np.isnan(now_m) & np.isnan(then_m))
        dp = np.abs(model.p_copy_matrix(now[:, cols]) - model.p_copy_matrix(then[:, cols]))
        out[name] = {"pairs": len(rows), "identical_pairs": float(np.mean(same.all(axis=1))),
                     "features_differing": sorted({model.features[j] for j in np.flatnonzero(
                         ~same.all(axis=0))}),
                     "max_abs_dp": float(dp.max()), "share_dp_over_0.01": float(
                         np.mean(dp > 0.01))}
    return out


# -- the run ---------------------------------------------------------------------------------------
def _masks(data: dict, exclude: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isin(data["family"], exclude) & train_ok(data)
    return (data["split"] == "train") & keep, (data["split"] == "val") & keep


def choose_features(data, train, val, seed, *, objects: bool = True
                    ) -> tuple[tuple[str, ...], dict]:
    """The full feature set, or the same without the object features when those don't pay
    (validation log-loss not lower by at least 1 %). ``objects=False`` (the recipe extracted
    without the detector): the set without them."""
    full_set, lean_set = available(data, NAMES), available(data, NO_OBJECTS)
    if not objects:
        _, li = train_model(data, train, val, lean_set, seed=seed)
        return lean_set, {"without object features": {k: li[k] for k in ("val_log_loss",
                                                                           "val_auc")},
                          "kept": "without object features (recipe: objects off; with recipe "
                                  "v2 they added <= 1.3 F1 points, within the CI)"}
    full, fi = train_model(data, train, val, full_set, seed=seed)
    lean, li = train_model(data, train, val, lean_set, seed=seed)
    keep_objects = fi["val_log_loss"] < 0.99 * li["val_log_loss"]
    info = {"full": {k: fi[k] for k in ("val_log_loss", "val_auc")},
            "without object features": {k: li[k] for k in ("val_log_loss", "val_auc")},
            "kept": "full" if keep_objects else "without object features"}
    return (full_set if keep_objects else lean_set), info


def available(data: dict, names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` the cached data holds (all of them when built with today's code)."""
    have = set(data.get("available", NAMES))
    return tuple(n for n in names if n in have)


def run(*, out: Path = ASSETS, report_dir: Path = Path("results/decision"), seed: int = 0,
        recipe: Recipe | None = None, resamples: int = 500, skew_pairs: int = 60,
        command: str = "dupstream train --decision", cache: Path = CACHE) -> dict:
    """Train, calibrate and evaluate; ``decision_model.json`` and ``decision_recipe.json`` go
    to ``out`` (the package's assets by default), the report to ``report_dir``."""
    t0 = time.perf_counter()
    recipe = recipe or Recipe(seed=seed)
    data = load_data(recipe, cache=cache)
    log(f"{len(data['label'])} pairs ({int(np.sum(data['label'] == 1))} copies, "
        f"{int(np.sum(~train_ok(data)))} ambiguous CCTV pairs not trained on); "
        f"sets {dict(zip(*np.unique(data['set'], return_counts=True), strict=True))}")
    train, val = _masks(data)
    features, feat_info = choose_features(data, train, val, seed, objects=recipe.objects)
    log(f"feature set: {feat_info['kept']} ({len(features)} features)")
    meta = {"seed": seed, "recipe": asdict(recipe), "recipe_key": recipe.key(),
            "table_format": TABLE_FORMAT,
            "command": command, "hgb": HGB, "monotone": MONOTONE,
            "fitted_on": "train split (trees; calibration on 5-fold out-of-fold margins grouped "
                         "by source), validation split (blend weight, cut-offs)",
            "feature_choice": feat_info, "sklearn_model": "HistGradientBoostingClassifier",
            "code": code_identity()}
    model, info = train_model(data, train, val, features, seed=seed, meta=meta)
    model.meta["train"] = {k: v for k, v in info.items() if k != "calibration"}
    model.meta["calibration"] = info["calibration"]
    text = model.to_json()
    model = LearnedModel.from_json(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decision_model.json").write_text(text)
    (out / "decision_recipe.json").write_text(json.dumps(
        {"seed": seed, "recipe": asdict(recipe), "table_format": TABLE_FORMAT,
         "command": command, "features": features,
         "pairs": len(data["label"]), "extraction_seconds": data["seconds"]}, indent=1))
    log(f"model: {len(text) / 1e3:.0f} kB, {model.version}, cut-offs {model.cutoffs}")
    # ablations: visual-only and without object features, same recipe
    vis, _ = train_model(data, train, val, VISUAL, seed=seed)
    abl = {"visual-only model": vis}
    if features != available(data, NO_OBJECTS):
        abl["model without object features"] = train_model(
            data, train, val, available(data, NO_OBJECTS), seed=seed)[0]
    elif recipe.objects:
        abl["model with object features"] = train_model(data, train, val,
                                                        available(data, NAMES), seed=seed)[0]
    ok = train_ok(data)
    blocks = {f"{s} test": (data["set"] == s) & (data["split"] == "test") & ok for s in SETS}
    report = {"model": model.version, "bytes": len(text), "features": list(features),
              "cutoffs": model.cutoffs, "meta": model.meta, "test": evaluate_model(
                  model, abl, data, blocks, val, resamples=resamples, seed=seed,
                  train_mask=train)}
    report["cctv_time_rule"] = time_rule_blocks(model, data, train, resamples=resamples,
                                                seed=seed)
    # held-out family: the whole pipeline again without it, tested on all of its pairs
    fam = recipe.heldout
    htrain, hval = _masks(data, fam)
    hmodel, hinfo = train_model(data, htrain, hval, features, seed=seed)
    hvis, _ = train_model(data, htrain, hval, VISUAL, seed=seed)
    hblock = {f"held-out family {'+'.join(fam)}": np.isin(data["family"], fam) & ok}
    report["heldout"] = {"families": list(fam), "n_train": hinfo["n_train"],
                         "cutoffs": hmodel.cutoffs,
                         "results": evaluate_model(hmodel, {"visual-only model": hvis}, data,
                                                   hblock, hval, resamples=resamples,
                                                   seed=seed, train_mask=htrain)}
    if skew_pairs:
        log(f"skew check: {skew_pairs} test pairs per set recomputed with the code as it is now")
        report["skew"] = skew_check(model, recipe, data, per_set=skew_pairs, seed=seed,
                                    cache=cache)
    report["seconds"] = {"extraction": data["seconds"], "total": time.perf_counter() - t0}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "decision_report.json").write_text(json.dumps(report, indent=1, default=float))
    (report_dir / "decision_report.md").write_text(markdown(report))
    plot_reliability(report, report_dir / "decision_reliability.png")
    log(f"done in {report['seconds']['total']:.0f} s; model in {out}, report "
        f"{report_dir / 'decision_report.md'}")
    return report


def time_rule_blocks(model: LearnedModel, data: dict, train_mask: np.ndarray, *,
                     resamples: int, seed: int) -> dict:
    """``evaluate_time_rule`` on the CCTV validation and test splits (every pair)."""
    signs = {col: orientation(data, col, train_mask) for col in SIGNALS.values()}
    out = {}
    for sp, name in (("val", "cctv val"), ("test", "cctv test")):
        mask = (data["set"] == "cctv") & (data["split"] == sp)
        if mask.any():
            out[name] = evaluate_time_rule(model, data, mask, resamples=resamples, seed=seed,
                                           signs=signs)
    return out


def plot_reliability(rep: dict, path: Path) -> None:
    """Reliability diagram of P(copy) per block (mean predicted vs observed per bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for name, b in {**rep["test"], **rep["heldout"]["results"]}.items():
        r = b["reliability"]
        xs, ys = np.asarray(r["mean_p"], float), np.asarray(r["freq"], float)
        ok = np.asarray(r["count"], float) > 0
        ax.plot(xs[ok], ys[ok], "o-", ms=3, label=f"{name} (ECE {b['ece']['value']:.3f})")
    ax.set_xlabel("P(copy)")
    ax.set_ylabel("observed share of copies")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown --------------------------------------------------------------------------------------
def _ci(d: dict, digits: int = 3) -> str:
    v, (lo, hi) = d["value"], d["ci"]
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(rep: dict) -> str:
    lines = [f"# Learned decision ({rep['model']}, {rep['bytes'] / 1e3:.0f} kB)", "",
             f"Command: `{rep['meta']['command']}` (seed {rep['meta']['seed']}). Features: "
             f"{len(rep['features'])} ({rep['meta']['feature_choice']['kept']}). Cut-offs on "
             f"P(copy): {json.dumps(rep['cutoffs'])}. Intervals: 95 % bootstrap over sources.",
             ""]
    blocks = {**rep["test"], **rep["heldout"]["results"]}
    lines += ["| block | pairs (copies) | sources | AUC p_copy | ECE | F1 verdict | precision | "
              "recall |", "|---|---|---|---|---|---|---|---|"]
    for name, b in blocks.items():
        lines.append(f"| {name} | {b['pairs']} ({b['positives']}) | {b['sources']} | "
                     f"{_ci(b['auc'])} | {_ci(b['ece'])} | {_ci(b['f1'])} | "
                     f"{b['precision']:.3f} | {b['recall']:.3f} |")
    lines += ["", "F1 of other deciders on the same pairs (cut-offs fitted on validation):", "",
              "| block | decider | F1 | AUC |", "|---|---|---|---|"]
    for name, b in blocks.items():
        for bn, bb in b.get("baselines", {}).items():
            lines.append(f"| {name} | {bn} | {_ci(bb['f1'])} | {bb['auc']:.3f} |")
    lines += ["", "AUC of each single signal vs P(copy) on the pairs where the signal exists:", "",
              "| block | signal | coverage | AUC signal | AUC p_copy (same pairs) |",
              "|---|---|---|---|---|"]
    for name, b in blocks.items():
        for sn, s in b["signals"].items():
            if s["auc"] is None:
                continue
            sn = sn + (" (lower = copy)" if s.get("orientation", 1) < 0 else "")
            lines.append(f"| {name} | {sn} | {s['coverage']:.2f} | {s['auc']:.3f} | "
                         f"{s['auc_p_copy_same_pairs']:.3f} |")
    lines += ["", "Per pair kind (recall for copies, FPR for non-copies):", "",
              "| block | kind | n | rate |", "|---|---|---|---|"]
    for name, b in blocks.items():
        for k, d in b["kinds"].items():
            rate = d.get("recall", d.get("fpr"))
            what = "recall" if "recall" in d else "FPR"
            lines.append(f"| {name} | {k} | {d['n']} | {what} {rate:.3f} |")
    if rep.get("cctv_time_rule"):
        lines += ["", "## CCTV by the time rule (issue 13's definition)", "",
                  "All CCTV pairs of the split, ambiguous ones included (left out of every table "
                  "above and of the fit), judged by time: the next frames (t+1, t+2), near frames "
                  "and re-encodings are copies, a frame >= cctv_min_gap later whose thumbnail "
                  "changed >= 2 % is not. Issue 13: consecutive recall >= 0.95, far-apart FPR <= "
                  "0.10. Decision at the balanced cut-off.", "",
                  "| block | pairs (copies by time) | ambiguous | consecutive recall (n) | "
                  "far-apart FPR (n) | AUC p_copy | best signal AUC | ECE | F1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, b in rep["cctv_time_rule"].items():
            bs = b.get("best_signal")
            best = f"{_ci(bs['auc'])} ({bs['name']})" if bs else "-"
            lines.append(f"| {name} | {b['pairs']} ({b['positives']}) | {b['ambiguous']} | "
                         f"{_ci(b['consecutive_recall'])} ({b['consecutive']}) | "
                         f"{_ci(b['far_apart_fpr'])} ({b['far_apart']}) | {_ci(b['auc'])} | "
                         f"{best} | {_ci(b['ece'])} | {_ci(b['f1'])} |")
        lines += ["", "| block | kind | n | label by time | called a copy |",
                  "|---|---|---|---|---|"]
        for name, b in rep["cctv_time_rule"].items():
            for k, d in b["kinds"].items():
                lines.append(f"| {name} | {k} | {d['n']} | {d['gap_label']} | "
                             f"{d['rate_called_copy']:.3f} |")
    if rep.get("skew"):
        lines += ["", "Train / serve skew (test pairs recomputed with the code at report time):",
                  "", "| set | pairs | identical features | max abs dP | share dP > 0.01 | "
                  "features that differ |", "|---|---|---|---|---|---|"]
        for name, k in rep["skew"].items():
            lines.append(f"| {name} | {k['pairs']} | {k['identical_pairs']:.3f} | "
                         f"{k['max_abs_dp']:.4f} | {k['share_dp_over_0.01']:.3f} | "
                         f"{', '.join(k['features_differing']) or '-'} |")
    return "\n".join(lines) + "\n"
