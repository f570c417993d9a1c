"""Reading records: one ``Source`` per data-layer source, whatever its format.

A source holds ``size`` records of one or more fields (``("data", "label")`` for Data and
ImageData, the dataset names for HDF5Data) and writes the records at given indices into
caller-owned buffers (``read``).  Array formats (IDX, NPZ, HDF5, CSV, built-ins, registered
arrays) are loaded once into memory and shared by every layer that reads the same file;
image folders and lists are decoded on demand.  Labels are checked when a source opens:
each must be a class index below the class count where the source knows it.
"""

from __future__ import annotations

import io
import math
import zlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from netspec.data import catalog
from netspec.data.catalog import NPZ_DATA, NPZ_LABELS, _open_maybe_gz, resolve_path
from netspec.errors import DataError


@dataclass
class Options:
    """How to read a source, from the layer's fields."""

    need_labels: bool = True                 # the layer has a label top
    label_column: int | str | None = -1      # CSV: the label's column (index or header name)
    shape: tuple[int, ...] | None = None     # reshape each record to this (same size)
    channels: int | None = None              # images: decode with 1 or 3 channels (None: as the first image)
    size: tuple[int, int] | None = None      # images: resize to (H, W)
    bgr: bool = False                        # images: Caffe's OpenCV channel order
    root_folder: str | None = None           # image lists: prefix of the listed paths


class Source:
    """Records of ``fields``; ``shapes[k]``/``dtypes[k]`` describe one record of field k."""

    name: str = ""
    size: int = 0
    fields: tuple[str, ...] = ()
    shapes: list[tuple[int, ...]] = []
    dtypes: list[np.dtype] = []
    num_classes: int | None = None
    class_names: list[str] | None = None
    blocks: list[int] | None = None          # record counts shuffled as units (HDF5 files), in order

    def read(self, idx: np.ndarray, outs: Sequence[np.ndarray]) -> None:
        """Write records ``idx`` of field k into ``outs[k][:len(idx)]``."""
        raise NotImplementedError

    def labels(self) -> np.ndarray | None:
        """Every record's label (without decoding images), or None when there are none."""
        return None

    def where(self, i: int) -> str:
        """Where record ``i`` comes from, for messages."""
        return f"record {i} of '{self.name}'"


class ArraySource(Source):
    """Records held in memory, one array per field."""

    def __init__(self, name: str, arrays: list[np.ndarray], fields: Sequence[str], *,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 lines: np.ndarray | None = None, blocks: list[int] | None = None):
        self.name = name
        self.arrays = arrays
        self.fields = tuple(fields)
        self.size = int(arrays[0].shape[0])
        self.shapes = [tuple(a.shape[1:]) for a in arrays]
        self.dtypes = [a.dtype for a in arrays]
        self.num_classes = num_classes
        self.class_names = class_names
        self.lines = lines
        self.blocks = blocks

    def read(self, idx, outs):
        n = len(idx)
        for a, out in zip(self.arrays, outs):
            np.take(a, idx, axis=0, out=out[:n])

    def labels(self):
        return self.arrays[1] if self.fields == ("data", "label") else None

    def where(self, i):
        if self.lines is not None:
            return f"line {int(self.lines[i])} of '{self.name}'"
        return super().where(i)


class ImageSource(Source):
    """Image files decoded on demand (Pillow); every image must have the first one's size."""

    def __init__(self, name: str, items: list[tuple[Path, int, str]], channels: int,
                 size: tuple[int, int] | None, bgr: bool, first_hw: tuple[int, int],
                 num_classes: int | None = None, class_names: list[str] | None = None):
        self.name = name
        self.paths = [p for p, _, _ in items]
        self.wheres = [w for _, _, w in items]
        self.label_array = np.array([lab for _, lab, _ in items], dtype=np.int64)
        self.channels = channels
        self.resize = size
        self.bgr = bgr
        self.hw = tuple(size) if size is not None else tuple(first_hw)
        self.size = len(items)
        self.fields = ("data", "label")
        self.shapes = [(channels,) + self.hw, ()]
        self.dtypes = [np.dtype(np.uint8), np.dtype(np.int64)]
        self.num_classes = num_classes
        self.class_names = class_names

    def read(self, idx, outs):
        from netspec.data.images import decode

        data, label = outs[0], outs[1] if len(outs) > 1 else None
        for k, i in enumerate(idx):
            img = decode(self.paths[i], self.channels, self.resize, self.bgr, self.wheres[i])
            if img.shape[1:] != self.hw:
                raise DataError(f"image '{self.paths[i]}' ({self.wheres[i]}) is {img.shape[2]}x{img.shape[1]} "
                                f"(width x height), but the records are {self.hw[1]}x{self.hw[0]} (the first "
                                f"image's size); resize them all to one size"
                                + (" or give new_height and new_width" if self.resize is None else ""))
            data[k] = img.reshape(data.shape[1:])
            if label is not None:
                label[k] = self.label_array[i]

    def labels(self):
        return self.label_array

    def where(self, i):
        return self.wheres[i]


