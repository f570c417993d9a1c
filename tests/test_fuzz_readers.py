"""Hostile input to every reader a user can point at a file from elsewhere.

Each reader gets files made by hypothesis (derandomized: the same cases on every run): a valid
file damaged byte by byte (flipped, inserted, deleted bytes, a file cut short, a size field
overwritten with a huge or negative number), and files built from scratch with a hostile
structure (deep nesting, alias bombs, headers that declare enormous tensors, images that
declare more pixels than their bytes can hold).  Every case must end, within a bounded time and
a bounded peak of traced memory, in either a result or a ``NetspecError`` whose message names
the file.  Never another exception, never a hang, never an allocation the file cannot justify.

The default run tries a modest number of cases per reader; the ``slow`` variant many more.
``NETSPEC_FUZZ_REPORT=<file.json>`` writes the cases tried and the largest traced peak per
reader (the figures in the README).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from netspec.caffe.caffemodel import encode_varint as _varint  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASE_SECONDS = 30.0            # a case that runs longer is a hang (generous: CI cores are shared)
CASE_BYTES = 64 << 20          # traced peak per case; every seed file is < 64 KiB
FAST = 25                      # cases per reader in the default run, and in the slow run:
SLOW = int(os.environ.get("NETSPEC_FUZZ_EXAMPLES", "200"))

STATS: dict[str, dict] = {}
TRACE = True                   # off in the subprocess that measures resident memory instead


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so no reader's ``except Exception`` swallows it."""


def _alarm(signum, frame):
    raise CaseTimeout()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    out = os.environ.get("NETSPEC_FUZZ_REPORT")
    if out:
        old = json.loads(Path(out).read_text()) if Path(out).exists() else {}
        for k, v in STATS.items():
            o = old.get(k, {"cases": 0, "peak_bytes": 0, "errors": 0, "results": 0, "max_seconds": 0.0})
            old[k] = {"cases": o["cases"] + v["cases"], "errors": o["errors"] + v["errors"],
                      "results": o["results"] + v["results"],
                      "peak_bytes": max(o["peak_bytes"], v["peak_bytes"]),
                      "max_seconds": max(o["max_seconds"], v["max_seconds"])}
        Path(out).write_text(json.dumps(old, indent=1, sort_keys=True))


def attempt(reader: str, fn, path: Path, shown: str | None = None) -> object:
    """Run ``fn(path)`` under the time and memory bounds; the result or None for a NetspecError."""
    stats = STATS.setdefault(reader, {"cases": 0, "peak_bytes": 0, "errors": 0, "results": 0, "max_seconds": 0.0})
    if TRACE:
        tracemalloc.start()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    t0 = time.perf_counter()
    result = err = None
    try:
        result = fn(path)
    except CaseTimeout:
        pytest.fail(f"{reader}: no answer within {CASE_SECONDS} s for {path}")
    except NetspecError as e:
        err = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1] if TRACE else 0
        if TRACE:
            tracemalloc.stop()
    stats["cases"] += 1
    stats["max_seconds"] = max(stats["max_seconds"], time.perf_counter() - t0)
    stats["peak_bytes"] = max(stats["peak_bytes"], peak)
    assert peak < CASE_BYTES, f"{reader}: {peak / 2**20:.0f} MiB traced for a {path.stat().st_size}-byte file"
    if err is None:
        stats["results"] += 1
        return result
    stats["errors"] += 1
    text = str(err)
    assert "Traceback" not in text
    names = {str(path.parent), path.name, shown or path.name}   # the file, or another in the case's folder
    errors = getattr(err, "errors", None) or [err]
    for e in errors:
        where = (e.file or "") + " " + str(e)
        assert any(n in where for n in names), f"{reader}: the error does not name the file: {e}"
    return None


# ---- damage to bytes ------------------------------------------------------------------------
HUGE = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1 << 40, 1 << 62, (1 << 64) - 1, 0, 1, 255, 65536]


