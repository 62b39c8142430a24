"""Content and perceptual hashes: the fast path that runs before any model.

PDQ (Meta's perceptual hash): one luma image, a Jarosz (two-pass box) downscale to 64x64, a
16x16 DCT, a bit per coefficient above the median; the seven dihedral variants come from the
DCT's symmetries (sign flips of odd frequencies and a transpose), so all eight cost one pass.
``pdq_hash`` runs the reference implementation (``pdqhash.compute_dihedral``) on an RGB image.
``pdq_hash_gray`` - what the extractor runs - computes the same algorithm on the grey image the
caller already has with OpenCV's box filter and two 16x64 matrix products, and the last two box
passes only where the 64x64 sampling reads them: 0.6 vs 6.1 ms at 512 px, 74 vs 225 ms at
4000 px (the reference filters with scalar loops and builds a float luma in numpy first).
Its bits and quality equal the reference's run on the same grey on the packaged photos and
odd-sized and random images (tests/workers/test_hashing.py) and on 6,536 of the decision's
6,541 training images: a coefficient within float rounding (~1e-4) of its variant's median can
flip a bit (one photo: 2 bits in two turned variants) or a quality step by 1 (one photo: 39
vs 38), and a flat picture's DCT is exactly 0 here (no bit set) where the reference's bits are
rounding noise (quality 0 both ways). The
transformed variants are PDQ's own approximation: they equal the hash of the transformed
picture exactly for the identity and the transpose, within ~22 bits for the others on the
packaged photos (PDQ promises no exact invariance); a transformed copy's own hash is always
closest to its variant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
import pdqhash

#: names of the 8 dihedral variants, in the order ``pdqhash.compute_dihedral`` returns them
DIHEDRAL = ("identity", "rot90", "rot180", "rot270", "flip_v", "flip_h", "transpose", "transverse")


def content_hash(data: bytes) -> str:
    """SHA-256 of the raw bytes: identical uploads, whatever the file name."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PDQ:
    """PDQ hash of an image: 8 dihedral variants of 256 bits each (packed), plus quality."""

    variants: np.ndarray  # (8, 32) uint8, packed bits
    quality: int

    @property
    def bits(self) -> np.ndarray:
        return self.variants[0]


def pdq_hash(rgb: np.ndarray) -> PDQ:
    """PDQ of an RGB uint8 image with its 8 dihedral variants (flips and 90° rotations), from
    PDQ's own float luma (0.299 R + 0.587 G + 0.114 B)."""
    return _pack(*pdqhash.compute_dihedral(np.ascontiguousarray(rgb)))


def pdq_hash_gray(gray: np.ndarray) -> PDQ:
    """The same eight hashes in one pass over a grey uint8 image (``cv2.COLOR_RGB2GRAY`` of the
    picture: the grey every other hash-stage feature is cut from), computed here (see the
    module's docstring) with PDQ's bits and quality. Against ``pdq_hash`` of the RGB image the
    only difference is the grey's rounding to integers: 0-2 bits on the packaged photos."""
    g = np.asarray(gray)
    if g.ndim != 2:
        raise ValueError(f"pdq_hash_gray takes a 2-D grey image, got shape {g.shape}")
    if min(g.shape) < PDQ_MIN_SIDE:  # PDQ does not hash it: an all-zero hash of quality 0
        return PDQ(variants=np.zeros((len(DIHEDRAL), 32), np.uint8), quality=0)
    dct, quality = _pdq_dct(g.astype(np.float32))
    v = _dihedral(dct).reshape(len(DIHEDRAL), 256)
    # PDQ's median is Torben's: the 128th smallest of the 256; a bit is set above it. Bit k of
    # PDQ's vector is coefficient 255 - k (row-major)
    med = np.partition(v, 127, axis=1)[:, 127:128]
    return PDQ(variants=np.packbits((v > med)[:, ::-1], axis=1), quality=quality)


#: PDQ's MIN_HASHABLE_DIM: a picture with a shorter side gets no hash (all zero, quality 0)
PDQ_MIN_SIDE = 5

#: PDQ's DCT: 16 frequencies (1..16, the DC left out) x 64 samples, sqrt(2/64) cos(...)
_DCT = (np.sqrt(2.0 / 64.0) * np.cos((np.pi / 2 / 64.0) * np.arange(1, 17)[:, None]
                                     * (2 * np.arange(64)[None, :] + 1))).astype(np.float32)
