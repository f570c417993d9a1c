"""Caffe ``.caffemodel`` files (a binary NetParameter) <-> netspec's named params (safetensors).

A small protobuf wire decoder and encoder, written for the few messages a caffemodel uses
(field numbers from caffe.proto; everything else is skipped):

    NetParameter  name=1, layer=100 (LayerParameter), layers=2 (V1LayerParameter)
    LayerParameter  name=1, type=2 (string), bottom=3, top=4, blobs=7
    V1LayerParameter  name=4, type=5 (enum), blobs=6
    BlobProto  shape=7 (BlobShape: dim=1, packed or not), data=5 (float, packed or not),
               double_data=8 (double), legacy num=1, channels=2, height=3, width=4

Reading follows ``Net::CopyTrainedLayersFrom``: each source layer's blobs go to the first target
layer of the same name (the type is not checked; a layer the net lacks is skipped and reported);
the blob count must equal the layer's param count; each blob's shape must equal its param's, or,
for a blob with only the legacy 4-D dims, the param's shape right-aligned and padded with 1s
(a stored 1x1xNxK fits a target NxK).  BatchNorm's three blobs are its ``mean``, ``variance`` and
``scale_factor``, kept exactly as Caffe stores them.  Every failure (a truncated file, a bad
length, a shape that does not fit) is a ``WeightsError`` naming the file and the byte offset or
the layer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from netspec.caffe import messages as M
from netspec.caffe.report import Report, write_bytes_atomic
from netspec.errors import NetspecError, WeightsError

# wire types
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


class WireError(Exception):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


# ---- decoding -------------------------------------------------------------------------------

def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it); a WireError when the bytes end inside it."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError("the file ends inside a number (varint)", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("a number (varint) longer than 10 bytes: the file is corrupt", start)


def iter_fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, object, int]]:
    """(field number, wire type, value, offset of the tag) for each field in ``buf[start:end]``.

    The value is an int for varints, a (start, end) byte range for length-delimited fields, and
    the start offset for fixed 32/64-bit fields.
    """
    pos = start
    while pos < end:
        tag_pos = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("a field number of 0: this is not a protobuf message (or it is corrupt)", tag_pos)
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire == LEN:
            n, pos = read_varint(buf, pos, end)
            if pos + n > end:
                raise WireError(f"a field of {n} bytes runs past the end of its message (the file is truncated "
                                f"or corrupt)", tag_pos)
            value = (pos, pos + n)
            pos += n
        elif wire == I32:
            if pos + 4 > end:
                raise WireError("the file ends inside a 4-byte value", tag_pos)
            value = pos
            pos += 4
        elif wire == I64:
            if pos + 8 > end:
                raise WireError("the file ends inside an 8-byte value", tag_pos)
            value = pos
            pos += 8
        else:
            raise WireError(f"wire type {wire} (field {number}) does not occur in Caffe files: the file is "
                            f"corrupt or not a caffemodel", tag_pos)
        yield number, wire, value, tag_pos


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class Blob:
    """One BlobProto: its values, its shape (``shape`` field), and its legacy 4-D dims if given."""

    data: np.ndarray                      # flat, float32 (data) or float64 (double_data)
    shape: tuple[int, ...] | None = None
    legacy: tuple[int, int, int, int] | None = None
    offset: int = 0                       # where it starts in the file

    @property
    def dims(self) -> tuple[int, ...]:
        if self.legacy is not None:
            return self.legacy
        return self.shape if self.shape is not None else (int(self.data.size),)


@dataclass
class SourceLayer:
    name: str
    type: str
    blobs: list[Blob] = field(default_factory=list)
    offset: int = 0


def _string(buf: bytes, rng: tuple[int, int]) -> str:
    return bytes(buf[rng[0]:rng[1]]).decode("utf-8", errors="replace")


def _packed_or_single(buf: bytes, wire: int, value, dtype: str, size: int, chunks: list, what: str,
                      tag: int) -> None:
    if wire == LEN:
        s, e = value
        if (e - s) % size:
            raise WireError(f"packed {what} of {e - s} bytes is not a whole number of {size}-byte values", tag)
        chunks.append(np.frombuffer(buf, dtype=dtype, count=(e - s) // size, offset=s))
    elif (wire == I32 and size == 4) or (wire == I64 and size == 8):
        chunks.append(np.frombuffer(buf, dtype=dtype, count=1, offset=value))
    else:
        raise WireError(f"{what} stored with wire type {wire}", tag)


def decode_blob(buf: bytes, start: int, end: int) -> Blob:
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    shape = None
    legacy = [None, None, None, None]
    for number, wire, value, tag in iter_fields(buf, start, end):
        if number == 7 and wire == LEN:
            dims: list[int] = []
            for n2, w2, v2, t2 in iter_fields(buf, *value):
                if n2 != 1:
                    continue
                if w2 == VARINT:
                    dims.append(_signed64(v2))
                elif w2 == LEN:
                    p, e = v2
                    while p < e:
                        d, p = read_varint(buf, p, e)
                        dims.append(_signed64(d))
                else:
                    raise WireError(f"BlobShape.dim stored with wire type {w2}", t2)
            shape = tuple(dims)
        elif number == 5:
            _packed_or_single(buf, wire, value, "<f4", 4, floats, "float data", tag)
        elif number == 8:
            _packed_or_single(buf, wire, value, "<f8", 8, doubles, "double data", tag)
        elif number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number - 1] = _signed64(value)
    data = np.concatenate(doubles) if doubles else (np.concatenate(floats) if floats else np.zeros(0, np.float32))
    has_legacy = any(v is not None for v in legacy)
    # Caffe compares unset legacy dims as 0 (the proto default), as ShapeEquals does
    leg = tuple(v or 0 for v in legacy) if has_legacy else None
    blob = Blob(data, shape, leg, start)
    if any(d < 0 for d in blob.dims):
        raise WireError(f"a blob of shape {list(blob.dims)}: a dimension is negative", start)
    expected = math.prod(blob.dims)   # Python integers: np.prod wraps a hostile [2**32, 2**32] to 0
    if (shape is not None or has_legacy) and expected != data.size:
        raise WireError(f"a blob of shape {list(blob.dims)} holds {data.size} values instead of {expected}", start)
    return blob


def decode_net(buf: bytes) -> tuple[str, list[SourceLayer]]:
    """The name and the layers (with their blobs) of a binary NetParameter."""
    name = ""
    layers: list[SourceLayer] = []
    for number, wire, value, tag in iter_fields(buf, 0, len(buf)):
        if number == 1 and wire == LEN:
            name = _string(buf, value)
        elif number in (100, 2) and wire == LEN:
            layers.append(_decode_layer(buf, value, v1=number == 2, offset=tag))
        elif number in (100, 2):
            raise WireError(f"a layer stored with wire type {wire}", tag)
    return name, layers


def _decode_layer(buf: bytes, rng: tuple[int, int], v1: bool, offset: int) -> SourceLayer:
    name_no, type_no, blobs_no = (4, 5, 6) if v1 else (1, 2, 7)
    layer = SourceLayer("", "", [], offset)
    for number, wire, value, tag in iter_fields(buf, *rng):
        if v1 and number == 1 and wire == LEN:
            raise WireError("a V0 layer (Caffe before 2014), which netspec does not read; upgrade the file first "
                            "with Caffe's upgrade_net_proto_binary", tag)
        if number == name_no and wire == LEN:
            layer.name = _string(buf, value)
        elif number == type_no:
            if v1 and wire == VARINT:
                enum = M.enum_name("V1LayerType", value)
                layer.type = M.V1_TYPES.get(enum or "", f"V1 type {value}")
            elif not v1 and wire == LEN:
                layer.type = _string(buf, value)
        elif number == blobs_no and wire == LEN:
            layer.blobs.append(decode_blob(buf, *value))
    return layer


def read_caffemodel(path: str | os.PathLike) -> tuple[str, list[SourceLayer]]:
    """Decode a caffemodel file; every failure is a WeightsError naming the file and byte."""
    from netspec.spec.load import display_name

    p = Path(path)
    name = display_name(p)
    if not p.is_file():
        raise WeightsError("no such file" if not p.exists() else "is not a file", file=name)
    buf = p.read_bytes()
    if not buf:
        raise WeightsError("the file is empty", file=name)
    if buf[:8] == b"\x89HDF\r\n\x1a\n":
        raise WeightsError("this is an HDF5 Caffe model (.caffemodel.h5), which netspec does not read; save it "
                           "as a binary caffemodel with pycaffe (net.save)", file=name)
    try:
        return decode_net(buf)
    except WireError as e:
        raise WeightsError(f"at byte {e.offset}: {e.message}", file=name) from None


# ---- encoding -------------------------------------------------------------------------------

def encode_varint(n: int) -> bytes:
    """Protobuf's base-128 varint of ``n`` (a negative int32/int64 as its 64-bit two's complement)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)