@st.composite
def damaged(draw, seed: bytes) -> bytes:
    """``seed`` with one to four slips: bytes flipped, inserted, deleted, a cut, a huge number."""
    b = bytearray(seed)
    for _ in range(draw(st.integers(1, 4), label="slips")):
        how = draw(st.sampled_from(["flip", "insert", "delete", "cut", "number", "repeat"]), label="how")
        k = draw(st.integers(0, max(0, len(b) - 1)), label="at")
        if how == "flip" and b:
            b[k] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            b[k:k] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete" and b:
            del b[k:k + draw(st.integers(1, 16))]
        elif how == "cut":
            del b[k:]
        elif how == "number":
            n = draw(st.sampled_from(HUGE))
            width, order = draw(st.sampled_from([(4, "<"), (4, ">"), (8, "<"), (8, ">")]))
            b[k:k + width] = (n % (1 << 8 * width)).to_bytes(width, "little" if order == "<" else "big")
        elif how == "repeat" and b:
            b[k:k] = bytes(b[k:k + draw(st.integers(1, 64))]) * draw(st.integers(2, 50))
    return bytes(b)


def _write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.write_bytes(data)
    return p


_DIRS: dict[str, Path] = {}


def workdir(reader: str) -> Path:
    """One folder per reader, emptied before each case."""
    d = _DIRS.get(reader)
    if d is None:
        d = _DIRS[reader] = Path(tempfile.mkdtemp(prefix=f"fuzz-{reader}-"))
    for p in d.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return d


READERS: dict[str, tuple[dict, object]] = {}


def reader_test(**strategies):
    """The default-run test of a reader (FAST cases); the body and strategies are kept for the
    slow run, which gives the same body SLOW cases."""
    def wrap(body):
        READERS[body.__name__[len("test_"):]] = (strategies, body)
        return fuzz(FAST)(given(**strategies)(body))
    return wrap


def fuzz(n: int):
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# ---- text formats: nets, solvers, manifests, prototxt ---------------------------------------
KEYS = ["netspec", "name", "layers", "type", "bottom", "top", "include", "exclude", "phase", "source",
        "batch_size", "shape", "num_output", "kernel_size", "stride", "pad", "weight_filler", "param",
        "transform", "scale", "lr_mult", "solver", "base_lr", "lr_policy", "max_iter", "net", "plugins",
        "stage", "level", "weights", "sha256", "input", "metrics", "dataset", "loss_weight", "test_iter"]
TYPES = ["Input", "Data", "Convolution", "Pooling", "InnerProduct", "ReLU", "SoftmaxWithLoss", "Accuracy",
         "Concat", "Reshape", "Eltwise", "BatchNorm", "Scale", "Dropout", "Flatten", "Slice", "Split"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.sampled_from(TYPES + KEYS + ["TRAIN", "TEST", "MAX", "fashion-mnist:train", "zoo:x"]),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)), max_leaves=40)
layer = st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c", "data"]), "type": st.sampled_from(TYPES)},
                              optional={k: values for k in KEYS[4:20]})
documents = st.one_of(
    values,
    st.fixed_dictionaries({"name": st.text(max_size=8), "layers": st.lists(layer, max_size=6)},
                          optional={"netspec": scalars, "include": values, "solver": values}),
)


def _yaml_bombs() -> list[str]:
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = f"*a{i - 1}"
        laughs.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    deep = "layers: " + "[" * 5000 + "]" * 5000
    recursive = "a: &a [*a]\nlayers: *a\n"
    deep_map = "layers: " + "{a: " * 3000 + "1" + "}" * 3000
    long_line = "name: " + "x" * 300_000
    many_keys = "\n".join(f"k{i}: {i}" for i in range(5000))
    merge = "x: &x {a: 1}\n" + "\n".join(f"y{i}: &y{i} {{<<: *{'x' if i == 0 else f'y{i - 1}'}, b{i}: 1}}"
                                           for i in range(300))
    return ["\n".join(laughs) + "\nlayers: *a11\n", deep, recursive, deep_map, long_line, many_keys, merge,
            "layers:\n" + "  - " * 2000 + "a\n", "!!python/object:os.system {}\n", "a: !!binary AAAA\nlayers: []\n",
            "layers: [{name: a, type: Input, shape: [" + ", ".join(["99999999"] * 8) + "]}]\n",
            "layers: [{name: a, type: Input, shape: [[" + "2, " * 30 + "2]]}]\n"]


