"""The learned pair classifier: P(copy) from a pair's named features, without being told a domain.

Artefact ``workers/assets/decision_model.json`` (written by ``dupstream train --decision``; no
pickle, a JSON of our own format read by the small evaluator here):

* ``features``: the ``pairfeatures.NAMES`` the model reads, in column order;
* ``trees``: a gradient-boosted tree ensemble (scikit-learn's HistGradientBoostingClassifier,
  exported node by node, all trees in one node table): per node the feature index, the threshold
  (``x <= threshold`` goes left), where a missing value (NaN) goes, the children and the leaf
  value; ``roots`` (one per tree), ``baseline`` and ``depth``. The margin is
  ``baseline + sum of the leaf values`` - exactly scikit-learn's ``decision_function``;
* ``calibration``: margin -> P(copy), strictly increasing (ranking kept, no flat 0/1 plateaus):
  ``(1 - w) * isotonic(m) + w * sigmoid(a*m + b)`` with the isotonic fit interpolated between its
  knots, both fitted on held-out folds;
* ``cutoffs``: the cut-off on P(copy) per preference (``balanced`` = max F1 on validation,
  ``precision`` / ``recall`` = the validation precision / recall target), domain-free;
* ``meta``: seed, data recipe, what it was fitted on, the command.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from dupstream.core.errors import WeightsError

FORMAT = "dupstream-gbdt/1"
ASSET = "decision_model.json"


@dataclass(frozen=True)
class TreeEnsemble:
    """Binary gradient-boosted trees in one node table (leaves point to themselves)."""

    feature: np.ndarray  # (nodes,) int
    threshold: np.ndarray  # (nodes,) float64
    missing_left: np.ndarray  # (nodes,) bool
    left: np.ndarray  # (nodes,) int
    right: np.ndarray  # (nodes,) int
    value: np.ndarray  # (nodes,) float64, the leaf values (0 elsewhere)
    roots: np.ndarray  # (trees,) int
    baseline: float
    depth: int

    def margin(self, x: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
        """(n, features) -> (n,) raw margin (log-odds before calibration)."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        out = np.empty(len(x), np.float64)
        for s in range(0, len(x), chunk):
            part = x[s : s + chunk]
            rows = np.arange(len(part))[:, None]
            idx = np.broadcast_to(self.roots, (len(part), len(self.roots))).copy()
            for _ in range(self.depth):
                v = part[rows, self.feature[idx]]
                go_left = np.where(np.isnan(v), self.missing_left[idx], v <= self.threshold[idx])
                idx = np.where(go_left, self.left[idx], self.right[idx])
            out[s : s + chunk] = self.baseline + self.value[idx].sum(axis=1)
        return out

    def margin_range(self) -> tuple[float, float]:
        """Bounds of every margin the trees can give (baseline + the extreme leaf per tree)."""
        lo = hi = self.baseline
        ends = np.append(self.roots[1:], len(self.value))
        for start, end in zip(self.roots, ends, strict=True):
            leaves = self.value[start:end][self.left[start:end] == np.arange(start, end)]
            lo, hi = lo + float(leaves.min()), hi + float(leaves.max())
        return lo, hi

    def to_dict(self) -> dict:
        return {"feature": self.feature.tolist(), "threshold": self.threshold.tolist(),
                "missing_left": self.missing_left.astype(int).tolist(),
                "left": self.left.tolist(), "right": self.right.tolist(),
                "value": self.value.tolist(), "roots": self.roots.tolist(),
                "baseline": self.baseline, "depth": self.depth}

    @classmethod
    def from_dict(cls, d: dict) -> TreeEnsemble:
        thr = np.asarray([np.inf if t is None else t for t in d["threshold"]], np.float64)
        return cls(feature=np.asarray(d["feature"], np.int64), threshold=thr,
                   missing_left=np.asarray(d["missing_left"], bool),
                   left=np.asarray(d["left"], np.int64), right=np.asarray(d["right"], np.int64),
                   value=np.asarray(d["value"], np.float64),
                   roots=np.asarray(d["roots"], np.int64), baseline=float(d["baseline"]),
                   depth=int(d["depth"]))

    @classmethod
    def from_sklearn(cls, clf) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier`` (numerical features)."""
        feature, threshold, miss, left, right, value, roots = [], [], [], [], [], [], []
        depth = 0
        for trees in clf._predictors:
            if len(trees) != 1:
                raise ValueError("only binary classifiers are exported")
            nodes = trees[0].nodes
            if np.any(nodes["is_categorical"]):
                raise ValueError("categorical splits are not exported")
            off = len(feature)
            roots.append(off)
            for i, n in enumerate(nodes):
                leaf = bool(n["is_leaf"])
                feature.append(0 if leaf else int(n["feature_idx"]))
                threshold.append(float("inf") if leaf else float(n["num_threshold"]))
                miss.append(bool(n["missing_go_to_left"]))
                left.append(off + i if leaf else off + int(n["left"]))
                right.append(off + i if leaf else off + int(n["right"]))
                value.append(float(n["value"]) if leaf else 0.0)
            depth = max(depth, int(nodes["depth"].max()))
        return cls(feature=np.asarray(feature, np.int64),
                   threshold=np.asarray(threshold, np.float64),
                   missing_left=np.asarray(miss, bool), left=np.asarray(left, np.int64),
                   right=np.asarray(right, np.int64), value=np.asarray(value, np.float64),
                   roots=np.asarray(roots, np.int64),
                   baseline=float(np.ravel(clf._baseline_prediction)[0]), depth=depth)


@dataclass(frozen=True)
class MarginCalibration:
    """P(copy) = (1 - weight) * interp(m, x, y) + weight * sigmoid(a*m + b): an isotonic fit
    (non-decreasing, interpolated) blended with a Platt fit (``a`` > 0), so P is strictly
    increasing in the margin and never exactly 0 or 1 on a plateau."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    a: float
    b: float
    weight: float

    def __post_init__(self) -> None:
        if not (self.a > 0 and 0 < self.weight <= 1 and len(self.x) == len(self.y) >= 1):
            raise ValueError("calibration must be strictly increasing (a > 0, 0 < weight <= 1)")
        if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("isotonic knots must be non-decreasing")

    def __call__(self, m: np.ndarray | float) -> np.ndarray:
        m = np.asarray(m, np.float64)
        iso = np.interp(m, self.x, self.y)
        platt = 1.0 / (1.0 + np.exp(-(self.a * m + self.b)))
        return (1.0 - self.weight) * iso + self.weight * platt

    def to_dict(self) -> dict:
        return {"method": "isotonic+platt", "x": list(self.x), "y": list(self.y), "a": self.a,
                "b": self.b, "weight": self.weight}

    @classmethod
    def from_dict(cls, d: dict) -> MarginCalibration:
        return cls(x=tuple(d["x"]), y=tuple(d["y"]), a=float(d["a"]), b=float(d["b"]),
                   weight=float(d["weight"]))


