"""Score -> probability calibration (Platt scaling or isotonic regression, from scikit-learn).

Fitted artefacts are small JSON files versioned with the model; applying one needs only numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Calibrator:
    method: str  # "platt" | "isotonic"
    params: dict = field(default_factory=dict)
    threshold: float = 0.5  # decision threshold on the raw score (max-F1 on validation)
    meta: dict = field(default_factory=dict)

    def __call__(self, score: float | np.ndarray) -> np.ndarray | float:
        s = np.asarray(score, dtype=np.float64)
        if self.method == "platt":
            p = 1.0 / (1.0 + np.exp(-(self.params["a"] * s + self.params["b"])))
        elif self.method == "isotonic":
            p = np.interp(s, self.params["x"], self.params["y"])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        p = np.clip(p, 0.0, 1.0)
        return float(p) if np.ndim(p) == 0 else p

    @classmethod
    def fit(cls, scores, labels, *, method: str, threshold: float = 0.5, meta=None) -> Calibrator:
        x = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64)
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e4).fit(x.reshape(-1, 1), y)
            params = {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
        elif method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
            params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        return cls(method=method, params=params, threshold=threshold, meta=dict(meta or {}))

    def to_json(self) -> str:
        return json.dumps(
            {"method": self.method, "params": self.params, "threshold": self.threshold,
             "meta": self.meta},
            indent=1,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        d = json.loads(Path(path).read_text())
        return cls(method=d["method"], params=d["params"], threshold=d["threshold"],
                   meta=d.get("meta", {}))
