"""The feature extractor's hash stage in a thread pool beside the embedder gives the features
of the in-line order."""

from __future__ import annotations

import numpy as np
import pytest

from dupstream.core.errors import ConfigError, DupstreamError
from dupstream.engine.build import build_extractor
from dupstream.lab.data import edits as E
from dupstream.lab.data.photos import load_photos


def _blobs():
    photos = load_photos(["coffee", "camera", "motorcycle_left"])
    framed = E.border_solid(photos["coffee"], np.random.default_rng(0))
    return [E.encode(p, "JPEG", 90) for p in [*photos.values(), framed]] + [b"not an image"]


def test_hash_workers_give_the_in_line_features():
    blobs = _blobs()
    inline = build_extractor(detector="none", threads=2).extract(blobs, objects=False)
    pooled_ex = build_extractor(detector="none", threads=2, hash_workers=1)
    pooled = pooled_ex.extract(blobs, objects=False)
    assert isinstance(inline[-1], DupstreamError) and isinstance(pooled[-1], DupstreamError)
    assert inline[-2].content_box is not None  # the framed copy's content crop is embedded
    for a, b in zip(inline[:-1], pooled[:-1], strict=True):
        assert a.digest == b.digest and a.content_box == b.content_box
        assert np.array_equal(a.pdq.variants, b.pdq.variants)
        assert np.array_equal(a.reg, b.reg) and np.array_equal(a.descriptors, b.descriptors)
        assert np.allclose(a.vector, b.vector, atol=1e-5)
        assert np.allclose(a.content, b.content, atol=1e-5)
        assert {"decode", "hash", "embed"} <= set(b.timings_ms)
    assert pooled_ex._hash_pool is not None  # made on first use


def test_negative_hash_workers_is_a_config_error():
    with pytest.raises(ConfigError):
        build_extractor(detector="none", hash_workers=-1)


def test_the_hash_pool_ends_with_its_extractor():
    import gc
    import threading

    ex = build_extractor(detector="none", threads=2, hash_workers=1)
    ex.extract(_blobs()[:1], objects=False)
    assert any(t.name.startswith("dupstream-hash") for t in threading.enumerate())
    pool = ex._hash_pool
    del ex
    gc.collect()
    assert pool._shutdown
