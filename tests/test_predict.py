"""`netspec predict`: the zoo LeNet on one's own files says what the TEST net says about the same
records; bad inputs are reported by name and the others are still predicted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli.main import cli
from netspec.errors import NetspecError

ROOT = Path(__file__).resolve().parent.parent
ZOO = "zoo:lenet-fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N = 100     # one TEST batch of models/lenet


def _test_set():
    from netspec.data.sources import open_source

    try:
        src = open_source("fashion-mnist:test", None)
    except NetspecError as e:
        pytest.skip(str(e))
    return src.arrays


@pytest.fixture(scope="module")
def test_net_scores():
    """What the TEST net (Data layer, its transform, the zoo weights) computes for the first N test
    records: ip2 of the first batch, and the Softmax the deploy net puts on it."""
    from netspec import api
    from netspec import zoo_registry as zoo
    from netspec.core.net import Net
    from netspec.io.weights import copy_weights, load_weights

    _test_set()
    entry = zoo.load_entry("lenet-fashion-mnist")
    net = Net(api.compile_net(api.load_net(entry.path("net")), "TEST"), np.float32, seed=0, device="cpu")
    try:
        report = copy_weights(net, load_weights(zoo.resolve_weights(ZOO)), ZOO)
        assert report.count("copied") == 8
        net.forward()
        ip2 = np.array(net.blobs["ip2"].data, dtype=np.float64)
        labels = np.array(net.blobs["label"].data).astype(np.int64)
    finally:
        for lp in net.layers:
            lp.layer.close()
    assert ip2.shape == (N, 10)
    e = np.exp(ip2 - ip2.max(axis=1, keepdims=True))
    return ip2, e / e.sum(axis=1, keepdims=True), labels


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """The first N test images as grey PNG files (lossless: the same 8-bit pixels)."""
    from PIL import Image

    x, y = _test_set()
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(N):
        p = folder / f"{i:03d}.png"
        Image.fromarray(np.asarray(x[i, 0])).save(p)
        paths.append(p)
    return paths, np.asarray(y[:N])


def _run(args):
    r = CliRunner().invoke(cli, ["predict", *map(str, args)])
    assert "Traceback" not in r.output, r.output
    return r


def test_png_files_get_the_test_nets_labels_and_probabilities(pngs, test_net_scores):
    paths, labels = pngs
    ip2, prob, test_labels = test_net_scores
    assert (test_labels == labels).all()     # the TEST batch is the first N records, in order
    r = _run([ZOO, *paths, "--json", "-k", "3", "--batch-size", "32"])    # 32: batches of 32, 32, 32, 4
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["values"] == "probabilities" and doc["output"] == "prob" and doc["failed"] == []
    got = doc["predictions"]
    assert [g["input"] for g in got] == [str(p) for p in paths]
    top1 = np.array([g["top"][0]["class"] for g in got])
    assert (top1 == ip2.argmax(axis=1)).all()
    for g, p in zip(got, prob):
        want = np.argsort(-p, kind="stable")[:3]
        assert [t["class"] for t in g["top"]] == list(want)
        assert [t["name"] for t in g["top"]] == [CLASSES[k] for k in want]
        np.testing.assert_allclose([t["prob"] for t in g["top"]], p[want], atol=2e-6)
    # the trained net is right on most of them (so the check above compares real predictions)
    assert (top1 == labels).mean() > 0.85


def test_a_corrupt_png_among_good_ones_is_reported_and_the_rest_predicted(pngs, test_net_scores, tmp_path):
    paths, _ = pngs
    ip2 = test_net_scores[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(paths[0].read_bytes()[:60])          # a truncated file: its header, then nothing
    missing = tmp_path / "missing.png"
    r = _run([ZOO, paths[0], bad, paths[1], missing, paths[2]])
    assert r.exit_code == 1
    rows = [l.split() for l in r.stdout.splitlines()]
    assert rows[0][:2] == ["input", "top-1"]
    body = {row[0]: row for row in rows[1:]}
    assert list(body) == [str(paths[0]), str(paths[1]), str(paths[2])]
    for i in range(3):
        name = CLASSES[int(ip2[i].argmax())]
        assert " ".join(body[str(paths[i])]).split(" (")[0] == f"{paths[i]} {name}"
    err = r.stderr.splitlines()
    assert any(str(bad) in line and "cannot" in line for line in err), r.stderr
    assert any(str(missing) in line and "no such image file" in line for line in err), r.stderr
    assert err[-1] == "2 of 5 inputs failed; the others are printed above"


def test_a_dataset_slice_shows_labels_and_accuracy(test_net_scores):
    ip2, _, labels = test_net_scores
    r = _run([ZOO, "--images", "fashion-mnist:test:20", "-k", "1"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["input", "label", "top-1"]
    assert lines[1].split()[:3] == ["fashion-mnist:test[0]"] + CLASSES[labels[0]].split()
    assert len(lines) == 1 + 20 + 1
    right = int((ip2[:20].argmax(axis=1) == labels[:20]).sum())
    assert lines[-1] == f"top-1 accuracy over the 20 labelled inputs: {right}/20 = {100 * right / 20:.2f}%"


def test_colour_and_large_images_are_converted_and_resized(pngs, tmp_path):
    from PIL import Image

    from netspec import predict as P

    paths, labels = pngs
    grey = Image.open(paths[0])
    rgb = tmp_path / "rgb.png"
    grey.convert("RGB").save(rgb)                                   # R = G = B: converts back exactly
    big = tmp_path / "big.jpg"
    grey.resize((112, 112), Image.BICUBIC).convert("RGB").save(big, quality=95)
    pred = P.load_predictor(ZOO, batch=4)
    try:
        items, nfiles = P.read_inputs([str(paths[0]), str(rgb), str(big)], pred)
        assert nfiles == 3 and all(isinstance(i, P.Item) for i in items)
        assert items[2].read().shape == (1, 28, 28) and items[2].read().dtype == np.uint8
        out = P.predict(pred, items, k=3)
    finally:
        pred.close()
    assert (items[0].read() == items[1].read()).all()                 # R = G = B decodes to the grey pixels
    assert [t[0] for t in out[0].top] == [t[0] for t in out[1].top]
    # the same pixels give the same probabilities (to float32 rounding: another row of the batch's GEMM)
    np.testing.assert_allclose([t[2] for t in out[0].top], [t[2] for t in out[1].top], rtol=1e-4, atol=1e-7)
    assert out[2].top[0][0] == out[0].top[0][0] == labels[0]       # test record 0: an ankle boot, p ~ 1


def test_data_files_give_one_input_per_record(tmp_path, test_net_scores):
    from netspec import predict as P

    x, y = _test_set()
    ip2 = test_net_scores[0]
    np.savez(tmp_path / "recs.npz", data=x[:3], label=y[:3])
    np.savetxt(tmp_path / "plain.csv", x[3:5].reshape(2, -1), fmt="%d", delimiter=",")
    np.savetxt(tmp_path / "labelled.csv", np.c_[x[5:7].reshape(2, -1), y[5:7]], fmt="%d", delimiter=",")
    np.savez(tmp_path / "rgb.npz", data=np.repeat(x[:2], 3, axis=1))                # 3 channels: wrong
    np.savetxt(tmp_path / "short.csv", x[:2].reshape(2, -1)[:, :100], fmt="%d", delimiter=",")
    (tmp_path / "notes.md").write_text("hello")
    files = [tmp_path / f for f in ("recs.npz", "rgb.npz", "plain.csv", "labelled.csv", "short.csv", "notes.md")]
    pred = P.load_predictor(ZOO, batch=4)
    done: list[int] = []
    try:
        items, nfiles = P.read_inputs(map(str, files), pred)
        out = P.predict(pred, items, k=2, progress=done.append)
    finally:
        pred.close()
    assert nfiles == 6
    assert done == [4, 3]       # the progress bar advances by each batch's predicted inputs
    ok = [o for o in out if isinstance(o, P.Prediction)]
    names = [o.name for o in ok]
    assert names == [f"{files[0]}[0]", f"{files[0]}[1]", f"{files[0]}[2]", f"{files[2]}:1", f"{files[2]}:2",
                     f"{files[3]}:1", f"{files[3]}:2"]
    assert [o.top[0][0] for o in ok] == list(ip2[:7].argmax(axis=1))
    assert [o.label for o in ok] == [int(v) for v in y[:3]] + [None, None] + [int(v) for v in y[5:7]]
    failed = {o.name: str(o.error) for o in out if isinstance(o, P.Failure)}
    assert set(failed) == {str(files[1]), str(files[4]), str(files[5])}
    assert "[3, 28, 28]" in failed[str(files[1])] and "[1, 28, 28]" in failed[str(files[1])]
    assert "100 values" in failed[str(files[4])]
    assert str(files[5]) in failed[str(files[5])] and "cannot tell" in failed[str(files[5])]


def test_a_net_file_needs_weights_and_a_net_file_with_them_predicts(pngs, test_net_scores):
    paths, _ = pngs
    net = ROOT / "models/lenet/train_val.yaml"
    r = _run([net, paths[0]])
    assert r.exit_code == 1 and "needs trained weights" in r.stderr and str(net) in r.stderr
    r = _run([net, paths[0], "--weights", ZOO, "--json", "-k", "1"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["predictions"][0]["top"][0]["class"] == int(test_net_scores[0][0].argmax())
    assert doc["predictions"][0]["top"][0]["name"] == CLASSES[int(test_net_scores[0][0].argmax())]


@pytest.mark.parametrize("case", ["no-deploy", "two-inputs", "reconstruction", "no-inputs", "untrained"])
def test_models_that_cannot_predict_are_one_clear_error(case, tmp_path, pngs):
    paths, _ = pngs
    if case == "no-deploy":
        net = tmp_path / "train_only.yaml"
        net.write_text("layers:\n"
                       "  - {name: d, type: DummyData, top: data, shape: [4, 3], include: {phase: TRAIN}}\n"
                       "  - {name: ip, type: InnerProduct, num_output: 2, include: {phase: TRAIN}}\n")
        args, want = [net, paths[0], "--weights", "w.safetensors"], "has no deploy form"
    elif case == "two-inputs":
        net = tmp_path / "two.yaml"
        net.write_text("layers:\n"
                       "  - {name: d, type: Input, top: [a, b], shape: [[4, 3], [4, 3]]}\n"
                       "  - {name: s, type: Eltwise, bottom: [a, b]}\n")
        args, want = [net, paths[0], "--weights", "w.safetensors"], "reads 2 input blobs"
    elif case == "reconstruction":
        args, want = ["zoo:autoencoder-fashion-mnist", paths[0]], "reconstruction model"
    elif case == "no-inputs":
        args, want = [ZOO], "give the inputs"
    else:
        # weights of another net: the deploy net's params would keep their fillers
        from netspec.io.weights import write_safetensors

        w = tmp_path / "other.safetensors"
        write_safetensors(w, {"fc/weight": np.zeros((2, 2), np.float32)}, {"format": "netspec-weights"})
        args, want = [ROOT / "models/lenet/train_val.yaml", paths[0], "--weights", w], "not in the weights"
    r = _run(args)
    assert r.exit_code == 1, r.output
    assert want in r.stderr and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_top_k_orders_by_score_and_breaks_ties_by_index():
    from netspec.predict import top_k

    s = np.array([[0.1, 0.5, 0.2, 0.5], [3.0, -1.0, 2.0, 0.0]])
    assert top_k(s, 3) == [[(1, 0.5), (3, 0.5), (2, 0.2)], [(0, 3.0), (2, 2.0), (3, 0.0)]]
    assert len(top_k(s, 10)[0]) == 4


def test_parse_slice():
    from netspec.predict import parse_slice

    assert parse_slice("fashion-mnist:test:100") == ("fashion-mnist:test", 100)
    assert parse_slice("fashion-mnist:test") == ("fashion-mnist:test", None)
    assert parse_slice("data/x.npz:5") == ("data/x.npz", 5)
    with pytest.raises(NetspecError):
        parse_slice("fashion-mnist:test:0")


def test_help_does_not_import_numba():
    probe = ("import sys\nfrom netspec.cli.main import cli\n"
             "try:\n    cli(['predict', '--help'], prog_name='netspec')\nexcept SystemExit:\n    pass\n"
             "print('NUMBA' if any(m.split('.')[0] == 'numba' for m in sys.modules) else 'NO-NUMBA')\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "--images" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "NO-NUMBA", proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_whole_test_set_gives_the_zoo_accuracy():
    from netspec import predict as P
    from netspec import zoo_registry as zoo

    _test_set()
    pred = P.load_predictor(ZOO, batch=100)
    try:
        items, _ = P.read_inputs([], pred, images="fashion-mnist:test")
        out = P.predict(pred, items, k=1)
    finally:
        pred.close()
    assert len(out) == 10000 and all(isinstance(o, P.Prediction) for o in out)
    acc = sum(o.top[0][0] == o.label for o in out) / len(out)
    assert abs(acc - zoo.load_entry("lenet-fashion-mnist").metrics["accuracy"]) <= 2e-4


def test_a_class_folder_gives_labels_by_class_name(pngs, tmp_path):
    # sub-folders named after some of the net's classes: their sorted order is not the net's
    paths, labels = pngs
    picked = {}
    for p, lab in zip(paths, labels):
        picked.setdefault(int(lab), p)
    for lab in (9, 1):                      # 'Ankle boot' sorts before 'Trouser', indices 9 and 1
        d = tmp_path / CLASSES[lab]
        d.mkdir()
        (d / "x.png").write_bytes(picked[lab].read_bytes())
    r = _run([ZOO, "--images", tmp_path, "--json", "-k", "1"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["predictions"]
    assert [(g["label"], g["label_name"]) for g in got] == [(9, "Ankle boot"), (1, "Trouser")]
    r = _run([ZOO, tmp_path, "--json", "-k", "1"])          # as FILES: the images, without labels
    got = json.loads(r.stdout)["predictions"]
    assert len(got) == 2 and all("label" not in g for g in got)


def test_crop_and_mean_are_the_data_layers_own(tmp_path):
    """A colour net whose Data layer crops and subtracts a mean: predict on the image files gives
    what the TEST net computes from the same folder through its Data layer."""
    from PIL import Image

    from netspec import api
    from netspec import predict as P
    from netspec.core.net import Net
    from netspec.io.weights import save_weights

    rng = np.random.default_rng(0)
    files = []
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            f = tmp_path / "imgs" / c / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(f)
            files.append(f)
    net_file = tmp_path / "tiny.yaml"
    net_file.write_text(
        "name: Tiny\nlayers:\n"
        "  - {name: data, type: Data, top: [data, label], source: imgs, batch_size: 6,\n"
        "     transform: {crop_size: 8, mean_value: [100, 120, 140], scale: 0.01}}\n"
        "  - {name: conv, type: Convolution, num_output: 4, kernel_size: 3,\n"
        "     weight_filler: {type: gaussian, std: 0.3}}\n"
        "  - {name: ip, type: InnerProduct, num_output: 2, weight_filler: {type: gaussian, std: 0.3}}\n"
        "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    net = Net(api.compile_net(api.load_net(net_file), "TEST"), np.float32, seed=3, device="cpu")
    try:
        save_weights(tmp_path / "w.safetensors", net)
        net.forward()
        ip = np.array(net.blobs["ip"].data, dtype=np.float64)
    finally:
        for lp in net.layers:
            lp.layer.close()
    e = np.exp(ip - ip.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    pred = P.load_predictor(str(net_file), str(tmp_path / "w.safetensors"), batch=4)
    try:
        assert pred.raw_shape == (3, 12, 12) and pred.classes == ["a", "b"]
        big = tmp_path / "big.png"
        Image.open(files[0]).resize((40, 30)).save(big)             # another size: resized to 12x12, cropped
        items, _ = P.read_inputs([str(f) for f in files] + [str(big)], pred)
        out = P.predict(pred, items, k=2)
    finally:
        pred.close()
    assert all(isinstance(o, P.Prediction) for o in out) and len(out) == 7
    for o, p in zip(out, prob):
        got = dict((k, v) for k, _, v in o.top)
        np.testing.assert_allclose([got[0], got[1]], p, rtol=1e-5)
        assert o.top[0][1] == "ab"[int(p.argmax())]


@pytest.mark.cuda
def test_cpu_and_cuda_predict_alike(pngs):
    from netspec import predict as P
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")
    paths, _ = pngs
    got = {}
    for dev in ("cpu", "cuda"):
        pred = P.load_predictor(ZOO, batch=2, device=dev)
        try:
            items, _ = P.read_inputs([str(p) for p in paths[:3]], pred)    # batches of 2 and 1
            got[dev] = P.predict(pred, items, k=3)
        finally:
            pred.close()
    for c, g in zip(got["cpu"], got["cuda"]):
        assert [t[0] for t in c.top] == [t[0] for t in g.top]
        np.testing.assert_allclose([t[2] for t in c.top], [t[2] for t in g.top], rtol=1e-4, atol=1e-6)