# ---- opening a source ---------------------------------------------------------------------
def open_source(source: str, base_dir: Path | None, opts: Options | None = None) -> Source:
    """The Source that ``source`` names (a built-in, ``memory:NAME``, a file or a folder)."""
    opts = opts or Options()
    bi = catalog.parse_builtin(source)
    if bi is not None:
        src = _open_builtin(*bi)
    elif source.startswith("memory:"):
        src = _open_memory(source[len("memory:"):])
    else:
        catalog.probe(source, base_dir, opts.label_column, opts.root_folder)  # the uniform "what is this" errors
        path = catalog.resolve_path(source, base_dir)
        kind = catalog.file_kind(path)
        if kind in ("folder", "list"):
            src = _open_images(path, kind, base_dir, opts)
        else:
            loader = {"idx": _load_idx, "npz": _load_npz, "hdf5": _load_hdf5_file, "csv": _load_csv}[kind]
            arrays, lines, header = _cached((kind, str(path), str(opts.label_column)),
                                            lambda: loader(path, opts))
            src = ArraySource(str(path), list(arrays), ("data", "label")[:len(arrays)], lines=lines)
    if opts.need_labels and "label" not in src.fields:
        raise DataError(f"'{src.name}' has no labels, but the layer has a label top; give the layer one top, "
                        f"or a source with labels ({_label_hint(source)})")
    if opts.shape is not None and tuple(opts.shape) != src.shapes[0]:
        _reshape_records(src, tuple(opts.shape))
    if src.labels() is not None and opts.need_labels:
        check_labels(src)
    return src


def _label_hint(source: str) -> str:
    name = source.lower()
    if "ubyte" in name or "idx" in name:
        return "an IDX images file needs its labels file beside it: train-images-idx3 -> train-labels-idx1"
    if name.endswith(".npz") or name.endswith((".h5", ".hdf5")):
        return f"an array named one of {', '.join(NPZ_LABELS)}"
    if ".csv" in name:
        return "a CSV's label column is given by label_column"
    return "labels next to the records"


def _reshape_records(src: Source, shape: tuple[int, ...]) -> None:
    have = src.shapes[0]
    if int(np.prod(shape)) != int(np.prod(have)):
        raise DataError(f"the layer's shape {list(shape)} ({int(np.prod(shape))} values) does not fit the records "
                        f"of '{src.name}', which have shape {list(have)} ({int(np.prod(have))} values)")
    if isinstance(src, ArraySource):
        src.arrays[0] = src.arrays[0].reshape((src.size,) + shape)
    src.shapes[0] = shape


def check_labels(src: Source) -> None:
    """Every label a class index (an integer >= 0, below the class count when known)."""
    y = src.labels()
    if y is None or y.size == 0:
        return
    yf = y.astype(np.float64, copy=False)
    bad = (yf < 0) | (yf != np.floor(yf)) | ~np.isfinite(yf)
    if src.num_classes is not None:
        bad |= yf >= src.num_classes
    if bad.any():
        i = int(np.argmax(bad))
        v = y[i].item()
        rule = (f"class indices 0..{src.num_classes - 1} ({src.num_classes} classes)" if src.num_classes is not None
                else "class indices 0, 1, 2, ...")
        raise DataError(f"label {v} of {src.where(i)} is not a valid class: labels must be {rule}"
                        + (f"; {int(bad.sum())} labels are bad" if bad.sum() > 1 else ""))


