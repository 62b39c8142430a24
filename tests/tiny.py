"""A tiny deterministic embedder for engine tests that need a real ``Deduper`` + ``Memory``
without the models: identical pixels give identical vectors, all the index needs."""

from __future__ import annotations

import numpy as np

from dupstream.workers.embedder import l2_normalise

DIM = 48


class TinyEmbedder:
    """A 4 x 4 grey-ish sample of the picture, centred and normalised: ``DIM`` values."""

    name = "tiny"
    dim = DIM

    def embed(self, images):
        out = []
        for im in images:
            small = np.asarray(im, np.float32)[:: max(1, im.shape[0] // 4),
                                               :: max(1, im.shape[1] // 4)][:4, :4]
            out.append((small - small.mean()).ravel())
        return l2_normalise(np.stack(out))
