"""msgpack with numpy arrays, and nothing else: the one wire/disk codec of ``state`` (no pickle).

An array travels as a msgpack extension: ``{dtype, shape, raw little-endian bytes}``. Only plain
numeric and boolean dtypes are accepted, so decoding never constructs arbitrary objects.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from dupstream.core.errors import StateError

_EXT_NDARRAY = 42
_ALLOWED_KINDS = frozenset("biuf")  # bool, signed, unsigned, float


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ALLOWED_KINDS:
            raise StateError(f"cannot encode array of dtype {obj.dtype}")
        arr = obj if obj.flags.c_contiguous else obj.copy(order="C")
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        head = msgpack.packb([dt.str, list(arr.shape)])
        return msgpack.ExtType(_EXT_NDARRAY, head + arr.astype(dt, copy=False).tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    raise StateError(f"cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _EXT_NDARRAY:
        raise StateError(f"unknown msgpack extension {code}")
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    dtype_str, shape = next(unpacker)
    dtype = np.dtype(dtype_str)
    if dtype.kind not in _ALLOWED_KINDS:
        raise StateError(f"refusing to decode array of dtype {dtype}")
    offset = unpacker.tell()
    count = int(np.prod(shape)) if shape else 1
    if len(data) - offset != count * dtype.itemsize:
        raise StateError("array payload does not match its shape")
    return np.frombuffer(data, dtype=dtype, offset=offset, count=count).reshape(tuple(shape)).copy()


def pack(obj: Any) -> bytes:
    """Encode plain data (dict/list/str/int/float/bytes/None/bool) and numpy arrays."""
    try:
        return msgpack.packb(obj, default=_default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StateError(f"cannot encode: {exc}") from exc


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data, ext_hook=_ext_hook, raw=False, strict_map_key=False, use_list=True
        )
    except StateError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise StateError(f"cannot decode: {exc}") from exc
