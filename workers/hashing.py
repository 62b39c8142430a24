"""Content and perceptual hashes: the fast path that runs before any model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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
    """PDQ of an RGB uint8 image with its 8 dihedral variants (flips and 90° rotations)."""
    hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
    packed = np.stack([np.packbits(np.asarray(h, dtype=np.uint8)) for h in hashes])
    return PDQ(variants=packed, quality=int(quality))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed bit arrays (broadcasts over leading axes)."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)