def _len(number: int, payload: bytes) -> bytes:
    return _key(number, LEN) + encode_varint(len(payload)) + payload


def encode_blob(arr: np.ndarray) -> bytes:
    """A BlobProto with ``shape`` and packed values: float32 as data, float64 as double_data."""
    shape = b"".join(encode_varint(int(d)) for d in arr.shape)
    out = _len(7, _len(1, shape) if arr.shape else b"")
    if arr.dtype == np.float64:
        out += _len(8, np.ascontiguousarray(arr, dtype="<f8").tobytes())
    else:
        out += _len(5, np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return out


def encode_layer(name: str, type_: str, blobs: list[np.ndarray], bottoms: list[str] = (),
                 tops: list[str] = ()) -> bytes:
    out = _len(1, name.encode()) + _len(2, type_.encode())
    out += b"".join(_len(3, b.encode()) for b in bottoms)
    out += b"".join(_len(4, t.encode()) for t in tops)
    out += b"".join(_len(7, encode_blob(a)) for a in blobs)
    return out


def encode_net(name: str, layers: list[bytes]) -> bytes:
    return (_len(1, name.encode()) if name else b"") + b"".join(_len(100, layer) for layer in layers)


# ---- mapping onto a netspec net -------------------------------------------------------------

@dataclass
class Target:
    """A layer of the netspec net: its type and its params (key, shape, owner key) in order."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    params: list[tuple[str, tuple[int, ...], str]]


def net_targets(net) -> list[Target]:
    """Every layer of a normalized net (first of each name) with the params it has in some phase."""
    from netspec import api

    try:
        res = api.check(net)
    except NetspecError as e:
        raise WeightsError(f"cannot work out the param shapes of the net: {e}", file=net.file,
                           hint="give the data shapes (--data-source or --data-shape), or use the deploy net")
    found: dict[str, Target] = {}
    for p in res.plans.values():
        for lp in p.layers:
            if lp.name in found or lp.type == "Split":
                continue
            params = [(q.key, tuple(q.shape), q.owner or q.key) for q in lp.params]
            found[lp.name] = Target(lp.name, lp.type, list(lp.bottoms), list(lp.tops), params)
    order = []
    for layer in net.layers:
        if layer["name"] in found and found[layer["name"]] not in order:
            order.append(found[layer["name"]])
    return order


def _fits(blob: Blob, shape: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: the legacy dims against the shape padded to 4 axes with leading 1s."""
    if blob.legacy is not None:
        if len(shape) > 4:
            return False
        return (1,) * (4 - len(shape)) + tuple(shape) == blob.legacy
    return tuple(blob.shape if blob.shape is not None else (blob.data.size,)) == tuple(shape)


def import_weights(path: str | os.PathLike, net, report: Report | None = None) -> dict[str, np.ndarray]:
    """The params of ``net`` (a NetSpec) found in a caffemodel, by ``layer/param`` key."""
    from netspec.spec.load import display_name

    file = display_name(path)
    report = report or Report(file, "weights")
    _, layers = read_caffemodel(path)
    targets = {t.name: t for t in net_targets(net)}
    out: dict[str, np.ndarray] = {}
    copied = 0
    for src in layers:
        if not src.blobs:
            continue
        t = targets.get(src.name)
        where = f"layer '{src.name}' ({src.type})"
        if t is None:
            report.note(where, f"ignored: the net has no layer '{src.name}' (Caffe: 'Ignoring source layer')",
                        field=f"byte {src.offset}")
            continue
        if len(src.blobs) != len(t.params):
            raise WeightsError(f"layer '{src.name}' has {len(src.blobs)} blobs in the caffemodel but {t.type} layer "
                               f"'{t.name}' learns {len(t.params)} params "
                               f"({', '.join(k.split('/')[-1] for k, _, _ in t.params) or 'none'})", file=file,
                               layer=t.name, hint="to learn this layer from scratch instead, rename it in the net")
        for k, (blob, (key, shape, owner)) in enumerate(zip(src.blobs, t.params)):
            if not _fits(blob, shape):
                raise WeightsError(f"cannot copy param {k} ({key.split('/')[-1]}) of layer '{src.name}': the "
                                   f"caffemodel's blob has shape {list(blob.dims)}, the net's param {list(shape)}",
                                   file=file, layer=t.name,
                                   hint="to learn this layer from scratch instead, rename it in the net")
            # a shared param is stored once, under its owner (later layers overwrite, as in Caffe)
            out[owner] = blob.data.reshape(shape)
            report.mapped(where, f"blobs[{k}]", key)
        copied += 1
    for t in targets.values():
        if t.params and not any(owner in out for _, _, owner in t.params):
            report.note(f"layer '{t.name}' ({t.type})", "not in the caffemodel: it starts from its fillers")
    report.summary.update({"layers": copied, "params": int(sum(a.size for a in out.values()))})
    return out


def save_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a safetensors file atomically (temporary file, then rename)."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)
    write_bytes_atomic(Path(path), data)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from netspec.spec.load import display_name

    p = Path(path)
    name = display_name(p)
    if not p.is_file():
        raise WeightsError("no such file" if not p.exists() else "is not a file", file=name)
    try:
        from safetensors.numpy import load

        return dict(load(p.read_bytes()))
    except Exception as e:  # noqa: BLE001 - the library raises several kinds for a bad file
        raise WeightsError(f"not a readable safetensors file: {e}", file=name) from None


def export_weights(tensors: dict[str, np.ndarray], net, report: Report | None = None,
                   file: str | None = None) -> bytes:
    """A V2 binary NetParameter holding, for each layer with params, its name, type, bottoms,
    tops and blobs (shape field), so Caffe's CopyTrainedLayersFrom can load it."""
    report = report or Report(file or "<weights>", "export")
    layers = []
    used = set()
    for t in net_targets(net):
        blobs = []
        for key, shape, owner in t.params:
            arr = tensors.get(key, tensors.get(owner))
            if arr is None:
                raise WeightsError(f"the weights file has no '{key}'", file=file, layer=t.name)
            used.add(key if key in tensors else owner)
            if tuple(arr.shape) != tuple(shape):
                raise WeightsError(f"'{key}' has shape {list(arr.shape)} in the weights file but {list(shape)} in "
                                   f"the net", file=file, layer=t.name)
            if arr.dtype not in (np.float32, np.float64):
                report.note(f"layer '{t.name}'", f"{key} is {arr.dtype}; written as float32")
                arr = arr.astype(np.float32)
            blobs.append(arr)
            report.mapped(f"layer '{t.name}' ({t.type})", key, f"blobs[{len(blobs) - 1}]")
        layers.append(encode_layer(t.name, t.type, blobs, t.bottoms, t.tops))
    for key in tensors:
        if key not in used:
            report.note("weights", f"'{key}' is not a param of the net; not written", field=key)
    report.summary.update({"layers": len(layers), "params": int(sum(tensors[k].size for k in used))})
    return encode_net(net.get("name", ""), layers)
