"""caffemodel files: the wire format, Caffe's copy rules, round trips, and corrupt files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec import api
from netspec.caffe import caffemodel as C
from netspec.caffe.convert_net import NetOptions, convert_net_file, convert_net_text
from netspec.cli.main import cli
from netspec.errors import WeightsError

FIXTURES = Path(__file__).parent / "fixtures" / "caffe"


# ---- a tiny independent encoder, so the reader is not only tested against its own writer ------

def v(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def k(field: int, wire: int) -> bytes:
    return v(field << 3 | wire)


def ld(field: int, payload: bytes) -> bytes:
    return k(field, 2) + v(len(payload)) + payload


def unpacked_floats(field: int, values) -> bytes:
    return b"".join(k(field, 5) + struct.pack("<f", x) for x in values)


def legacy_blob(dims, values, packed=True) -> bytes:
    head = b"".join(k(i + 1, 0) + v(d) for i, d in enumerate(dims))
    data = ld(5, np.asarray(values, "<f4").tobytes()) if packed else unpacked_floats(5, values)
    return head + data


def shaped_blob(dims, values, packed_dims=True, double=False) -> bytes:
    shape = ld(1, b"".join(v(d) for d in dims)) if packed_dims else b"".join(k(1, 0) + v(d) for d in dims)
    data = ld(8, np.asarray(values, "<f8").tobytes()) if double else ld(5, np.asarray(values, "<f4").tobytes())
    return ld(7, shape) + data


IP_NET = ('name: "ip" layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }\n'
          'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }\n')


def ip_net():
    return convert_net_text(IP_NET, "ip.prototxt").net


# ---- the wire format ------------------------------------------------------------------------

def test_varints():
    for n in (0, 1, 127, 128, 300, 2**31, 2**63 - 1):
        assert C.read_varint(v(n), 0, len(v(n))) == (n, len(v(n)))
    assert C.encode_varint(-1) == v(-1) and len(v(-1)) == 10
    assert C._signed64(C.read_varint(v(-5), 0, 10)[0]) == -5
    with pytest.raises(C.WireError) as e:
        C.read_varint(b"\x80\x80", 0, 2)
    assert e.value.offset == 0


def test_iter_fields_covers_every_wire_type_and_rejects_groups():
    buf = k(1, 0) + v(150) + k(2, 1) + b"12345678" + ld(3, b"abc") + k(4, 5) + b"wxyz"
    got = list(C.iter_fields(buf, 0, len(buf)))
    assert [(n, w) for n, w, _, _ in got] == [(1, 0), (2, 1), (3, 2), (4, 5)]
    assert got[0][2] == 150 and buf[slice(*got[2][2])] == b"abc"
    with pytest.raises(C.WireError, match="wire type 3"):
        list(C.iter_fields(k(5, 3), 0, 1))


def test_v1_layers_with_legacy_4d_blobs_and_unpacked_floats(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    b = np.array([0.5, -1.5, 2.25], np.float32)
    layer = (ld(4, b"fc") + k(5, 0) + v(14)          # INNER_PRODUCT
             + ld(6, legacy_blob((1, 1, 3, 4), w.ravel(), packed=False))
             + ld(6, legacy_blob((1, 1, 1, 3), b)))
    data_layer = ld(4, b"data") + k(5, 0) + v(5)     # DATA, no blobs
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(ld(1, b"old") + ld(2, data_layer) + ld(2, layer))
    name, layers = C.read_caffemodel(path)
    assert name == "old" and [(l.name, l.type) for l in layers] == [("data", "Data"), ("fc", "InnerProduct")]
    assert layers[1].blobs[0].legacy == (1, 1, 3, 4) and layers[1].blobs[0].shape is None
    out = C.import_weights(path, ip_net())
    np.testing.assert_array_equal(out["fc/weight"], w)
    np.testing.assert_array_equal(out["fc/bias"], b)
    assert out["fc/weight"].dtype == np.float32


def test_v2_blob_shapes_unpacked_dims_and_double_data(tmp_path):
    w = np.linspace(-1, 1, 12).reshape(3, 4)
    layer = ld(1, b"fc") + ld(2, b"InnerProduct") + ld(7, shaped_blob((3, 4), w.ravel(), packed_dims=False,
                                                                       double=True))
    layer += ld(7, shaped_blob((3,), [1, 2, 3]))
    path = tmp_path / "v2.caffemodel"
    path.write_bytes(ld(100, layer))
    out = C.import_weights(path, ip_net())
    assert out["fc/weight"].dtype == np.float64
    np.testing.assert_array_equal(out["fc/weight"], w)


def test_caffe_copy_rules(tmp_path):
    def model(*blobs, name=b"fc"):
        p = tmp_path / "m.caffemodel"
        p.write_bytes(ld(100, ld(1, name) + ld(2, b"InnerProduct") + b"".join(ld(7, x) for x in blobs)))
        return p

    w, b = np.ones(12), np.ones(3)
    with pytest.raises(WeightsError, match="1 blobs in the caffemodel but InnerProduct layer 'fc' learns 2"):
        C.import_weights(model(shaped_blob((3, 4), w)), ip_net())
    with pytest.raises(WeightsError) as e:
        C.import_weights(model(shaped_blob((4, 3), w), shaped_blob((3,), b)), ip_net())
    assert "shape [4, 3], the net's param [3, 4]" in str(e.value) and "rename it" in str(e.value)
    assert e.value.layer == "fc"
    # the legacy rule pads on the left only: 1x3x4x1 does not fit 3x4
    with pytest.raises(WeightsError, match=r"\[1, 3, 4, 1\]"):
        C.import_weights(model(legacy_blob((1, 3, 4, 1), w), legacy_blob((1, 1, 1, 3), b)), ip_net())
    # a layer the net lacks is skipped, as Caffe's "Ignoring source layer"
    report = C.Report("m", "weights")
    assert C.import_weights(model(shaped_blob((3,), b), name=b"other"), ip_net(), report) == {}
    assert any("Ignoring source layer" in it.why for it in report.of("note"))


@pytest.mark.parametrize("cut", [1, 2, 5, 17, 40, -1])
def test_truncated_files_name_the_byte(tmp_path, cut):
    good = ld(100, ld(1, b"fc") + ld(2, b"InnerProduct") + ld(7, shaped_blob((3, 4), np.ones(12)))
              + ld(7, shaped_blob((3,), np.ones(3))))
    p = tmp_path / "t.caffemodel"
    p.write_bytes(good[:cut])
    with pytest.raises(WeightsError) as e:
        C.import_weights(p, ip_net())
    msg = str(e.value)
    assert e.value.file.endswith("t.caffemodel") and "at byte " in msg


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"\x89HDF\r\n\x1a\nrest", "HDF5"),
    (b"\x00\x01\x02", "field number of 0"),
    (b"\x0b\x0c", "wire type 3"),
    (ld(100, ld(7, ld(7, ld(1, v(2) + v(3))) + ld(5, b"\x00" * 8))), "holds 2 values instead of 6"),
    (ld(100, ld(7, ld(5, b"\x00" * 6))), "not a whole number of 4-byte values"),
    (k(100, 0) + v(3), "wire type 0"),
])
def test_corrupt_files_are_clear_errors(tmp_path, data, words):
    p = tmp_path / "c.caffemodel"
    p.write_bytes(data)
    with pytest.raises(WeightsError) as e:
        C.read_caffemodel(p)
    assert words in str(e.value) and "c.caffemodel" in str(e.value)


# ---- round trips: netspec weights -> caffemodel -> netspec, exact ------------------------------

def random_weights(net, seed: int) -> dict[str, np.ndarray]:
    n = api.build_net(net, "TRAIN", dummy_data=True, seed=seed)
    rng = np.random.default_rng(seed)
    out = {}
    for key, arr in n.state_dict().items():
        x = rng.normal(size=arr.shape).astype(np.float32)
        if key.endswith(("/variance", "/scale_factor")):
            x = np.abs(x) + 0.5
        out[key] = x
    return out


def round_trip(tmp_path: Path, net_path: Path, weights: dict, import_net: Path | None = None):
    st = tmp_path / "w.safetensors"
    C.save_safetensors(weights, st)
    runner = CliRunner()
    r1 = runner.invoke(cli, ["convert", str(st), "--net", str(net_path), "-o", str(tmp_path / "w.caffemodel")])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(cli, ["convert", str(tmp_path / "w.caffemodel"), "--net", str(import_net or net_path),
                             "-o", str(tmp_path / "back.safetensors")])
    assert r2.exit_code == 0, r2.output
    back = C.load_safetensors(tmp_path / "back.safetensors")
    assert set(back) == set(weights)
    for key, arr in weights.items():
        assert back[key].dtype == arr.dtype and back[key].shape == arr.shape
        assert back[key].tobytes() == arr.tobytes(), key
    return back


@pytest.mark.parametrize("rel", ["mnist/lenet_train_test.prototxt", "cifar10/cifar10_quick_train_test.prototxt",
                                 "mnist/mnist_autoencoder.prototxt"])
def test_round_trip_examples(caffe_examples, tmp_path, rel):
    out = tmp_path / "net.yaml"
    res = convert_net_file(caffe_examples / rel, NetOptions(out_path=out))
    out.write_text(res.text)
    weights = random_weights(res.net, 3)
    # back through the prototxt itself: Caffe's layer names are the keys
    round_trip(tmp_path, out, weights, import_net=caffe_examples / rel)


def test_round_trip_batchnorm_scale(tmp_path):
    out = tmp_path / "bn.yaml"
    res = convert_net_file(FIXTURES / "bn_scale.prototxt", NetOptions(out_path=out))
    out.write_text(res.text)
    weights = random_weights(res.net, 5)
    assert {"bn1/mean", "bn1/variance", "bn1/scale_factor", "scale1/scale", "scale1/bias"} <= set(weights)
    round_trip(tmp_path, out, weights, import_net=FIXTURES / "bn_scale.prototxt")
    _, layers = C.read_caffemodel(tmp_path / "w.caffemodel")
    bn = next(l for l in layers if l.name == "bn1")
    assert bn.type == "BatchNorm" and [b.shape for b in bn.blobs] == [(4,), (4,), (1,)]


def test_export_names_types_blobs_and_shared_params(tmp_path):
    out = tmp_path / "v1.yaml"
    res = convert_net_file(FIXTURES / "legacy_v1.prototxt", NetOptions(out_path=out))
    out.write_text(res.text)
    weights = random_weights(res.net, 7)
    assert set(weights) == {"conv1/weight", "conv1/bias", "ip/weight", "ip/bias"}   # conv2 shares conv1's
    round_trip(tmp_path, out, weights)
    name, layers = C.read_caffemodel(tmp_path / "w.caffemodel")
    by = {l.name: l for l in layers}
    assert name == "LegacyV1" and by["conv2"].type == "Convolution"
    np.testing.assert_array_equal(by["conv2"].blobs[0].data, weights["conv1/weight"].ravel())
    assert by["conv1"].blobs[0].shape == (3, 3, 3, 3) and by["conv1"].blobs[0].legacy is None
    assert by["relu1"].blobs == []


def test_batchnorm_blobs_mean_what_caffe_means(tmp_path):
    """A caffemodel's BatchNorm blobs (mean and variance accumulators and their scale factor)
    give Caffe's TEST output: y = (x - M/s) / sqrt(V/s + eps), then Scale, ReLU, pooling, fc."""
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(4, 3, 3, 3))
    mean_acc, var_acc, s = rng.normal(size=4), rng.random(4) + 0.5, np.array([2.5])
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    fc_w, fc_b = rng.normal(size=(3, 4)), rng.normal(size=3)
    layers = [ld(1, b"conv1") + ld(2, b"Convolution") + ld(7, shaped_blob(conv.shape, conv.ravel())),
              ld(1, b"bn1") + ld(2, b"BatchNorm") + b"".join(ld(7, shaped_blob(a.shape, a))
                                                             for a in (mean_acc, var_acc, s)),
              ld(1, b"scale1") + ld(2, b"Scale") + ld(7, shaped_blob((4,), gamma)) + ld(7, shaped_blob((4,), beta)),
              ld(1, b"fc") + ld(2, b"InnerProduct") + ld(7, shaped_blob((3, 4), fc_w.ravel()))
              + ld(7, shaped_blob((3,), fc_b))]
    path = tmp_path / "bn.caffemodel"
    path.write_bytes(b"".join(ld(100, x) for x in layers))
    net = convert_net_file(FIXTURES / "bn_scale.prototxt").net
    weights = C.import_weights(path, net)
    n = api.build_net(net, "TEST", dtype=np.float64)
    for key, arr in weights.items():
        n.params[key].data[...] = arr
    x = rng.normal(size=(2, 3, 5, 5))
    n.set_input("data", x)
    n.forward()
    # the reference, written out with float32-rounded weights as the caffemodel stores them
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((2, 4, 5, 5))
    for i in range(5):
        for j in range(5):
            y[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], f32(conv))
    m, var = f32(mean_acc) / f32(s)[0], f32(var_acc) / f32(s)[0]
    y = (y - m[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    y = np.maximum(y * f32(gamma)[None, :, None, None] + f32(beta)[None, :, None, None], 0)
    z = y.mean(axis=(2, 3)) @ f32(fc_w).T + f32(fc_b)
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    np.testing.assert_allclose(n.blobs["prob"].data, prob, rtol=1e-10, atol=1e-12)


# ---- the command line -------------------------------------------------------------------------

def test_cli_errors_exit_1_without_traceback(tmp_path):
    net = tmp_path / "ip.prototxt"
    net.write_text(IP_NET)
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(ld(100, ld(1, b"fc") + ld(7, shaped_blob((3, 4), np.ones(12))))[:-3])
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(bad), "--net", str(net), "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert "bad.caffemodel" in res.output and "at byte" in res.output
    assert not (tmp_path / "o.safetensors").exists()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    res = runner.invoke(cli, ["convert", str(junk), "--net", str(net), "-o", str(tmp_path / "o.caffemodel")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "junk.safetensors" in res.output
    res = runner.invoke(cli, ["convert", str(bad), "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 2 and "--net" in res.output


def test_mangled_caffemodels_give_weights_errors_never_a_crash(tmp_path):
    import random

    net = convert_net_file(FIXTURES / "bn_scale.prototxt").net
    data = C.export_weights(random_weights(net, 1), net)
    rng = random.Random(0)
    p = tmp_path / "m.caffemodel"
    errors = 0
    for _ in range(300):
        b = bytearray(data)
        pos = rng.randrange(len(b))
        r = rng.random()
        if r < 0.5:
            b[pos] = rng.randrange(256)
        elif r < 0.75:
            del b[pos:pos + rng.randint(1, 30)]
        else:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(3))
        p.write_bytes(bytes(b))
        try:
            C.import_weights(p, net)
        except WeightsError as e:
            assert "m.caffemodel" in str(e)
            errors += 1
    assert errors > 0


def test_v0_caffemodels_are_refused(tmp_path):
    p = tmp_path / "v0.caffemodel"
    p.write_bytes(ld(2, ld(1, ld(1, b"conv1"))))
    with pytest.raises(WeightsError, match="V0 layer.*upgrade_net_proto_binary"):
        C.read_caffemodel(p)


def test_weights_need_the_nets_shapes(tmp_path):
    """A net whose data cannot be read needs its sample shape to place the weights."""
    text = ('layer { name: "d" type: "Data" top: "x" data_param { source: "/nowhere/db" batch_size: 2 } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }\n')
    proto = tmp_path / "n.prototxt"
    proto.write_text(text)
    model = tmp_path / "m.caffemodel"
    model.write_bytes(ld(100, ld(1, b"fc") + ld(7, shaped_blob((3, 4), np.ones(12)))
                         + ld(7, shaped_blob((3,), np.zeros(3)))))
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(model), "--net", str(proto), "-o", str(tmp_path / "w.safetensors")])
    assert res.exit_code == 1 and "--data-shape" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["convert", str(model), "--net", str(proto), "--data-shape", "d=4",
                              "-o", str(tmp_path / "w.safetensors")])
    assert res.exit_code == 0, res.output
    assert C.load_safetensors(tmp_path / "w.safetensors")["fc/weight"].shape == (3, 4)
