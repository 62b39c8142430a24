"""Labelled image pairs built from packaged photos with a fixed seed.

Positives: a photo and an edited copy of it (every duplicate and near-duplicate edit).
Negatives: two different photos, each possibly edited, and different photographs of the same
scene. A source photo belongs to exactly one split, so no pair crosses splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dupstream.lab.data.edits import DUPLICATE_EDITS, NEAR_DUPLICATE_EDITS, paste


@dataclass(frozen=True)
class Pair:
    a: np.ndarray
    b: np.ndarray
    label: int  # 1 = b is a copy of a
    kind: str  # edit name, or "different" / "same_scene"
    source: str


def split_sources(names: list[str], *, seed: int, fractions=(0.6, 0.2, 0.2)) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(names))
    n = len(order)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def make_pairs(
    photos: dict[str, np.ndarray],
    *,
    seed: int,
    copies_per_edit: int = 1,
    negatives_per_photo: int = 6,
) -> list[Pair]:
    rng = np.random.default_rng(seed)
    names = list(photos)
    edits = {**DUPLICATE_EDITS, **NEAR_DUPLICATE_EDITS}
    pairs: list[Pair] = []
    for name in names:
        orig = photos[name]
        others = [n for n in names if n != name]
        for edit_name, edit in edits.items():
            for _ in range(copies_per_edit):
                if edit is paste and others:
                    donor = photos[others[int(rng.integers(len(others)))]]
                    copy = paste(orig, rng, donor=donor)
                else:
                    copy = edit(orig, rng)
                pairs.append(Pair(orig, copy, 1, edit_name, name))
        for _ in range(min(negatives_per_photo, len(others))):
            other = photos[others[int(rng.integers(len(others)))]]
            edit_name = list(edits)[int(rng.integers(len(edits)))]
            other = edits[edit_name](other, rng) if edit_name != "paste" else other
            pairs.append(Pair(orig, other, 0, "different", name))
    return pairs
