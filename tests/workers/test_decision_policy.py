"""Product policy on top of the calibrated score: CCTV-style tenants, where an object entering
the scene breaks the duplicate."""

from dupstream.workers.decision import DecisionPolicy, default_calibrator
from dupstream.workers.similarity import PairScore


def _same_picture(objects_added):
    return PairScore(exact=False, visual=0.99, pdq_distance=4, pdq_variant=0, fused=0.99,
                     changed_area=0.001, semantic={"objects_added": objects_added})


def test_object_entering_breaks_the_duplicate_only_under_the_scene_policy():
    policy = DecisionPolicy(calibrator=default_calibrator(), tenant_domains={"cams": "cctv"},
                            scene_change_tenants=frozenset({"gate"}))
    entered = _same_picture(["person"])
    assert policy.decide(entered, tenant="photos-app")[0] == "duplicate"
    assert policy.decide(entered, tenant="cams")[0] == "near_duplicate"  # cctv domain
    assert policy.decide(entered, tenant="gate")[0] == "near_duplicate"  # listed tenant
    assert policy.decide(_same_picture([]), tenant="cams")[0] == "duplicate"  # nothing entered
