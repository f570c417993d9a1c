"""Weights files (safetensors, keys ``<layer>/<param>``) and copying them into a net by name.

``read_safetensors`` checks the file's structure itself before decoding it, so a truncated,
corrupt or foreign file is a ``WeightsError`` naming the file and what is wrong with it
(never a traceback from the decoder).  ``copy_weights`` is Caffe's
``Net::CopyTrainedLayersFrom`` over named params: a param whose key the source has is copied
(a legacy 4-D shape padded with leading 1s, as ``1x1xNxK`` for ``NxK``, still matches); a
shape mismatch stops with Caffe's hint unless the layer matches a ``reinit`` glob; params the
source lacks keep their fillers; source layers the net lacks are ignored.  No pickle anywhere.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from netspec.errors import WeightsError
from netspec.io.atomic import atomic_write

WEIGHTS_FORMAT = "netspec-weights"
DIFF_PREFIX = "diff/"   # gradients saved with snapshot_diff; never copied into a net

_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
           "U16": 2, "U8": 1, "BOOL": 1}


def _show(path: str | os.PathLike) -> str:
    from netspec.spec.load import display_name

    return display_name(path)


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write atomically (a crash leaves the old file or the new one, never half of one)."""
    return atomic_write(path, encode(tensors, metadata))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; every defect is a located WeightsError."""
    p = Path(path)
    name = _show(p)
    if not p.exists():
        raise WeightsError("no such weights file", file=name)
    if p.is_dir():
        raise WeightsError("is a folder, expected a .safetensors weights file", file=name)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise WeightsError(f"cannot read the file: {e.strerror}", file=name) from None
    return decode(raw, name)


def decode(raw: bytes, name: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    def bad(msg: str) -> WeightsError:
        return WeightsError(msg, file=name)

    size = len(raw)
    if size < 8:
        raise bad(f"is not a safetensors file: {size} bytes is too short to hold its header "
                  f"(empty or truncated?)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > size - 8:
        if raw[:1] in (b"\x0a", b"\x08") or raw[:2] == b"\x89H":
            raise bad("is not a safetensors file (a Caffe .caffemodel or HDF5 file? convert it with "
                      "'netspec convert')")
        raise bad(f"is truncated or not a safetensors file: its header claims {n} bytes but only "
                  f"{size - 8} follow the size field")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("is corrupt or not a safetensors file: its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise bad("is corrupt: its header is not a mapping of tensors")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("is corrupt: its __metadata__ is not a mapping of strings")
    data_len = size - 8 - n

    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    # every size is checked here, in Python integers, before the library allocates anything
    for key, info in header.items():
        try:
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise bad(f"is corrupt: the entry for '{key}' lacks dtype, shape or data_offsets") from None
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise bad(f"tensor '{key}' has dtype {dtype}, which netspec does not read")
        if not isinstance(shape, list) or not all(whole(d) for d in shape):
            raise bad(f"is corrupt: tensor '{key}' has shape {shape}, not a list of sizes")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(whole(o) for o in offsets) \
                or offsets[0] > offsets[1]:
            raise bad(f"is corrupt: tensor '{key}' has data_offsets {offsets}, not [begin, end]")
        begin, end = offsets
        if end > data_len:
            raise bad(f"is truncated: tensor '{key}' ends at byte {8 + n + end} but the file has {size} bytes "
                      f"(was it copied or written completely?)")
        if end - begin != _DTYPES[dtype] * math.prod(shape):
            raise bad(f"is corrupt: tensor '{key}' has shape {shape} but {end - begin} bytes of data")
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(raw)
    except SafetensorError as e:
        raise bad(f"is corrupt: {e}") from None
    return tensors, {str(k): str(v) for k, v in meta.items()}


def save_weights(path: str | os.PathLike, net, metadata: dict[str, str] | None = None,
                 with_diff: bool = False) -> Path:
    """The params a net owns, as float32 under ``<layer>/<param>`` (plus ``diff/...`` with_diff)."""
    from netspec.core.device import to_host

    tensors = {p.key: to_host(p.blob.data).astype(np.float32) for p in net.learnable}
    if with_diff:
        tensors.update({DIFF_PREFIX + p.key: to_host(p.blob.grad).astype(np.float32) for p in net.learnable})
    meta = {"format": WEIGHTS_FORMAT}
    meta.update(metadata or {})
    return write_safetensors(path, tensors, meta)


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The param tensors of a weights file (gradients saved beside them are left out)."""
    tensors, _ = read_safetensors(path)
    return {k: v for k, v in tensors.items() if not k.startswith(DIFF_PREFIX)}