_ODD_ROW = (np.arange(16) % 2 == 1)[:, None]
_ODD_COL = (np.arange(16) % 2 == 1)[None, :]
_ODD_SUM = (np.add.outer(np.arange(16), np.arange(16)) % 2) == 1


def _dihedral(a: np.ndarray) -> np.ndarray:
    """(8, 16, 16): the DCT of each dihedral transform of the picture, in ``DIHEDRAL`` order
    (PDQ's ``dct16OriginalTo*``: mirroring an axis negates the coefficients of its odd
    frequencies - the even indices, index i being frequency i + 1 -, a transpose transposes)."""
    return np.stack([
        a,
        np.where(_ODD_COL, a, -a).T,  # rot90
        np.where(_ODD_SUM, -a, a),  # rot180
        np.where(_ODD_ROW, a, -a).T,  # rot270
        np.where(_ODD_ROW, a, -a),  # flip_v (rows reversed)
        np.where(_ODD_COL, a, -a),  # flip_h (columns reversed)
        a.T,  # transpose
        np.where(_ODD_SUM, -a, a).T,  # transverse
    ])


def _jarosz_window(old: int) -> int:
    """PDQ's box window for a downscale of ``old`` samples to 64."""
    return (old + 2 * 64 - 1) // (2 * 64)


def _box(x: np.ndarray, full: int, axis: int, at: np.ndarray | None = None) -> np.ndarray:
    """PDQ's ``box1DFloat`` along ``axis``: the mean of the window [i - (full - half), i + half
    - 1] (half = (full + 2) // 2) clipped to the image, at every position, or only at the
    positions ``at``."""
    n = x.shape[axis]
    half = (full + 2) // 2
    lead = full - half
    if at is None:
        ksize, anchor = ((full, 1), (lead, 0)) if axis == 1 else ((1, full), (0, lead))
        s = cv2.boxFilter(x, -1, ksize, anchor=anchor, normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
        at = np.arange(n)
    else:
        s = np.zeros((x.shape[0], len(at)) if axis == 1 else (len(at), x.shape[1]), np.float32)
        for off in range(-lead, half):
            j = at + off
            inside = ((j >= 0) & (j < n)).astype(np.float32)
            part = np.take(x, np.clip(j, 0, n - 1), axis=axis)
            s += part * (inside[None, :] if axis == 1 else inside[:, None])
    count = (np.minimum(at + half - 1, n - 1) - np.maximum(at - lead, 0) + 1).astype(np.float32)
    return s / (count[None, :] if axis == 1 else count[:, None])


def _pdq_dct(f: np.ndarray) -> tuple[np.ndarray, int]:
    """(16x16 DCT, quality) of the float32 luma ``f``: PDQ's ``pdqFloat256FromFloatLuma``."""
    rows, cols = f.shape
    along_rows, along_cols = _jarosz_window(cols), _jarosz_window(rows)
    # the 64x64 buffer samples pixel floor((i + 0.5) * n / 64) of the filtered image
    ri = ((np.arange(64) + 0.5) * rows / 64).astype(np.int64)
    ci = ((np.arange(64) + 0.5) * cols / 64).astype(np.int64)
    # two rounds of (along each row, along each column); the second round's passes only
    # where the sampling reads them (a window of 1 - pictures under 129 px - copies)
    f = _box(_box(f, along_rows, 1), along_cols, 0)
    b = np.ascontiguousarray(_box(_box(f, along_rows, 1, ci), along_cols, 0, ri), np.float32)
    if b.min() == b.max():  # a flat picture: PDQ's DCT is exactly 0 (no bit set)
        dct = np.zeros((16, 16), np.float32)
    else:
        dct = _DCT @ b @ _DCT.T
    # PDQ's quality: the sum of |int((u - v) * 100 / 255)| over neighbouring samples, / 90
    hundred, white = np.float32(100), np.float32(255)
    grad = (np.abs(np.trunc((b[:-1] - b[1:]) * hundred / white)).sum()
            + np.abs(np.trunc((b[:, :-1] - b[:, 1:]) * hundred / white)).sum())
    return dct, min(100, int(grad) // 90)


def grey(rgb: np.ndarray) -> np.ndarray:
    """The picture's grey uint8 image (OpenCV's Rec. 601 weights, PDQ's too)."""
    return cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2GRAY)


def _pack(hashes, quality) -> PDQ:
    bits = np.asarray(hashes, dtype=np.uint8).reshape(len(DIHEDRAL), 256)
    return PDQ(variants=np.packbits(bits, axis=1), quality=int(quality))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed bit arrays (broadcasts over leading axes)."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)