MODEL_TEXTS = [p.read_bytes() for p in sorted((ROOT / "models").glob("*/*.yaml"))]
SOLVER_TEXTS = [p.read_bytes() for p in sorted((ROOT / "solvers").glob("*.yaml"))]


def _check_net(path: Path):
    from netspec import api

    return api.check(api.load_net(path))


def _load_solver(path: Path):
    from netspec.solvers.config import load_solver

    return load_solver(path)


text_cases = st.one_of(
    st.sampled_from(MODEL_TEXTS).flatmap(lambda s: damaged(s)),
    documents.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    documents.map(lambda d: __import__("yaml").safe_dump(d, allow_unicode=True).encode()),
    st.sampled_from(_yaml_bombs()).map(str.encode),
    st.binary(max_size=200),
)


def _net_yaml(data: bytes):
    d = workdir("net-yaml")
    attempt("net-yaml", _check_net, _write(d, "net.yaml", data))


def _net_json(data: bytes):
    d = workdir("net-json")
    attempt("net-json", _check_net, _write(d, "net.json", data))


def _solver(data: bytes):
    d = workdir("solver")
    for p in sorted((ROOT / "models").glob("*/train_val.yaml"))[:1]:
        shutil.copy(p, d / "train_val.yaml")
    attempt("solver", _load_solver, _write(d, "solver.yaml", data))


json_cases = st.one_of(
    documents.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    st.sampled_from([json.dumps(__import__("yaml").safe_load(t)).encode() for t in MODEL_TEXTS[:3]])
    .flatmap(lambda s: damaged(s)),
    st.sampled_from(["[" * 100000, "{\"layers\": " + "[" * 50000 + "]" * 50000 + "}"]).map(str.encode),
)
solver_cases = st.one_of(
    st.sampled_from(SOLVER_TEXTS).flatmap(lambda s: damaged(s)),
    documents.map(lambda d: __import__("yaml").safe_dump(d).encode()),
    st.fixed_dictionaries({"net": st.sampled_from(["train_val.yaml", "missing.yaml", ".", ""])},
                          optional={k: values for k in ["base_lr", "lr_policy", "max_iter", "type", "solver",
                                                        "snapshot_prefix", "test_iter", "stepvalue"]})
    .map(lambda d: __import__("yaml").safe_dump(d).encode()),
)


@reader_test(data=text_cases)
def test_net_yaml(data):
    _net_yaml(data)


@reader_test(data=json_cases)
def test_net_json(data):
    _net_json(data)


@reader_test(data=solver_cases)
def test_solver_file(data):
    _solver(data)


# ---- zoo manifests --------------------------------------------------------------------------
ZOO = ROOT / "zoo" / "lenet-fashion-mnist"
MANIFEST = (ZOO / "manifest.yaml").read_bytes()


def _zoo(data: bytes):
    from netspec.zoo_registry import load_entry, verify_weights

    d = workdir("zoo") / "lenet-fashion-mnist"
    d.mkdir()
    _write(d, "manifest.yaml", data)
    for name in ("train_val.yaml", "solver.yaml"):
        shutil.copy(ZOO / name, d / name)
    (d / "weights.safetensors").symlink_to(ZOO / "weights.safetensors")   # the real file: sha256 verifies

    def read(path):
        entry = load_entry(d)
        return verify_weights(entry)

    attempt("zoo-manifest", read, d / "manifest.yaml")


zoo_cases = st.one_of(
    damaged(MANIFEST),
    documents.map(lambda d: __import__("yaml").safe_dump(d).encode()),
    st.dictionaries(st.sampled_from(["name", "net", "weights", "sha256", "solver", "metrics", "input",
                                     "dataset", "parent", "netspec", "evaluation", "task"]), values)
    .map(lambda d: __import__("yaml").safe_dump(d).encode()),
)


@reader_test(data=zoo_cases)
def test_zoo_manifest(data):
    _zoo(data)


