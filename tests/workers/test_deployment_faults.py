"""Deployment faults (weights failing their sha256 check, missing files) are fatal at warm-up and
never swallowed per image; a model failing at run time on one image stays that image's error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dupstream.core.errors import DupstreamError, ModelError, WeightsError
from dupstream.workers.detector import build_detector
from dupstream.workers.embedder import SSCDEmbedder
from dupstream.workers.features import FeatureExtractor, ImageFeatures
from dupstream.workers.gcn import GCN_FILE, GCN_META, GraphEncoder, default_assets
from dupstream.workers.weights import sha256_file
from dupstream.workers.yolo import YOLOV3_TINY_WEIGHTS, yolo_files

pytest.importorskip("torch")


def _flip(path: Path, at: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def corrupt_yolo_dir(tmp_path_factory) -> Path:
    """The real YOLOv3-tiny files, with one byte of the weights flipped."""
    d = tmp_path_factory.mktemp("yolo-corrupt")
    for f in yolo_files():
        shutil.copy(f, d / f.name)
    _flip(d / "yolov3-tiny.weights")
    return d


@pytest.fixture(scope="module")
def embedder():
    return SSCDEmbedder(variant="sscd_distilled")


def _blobs(photos, names=("chelsea", "coffee", "rocket")) -> list[bytes]:
    import cv2

    return [cv2.imencode(".png", photos[n][:, :, ::-1])[1].tobytes() for n in names]


def test_corrupt_detector_weights_fail_the_batch_not_each_image(photos, embedder,
                                                                corrupt_yolo_dir):
    ex = FeatureExtractor(embedder=embedder,
                          detector=build_detector("yolov3_tiny", device="cpu",
                                                  weights_dir=corrupt_yolo_dir))
    with pytest.raises(WeightsError) as err:
        ex.extract(_blobs(photos))
    msg = str(err.value)
    actual = sha256_file(corrupt_yolo_dir / "yolov3-tiny.weights")
    assert str(corrupt_yolo_dir / "yolov3-tiny.weights") in msg
    assert actual != YOLOV3_TINY_WEIGHTS.sha256
    assert f"has sha256 {actual}, expected {YOLOV3_TINY_WEIGHTS.sha256}" in msg
    assert "\n" not in msg


def test_warm_up_loads_and_verifies_every_model(embedder, corrupt_yolo_dir):
    good = FeatureExtractor(embedder=embedder, detector=build_detector("yolov3_tiny", device="cpu"),
                            graph_encoder=GraphEncoder())
    assert good.warm_up() == {"embedder": "sscd_distilled", "detector": "yolov3_tiny",
                              "graph": "gcn"}
    bad = FeatureExtractor(embedder=embedder,
                           detector=build_detector("yolov3_tiny", device="cpu",
                                                   weights_dir=corrupt_yolo_dir))
    with pytest.raises(WeightsError, match="expected " + YOLOV3_TINY_WEIGHTS.sha256):
        bad.warm_up()


def test_warm_up_checks_the_embedder_and_the_gcn_files(tmp_path, embedder):
    onnx = tmp_path / "sscd.onnx"
    shutil.copy(SSCDEmbedder(variant="sscd")._resolve_path(), onnx)
    _flip(onnx)
    with pytest.raises(WeightsError, match="sscd_disc_mixup: weights file .*expected 8638"):
        FeatureExtractor(embedder=SSCDEmbedder(variant="sscd", model_path=onnx)).warm_up()

    for name in (GCN_FILE, GCN_META):
        shutil.copy(default_assets() / name, tmp_path / name)
    _flip(tmp_path / GCN_FILE, at=200)
    ex = FeatureExtractor(embedder=embedder, detector=None,
                          graph_encoder=GraphEncoder(weights_path=tmp_path / GCN_FILE))
    with pytest.raises(WeightsError, match="dupstream-gcn: weights file"):
        ex.warm_up()


def test_faster_rcnn_weights_dir_is_checked(tmp_path):
    from dupstream.workers.frcnn import FRCNN_WEIGHTS, weights_file

    path = weights_file(tmp_path, "v1")
    path.write_bytes(b"not the torchvision checkpoint")
    det = build_detector("faster_rcnn", weights_dir=tmp_path, device="cpu")
    assert det.weights_path == path
    with pytest.raises(WeightsError, match=f"expected {FRCNN_WEIGHTS['v1'].sha256_prefix}"):
        det.load()


class _FailsOnBright:
    """Wraps the real detector; a real-looking inference failure on bright images only (an
    in-process double for the isolation logic: no runtime error is reproducible on demand)."""

    name = "yolov3_tiny"

    def __init__(self, inner) -> None:
        self.inner = inner

    def detect(self, images):
        if any(float(im.mean()) > 150 for im in images):
            raise ModelError("yolov3_tiny inference failed: CUDA error: an illegal memory access")
        return self.inner.detect(images)


def test_a_run_time_failure_on_one_image_stays_per_image(photos, embedder):
    det = _FailsOnBright(build_detector("yolov3_tiny", device="cpu"))
    bright = np.full((64, 64, 3), 250, np.uint8)
    import cv2

    blobs = [*_blobs(photos, ("coffee", "rocket")), cv2.imencode(".png", bright)[1].tobytes()]
    out = FeatureExtractor(embedder=embedder, detector=det,
                           graph_encoder=GraphEncoder()).extract(blobs)
    assert all(isinstance(f, ImageFeatures) for f in out)
    assert out[2].objects is None and out[2].graph is None  # visual evidence only
    assert out[0].objects is not None and len(out[0].objects) > 0
    assert out[1].objects is not None
    assert out[0].graph is not None and np.linalg.norm(out[0].graph) > 0.99


class _BrokenEmbedder:
    """An embedder double: raises the given error on images whose first pixel is 0."""

    name, dim = "double", 8

    def __init__(self, error: DupstreamError) -> None:
        self.error = error

    def embed(self, images):
        if any(int(im[0, 0, 0]) == 0 for im in images):
            raise self.error
        return np.eye(len(images), self.dim, dtype=np.float32)


def test_embedder_errors_model_per_image_weights_fatal():
    import cv2

    black = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    grey = cv2.imencode(".png", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
    out = FeatureExtractor(embedder=_BrokenEmbedder(ModelError("boom"))).extract([grey, black])
    assert isinstance(out[0], ImageFeatures) and isinstance(out[1], ModelError)
    with pytest.raises(WeightsError):
        FeatureExtractor(embedder=_BrokenEmbedder(WeightsError("bad sha"))).extract([grey, black])
