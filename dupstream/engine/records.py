"""``workers.features.ImageFeatures`` <-> ``state.records.ImageRecord``, generically.

Every numpy field of the features becomes a record array and every scalar field a meta entry,
under its field name; nested dataclasses are flattened as ``field.sub``. So a feature field added
later (detections, a semantic vector, a graph embedding, ...) travels through the LRU, the
replication feed and snapshots without a change here, as long as it is made of arrays and scalars.

One exception: the registration thumbnail (``reg``, grey, longest side 256) is kept JPEG-encoded
(quality 90, ~8-15 KB instead of up to 64 KiB raw) under ``reg.jpg`` - the extractor made the
thumbnail from those very bytes (``verify.canonical_registration``), so nothing is lost here.
It is what verification needs of a reference, and records travel through the LRU, S3 and the
replication feed. Likewise
the colour object thumbnail (``obj_thumb``, longest side 416) under ``obj.jpg`` (quality 75): the
cascade finds a reference's objects on it when a later query first needs them.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

import cv2
import numpy as np

from dupstream.core.errors import StateError
from dupstream.state.records import ImageRecord
from dupstream.workers.features import ImageFeatures
from dupstream.workers.hashing import PDQ
from dupstream.workers.verify import registration_jpeg

_SKIP = {"digest", "pdq", "timings_ms", "reg", "reg_jpeg", "obj_thumb", "obj_jpeg"}
REG_KEY = "reg.jpg"
#: the colour object thumbnail (``obj_thumb``, longest side 416): JPEG quality 75 (median 22 KB
#: on the packaged photos)
OBJ_KEY = "obj.jpg"
OBJ_JPEG_QUALITY = 75
_SCALARS = (bool, int, float, str)


def _flatten(name: str, value: Any, arrays: dict, meta: dict) -> None:
    if isinstance(value, np.ndarray):
        arrays[name] = value
    elif value is None or isinstance(value, _SCALARS):
        meta[name] = value
    elif isinstance(value, np.generic):
        meta[name] = value.item()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(f"{name}.{f.name}", getattr(value, f.name), arrays, meta)
    elif isinstance(value, list | tuple) and all(
        v is None or isinstance(v, _SCALARS) for v in value
    ):
        meta[name] = list(value)
    else:
        raise StateError(f"feature field {name!r} of type {type(value).__name__} has no "
                         "record form: use numpy arrays and scalars")


def features_to_record(image_id: str, tenant: str | None, feat: ImageFeatures) -> ImageRecord:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"pdq_quality": int(feat.pdq.quality)}
    for f in dataclasses.fields(feat):
        if f.name not in _SKIP:
            _flatten(f.name, getattr(feat, f.name), arrays, meta)
    if feat.reg_jpeg is not None and len(feat.reg_jpeg):
        # the extractor's (or a record's) own bytes: what ``reg`` was decoded from
        arrays[REG_KEY] = np.asarray(feat.reg_jpeg, np.uint8).ravel()
    elif feat.reg is not None:
        arrays[REG_KEY] = registration_jpeg(feat.reg)
    if feat.obj_thumb is not None:
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(feat.obj_thumb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, OBJ_JPEG_QUALITY])
        if ok:
            arrays[OBJ_KEY] = np.asarray(jpg, np.uint8).ravel()
    elif feat.obj_jpeg is not None:  # read from a record and not decoded: kept as it was
        arrays[OBJ_KEY] = np.asarray(feat.obj_jpeg, np.uint8).ravel()
    return ImageRecord(
        image_id=image_id, tenant=tenant, digest=feat.digest, pdq=feat.pdq.variants,
        arrays=arrays, meta=meta,
    )


#: the feature fields the cascade's object step fills in late
OBJECT_FIELDS = ("objects", "semantic", "graph")


def object_fields(feat: ImageFeatures) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The record arrays and meta of the features' object fields only (``OBJECT_FIELDS``):
    what the cascade writes into a record once an image's objects are found."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for name in OBJECT_FIELDS:
        _flatten(name, getattr(feat, name), arrays, meta)
    return arrays, meta


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass named by a hint: ``X``, ``X | None`` or ``Optional[X]``."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _plan(cls: type) -> tuple[tuple[str, type | None, bool], ...]:
    """(name, nested dataclass or None, required) of each init field of ``cls``."""
    hints = _hints(cls)
    return tuple((f.name, _dataclass_of(hints.get(f.name)),
                  f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                 for f in dataclasses.fields(cls) if f.init)


def _build(cls: type, prefix: str, rec: ImageRecord) -> Any:
    kwargs = {}
    for field_name, nested, required in _plan(cls):
        name = f"{prefix}{field_name}"
        if name in rec.arrays:
            kwargs[field_name] = rec.arrays[name]
        elif name in rec.meta:
            kwargs[field_name] = rec.meta[name]
        elif nested is not None and any(
            k.startswith(name + ".") for k in (*rec.arrays, *rec.meta)
        ):
            kwargs[field_name] = _build(nested, name + ".", rec)
        elif required:
            raise StateError(f"record {rec.image_id!r} lacks the feature field {name!r}")
    return cls(**kwargs)


def record_to_features(rec: ImageRecord) -> ImageFeatures:
    pdq = PDQ(variants=rec.pdq, quality=int(rec.meta.get("pdq_quality", 100)))
    shadow = ImageRecord(rec.image_id, rec.tenant, rec.digest, rec.pdq, rec.arrays,
                         {**rec.meta, "digest": rec.digest, "pdq": pdq})
    feat = _build(ImageFeatures, "", shadow)
    if feat.content_box is not None:
        feat.content_box = tuple(int(v) for v in feat.content_box)
    feat.reg_jpeg = rec.arrays.get(REG_KEY)  # decoded when verification first reads ``reg``
    feat.obj_jpeg = rec.arrays.get(OBJ_KEY)  # decoded by ``add_objects`` when needed
    return feat