# ---- Caffe prototxt --------------------------------------------------------------------------
PROTOTXTS = [p.read_bytes() for p in sorted((ROOT / "tests" / "fixtures" / "caffe").glob("*.prototxt"))]
SOLVER_PROTOTXT = (b'net: "net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "step"\nstepsize: 100\n'
                   b'gamma: 0.1\nmax_iter: 1000\nsnapshot_prefix: "snap/lenet"\nsolver_mode: CPU\n'
                   b'test_iter: 10\ntest_interval: 100\ntype: "SGD"\n')


def _prototxt_bombs() -> list[bytes]:
    return [b"layer " + b"{ a " * 20000 + b"}" * 20000, b"layer {" * 20000, b'name: "' + b"\\" * 100000,
            b"input_dim: 99999999999999999999999999\n" * 4, b"layer { name: \"x\" type: \"Input\" input_param { "
            b"shape { dim: 4294967296 dim: 4294967296 dim: 4294967296 } } }",
            b"layer { " + b"bottom: \"x\" " * 20000 + b"}", b"# " + b"x" * 1_000_000]


def _convert_net(path: Path):
    from netspec.caffe.convert_net import convert_net_file

    return convert_net_file(path)


def _convert_solver(path: Path):
    from netspec.caffe.convert_solver import convert_solver_file

    return convert_solver_file(path)


prototxt_cases = st.one_of(st.sampled_from(PROTOTXTS).flatmap(lambda s: damaged(s)),
                           st.sampled_from(_prototxt_bombs()), st.binary(max_size=100))


@reader_test(data=prototxt_cases)
def test_prototxt_net(data):
    d = workdir("prototxt")
    attempt("prototxt-net", _convert_net, _write(d, "net.prototxt", data))


@reader_test(data=st.one_of(damaged(SOLVER_PROTOTXT), st.sampled_from(_prototxt_bombs())))
def test_prototxt_solver(data):
    d = workdir("prototxt-solver")
    _write(d, "net.prototxt", PROTOTXTS[0])
    attempt("prototxt-solver", _convert_solver, _write(d, "solver.prototxt", data))


# ---- .caffemodel and .binaryproto ------------------------------------------------------------
def _caffemodel_seed() -> bytes:
    from netspec.caffe.caffemodel import encode_layer, encode_net

    rng = np.random.default_rng(0)
    layers = [encode_layer("conv1", "Convolution", [rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
                                                    rng.standard_normal(4).astype(np.float32)], ["data"], ["conv1"]),
              encode_layer("ip1", "InnerProduct", [rng.standard_normal((3, 16)).astype(np.float32)],
                           ["conv1"], ["ip1"])]
    return encode_net("tiny", layers)


def _blob_with_shape(dims: list[int], nvalues: int) -> bytes:
    shape = b"".join(b"\x08" + _varint(d % (1 << 64)) for d in dims)
    data = struct.pack(f"<{nvalues}f", *([1.0] * nvalues))
    return b"\x3a" + _varint(len(shape)) + shape + b"\x2a" + _varint(len(data)) + data


def _caffemodel_hostile() -> list[bytes]:
    def net(blob: bytes) -> bytes:
        layer = b"\x0a\x01a\x12\x0bConvolution" + b"\x3a" + _varint(len(blob)) + blob
        return b"\xa2\x06" + _varint(len(layer)) + layer   # field 100, LEN

    return [net(_blob_with_shape([1 << 40, 1 << 40], 4)), net(_blob_with_shape([-1, -4], 4)),
            net(_blob_with_shape([0] * 200, 0)), net(_blob_with_shape([(1 << 64) - 1], 1)),
            b"\xa2\x06\xff\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x0a" + b"\xff" * 11]


def _import_caffemodel(path: Path):
    from netspec.caffe.caffemodel import read_caffemodel

    name, layers = read_caffemodel(path)
    return [(l.name, l.type, [b.dims for b in l.blobs]) for l in layers]


@reader_test(data=st.one_of(damaged(_caffemodel_seed()), st.sampled_from(_caffemodel_hostile()), st.binary(max_size=64)))
def test_caffemodel(data):
    d = workdir("caffemodel")
    attempt("caffemodel", _import_caffemodel, _write(d, "net.caffemodel", data))


