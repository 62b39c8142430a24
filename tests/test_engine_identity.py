"""The engine's side of model identity and warm-up, with the real SSCD variants: what it records
in snapshots and updates, and that it refuses an index another embedder built."""

from __future__ import annotations

import pytest

from dupstream.core.errors import ModelMismatch
from dupstream.engine import Upload
from dupstream.engine.build import build_deduper
from dupstream.lab.data import edits
from dupstream.state.blobstore import FileBlobStore
from dupstream.state.memory import decode_update, encode_update
from dupstream.state.snapshot import load_latest_snapshot, write_snapshot
from dupstream.workers.embedder import SSCD_WEIGHTS


@pytest.fixture(scope="module")
def sscd_snapshot(tmp_path_factory, photos):
    store = FileBlobStore(tmp_path_factory.mktemp("state"))
    writer = build_deduper(embedder="sscd", detector="none")
    published = []
    writer.on_add = published.append
    writer.process([Upload("coffee", edits.encode(photos["coffee"]), "t")])
    info = write_snapshot(writer.memory, store, prefix="svc")
    return store, info, writer, published


def test_identity_names_the_embedder_its_weights_and_the_model(sscd_snapshot):
    _, info, writer, published = sscd_snapshot
    ident = writer.identity
    assert ident.embedder == "sscd" and ident.embedder_sha256 == SSCD_WEIGHTS["sscd"].sha256
    assert ident.model_version == writer.model_version
    assert info.manifest["model"] == ident.to_dict()
    # the update published for the added image carries it too
    assert len(published) == 1 and decode_update(encode_update(published[0])).model == ident


def test_an_index_of_the_other_sscd_variant_is_refused(sscd_snapshot, photos):
    store, info, writer, _ = sscd_snapshot
    distilled = build_deduper(embedder="sscd_distilled", detector="none")
    with pytest.raises(ModelMismatch) as err:  # checked at load, before any blob is read
        load_latest_snapshot(store, prefix="svc", identity=distilled.identity)
    assert "was written by embedder sscd (" in str(err.value)
    assert "this service runs embedder sscd_distilled (" in str(err.value)
    restored = load_latest_snapshot(store, prefix="svc").memory
    with pytest.raises(ModelMismatch, match=f"snapshot {info.snapshot_id} was written by "
                       "embedder sscd"):  # ... or when the engine takes the memory
        build_deduper(embedder="sscd_distilled", detector="none", memory=restored)
    same = build_deduper(embedder="sscd", detector="none", memory=restored)
    verdict = same.process([Upload("again", edits.encode(photos["coffee"], "JPEG", 80), "t")])[0]
    assert verdict.verdict != "unique" and verdict.match_id == "coffee"


def test_warm_up_reports_every_checked_artefact():
    report = build_deduper(embedder="sscd_distilled", detector="yolov3_tiny").warm_up()
    assert report["embedder"] == "sscd_distilled" and report["detector"] == "yolov3_tiny"
    assert report["graph"] == "gcn" and "default" in report["decision"]
    assert report["model"]["embedder_sha256"] == SSCD_WEIGHTS["sscd_distilled"].sha256
