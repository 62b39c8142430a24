"""Metrics against scikit-learn on toy data; ECE; bootstrap; McNemar; cut-off fitting."""

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from dupstream.lab.evaluation import metrics as M
from dupstream.lab.evaluation.stats import bootstrap_ci, mcnemar
from dupstream.lab.fit import fit_cutoffs, fuse_columns, grid_alpha, max_f1_cut

rng = np.random.default_rng(0)
Y = rng.integers(0, 2, 400)
S = Y * 0.8 + rng.normal(0, 0.5, 400)


def test_prf_and_auc_agree_with_sklearn():
    pred = S > 0.4
    assert np.isclose(M.prf(Y, pred)[2], f1_score(Y, pred))
    assert np.isclose(M.auc(Y, S), roc_auc_score(Y, S))


def test_map_is_the_mean_of_per_query_average_precision():
    q = np.repeat(np.arange(20), 20)
    s = rng.normal(size=400)
    rel = rng.random(400) < 0.2
    aps = M.per_query_ap(q, s, rel)
    want = [average_precision_score(rel[q == i], s[q == i]) for i in range(20) if rel[q == i].any()]
    assert np.allclose(aps, want)


def test_ece_near_zero_when_perfectly_calibrated():
    p = rng.random(200_000)
    y = rng.random(200_000) < p
    assert M.ece(y, p) < 0.01
    assert M.ece(y, np.clip(p + 0.2, 0, 1)) > 0.1


def test_bootstrap_ci_contains_the_estimate():
    lo, hi = bootstrap_ci(lambda i: float(S[i].mean()), len(S), resamples=300)
    assert lo < S.mean() < hi and hi - lo < 0.3


def test_mcnemar_counts_and_p_value():
    y = np.ones(30, bool)
    a = np.ones(30, bool)
    b = np.r_[np.zeros(12, bool), np.ones(18, bool)]
    r = mcnemar(y, a, b)
    assert (r["b"], r["c"]) == (12, 0) and r["p_exact"] < 0.001
    assert mcnemar(y, a, a)["p_exact"] == 1.0


def test_max_f1_cut_separates_and_alpha_grid_prefers_the_useful_signal():
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)
    visual = np.r_[np.full(50, 0.9), np.full(50, 0.1)]
    cut, f1 = max_f1_cut(visual, y)
    assert f1 == 1.0 and 0.1 < cut < 0.9
    noise = rng.random(100)
    alpha, _, f1 = grid_alpha(visual, noise, y)
    assert f1 == 1.0 and alpha >= 0.5
    assert np.allclose(fuse_columns(visual, np.full(100, np.nan), 0.3), visual)


def test_fit_cutoffs_orders_preferences():
    p = 1 / (1 + np.exp(-4 * S))
    c = fit_cutoffs(p, Y, keys=np.where(np.arange(400) % 2, "few/agree", "none/agree"))
    assert c.recall <= c.balanced <= c.precision
    assert set(c.difficulty) == {"few/agree", "none/agree"}