def _blobproto_seed() -> bytes:
    from netspec.data.blobproto import write_blobproto

    d = Path(tempfile.mkdtemp())
    write_blobproto(d / "mean.binaryproto", np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4))
    out = (d / "mean.binaryproto").read_bytes()
    shutil.rmtree(d)
    return out


def _read_blobproto(path: Path):
    from netspec.data.blobproto import read_blobproto

    return read_blobproto(path)


@reader_test(data=st.one_of(damaged(_blobproto_seed()), st.sampled_from(
    [_blob_with_shape([1 << 40, 1 << 40], 4), _blob_with_shape([0, 5], 0), _blob_with_shape([3] * 64, 0),
     b"\x2d\x00\x00\x80\x3f" * 3, b"\x29" + b"\x00" * 8, b"\x28\x05"]), st.binary(max_size=64)))
def test_binaryproto(data):
    d = workdir("binaryproto")
    attempt("binaryproto", _read_blobproto, _write(d, "mean.binaryproto", data))


# ---- safetensors weights and solver states ---------------------------------------------------
def _safetensors_seed() -> bytes:
    from netspec.io.weights import encode

    rng = np.random.default_rng(0)
    return encode({"conv1/weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
                   "conv1/bias": np.zeros(4, np.float32), "ip/weight": np.ones((2, 3), np.float64)},
                  {"format": "netspec-weights"})


def _header(h: object, data_len: int) -> bytes:
    text = json.dumps(h).encode()
    return struct.pack("<Q", len(text)) + text + b"\x00" * data_len


header_entries = st.fixed_dictionaries(
    {}, optional={"dtype": st.one_of(st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "X"]), values),
                  "shape": st.one_of(st.lists(st.sampled_from([0, 1, 3, -1, 1 << 31, 1 << 62, 1 << 70]), max_size=4),
                                     values),
                  "data_offsets": st.one_of(st.lists(st.sampled_from([0, 4, 12, 48, -8, 1 << 62, 1 << 70]),
                                                     min_size=0, max_size=3), values)})
headers = st.one_of(
    st.dictionaries(st.sampled_from(["a", "b/weight", "__metadata__"]), st.one_of(header_entries, values), max_size=3),
    values)
safetensors_cases = st.one_of(damaged(_safetensors_seed()),
                              st.tuples(headers, st.sampled_from([0, 12, 48])).map(lambda t: _header(*t)),
                              st.binary(max_size=40))


def _read_weights(path: Path):
    from netspec.io.weights import load_weights

    return {k: (v.shape, v.dtype) for k, v in load_weights(path).items()}


@reader_test(data=safetensors_cases)
def test_safetensors_weights(data):
    d = workdir("safetensors")
    attempt("safetensors", _read_weights, _write(d, "w.safetensors", data))


def _state_seed() -> bytes:
    from netspec.io.snapshot import write_state

    d = Path(tempfile.mkdtemp())
    p = d / "s.solverstate.safetensors"
    write_state(p, {"ip/weight/history": np.zeros((2, 3), np.float32)},
                {"iter": 7, "rule": {"history": "@ip/weight/history"}}, "name: n\nlayers: []\n", "base_lr: 0.1\n")
    out = p.read_bytes()
    shutil.rmtree(d)
    return out


def _read_state(path: Path):
    from netspec.io.snapshot import read_state

    tensors, record, net, solver = read_state(path)
    return len(tensors), sorted(record) if isinstance(record, dict) else record


@reader_test(data=st.one_of(damaged(_state_seed()), safetensors_cases))
def test_solver_state(data):
    d = workdir("state")
    attempt("solverstate", _read_state, _write(d, "s.solverstate.safetensors", data))


# ---- datasets: IDX, NPZ, HDF5, CSV, images -------------------------------------------------
def _read_all(source: str):
    """Open a data source as a Data layer does and read every record once."""
    from netspec.data.sources import Options, clear_cache, open_source

    clear_cache()
    src = open_source(source, None, Options())
    n = min(src.size, 64)
    outs = [np.empty((n,) + tuple(s), dtype=d) for s, d in zip(src.shapes, src.dtypes)]
    src.read(np.arange(n), outs)
    return src.size, [o.shape for o in outs]


