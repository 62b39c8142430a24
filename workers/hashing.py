"""Content and perceptual hashes: the fast path that runs before any model.

PDQ: ``pdqhash.compute_dihedral`` gives all eight dihedral hashes in one pass (one luma image,
one Jarosz downscale to 64x64, one DCT; the seven transformed hashes come from the DCT's
symmetries). ``pdq_hash_gray`` feeds it a grey image the caller already has (the same grey the
registration thumbnail and the difference thumbnail are cut from), as a zero-copy
three-channel view. The transformed variants are PDQ's own approximation: they equal the hash of
the transformed picture exactly for the identity and the transpose, within ~22 bits for the
others on the packaged photos (PDQ promises no exact invariance); a transformed copy's own hash is
always closest to its variant.
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
    picture: the grey every other hash-stage feature is cut from). The grey is handed to PDQ as
    a three-channel view with zero strides, never copied. Against ``pdq_hash`` of the RGB image
    the only difference is the grey's rounding to integers: 0-2 bits on the packaged photos."""
    g = np.ascontiguousarray(gray, dtype=np.uint8)
    if g.ndim != 2:
        raise ValueError(f"pdq_hash_gray takes a 2-D grey image, got shape {g.shape}")
    return _pack(*pdqhash.compute_dihedral(np.broadcast_to(g[..., None], (*g.shape, 3))))


def grey(rgb: np.ndarray) -> np.ndarray:
    """The picture's grey uint8 image (OpenCV's Rec. 601 weights, PDQ's too)."""
    return cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2GRAY)


def _pack(hashes, quality) -> PDQ:
    bits = np.asarray(hashes, dtype=np.uint8).reshape(len(DIHEDRAL), 256)
    return PDQ(variants=np.packbits(bits, axis=1), quality=int(quality))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed bit arrays (broadcasts over leading axes)."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)