# ---- loading, shared between layers -------------------------------------------------------
_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, load):
    """Load once per file version (path, size, mtime) and process; the arrays become read-only."""
    path = key[1]
    try:
        st = os.stat(path)
        key = key + (st.st_size, st.st_mtime_ns)
    except OSError:
        pass
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    value = load()
    for a in value[0]:
        a.setflags(write=False)
    with _CACHE_LOCK:
        _CACHE[key] = value
    return value


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _records(a: np.ndarray) -> np.ndarray:
    """Records as blobs see them: grey images (N, H, W) gain a channel axis; scalars become (N, 1)."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 1:
        return a[:, None]
    return a


def _compact(a: np.ndarray) -> np.ndarray:
    """Whole numbers in 0..255 are stored as uint8 (a quarter of float32's memory)."""
    if a.dtype == np.uint8:
        return a
    if a.size and np.all(a == np.floor(a)) and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as an array; a DataError names a truncated record.

    The header is read first and the data only up to what it declares (plus one byte, to see
    trailing garbage), so neither a header declaring billions of records nor a gzip member
    that inflates without end makes netspec allocate more than the file really holds."""
    try:
        with _open_maybe_gz(path) as f:
            head = f.read(4)
            if len(head) == 4 and head[0] == 0 and head[1] == 0 and head[3] <= catalog.MAX_IDX_DIMS:
                head += f.read(4 * head[3])
            dtype, dims, start = catalog.parse_idx_header(head, path)
            item = np.dtype(dtype).itemsize
            record = item * math.prod(dims[1:])
            n = dims[0] if dims else 0
            if n and not record:
                raise DataError(f"'{path}' is not a valid IDX file: its header declares {n} records of 0 bytes "
                                f"(dimensions {list(dims)})")
            raw = _read_at_most(f, n * record + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read '{path}': {e} (a damaged or incomplete download?)") from None
    have = len(raw)
    if have < n * record:
        k = have // record if record else 0
        raise DataError(f"'{path}' is truncated: its header promises {n} records of {record} bytes, but the data "
                        f"ends inside record {k} (counting from 0); download it again")
    if have > n * record:
        raise DataError(f"'{path}' has bytes after its last record ({n} promised by its header): not a valid IDX "
                        f"file")
    a = np.frombuffer(raw, dtype=dtype, count=n * record // item).reshape(dims)
    return a.astype(a.dtype.newbyteorder("="), copy=False) if a.dtype.byteorder == ">" else a


def _read_at_most(f, limit: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of ``f``, read in chunks: ``f.read(limit)`` would allocate all
    ``limit`` bytes at once even when the file is short."""
    parts, got = [], 0
    while got < limit:
        b = f.read(min(chunk, limit - got))
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _load_idx(path: Path, opts: Options):
    x = _records(read_idx(path))
    lab = catalog.idx_labels_path(path)
    if lab is None:
        return [x], None, None
    y = read_idx(lab)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"labels file '{lab}' holds {list(y.shape)} values for the {x.shape[0]} records of '{path}'")
    return [x, y.astype(np.int64)], None, None


def _load_npz(path: Path, opts: Options):
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            xk = next((k for k in NPZ_DATA if k in names), None)
            if xk is None:
                raise DataError(f"'{path}' has no array named {', '.join(NPZ_DATA)} (it has: {', '.join(names)})")
            yk = next((k for k in NPZ_LABELS if k in names), None)
            for k in (xk, yk):
                if k is not None:   # refuse a header declaring more than the member holds, before loading
                    catalog.npz_header(z.zip, k + ".npy" if k + ".npy" in z.zip.namelist() else k, path)
            x = np.asarray(z[xk])
            y = np.asarray(z[yk]) if yk else None
    except catalog.NPZ_ERRORS as e:
        raise DataError(f"'{path}' is not a readable NPZ file: {e}") from None
    if x.ndim == 0:
        raise DataError(f"'{path}': array '{xk}' holds a scalar, not records")
    x = _records(x)
    if y is None:
        return [x], None, None
    return [x, _labels_1d(y, x.shape[0], path)], None, None


def _labels_1d(y: np.ndarray, n: int, path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"the labels in '{path}' have shape {list(y.shape)}; expected ({n},), one per record")
    return y