# ---- copying by name ---------------------------------------------------------------------

@dataclass
class Row:
    key: str
    shape: tuple
    status: str                  # copied | not in source | reinit | shape mismatch
    source_shape: tuple | None = None
    frozen: bool = False


@dataclass
class Transfer:
    """What ``copy_weights`` did, param by param."""

    source: str
    rows: list[Row] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)    # source layers the net does not have

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    def table(self) -> str:
        head = ("param", "shape", "status", "frozen")
        body = []
        for r in self.rows:
            status = r.status
            if r.source_shape is not None and r.status != "copied":
                status += f" (source {'x'.join(map(str, r.source_shape))})"
            body.append((r.key, "x".join(map(str, r.shape)) or "scalar", status, "frozen" if r.frozen else ""))
        rows = [head] + body
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [f"Weights from {self.source}:"]
        for k, row in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if k == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        for layer in self.ignored:
            lines.append(f"  ignoring source layer {layer} (not in this net)")
        lines.append(f"  {self.count('copied')} copied, {self.count('not in source')} not in source, "
                     f"{self.count('reinit')} reinitialized, {sum(r.frozen for r in self.rows)} frozen")
        return "\n".join(lines)


def matches(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def _fits(src_shape: tuple, dst_shape: tuple) -> bool:
    """Equal shapes, or Caffe's legacy rule: leading 1s do not count (1x1xNxK fits NxK)."""
    if tuple(src_shape) == tuple(dst_shape):
        return True

    def strip(s):
        s = list(s)
        while len(s) > 1 and s[0] == 1:
            s.pop(0)
        return tuple(s)

    return strip(src_shape) == strip(dst_shape)


def copy_weights(net, source: dict[str, np.ndarray], source_name: str, reinit: Iterable[str] = (),
                 strict_shapes: bool = True) -> Transfer:
    """Copy ``source`` into the params ``net`` owns, by ``layer/param`` key.

    A shape mismatch on a layer no ``reinit`` glob names raises one WeightsError listing
    every such param, with Caffe's advice to rename the layer.
    """
    from netspec.core.device import copy_in

    reinit = list(reinit)
    report = Transfer(source_name)
    mismatches: list[str] = []
    net_layers = {lp.name for lp in net.layers}
    for p in net.learnable:
        shape = tuple(p.blob.data.shape)
        frozen = p.lr_mult == 0
        src = source.get(p.key)
        if matches(p.info.layer, reinit):
            report.rows.append(Row(p.key, shape, "reinit", None if src is None else tuple(src.shape), frozen))
            continue
        if src is None:
            report.rows.append(Row(p.key, shape, "not in source", None, frozen))
            continue
        if not _fits(src.shape, shape):
            report.rows.append(Row(p.key, shape, "shape mismatch", tuple(src.shape), frozen))
            mismatches.append(f"cannot copy param '{p.info.name}' of layer '{p.info.layer}': the source has "
                              f"shape {list(src.shape)} ({src.size} values), this net needs {list(shape)} "
                              f"({p.blob.data.size})")
            continue
        copy_in(p.blob.data, np.asarray(src, dtype=p.blob.data.dtype).reshape(shape))
        report.rows.append(Row(p.key, shape, "copied", tuple(src.shape), frozen))
    for key in source:
        layer = key.split("/", 1)[0]
        if layer not in net_layers and layer not in report.ignored:
            report.ignored.append(layer)
    if mismatches and strict_shapes:
        layers = sorted({m.split("layer '", 1)[1].split("'", 1)[0] for m in mismatches})
        raise WeightsError("; ".join(mismatches) + ". To learn these parameters from scratch rather than "
                           "copying them from a saved net, rename the layer, or list it under reinit: "
                           f"(reinit: [{', '.join(layers)}])", file=source_name)
    return report
