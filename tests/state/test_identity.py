"""Model identity in persisted state: snapshots and index updates say which model wrote them, and
another model's state is refused with a message naming both (both SSCD variants are 512-d, so the
dimension alone cannot tell them apart)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dupstream.core.errors import ModelMismatch, StateError
from dupstream.state.blobstore import MemoryBlobStore
from dupstream.state.identity import ModelIdentity
from dupstream.state.memory import Memory, MemoryConfig, decode_update, encode_update
from dupstream.state.snapshot import _fingerprint, load_latest_snapshot, write_snapshot
from dupstream.workers.embedder import SSCD_WEIGHTS
from tests.state.helpers import make_record, unit

DIM = 512
SSCD = ModelIdentity(embedder="sscd", embedder_sha256=SSCD_WEIGHTS["sscd"].sha256,
                     model_version="dupstream-0.1.0/sscd/yolov3_tiny/gcn/cal-fc0157f6")
DISTILLED = ModelIdentity(embedder="sscd_distilled",
                          embedder_sha256=SSCD_WEIGHTS["sscd_distilled"].sha256,
                          model_version="dupstream-0.1.0/sscd_distilled/yolov3_tiny/gcn/cal-fc0157f6")


def _config(**kw) -> MemoryConfig:
    return MemoryConfig(**kw)  # default: one 512-d "vector" array, like both SSCD variants


def _memory(identity: ModelIdentity | None, n: int = 3, **kw) -> Memory:
    mem = Memory(_config(**kw), identity=identity)
    rng = np.random.default_rng(0)
    for i, v in enumerate(unit(rng, n, DIM)):
        assert mem.add(make_record(f"i{i}", "t", vector=v))
    return mem


def _update(image_id: str, model: ModelIdentity | None, seed: int = 1) -> bytes:
    rec = make_record(image_id, "t", vector=unit(np.random.default_rng(seed), 1, DIM)[0])
    rec.origin, rec.ts, rec.model = "other-replica", 1.0, model
    return encode_update(rec)


def test_snapshot_of_another_embedder_is_refused_naming_both():
    store = MemoryBlobStore()
    info = write_snapshot(_memory(SSCD), store, prefix="p")
    assert info.manifest["model"] == SSCD.to_dict()
    with pytest.raises(ModelMismatch) as err:
        load_latest_snapshot(store, prefix="p", identity=DISTILLED)
    msg = str(err.value)
    assert err.value.reason == "model_mismatch" and isinstance(err.value, StateError)
    assert msg.startswith(f"snapshot {info.snapshot_id} was written by embedder sscd "
                          f"(weights sha256 {SSCD.embedder_sha256}, model {SSCD.model_version})")
    assert (f"but this service runs embedder sscd_distilled (weights sha256 "
            f"{DISTILLED.embedder_sha256}") in msg
    assert "docs/STATE.md" in msg and "ALLOW_MODEL_MISMATCH" in msg


def test_same_embedder_loads_and_keeps_the_running_identity():
    store = MemoryBlobStore()
    write_snapshot(_memory(SSCD), store, prefix="p")
    newer = ModelIdentity(embedder="sscd", embedder_sha256=SSCD.embedder_sha256,
                          model_version="dupstream-0.2.0/sscd/none/nogcn/cal-00000000")
    restored = load_latest_snapshot(store, prefix="p", identity=newer)
    assert len(restored.memory) == 3 and restored.memory.identity == newer
    # without an identity the memory keeps the snapshot's, and binding checks it later
    plain = load_latest_snapshot(store, prefix="p").memory
    assert plain.identity == SSCD
    with pytest.raises(ModelMismatch, match=f"snapshot {restored.snapshot_id} was written by"):
        plain.bind(DISTILLED)
    plain.bind(newer)
    assert plain.identity == newer


def test_a_mismatch_does_not_fall_back_to_an_older_snapshot():
    store = MemoryBlobStore()
    write_snapshot(_memory(DISTILLED), store, prefix="p", keep=0)
    latest = write_snapshot(_memory(SSCD, n=4), store, prefix="p", keep=0)
    with pytest.raises(ModelMismatch, match=latest.snapshot_id):
        load_latest_snapshot(store, prefix="p", identity=DISTILLED)


def test_override_accepts_another_model_with_a_warning(caplog):
    store = MemoryBlobStore()
    write_snapshot(_memory(SSCD), store, prefix="p")
    with caplog.at_level(logging.WARNING):
        restored = load_latest_snapshot(store, prefix="p", identity=DISTILLED,
                                        config=_config(allow_model_mismatch=True))
    assert len(restored.memory) == 3 and restored.memory.identity == DISTILLED
    assert "accepted because allow_model_mismatch is set" in caplog.text
    assert "allow_model_mismatch" not in json.dumps(_config().to_dict())  # never persisted


def test_a_snapshot_without_identity_is_accepted_with_a_warning(caplog):
    store = MemoryBlobStore()
    info = write_snapshot(_memory(SSCD), store, prefix="p")
    # rewrite its manifest as an older release wrote it: no "model" entry
    name = f"p/snapshots/{info.snapshot_id}/manifest.json"
    manifest = json.loads(store.get_bytes(name))
    del manifest["model"]
    manifest["fingerprint"] = _fingerprint(manifest)
    store.put_bytes(name, json.dumps(manifest).encode())
    with caplog.at_level(logging.WARNING):
        restored = load_latest_snapshot(store, prefix="p", identity=DISTILLED)
    assert len(restored.memory) == 3 and restored.memory.identity == DISTILLED
    assert "carries no model identity" in caplog.text


def test_updates_carry_the_identity_and_foreign_ones_are_refused(caplog):
    mem = _memory(SSCD)
    rec = make_record("own", "t", vector=unit(np.random.default_rng(9), 1, DIM)[0])
    assert mem.add(rec) and rec.model == SSCD
    assert decode_update(encode_update(rec)).model == SSCD
    foreign = _update("foreign", DISTILLED)
    with pytest.raises(ModelMismatch) as err:
        mem.apply(foreign, position=("updates", 0, 7))
    assert ("index update 'foreign' from replica 'other-replica' was written by embedder "
            "sscd_distilled") in str(err.value)
    assert "this replica's index holds embedder sscd (" in str(err.value)
    assert (None, "t", "foreign") not in mem and mem.positions == {}
    stats = mem.stats()
    assert stats["updates_refused"] == 1 and stats["model"] == SSCD.to_dict()
    assert mem.apply(_update("friend", SSCD, seed=2)).new
    with caplog.at_level(logging.WARNING):
        assert mem.apply(_update("legacy", None, seed=3)).new  # an older release's update
    assert "carries no model identity" in caplog.text
    assert mem.stats()["updates_unidentified"] == 1 and len(mem) == 6


def test_a_memory_without_identity_takes_the_first_one_it_sees():
    mem = Memory(_config())
    assert mem.apply(_update("legacy", None)).new and mem.identity is None
    assert mem.apply(_update("a", DISTILLED, seed=2)).new and mem.identity == DISTILLED
    with pytest.raises(ModelMismatch):
        mem.apply(_update("b", SSCD, seed=3))
    assert len(mem) == 2


def test_identity_codec():
    assert ModelIdentity.from_dict(SSCD.to_dict()) == SSCD
    assert ModelIdentity.from_dict(None) is None
    with pytest.raises(StateError):
        ModelIdentity.from_dict({"embedder_sha256": "x"})
    unknown = ModelIdentity(embedder="sscd")
    assert unknown.compatible(SSCD) and not DISTILLED.compatible(SSCD)
    assert not SSCD.compatible(ModelIdentity(embedder="sscd", embedder_sha256="0" * 64))
