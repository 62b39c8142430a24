"""A copy turned by an arbitrary angle on a solid fill, uploaded after its original among other
photos, is found through the index by its upright orientations and registered."""

import numpy as np
import pytest
from skimage import data

from dupstream.engine import Upload
from dupstream.engine.build import build_deduper
from dupstream.lab.data.edits import encode, rotate_any
from dupstream.workers.features import ImageFeatures


@pytest.fixture(scope="module")
def deduper():
    d = build_deduper(detector="none", threads=2)
    photos = {"coffee": data.coffee(), "chelsea": data.chelsea(), "rocket": data.rocket(),
              "astronaut": data.astronaut()}
    d.process([Upload(k, encode(np.ascontiguousarray(v[::2, ::2]), "PNG"))
               for k, v in photos.items()])
    return d


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_turned_copy_finds_its_original(deduper, seed):
    photo = np.ascontiguousarray(data.coffee()[::2, ::2])
    turned = rotate_any(photo, np.random.default_rng(seed))
    [feat] = deduper.extractor.extract([encode(turned, "PNG")], objects=False)
    assert isinstance(feat, ImageFeatures) and feat.content_turns is not None
    assert feat.content_turns.shape == (4, feat.vector.shape[0])
    [v] = deduper.process([Upload(f"turned{seed}", encode(turned, "PNG"))], add=False)
    assert v.verdict == "near_duplicate" and v.match_id == "coffee"
    # the whole turned canvas is far from the original; its best upright orientation is not
    assert v.evidence.content_visual > max(0.75, v.evidence.visual + 0.15), v.evidence
    assert v.evidence.registration is not None and v.evidence.registration.verified
    assert abs(v.evidence.registration.transform.rotation_deg) > 5  # registered as a turn


def test_upright_pictures_have_no_turns(deduper):
    [feat] = deduper.extractor.extract([encode(np.ascontiguousarray(data.chelsea()[::2, ::2]),
                                               "PNG")], objects=False)
    assert feat.content_turns is None


def test_a_stored_turned_copy_keeps_its_turns_in_the_record():
    """The turned copy first, its original later: the copy's upright orientations travel in its
    record, and the comparison takes them from there."""
    d = build_deduper(detector="none", threads=2)
    photo = np.ascontiguousarray(data.coffee()[::2, ::2])
    turned = rotate_any(photo, np.random.default_rng(2))
    others = {"chelsea": data.chelsea(), "rocket": data.rocket()}
    d.process([Upload("turned", encode(turned, "PNG")),
               *(Upload(k, encode(np.ascontiguousarray(v[::2, ::2]), "PNG"))
                 for k, v in others.items())])
    [v] = d.process([Upload("original", encode(photo, "PNG"))], add=False)
    assert v.verdict == "near_duplicate" and v.match_id == "turned"
    assert v.evidence.content_visual > max(0.75, v.evidence.visual + 0.15), v.evidence
