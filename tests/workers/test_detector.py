"""Detector backends: golden outputs on packaged photos, torch vs cv2.dnn, weights checks."""

from __future__ import annotations

import numpy as np
import pytest

from dupstream.core.errors import ConfigError, WeightsError
from dupstream.lab.data.photos import load_photos
from dupstream.workers.detector import Detections, build_detector

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def photos():
    return load_photos(["camera", "coffee", "motorcycle_left", "grace_hopper", "chelsea"])


@pytest.fixture(scope="module")
def yolo():
    return build_detector("yolov3_tiny", device="cpu")


def test_golden_detections_on_packaged_photos(photos, yolo):
    dets = dict(zip(photos, yolo.detect(list(photos.values())), strict=True))
    # facts measured on these photos with the shipped YOLOv3-tiny (letterbox, conf 0.2)
    assert dets["camera"].names == ["person", "person"]
    assert dets["coffee"].names[0] == "cup" and dets["coffee"].scores[0] > 0.6
    assert dets["motorcycle_left"].names[0] == "motorcycle"
    assert dets["motorcycle_left"].scores[0] > 0.6
    assert "person" in dets["grace_hopper"].names and "tie" in dets["grace_hopper"].names
    assert len(dets["chelsea"]) == 0  # the weak detector misses the cat (see weights.md)
    for name, d in dets.items():
        h, w = photos[name].shape[:2]
        assert (d.width, d.height) == (w, h)
        assert np.all(np.diff(d.scores) <= 0)
        if len(d):
            assert d.boxes[:, [0, 2]].min() >= 0 and d.boxes[:, [0, 2]].max() <= w
            assert d.boxes[:, [1, 3]].min() >= 0 and d.boxes[:, [1, 3]].max() <= h
    # the cameraman fills the left half as a tall box; the cup sits in the middle of "coffee"
    x1, y1, x2, y2 = dets["camera"].boxes[1]
    assert x1 < 20 and 250 < x2 < 330 and y2 - y1 > 450
    x1, y1, x2, y2 = dets["coffee"].boxes[0]
    assert 100 < x1 < 200 and 380 < x2 < 480 and y1 < 60 and 250 < y2 < 350


@pytest.mark.parametrize("letterbox", [False, True])
def test_torch_module_agrees_with_cv2_dnn(photos, letterbox):
    t = build_detector("yolov3_tiny", device="cpu", letterbox=letterbox)
    c = build_detector("yolov3_tiny_cv2", letterbox=letterbox)
    images = list(photos.values())
    for a, b in zip(t.detect(images), c.detect(images), strict=True):
        assert a.names == b.names
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)


def test_batch_equals_single(photos, yolo):
    images = list(photos.values())
    batch = yolo.detect(images)
    for im, b in zip(images, batch, strict=True):
        s = yolo.detect([im])[0]
        assert s.names == b.names
        np.testing.assert_allclose(s.boxes, b.boxes, atol=1e-3)


def test_detections_build_clips_sorts_and_roundtrips():
    d = Detections.build([[-5, -5, 20, 20], [10, 10, 10, 30], [0, 0, 50, 40]], [0, 1, 16],
                         [0.3, 0.9, 0.8], width=40, height=30)
    assert d.names == ["dog", "person"]  # the zero-width box is dropped
    assert d.boxes[1].tolist() == [0, 0, 20, 20] and d.boxes[0].tolist() == [0, 0, 40, 30]
    back = Detections.from_arrays(d.to_arrays())
    assert back.names == d.names and (back.width, back.height) == (40, 30)


def test_wrong_weights_fail_loudly(tmp_path):
    (tmp_path / "yolov3-tiny.cfg").write_text("[net]\n")
    (tmp_path / "yolov3-tiny.weights").write_bytes(b"\0" * 16)
    with pytest.raises(WeightsError):
        build_detector("yolov3_tiny", weights_dir=tmp_path).detect([np.zeros((8, 8, 3), np.uint8)])


def test_factory():
    assert build_detector("none") is None
    with pytest.raises(ConfigError):
        build_detector("detr")


def test_faster_rcnn_shapes_and_missing_weights(tmp_path, monkeypatch):
    from dupstream.workers.frcnn import FasterRCNNDetector, _torchvision_label_map, build_model

    model = build_model()  # random init: weights=None, weights_backbone=None, nothing downloaded
    assert model.roi_heads.box_predictor.cls_score.out_features == 91
    labels = _torchvision_label_map()
    assert labels[1] == 0 and labels[4] == 3 and (labels >= 0).sum() == 80
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    det = FasterRCNNDetector()
    with pytest.raises(WeightsError, match="never"):
        det.load()
    with pytest.raises(WeightsError):
        FasterRCNNDetector(weights_path=tmp_path / "nope.pth").load()


@pytest.mark.gpu
def test_gpu_fp16_batched_agrees_with_cpu(photos):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    images = list(photos.values())
    gpu = build_detector("yolov3_tiny", device="cuda", half=True)
    cpu = build_detector("yolov3_tiny", device="cpu")
    g, c = gpu.detect(images), cpu.detect(images)
    assert gpu.half and gpu.device.type == "cuda"
    for a, b in zip(g, c, strict=True):
        assert a.names[:1] == b.names[:1]
        if len(a) and len(b):
            assert abs(float(a.scores[0]) - float(b.scores[0])) < 0.03
    frcnn = build_detector("faster_rcnn", random_init=True, device="cuda", half=True)
    assert len(frcnn.detect(images)) == len(images)