def _idx(dims: tuple[int, ...], code: int = 0x08, data: bytes | None = None) -> bytes:
    head = bytes([0, 0, code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    if data is None:
        data = bytes(int(np.prod(dims)) if dims else 0)
    return head + data


IDX_IMAGES = _idx((5, 4, 4), data=bytes(range(80)))
IDX_LABELS = _idx((5,), data=bytes([0, 1, 2, 3, 4]))
IDX_HOSTILE = [_idx((0xFFFFFFFF, 0xFFFFFFFF), data=b""), _idx((1 << 31, 1 << 20, 1 << 20), data=b"\x00" * 16),
               _idx((2,) * 255, data=b""), _idx(()), _idx((0, 1 << 31), data=b""),
               bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 3) + b"\x00" * 11,
               gzip.compress(_idx((1 << 30,), data=b"")), gzip.compress(IDX_IMAGES + b"\x00" * (1 << 22)),
               gzip.compress(_idx((4,), data=b"\x00" * 4))[:-5]]


@reader_test(images=st.one_of(damaged(IDX_IMAGES), st.sampled_from(IDX_HOSTILE)),
       labels=st.one_of(st.just(IDX_LABELS), damaged(IDX_LABELS), st.sampled_from(IDX_HOSTILE)),
       gz=st.booleans())
def test_idx(images, labels, gz):
    d = workdir("idx")
    suffix = ".gz" if gz else ""
    _write(d, "t-labels-idx1-ubyte" + suffix, gzip.compress(labels) if gz else labels)
    p = _write(d, "t-images-idx3-ubyte" + suffix, gzip.compress(images) if gz else images)
    attempt("idx", lambda path: _read_all(str(path)), p)


def _npz(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _npy_member(header: dict, data: bytes = b"") -> bytes:
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.npy", npy)
    return buf.getvalue()


NPZ_SEED = _npz({"data": np.arange(48, dtype=np.uint8).reshape(3, 4, 4), "label": np.array([0, 1, 2])})
NPZ_HOSTILE = [
    _npy_member({"descr": "<f8", "fortran_order": False, "shape": (1 << 30, 1 << 10)}),
    _npy_member({"descr": "<f8", "fortran_order": False, "shape": (1 << 34,)}, b"\x00" * 64),
    _npy_member({"descr": "|O", "fortran_order": False, "shape": (2,)}, b"\x00" * 16),
    _npy_member({"descr": "<f4", "fortran_order": False, "shape": (-1, 3)}),
    _npy_member({"descr": [("a", "<f4")] * 1, "fortran_order": False, "shape": (2,)}, b"\x00" * 8),
    _npy_member({"descr": "<U100000000", "fortran_order": False, "shape": (8,)}),
    _npz({"data": np.zeros((1000, 1000), np.uint8)}, compressed=True),
]


@reader_test(data=st.one_of(damaged(NPZ_SEED), st.sampled_from(NPZ_HOSTILE), damaged(NPZ_HOSTILE[0])))
def test_npz(data):
    d = workdir("npz")
    p = _write(d, "set.npz", data)
    attempt("npz", lambda path: _read_all(str(path)), p)


def _h5_seed() -> bytes:
    h5py = pytest.importorskip("h5py")
    d = Path(tempfile.mkdtemp())
    with h5py.File(d / "s.h5", "w") as f:
        f.create_dataset("data", data=np.arange(48, dtype=np.float32).reshape(3, 4, 4))
        f.create_dataset("label", data=np.array([0, 1, 2]))
    out = (d / "s.h5").read_bytes()
    shutil.rmtree(d)
    return out


def _h5_hostile() -> list[bytes]:
    h5py = pytest.importorskip("h5py")
    d = Path(tempfile.mkdtemp())
    out = []
    for k, (shape, chunks) in enumerate([((1 << 20, 1 << 12), (1, 1 << 12)), ((1 << 40,), (1 << 10,))]):
        with h5py.File(d / f"{k}.h5", "w") as f:
            f.create_dataset("data", shape=shape, dtype="f8", chunks=chunks, compression="gzip")
        out.append((d / f"{k}.h5").read_bytes())
    with h5py.File(d / "big.h5", "w") as f:
        f.create_dataset("data", data=np.zeros((4000, 1000), np.uint8), chunks=(1000, 1000), compression="gzip",
                         compression_opts=9)
    out.append((d / "big.h5").read_bytes())
    shutil.rmtree(d)
    return out


@reader_test(data=st.one_of(damaged(_h5_seed()), st.sampled_from(_h5_hostile())))
def test_hdf5(data):
    d = workdir("hdf5")
    p = _write(d, "set.h5", data)
    attempt("hdf5", lambda path: _read_all(str(path)), p)


CSV_SEED = b"x1,x2,x3,label\n0.5,1,2,0\n1.5,-1,3e2,1\n# comment\n\n2,2,2,2\n"
csv_cases = st.one_of(damaged(CSV_SEED), st.text(alphabet="0123456789,.-e#\n \"'nainfx", max_size=200).map(str.encode),
                      st.sampled_from([b",\n" * 10000, b"1," * 200000 + b"1\n", b"\xef\xbb\xbf1,2\n3,4\n",
                                       gzip.compress(b"1,2\n" * 100000), b"1,2\n3\n", b"nan,inf\n-inf,1e400\n"]))


@reader_test(data=csv_cases, gz=st.booleans())
def test_csv(data, gz):
    d = workdir("csv")
    p = _write(d, "set.csv.gz" if gz else "set.csv", gzip.compress(data) if gz else data)
    attempt("csv", lambda path: _read_all(str(path)), p)


def _image(fmt: str, size=(6, 5), mode="RGB") -> bytes:
    from PIL import Image

    im = Image.new(mode, size, 0)
    for x in range(size[0]):
        im.putpixel((x, x % size[1]), (255, 0, 0) if mode == "RGB" else 200)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring width x height RGBA pixels, with one tiny IDAT."""
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


IMAGE_SEEDS = [(".png", _image("PNG")), (".bmp", _image("BMP")), (".gif", _image("GIF", mode="L")),
               (".jpg", _image("JPEG")), (".ppm", _image("PPM")), (".tif", _image("TIFF")),
               (".webp", _image("WEBP"))]
IMAGE_HOSTILE = [(".png", _png_declaring(9000, 9000)), (".png", _png_declaring(60000, 60000)),
                 (".png", _png_declaring(1, 1 << 30)), (".png", _png_declaring(0, 0)),
                 (".bmp", b"BM" + struct.pack("<IHHIIiiHHIIiiII", 0, 0, 0, 54, 40, 20000, 20000, 1, 24, 0, 0,
                                              0, 0, 0, 0)),
                 (".ppm", b"P6\n30000 30000\n255\n" + b"\x00" * 30), (".gif", b"GIF89a" + b"\xff\xff\xff\xff")]


def _image_case(kind: str):
    ext_data = st.one_of(st.sampled_from(IMAGE_SEEDS).flatmap(lambda e: damaged(e[1]).map(lambda b: (e[0], b))),
                         st.sampled_from(IMAGE_HOSTILE))
    return st.lists(ext_data, min_size=1, max_size=3)


@reader_test(images=_image_case("folder"), listed=st.booleans())
def test_images(images, listed):
    d = workdir("images")
    root = d / "set"
    (root / "a").mkdir(parents=True)
    good = _image("PNG")
    _write(root / "a", "0.png", good)
    for k, (ext, data) in enumerate(images):
        _write(root / "a", f"{k + 1}{ext}", data)
    if listed:
        lines = [f"a/{p.name} 0" for p in sorted((root / "a").iterdir())] + ["a/missing.png 1"]
        lst = _write(root, "list.txt", "\n".join(lines).encode())
        attempt("images", lambda path: _read_all(str(path)), lst)
    else:
        attempt("images", lambda path: _read_all(str(path)), root)


@reader_test(data=st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=100),
                      st.lists(st.tuples(st.sampled_from(["a/0.png", "a/../../etc/passwd", "", " ", "/dev/zero",
                                                          "a", "a/0.png\x00x", "a/" + "x" * 300]),
                                         st.sampled_from(["0", "-1", "x", "1e3", "99999999999999999999999", ""])),
                               max_size=5).map(lambda rows: "\n".join(f"{p} {l}" for p, l in rows).encode())))
def test_image_list(data):
    d = workdir("image-list")
    (d / "a").mkdir()
    _write(d / "a", "0.png", _image("PNG"))
    attempt("image-list", lambda path: _read_all(str(path)), _write(d, "list.txt", data))


# ---- the slow run: many more cases per reader ----------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(READERS))
def test_many_cases(reader):
    strategies, body = READERS[reader]
    fuzz(SLOW)(given(**strategies)(body))()


# ---- every hand-made hostile file once, whatever hypothesis draws ------------------------------
def _hostile_cases():
    cases = [("net-yaml", _net_yaml, b) for b in map(str.encode, _yaml_bombs())]
    cases += [("prototxt", lambda b: attempt("prototxt-net", _convert_net, _write(workdir("prototxt"), "n.prototxt", b)),
               b) for b in _prototxt_bombs()]
    cases += [("caffemodel", lambda b: attempt("caffemodel", _import_caffemodel,
                                               _write(workdir("caffemodel"), "n.caffemodel", b)), b)
              for b in _caffemodel_hostile()]
    cases += [("idx", lambda b: attempt("idx", lambda p: _read_all(str(p)),
                                        _write(workdir("idx"), "x-images-idx3-ubyte", b)), b) for b in IDX_HOSTILE]
    cases += [("npz", lambda b: attempt("npz", lambda p: _read_all(str(p)), _write(workdir("npz"), "s.npz", b)), b)
              for b in NPZ_HOSTILE]
    cases += [("image", lambda b, e=e: attempt("images", lambda p: _read_all(str(p)), _one_image(e, b)), b)
              for e, b in IMAGE_HOSTILE]
    return cases


def _one_image(ext: str, data: bytes) -> Path:
    root = workdir("images") / "set"
    (root / "a").mkdir(parents=True)
    _write(root / "a", "0" + ext, data)
    return root


@pytest.mark.parametrize("case", range(len(_hostile_cases())))
def test_hostile_file(case):
    reader, run_case, data = _hostile_cases()[case]
    run_case(data)


RSS_SCRIPT = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import test_fuzz_readers as T
T.TRACE = False
cases = T._hostile_cases()
T._read_all  # imports done by the first case; measure from after a harmless one
cases[0][1](cases[0][2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
growth = []
for reader, run, data in cases:
    run(data)
    growth.append((reader, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base))
print(json.dumps(growth))
"""


@pytest.mark.slow
def test_hostile_files_do_not_grow_resident_memory():
    """tracemalloc sees Python and NumPy allocations only; Pillow and HDF5 allocate in C.  The
    peak resident size of a process reading every hand-made hostile file, one after another,
    may not grow by more than 64 MiB over the process that read the first (harmless) one."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(Path(__file__).parent)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    growth = json.loads(out.stdout.strip().splitlines()[-1])
    worst = max(kib for _, kib in growth)
    report = os.environ.get("NETSPEC_FUZZ_REPORT")
    if report:
        Path(report + ".rss").write_text(json.dumps({"max_rss_growth_kib": worst, "per_case": growth}))
    assert worst < 64 * 1024, growth


# ---- the bounds themselves ---------------------------------------------------------------------
def test_the_bounds_catch_an_allocation_a_hang_and_an_unlocated_error(tmp_path, monkeypatch):
    p = _write(tmp_path, "f.bin", b"x")
    with pytest.raises(AssertionError, match="MiB traced"):
        attempt("self-test", lambda path: np.ones(CASE_BYTES // 8 + 1), p)
    monkeypatch.setattr(sys.modules[__name__], "CASE_SECONDS", 0.2)
    with pytest.raises(pytest.fail.Exception, match="no answer"):
        attempt("self-test", lambda path: time.sleep(5), p)
    with pytest.raises(AssertionError, match="does not name the file"):
        attempt("self-test", lambda path: (_ for _ in ()).throw(NetspecError("bad", file="elsewhere")), p)
    with pytest.raises(ZeroDivisionError):
        attempt("self-test", lambda path: 1 / 0, p)
    STATS.pop("self-test", None)
