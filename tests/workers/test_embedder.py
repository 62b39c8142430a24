import numpy as np
import pytest

from dupstream.core.errors import WeightsError
from dupstream.lab.data import edits
from dupstream.workers.embedder import SSCDEmbedder


@pytest.fixture(scope="module")
def sscd():
    return SSCDEmbedder(variant="sscd")


def test_vectors_are_unit_norm_and_batched(sscd, photos):
    imgs = list(photos.values())
    batch = sscd.embed(imgs)
    assert batch.shape == (len(imgs), 512) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
    one = sscd.embed([imgs[0]])
    assert np.allclose(one[0], batch[0], atol=1e-3)  # batching does not change the answer


def test_copies_score_above_different_photos(sscd, photos):
    """Golden behaviour on real photos: every edit of a photo is closer to it than any other."""
    rng = np.random.default_rng(0)
    names = list(photos)
    originals = sscd.embed([photos[n] for n in names])
    for i, name in enumerate(names):
        copies = [fn(photos[name], rng) for fn in (edits.jpeg, edits.crop, edits.caption,
                                                    edits.hflip, edits.rotate)]
        sims = sscd.embed(copies) @ originals.T
        assert (sims.argmax(axis=1) == i).all(), name
        assert sims[:, i].min() > 0.6
        others = np.delete(sims, i, axis=1)
        assert others.max() < 0.35


def test_wrong_weights_fail_loudly(tmp_path):
    bogus = tmp_path / "sscd.onnx"
    bogus.write_bytes(b"not the model")
    with pytest.raises(WeightsError):
        SSCDEmbedder(variant="sscd", model_path=bogus).embed([np.zeros((8, 8, 3), np.uint8)])