@dataclass
class LearnedModel:
    """The decision artefact: features, trees, calibration, cut-offs, provenance."""

    features: tuple[str, ...]
    trees: TreeEnsemble
    calibration: MarginCalibration
    cutoffs: dict[str, float]
    meta: dict = field(default_factory=dict)
    sha256: str = ""

    @property
    def version(self) -> str:
        return f"dm-{self.sha256[:8]}"

    def vector(self, features: dict[str, float]) -> np.ndarray:
        return np.array([features.get(n, np.nan) for n in self.features], np.float64)

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.trees.margin(x)

    def p_copy_matrix(self, x: np.ndarray) -> np.ndarray:
        """(n, len(features)) columns in ``features`` order -> (n,) calibrated P(copy)."""
        return np.asarray(self.calibration(self.margin(x)), np.float64)

    def p_copy(self, features: dict[str, float]) -> float:
        return float(self.p_copy_matrix(self.vector(features)[None, :])[0])

    def cut(self, preference: str = "balanced") -> float:
        c = self.cutoffs.get(preference)
        return float(self.cutoffs["balanced"] if c is None else c)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "features": list(self.features),
                           "trees": self.trees.to_dict(),
                           "calibration": self.calibration.to_dict(),
                           "cutoffs": self.cutoffs, "meta": self.meta},
                          separators=(",", ":"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> LearnedModel:
        from dupstream.workers.pairfeatures import NAMES

        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT!r}")
            feats = tuple(d["features"])
            unknown = [n for n in feats if n not in NAMES]
            if unknown:
                raise ValueError(f"features unknown to pairfeatures: {unknown}")
            trees = TreeEnsemble.from_dict(d["trees"])
            n = len(trees.feature)
            for col in (trees.threshold, trees.missing_left, trees.left, trees.right,
                        trees.value):
                if len(col) != n:
                    raise ValueError("node table columns differ in length")
            if n and (trees.feature.max() >= len(feats) or trees.left.max() >= n
                      or trees.right.max() >= n):
                raise ValueError("node table points outside itself")
            model = cls(features=feats, trees=trees,
                        calibration=MarginCalibration.from_dict(d["calibration"]),
                        cutoffs={k: (None if v is None else float(v))
                                 for k, v in d["cutoffs"].items()},
                        meta=d.get("meta", {}),
                        sha256=hashlib.sha256(text.encode()).hexdigest())
            if "balanced" not in model.cutoffs:
                raise ValueError("no balanced cut-off")
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"decision model artefact: {type(exc).__name__}: {exc}") from exc
        return model

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        return cls.from_json(Path(path).read_text())


def default_learned_model() -> LearnedModel | None:
    """The packaged ``workers/assets/decision_model.json``; None when it is absent."""
    ref = resources.files("dupstream.workers") / "assets" / ASSET
    if not ref.is_file():
        return None
    return LearnedModel.from_json(ref.read_text())
