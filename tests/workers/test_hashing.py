"""PDQ: the eight dihedral hashes from one pass over one grey image, against the eight hashes
computed separately on the transformed pictures."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pdqhash
import pytest

from dupstream.lab.data.photos import load_photos
from dupstream.workers.hashing import DIHEDRAL, content_hash, grey, hamming, pdq_hash, pdq_hash_gray

#: the transform each variant stands for, in ``DIHEDRAL`` order (numpy on a grey image)
TRANSFORMS = {
    "identity": lambda g: g,
    "rot90": lambda g: np.rot90(g, 1),
    "rot180": lambda g: np.rot90(g, 2),
    "rot270": lambda g: np.rot90(g, 3),
    "flip_v": lambda g: g[::-1],
    "flip_h": lambda g: g[:, ::-1],
    "transpose": lambda g: g.T,
    "transverse": lambda g: np.rot90(g, 2).T,
}


@pytest.fixture(scope="module")
def photos():
    return load_photos(["camera", "coffee", "motorcycle_left", "grace_hopper", "chelsea",
                        "china"])


def _separate(gray: np.ndarray) -> np.ndarray:
    """The transformed picture's own hash, one PDQ run per transform."""
    out = []
    for name in DIHEDRAL:
        g = np.ascontiguousarray(TRANSFORMS[name](gray))
        bits, _ = pdqhash.compute(np.ascontiguousarray(np.stack([g] * 3, axis=-1)))
        out.append(np.packbits(np.asarray(bits, dtype=np.uint8)))
    return np.stack(out)


def test_one_pass_equals_the_eight_separate_hashes(photos):
    for name, rgb in photos.items():
        g = grey(rgb)
        one = pdq_hash_gray(g).variants
        separate = _separate(g)
        d = hamming(one, separate)  # variant i against transform i's own hash
        # exact where PDQ's DCT symmetry is exact (identity, transpose); the others are PDQ's
        # approximation (its Jarosz sampling is anchored at one corner): a few bits
        assert d[DIHEDRAL.index("identity")] == 0 and d[DIHEDRAL.index("transpose")] == 0, name
        assert d.max() <= 24, (name, d.tolist())
        # and every transformed picture's own hash is closest to its own variant, far from the
        # other seven (unrelated-picture distances are ~100+)
        cross = hamming(separate[:, None, :], one[None, :, :])
        assert (cross.argmin(axis=1) == np.arange(len(DIHEDRAL))).all(), name
        off = cross[~np.eye(len(DIHEDRAL), dtype=bool)]
        assert off.min() > 64, name


def test_grey_path_matches_the_rgb_path(photos):
    for name, rgb in photos.items():
        a, b = pdq_hash(rgb), pdq_hash_gray(grey(rgb))
        assert hamming(a.variants, b.variants).max() <= 2, name  # integer grey rounding only
        assert a.quality == b.quality
        assert b.variants.shape == (8, 32) and b.variants.dtype == np.uint8
    with pytest.raises(ValueError):
        pdq_hash_gray(np.zeros((8, 8, 3), np.uint8))


def test_grey_path_is_pdqs_algorithm(photos):
    """``pdq_hash_gray`` computes PDQ itself (OpenCV box filter, the last passes only where
    sampled): the reference's bits and quality on the same grey, on photos, their turns and
    crops, odd and tiny sizes (no box filter below 129 px; no hash below 5), noise and blurred
    noise. A flat picture's DCT is 0: no bit set, where the reference's bits are its float
    rounding noise."""
    rng = np.random.default_rng(7)
    greys = []
    for rgb in photos.values():
        g = grey(rgb)
        greys += [g, np.rot90(g), g[13:-29, 7:], g[::3, ::2], g[:40, :300]]
    greys += [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in ((28, 28), (17, 300), (1000, 37), (64, 64), (128, 129), (257, 255),
                            (5, 300), (300, 5), (4, 300), (2, 3000), (1, 1))]
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (40, 90)).astype(np.float32), (0, 0), 3)
    greys.append(cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8))
    for i, g in enumerate(greys):
        g = np.ascontiguousarray(g)
        # pdqhash on the grey as RGB: its float luma of a grey is the grey itself
        ours, ref = pdq_hash_gray(g), pdq_hash(np.stack([g] * 3, axis=-1))
        assert hamming(ours.variants, ref.variants).max() == 0, (i, g.shape)
        assert ours.quality == ref.quality, (i, g.shape)
    flat = pdq_hash_gray(np.full((50, 60), 7, np.uint8))
    assert flat.quality == pdq_hash(np.full((50, 60, 3), 7, np.uint8)).quality == 0
    assert not flat.variants.any()


def test_grey_input_is_not_copied_or_changed():
    g = np.random.default_rng(0).integers(0, 255, (97, 131), dtype=np.uint8)
    before = g.copy()
    h1 = pdq_hash_gray(g)
    assert np.array_equal(g, before)
    h2 = pdq_hash_gray(g[:, :])  # a view gives the same hash
    assert np.array_equal(h1.variants, h2.variants)


def test_content_hash_is_sha256():
    data = b"some image bytes"
    assert content_hash(data) == hashlib.sha256(data).hexdigest()
