"""``Deduper.warm_up`` checks the artefacts next to the models: calibration and decision files,
and the index dimension; each fault is a start-up error, not a per-event one."""

from __future__ import annotations

import json

import pytest

from dupstream.core.errors import ConfigError, WeightsError
from dupstream.engine.build import build_deduper
from dupstream.state.index import IndexSpec
from dupstream.state.memory import Memory, MemoryConfig
from dupstream.workers.decision import default_calibrator


def test_a_calibration_that_cannot_be_evaluated_fails_warm_up(tmp_path):
    bad = json.loads(default_calibrator().to_json())
    bad["method"] = "sigmoid-ish"
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(bad))
    deduper = build_deduper(embedder="sscd_distilled", detector="none", calibration=path)
    with pytest.raises(WeightsError, match="calibration/decision artefact for domain default: "
                       "ValueError: unknown calibration method 'sigmoid-ish'"):
        deduper.warm_up()


def test_an_unreadable_calibration_fails_the_build(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"method": "platt", "params": ')  # truncated
    with pytest.raises(WeightsError, match=f"calibration/decision artefact {path} unreadable"):
        build_deduper(embedder="sscd_distilled", detector="none", calibration=path)


def test_an_index_of_another_dimension_fails_warm_up():
    memory = Memory(MemoryConfig(vectors={"vector": IndexSpec(dim=256)}))
    deduper = build_deduper(embedder="sscd_distilled", detector="none", memory=memory)
    with pytest.raises(ConfigError, match="256-d vectors but embedder sscd_distilled gives 512-d"):
        deduper.warm_up()


def test_warm_up_probes_once_then_rechecks_only_the_memory():
    deduper = build_deduper(embedder="sscd_distilled", detector="none")
    first = deduper.warm_up()
    assert first["embedder"] == "sscd_distilled" and "detector" not in first
    assert deduper.warm_up() == first
