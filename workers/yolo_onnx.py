"""YOLOv3-tiny through ONNX Runtime, exported once from the parsed darknet weights.

The torch module of ``workers.darknet`` (built from the packaged, sha256-checked darknet files)
is exported with ``torch.onnx.export`` (opset 17, dynamic batch axis, fixed square input of
``size`` pixels) into a cache folder, next to the darknet weights unless one is configured.
Each exported file has a manifest beside it (``<file>.json``): its own sha256, the sha256 of the
darknet cfg + weights it came from, size, precision and the versions that wrote it. Loading
checks the source files, then the manifest against them, then the file against the manifest:
a corrupted or swapped file is a ``WeightsError`` (reason ``weights_mismatch``), never silently
different boxes.

Precisions:

* ``fp32``: the same network as the torch path; boxes agree with it to ~1e-5 (float rounding).
* ``int8``: static QDQ quantisation (ONNX Runtime; weights per channel int8, activations uint8)
  of the backbone's convolutions, pooling, routes and upsampling; the first convolution, the
  linear convolutions that give the heads their logits and the YOLO heads' decoding (sigmoid,
  exp, anchors) stay float. Activation ranges are calibrated (min/max) on
  ``CALIBRATION_VIEWS`` views of the two photos that ship with scikit-learn (a dependency), so the
  exported file is the same wherever it is made. Boxes on the golden photos: see
  ``tests/workers/test_yolo_onnx.py`` and docs/PERFORMANCE.md.

``export_yolo_onnx`` runs at set-up (``python -m dupstream.workers.yolo_onnx``, idempotent) and
lazily on first load when the file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dupstream.core.errors import ConfigError, ModelError, WeightsError
from dupstream.workers.detector import Detections
from dupstream.workers.ortsession import session_options
from dupstream.workers.weights import sha256_file
from dupstream.workers.yolo import (
    YOLO_SIZE,
    YOLOV3_TINY_CFG,
    YOLOV3_TINY_WEIGHTS,
    YoloBase,
    build_darknet,
    preprocess,
    rows_to_detections,
    yolo_files,
)

PRECISIONS = ("fp32", "int8")
OPSET = 17
INPUT, OUTPUT = "images", "rows"
#: manifest format version (bump when the manifest's meaning changes)
MANIFEST_VERSION = 1
CALIBRATION_PHOTOS = ("china.jpg", "flower.jpg")
CALIBRATION_VIEWS = 14


@dataclass(frozen=True)
class ExportedModel:
    path: Path
    sha256: str
    size: int
    precision: str
    #: True when this call wrote the file, False when a verified one was already there
    created: bool


def cache_dir_for(cfg: Path) -> Path:
    """Default cache folder: ``onnx/`` next to the darknet files."""
    return cfg.parent / "onnx"


def model_path(cache_dir: str | Path, *, size: int, precision: str) -> Path:
    return Path(cache_dir) / f"yolov3-tiny-{size}-{precision}.onnx"


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _check_args(size: int, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown detector precision {precision!r}; known: {PRECISIONS}")
    if size < 32 or size % 32:
        raise ConfigError(f"detector input size {size} must be a positive multiple of 32")


def verify_export(path: str | Path, *, size: int, precision: str) -> str:
    """The file's sha256 when it and its manifest check out against the packaged darknet
    descriptors; ``WeightsError`` otherwise (reason ``weights_mismatch`` for a file that is not
    what its manifest recorded)."""
    path = Path(path)
    manifest_file = _manifest_path(path)
    if not path.is_file():
        raise WeightsError(f"yolov3-tiny ONNX export not found at {path}")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"yolov3-tiny ONNX export {path}: manifest {manifest_file} unreadable "
                           f"({exc}); delete both files to export again",
                           reason="weights_mismatch") from exc
    expected = {"source_weights_sha256": YOLOV3_TINY_WEIGHTS.sha256,
                "source_cfg_sha256": YOLOV3_TINY_CFG.sha256, "size": size,
                "precision": precision, "manifest_version": MANIFEST_VERSION}
    wrong = {k: manifest.get(k) for k, v in expected.items() if manifest.get(k) != v}
    if wrong:
        raise WeightsError(f"yolov3-tiny ONNX export {path} was made from something else: "
                           f"{wrong} (expected {expected}); delete it to export again",
                           reason="weights_mismatch")
    digest = sha256_file(path)
    if digest != manifest.get("sha256"):
        raise WeightsError(f"yolov3-tiny ONNX export {path} has sha256 {digest}, its manifest "
                           f"recorded {manifest.get('sha256')}: corrupted or replaced; delete it "
                           f"to export again", reason="weights_mismatch")
    return digest


def export_yolo_onnx(
    *,
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    size: int = YOLO_SIZE,
    precision: str = "fp32",
    force: bool = False,
) -> ExportedModel:
    """Export (once) and verify. An existing file that verifies is kept (idempotent); one that
    does not raises ``WeightsError`` unless ``force`` (then it is replaced). A file without its
    manifest (an export cut short, or two processes exporting at once) is exported again: the
    export is deterministic and each one is moved into place whole."""
    _check_args(size, precision)
    cfg, weights = yolo_files(weights_dir)  # the source, checked against its sha256
    cache = Path(cache_dir) if cache_dir is not None else cache_dir_for(cfg)
    path = model_path(cache, size=size, precision=precision)
    # a file without its manifest is an export cut short (the manifest is written last): redo it
    if path.exists() and _manifest_path(path).exists() and not force:
        return ExportedModel(path, verify_export(path, size=size, precision=precision), size,
                             precision, created=False)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".export-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            _export_fp32(cfg, weights, size, fp32)
            out = fp32
            if precision == "int8":
                out = Path(tmp) / "int8.onnx"
                _quantize_int8(fp32, out, size=size, cfg=cfg)
            digest = sha256_file(out)
            manifest = _manifest(digest, size=size, precision=precision)
            # the model first, then its manifest: a reader never sees a manifest without its file
            os.replace(out, path)
            staged = Path(tmp) / "manifest.json"
            staged.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.replace(staged, _manifest_path(path))
    except OSError as exc:
        raise WeightsError(f"yolov3-tiny ONNX export into {cache} failed: {exc} (set a writable "
                           f"cache folder)", reason="weights_export") from exc
    return ExportedModel(path, verify_export(path, size=size, precision=precision), size,
                         precision, created=True)


def _manifest(digest: str, *, size: int, precision: str) -> dict:
    import onnxruntime
    import torch

    return {"sha256": digest, "source_weights_sha256": YOLOV3_TINY_WEIGHTS.sha256,
            "source_cfg_sha256": YOLOV3_TINY_CFG.sha256, "size": size, "precision": precision,
            "opset": OPSET, "manifest_version": MANIFEST_VERSION,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "calibration": (f"min/max over {CALIBRATION_VIEWS} views of scikit-learn's "
                            f"{', '.join(CALIBRATION_PHOTOS)}" if precision == "int8" else None)}


def _export_fp32(cfg: Path, weights: Path, size: int, out: Path) -> None:
    import warnings

    import torch

    model = build_darknet(cfg, weights, size=size)
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():  # the exporter's constant-folding notes on Slice
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (dummy,), str(out), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        except ImportError as exc:
            raise WeightsError(f"exporting YOLOv3-tiny to ONNX needs the onnx package: {exc}",
                               reason="weights_export") from exc


def calibration_images() -> list[np.ndarray]:
    """``CALIBRATION_VIEWS`` RGB views (whole, flipped, quadrants, centre) of the photos that
    ship with scikit-learn: the int8 activation ranges are measured on these."""
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    views: list[np.ndarray] = []
    for name in CALIBRATION_PHOTOS:
        bgr = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise WeightsError(f"calibration photo {folder / name} unreadable",
                               reason="weights_export")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        views += [rgb, rgb[:, ::-1], rgb[: h // 2, : w // 2], rgb[: h // 2, w // 2 :],
                  rgb[h // 2 :, : w // 2], rgb[h // 2 :, w // 2 :],
                  rgb[h // 5 : h - h // 5, w // 5 : w - w // 5]]
    views = [np.ascontiguousarray(v) for v in views]
    assert len(views) == CALIBRATION_VIEWS
    return views


def _quantize_int8(fp32: Path, out: Path, *, size: int, cfg: Path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from dupstream.workers.darknet import parse_cfg

    inputs = [preprocess(im, size=size, letterbox=True)[0][None] for im in calibration_images()]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter({INPUT: x} for x in inputs)

        def get_next(self):
            return next(self._it, None)

    blocks = parse_cfg(cfg)[1:]
    # float: the first convolution (the image itself), the linear convolutions that give the
    # heads their logits, and the YOLO heads (sigmoid / exp / anchors); each one measured on the
    # golden photos: quantising them adds or drops objects (docs/PERFORMANCE.md)
    heads = {"0"} | {str(i) for i, b in enumerate(blocks) if b["type"] == "yolo"
                     or (b["type"] == "convolutional" and b.get("activation") == "linear")}
    nodes = [n.name for n in onnx.load(str(fp32)).graph.node
             if n.name.startswith("/layers.") and n.name.split("/")[1][7:] not in heads
             and n.op_type in ("Conv", "MaxPool", "Concat", "Resize", "LeakyRelu", "Pad")]
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_quantize=nodes, extra_options={"CalibTensorRangeSymmetric": False})


class OnnxYoloDetector(YoloBase):
    """YOLOv3-tiny on ONNX Runtime (CPU by default): one ``run`` per batch (dynamic batch axis).

    ``precision``: ``fp32`` or ``int8``; ``threads``: ONNX Runtime's intra-op threads (2 by
    default: the detector runs after the embedder, in the cascade's object step or after the
    embedding of a batch, never beside it - on 2 cores 2 threads were 12-14 % faster than 1 in
    the whole pipeline; docs/PERFORMANCE.md has the measurements); ``cache_dir``: where the
    exported file lives (default ``onnx/`` next to the darknet weights); ``providers``: ONNX
    Runtime execution providers (default CPU); ``spinning``: ONNX Runtime's idle intra-op
    threads busy-wait (its default; off here, as for the embedder: the cascade's object step
    runs while another thread embeds the next batch in ``Deduper.process_many``).
    """

    def __init__(self, *, precision: str = "fp32", threads: int = 2,
                 cache_dir: str | Path | None = None, providers: Sequence[str] | None = None,
                 spinning: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        _check_args(self.size, precision)
        if threads < 1:
            raise ConfigError(f"detector threads must be >= 1, got {threads}")
        if not self.letterbox:
            raise ConfigError("the ONNX Runtime backend letterboxes (its int8 ranges were "
                              "calibrated on letterboxed input)")
        self.precision = precision
        self.kind = "yolov3_tiny_ort" if precision == "fp32" else "yolov3_tiny_ort_int8"
        self.threads = threads
        self.cache_dir = cache_dir
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.spinning = spinning
        self._session = None
        self.exported: ExportedModel | None = None

    def load(self):
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                self.exported = export_yolo_onnx(weights_dir=self.weights_dir,
                                                 cache_dir=self.cache_dir, size=self.size,
                                                 precision=self.precision)
                opts = session_options(threads=self.threads, spinning=self.spinning)
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                try:
                    self._session = ort.InferenceSession(str(self.exported.path), opts,
                                                         providers=self.providers)
                except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                    raise WeightsError(f"{self.name}: {self.exported.path} does not load in "
                                       f"ONNX Runtime: {exc}") from exc
        return self._session

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        session = self.load()
        prepped = [preprocess(im, size=self.size, letterbox=True) for im in images]
        x = np.ascontiguousarray(np.stack([p[0] for p in prepped]))
        try:
            rows = session.run([OUTPUT], {INPUT: x})[0]
        except Exception as exc:
            raise ModelError(f"{self.name} inference failed: {exc}") from exc
        return rows_to_detections(rows, images, [p[1] for p in prepped], size=self.size,
                                  conf=self.conf, nms_iou=self.nms_iou,
                                  max_detections=self.max_detections)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dupstream.workers.yolo_onnx``: export (or verify) the ONNX files at set-up."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights-dir", default=None, help="darknet files (default: packaged)")
    ap.add_argument("--cache-dir", default=None,
                    help="where the ONNX files go (default: onnx/ next to the darknet files)")
    ap.add_argument("--size", type=int, default=YOLO_SIZE)
    ap.add_argument("--precision", choices=(*PRECISIONS, "all"), default="all")
    ap.add_argument("--force", action="store_true", help="export again, replacing the files")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)  # the quantiser's advice goes to the root logger
    precisions = PRECISIONS if args.precision == "all" else (args.precision,)
    for precision in precisions:
        m = export_yolo_onnx(weights_dir=args.weights_dir, cache_dir=args.cache_dir,
                             size=args.size, precision=precision, force=args.force)
        print(f"{'exported' if m.created else 'verified'} {m.path} sha256 {m.sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