def _load_hdf5_file(path: Path, opts: Options):
    h5py = catalog._import_h5py()
    try:
        with h5py.File(path, "r") as f:
            xk = next((k for k in NPZ_DATA if k in f), None)
            if xk is None:
                raise DataError(f"'{path}' has no dataset named {', '.join(NPZ_DATA)}")
            x = catalog.h5_array(f, xk, path)
            yk = next((k for k in NPZ_LABELS if k in f), None)
            y = catalog.h5_array(f, yk, path) if yk else None
    except catalog.H5_ERRORS as e:
        raise DataError(f"cannot read HDF5 file '{path}': {e}") from None
    if x.ndim == 0:
        raise DataError(f"'{path}': dataset '{xk}' holds a scalar, not records")
    x = _records(x)
    if y is None:
        return [x], None, None
    return [x, _labels_1d(y, x.shape[0], path)], None, None


def _csv_text(path: Path) -> io.TextIOWrapper:
    return io.TextIOWrapper(_open_maybe_gz(path), encoding="utf-8", errors="replace")


def read_csv(path: Path, label_column: int | str | None = -1):
    """(values (N, D) float64, labels (N,) or None, line numbers (N,), header) of a numeric CSV."""
    header, ncols, first = catalog.csv_layout(path)
    lab = catalog.csv_label_index(label_column, header, ncols, path)
    try:
        with _csv_text(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "no data": said below as a DataError
            a = np.loadtxt(f, delimiter=",", dtype=np.float64, skiprows=first - 1, ndmin=2, comments="#")
    except (ValueError, IndexError) as e:
        _raise_bad_csv_line(path, first, ncols)
        raise DataError(f"cannot read '{path}' as a numeric CSV file: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read '{path}': {e}") from None
    lines = _csv_lines(path, first)
    if a.shape[0] != len(lines) or not len(lines):
        raise DataError(f"'{path}' holds no records" if not len(lines) else
                        f"cannot read '{path}' as a numeric CSV file: {len(lines)} record lines give {a.shape[0]} rows")
    if a.shape[1] != ncols:
        _raise_bad_csv_line(path, first, ncols)
        raise DataError(f"'{path}': expected {ncols} comma-separated values per record (as on line {first}), got "
                        f"{a.shape[1]}")
    if lab is None:
        return a, None, lines, header
    y = a[:, lab]
    x = np.delete(a, lab, axis=1)
    return x, y, lines, header


def _csv_lines(path: Path, first: int) -> np.ndarray:
    """The line number of each record (for messages about one record)."""
    out = []
    with _csv_text(path) as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if lineno >= first and s and not s.startswith("#"):
                out.append(lineno)
    return np.array(out, dtype=np.int64)


def _raise_bad_csv_line(path: Path, first: int, ncols: int) -> None:
    with _csv_text(path) as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if lineno < first or not s or s.startswith("#"):
                continue
            fields = [x.strip() for x in s.split(",")]
            if len(fields) != ncols:
                raise DataError(f"{path}:{lineno}: expected {ncols} comma-separated values (as on line {first}), "
                                f"got {len(fields)}")
            for k, v in enumerate(fields):
                if not catalog._is_number(v):
                    raise DataError(f"{path}:{lineno}: column {k + 1} ('{v}') is not a number")


def _load_csv(path: Path, opts: Options):
    x, y, lines, header = read_csv(path, opts.label_column)
    x = _compact(x)
    if y is None:
        return [x], lines, header
    return [x, y], lines, header


# ---- built-in datasets --------------------------------------------------------------------
def fixed_split(labels: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, stratified (train, test) split of record indices, the same on every machine.

    Each class gives the test set its share of ``n_test`` (largest remainders round up), taken
    at evenly spaced positions among its records in file order; no random generator involved.
    """
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    counts = np.array([len(m) for m in members], dtype=np.float64)
    quota = counts * n_test / counts.sum()
    take = np.floor(quota).astype(np.int64)
    extra = n_test - int(take.sum())
    order = np.lexsort((np.arange(len(classes)), -(quota - take)))
    take[order[:extra]] += 1
    test = []
    for m, k in zip(members, take):
        pos = ((np.arange(k) + 0.5) * len(m) / k).astype(np.int64) if k else np.zeros(0, np.int64)
        test.append(m[pos])
    test_idx = np.sort(np.concatenate(test))
    mask = np.ones(len(labels), dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def _open_builtin(b: catalog.Builtin, split: str) -> Source:
    files = catalog.builtin_files(b, split)

    def load():
        if b.name == "fashion-mnist":
            x = _records(read_idx(files[0]))
            y = read_idx(files[1]).astype(np.int64)
        else:
            # one file holds both splits: parse it once, split below
            a, y, _, _ = read_csv(files[0], -1)
            x = _compact(a).reshape((a.shape[0],) + b.sample_shape)
            y = y.astype(np.int64)
        return [x, y], None, None

    (x, y), _, _ = _cached(("builtin", str(files[0])), load)
    if b.name != "fashion-mnist":
        tr, te = fixed_split(y, b.splits["test"])
        idx = tr if split == "train" else te
        x, y = x[idx], y[idx]
    if x.shape[0] != b.splits[split] or x.shape[1:] != b.sample_shape or y.shape != (x.shape[0],):
        raise DataError(f"dataset '{b.name}:{split}' in {files[0].parent} has records {list(x.shape)} and labels "
                        f"{list(y.shape)}, expected {b.splits[split]} records of {list(b.sample_shape)}: the "
                        f"files are damaged or a different version; reinstall with: {b.install}")
    return ArraySource(f"{b.name}:{split}", [x, y], ("data", "label"), num_classes=b.num_classes,
                       class_names=list(b.class_names))


def _open_memory(name: str) -> Source:
    from netspec.data.memory import lookup

    a = lookup(name)
    x = _records(np.asarray(a.x))
    arrays = [x] if a.y is None else [x, np.asarray(a.y)]
    return ArraySource(f"memory:{name}", arrays, ("data", "label")[:len(arrays)], num_classes=a.num_classes,
                       class_names=a.class_names)


def _open_images(path: Path, kind: str, base_dir: Path | None, opts: Options) -> Source:
    from netspec.data.images import image_header, list_folder, parse_list

    if kind == "folder":
        classes, pairs = list_folder(path)
        items = [(p, lab, f"record {i}, class '{classes[lab]}'") for i, (p, lab) in enumerate(pairs)]
        num_classes, names = len(classes), classes
    else:
        root = resolve_path(opts.root_folder, base_dir) if opts.root_folder else path.parent
        items = [(p, lab, f"record {i}, line {ln} of '{path}'") for i, (p, lab, ln) in enumerate(parse_list(path, root))]
        num_classes, names = None, None
    mode, (w, h) = image_header(items[0][0], items[0][2])
    channels = opts.channels or catalog.mode_channels(mode)
    return ImageSource(str(path), items, channels, opts.size, opts.bgr, (h, w), num_classes, names)


# ---- HDF5Data -----------------------------------------------------------------------------
def open_hdf5_list(source: str, base_dir: Path | None, datasets: Sequence[str]) -> Source:
    """Every file an HDF5Data list names, loaded whole; one field per dataset (= top) name."""
    listed = catalog.resolve_path(source, base_dir)
    files = catalog.read_hdf5_list(listed, source)

    def load():
        h5py = catalog._import_h5py()
        parts: list[list[np.ndarray]] = []
        for path in files:
            try:
                with h5py.File(path, "r") as f:
                    arrays = []
                    for name in datasets:
                        if name not in f:
                            raise DataError(f"'{path}' (listed in '{listed}') has no dataset '{name}' (it has: "
                                            f"{', '.join(f.keys())}); HDF5Data tops are named after datasets")
                        arrays.append(catalog.h5_array(f, name, path))
            except catalog.H5_ERRORS as e:
                raise DataError(f"cannot read HDF5 file '{path}' (listed in '{listed}'): {e}") from None
            n = {a.shape[0] for a in arrays}
            if len(n) != 1:
                raise DataError(f"the datasets of '{path}' have different record counts: "
                                + ", ".join(f"{d} {a.shape[0]}" for d, a in zip(datasets, arrays)))
            if parts:
                for d, a, b in zip(datasets, arrays, parts[0]):
                    if a.shape[1:] != b.shape[1:]:
                        raise DataError(f"dataset '{d}' has records of shape {list(a.shape[1:])} in '{path}' but "
                                        f"{list(b.shape[1:])} in '{files[0]}'")
            parts.append(arrays)
        blocks = np.array([p[0].shape[0] for p in parts], dtype=np.int64)
        joined = [np.ascontiguousarray(np.concatenate([p[k] for p in parts]))
                  for k in range(len(datasets))]
        return joined + [blocks], None, None

    arrays, _, _ = _cached(("hdf5", str(listed), ",".join(datasets)), load)
    data, blocks = list(arrays[:-1]), [int(b) for b in arrays[-1]]
    return ArraySource(str(listed), data, datasets, blocks=blocks)
