"""More scenes from the same packaged photos, for training and fitting the semantic engine.

From each source photo: the full photo and its two halves (left/right, or top/bottom for a
portrait photo); and two-photo collages (side by side, same height) within one split, which give
multi-object scenes. Two scenes *overlap* when they share pixels of a source (the full photo
overlaps its halves and every collage holding it; the two halves do not overlap each other).

Pairs (``scene_pairs``): positives = a scene and an edited copy of it (every duplicate and
near-duplicate edit); negatives = two scenes that do not overlap (optionally edited), including
the two halves of one photo (``same_scene``: same place, no shared pixels). Deterministic in seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dupstream.lab.data.edits import DUPLICATE_EDITS, NEAR_DUPLICATE_EDITS, paste
from dupstream.lab.data.pairs import Pair


@dataclass(frozen=True)
class Scene:
    name: str
    rgb: np.ndarray
    parts: frozenset[tuple[str, str]]  # (source, region) with region "full" | "a" | "b"


def _overlap(a: Scene, b: Scene) -> bool:
    for src, reg in a.parts:
        for src2, reg2 in b.parts:
            if src == src2 and (reg == reg2 or "full" in (reg, reg2)):
                return True
    return False


def halves(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    if w >= h:
        return rgb[:, : w // 2], rgb[:, w // 2 :]
    return rgb[: h // 2], rgb[h // 2 :]


def collage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    h = min(a.shape[0], b.shape[0])
    parts = [cv2.resize(x, (max(1, round(x.shape[1] * h / x.shape[0])), h),
                        interpolation=cv2.INTER_AREA) for x in (a, b)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def make_scenes(photos: dict[str, np.ndarray], *, seed: int, collages: int = 6) -> list[Scene]:
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []
    for name, rgb in photos.items():
        scenes.append(Scene(name, rgb, frozenset({(name, "full")})))
        a, b = halves(rgb)
        scenes.append(Scene(f"{name}/a", np.ascontiguousarray(a), frozenset({(name, "a")})))
        scenes.append(Scene(f"{name}/b", np.ascontiguousarray(b), frozenset({(name, "b")})))
    names = list(photos)
    for _ in range(collages if len(names) > 1 else 0):
        i, j = rng.choice(len(names), size=2, replace=False)
        x, y = names[int(i)], names[int(j)]
        scenes.append(Scene(f"{x}+{y}", collage(photos[x], photos[y]),
                            frozenset({(x, "full"), (y, "full")})))
    return scenes


def scene_pairs(
    scenes: list[Scene], *, seed: int, copies_per_edit: int = 1, negatives_per_scene: int = 6
) -> list[Pair]:
    rng = np.random.default_rng(seed)
    edits = {**DUPLICATE_EDITS, **NEAR_DUPLICATE_EDITS}
    pairs: list[Pair] = []
    for s in scenes:
        others = [o for o in scenes if not _overlap(s, o)]
        for edit_name, edit in edits.items():
            for _ in range(copies_per_edit):
                if edit is paste and others:
                    donor = others[int(rng.integers(len(others)))].rgb
                    copy = paste(s.rgb, rng, donor=donor)
                else:
                    copy = edit(s.rgb, rng)
                pairs.append(Pair(s.rgb, copy, 1, edit_name, s.name))
        for _ in range(min(negatives_per_scene, len(others))):
            other = others[int(rng.integers(len(others)))]
            edit_name = list(edits)[int(rng.integers(len(edits)))]
            rgb = other.rgb if edit_name == "paste" else edits[edit_name](other.rgb, rng)
            pairs.append(Pair(s.rgb, rgb, 0, "different", s.name))
        if s.name.endswith("/a"):
            twin = next((o for o in scenes if o.name == s.name[:-2] + "/b"), None)
            if twin is not None:
                pairs.append(Pair(s.rgb, twin.rgb, 0, "same_scene", s.name))
    return pairs
