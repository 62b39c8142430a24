"""A picture turned on a solid fill is found and cut back upright; other pictures are left
alone."""

import cv2
import numpy as np
import pytest
from skimage import data

from dupstream.lab.data import edits as E
from dupstream.workers.upright import turned_rect, upright_turns
from dupstream.workers.verify import registration_thumb


@pytest.fixture(scope="module")
def photo():
    return np.ascontiguousarray(data.coffee()[::2, ::2])  # 200x300, no dark border


def _turned(photo, angle, fill):
    return E.rotate_fill(photo, angle, fill)[0]


def _errors(turns, photo):
    """Mean absolute grey-level error of each orientation against the photo."""
    return sorted(float(np.mean(np.abs(cv2.resize(t, photo.shape[1::-1],
                                                  interpolation=cv2.INTER_AREA).astype(int)
                                       - photo.astype(int)))) for t in turns)


@pytest.mark.parametrize("angle,fill", [(23.0, (255, 255, 255)), (-61.0, (0, 0, 0)),
                                        (137.0, (40, 180, 90)), (200.0, (255, 255, 255))])
def test_a_turned_picture_is_cut_back_upright(photo, angle, fill):
    canvas = _turned(photo, angle, fill)
    grey = registration_thumb(canvas)
    rect = turned_rect(grey)
    assert rect is not None
    turns = upright_turns(canvas, rect.scaled(canvas.shape[1] / grey.shape[1]))
    assert len(turns) == 4
    assert {t.shape[:2] for t in turns[::2]} == {turns[0].shape[:2]}
    # one of the four orientations is the photo again (interpolation aside: within ~9 grey
    # levels on average; a wrong orientation is ~68 off)
    errs = _errors(turns, photo)
    assert errs[0] < 12 and errs[1] > 40


def test_seeded_rotation_edits_are_found(photo):
    found = 0
    for seed in range(10):
        canvas = E.rotate_any(photo, np.random.default_rng(seed))
        found += turned_rect(registration_thumb(canvas)) is not None
    assert found >= 7  # a fill close to the photo's own edge colours can hide the rectangle


def test_upright_pictures_and_drawings_are_left_alone(photo):
    assert turned_rect(registration_thumb(photo)) is None
    framed = cv2.copyMakeBorder(photo, 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    assert turned_rect(registration_thumb(framed)) is None  # a border, not a turn
    digit = np.zeros((128, 128), np.uint8)
    cv2.putText(digit, "7", (30, 110), cv2.FONT_HERSHEY_SIMPLEX, 4, 255, 12)
    digit = cv2.warpAffine(digit, cv2.getRotationMatrix2D((64, 64), 30, 1.0), (128, 128))
    assert turned_rect(digit) is None  # a stroke does not fill its rectangle
