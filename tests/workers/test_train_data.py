"""The training recipe's data: scenes and pairs from packaged photos, and the loss."""

from __future__ import annotations

import numpy as np
import pytest

from dupstream.lab.data.scenes import _overlap, make_scenes, scene_pairs

torch = pytest.importorskip("torch")


def photos():
    rng = np.random.default_rng(0)
    return {n: rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for n in "abcd"}


def test_scenes_and_pairs_never_call_overlapping_scenes_different():
    scenes = make_scenes(photos(), seed=0, collages=3)
    assert len(scenes) == 4 * 3 + 3
    by_id = {id(s.rgb): s for s in scenes}
    pairs = scene_pairs(scenes, seed=0)
    negatives = [p for p in pairs if p.label == 0]
    assert {p.kind for p in negatives} == {"different", "same_scene"}
    for p in negatives:
        a = by_id[id(p.a)]
        b = by_id.get(id(p.b))
        if b is not None:
            assert not _overlap(a, b)
    halves = [s for s in scenes if s.name in ("a/a", "a/b")]
    assert not _overlap(*halves)
    full = next(s for s in scenes if s.name == "a")
    assert _overlap(full, halves[0])
    again = scene_pairs(make_scenes(photos(), seed=0, collages=3), seed=0)
    assert all(np.array_equal(p.b, q.b) for p, q in zip(pairs, again, strict=True))


def test_contrastive_loss():
    from dupstream.lab.train import contrastive_loss

    sim = torch.tensor([1.0, 0.2, 0.9, 0.4])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = ((0.0 + 0.8**2) + (0.4**2 + 0.0)) / 4
    assert float(contrastive_loss(sim, y, margin=0.5)) == pytest.approx(expected)
