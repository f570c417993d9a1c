"""Caffe's BlobProto (a ``.binaryproto`` mean file) read straight from the protobuf wire format.

Only the fields a mean image uses: ``shape`` (7: a BlobShape whose ``dim`` is field 1, packed
or not), the legacy ``num``/``channels``/``height``/``width`` (1-4), ``data`` (5: float32,
packed or not) and ``double_data`` (8).  No protobuf library is needed.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from netspec.errors import DataError


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("a varint runs past the end")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")


def _fields(buf: bytes):
    """(field number, wire type, value) for each field; value is an int or the raw bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt} (field {num})")
        if i > len(buf):
            raise ValueError(f"field {num} runs past the end")
        yield num, wt, v


def _packed_varints(buf: bytes) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        v, i = _varint(buf, i)
        out.append(v)
    return out


def parse_blobproto(buf: bytes):
    """The array a serialized BlobProto holds, shaped by ``shape`` or the legacy 4 dims."""
    import numpy as np

    dims: list[int] = []
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    floats: list[bytes] = []
    doubles: list[bytes] = []
    for num, wt, v in _fields(buf):
        if num == 7 and wt == 2:
            for n2, w2, v2 in _fields(v):
                if n2 == 1:
                    dims.extend(_packed_varints(v2) if w2 == 2 else [v2])
        elif num in legacy and wt == 0:
            legacy[num] = v
        elif num == 5 and wt in (2, 5):
            floats.append(v)          # packed bytes (wt 2) or one float (wt 5): both little-endian float32
        elif num == 8 and wt in (1, 2):
            doubles.append(v)
        elif num in (5, 8):
            raise ValueError(f"{'data' if num == 5 else 'double_data'} stored with wire type {wt}")
    raw = b"".join(floats)
    if raw:
        data = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        data = np.frombuffer(b"".join(doubles), dtype="<f8").astype(np.float32)
    shape = tuple(dims) if dims else tuple(legacy[k] for k in (1, 2, 3, 4))
    if not shape or math.prod(shape) != data.size:
        raise ValueError(f"its shape {list(shape)} does not match its {data.size} values")
    return data.reshape(shape)


def read_blobproto(path: Path):
    try:
        buf = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read mean file '{path}': {e}", file=str(path)) from None
    try:
        return parse_blobproto(buf)
    except (ValueError, struct.error) as e:
        raise DataError(f"'{path}' is not a valid Caffe BlobProto (.binaryproto): {e}", file=str(path)) from None


def write_blobproto(path: Path, array) -> None:
    """Write ``array`` as a BlobProto with ``shape`` and packed float32 ``data`` (what Caffe writes)."""
    import numpy as np

    from netspec.caffe.caffemodel import encode_varint

    a = np.ascontiguousarray(array, dtype="<f4")

    dims = b"".join(encode_varint(d) for d in a.shape)
    shape_msg = b"\x0a" + encode_varint(len(dims)) + dims
    payload = a.tobytes()
    Path(path).write_bytes(b"\x3a" + encode_varint(len(shape_msg)) + shape_msg
                           + b"\x2a" + encode_varint(len(payload)) + payload)
