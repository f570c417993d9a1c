"""``netspec export``: every net we ship (and Caffe's examples) exports, passes onnx.checker and
computes what netspec computes under ONNX Runtime; each layer type's mapping is checked on a
small net of its own, and layers with no exact ONNX equivalent are located errors."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from netspec import api  # noqa: E402
from netspec.cli.main import cli  # noqa: E402
from netspec.errors import GraphError, NetspecError, WeightsError  # noqa: E402
from netspec.onnx.export import deploy_plan, export_model  # noqa: E402
from netspec.onnx.parity import check_parity, run_netspec, run_onnxruntime  # noqa: E402
from tests.conftest import ROOT, SHARED_CAFFE  # noqa: E402

ABS, REL = 1e-4, 1e-3
NET_FILES = sorted(str(p.relative_to(ROOT)) for p in list((ROOT / "models").glob("*/train_val.yaml"))
                   + list((ROOT / "zoo").glob("*/train_val.yaml")))
CAFFE_NETS = ["mnist/lenet.prototxt", "mnist/lenet_train_test.prototxt", "mnist/mnist_autoencoder.prototxt",
              "cifar10/cifar10_quick.prototxt", "cifar10/cifar10_quick_train_test.prototxt",
              "hdf5_classification/train_val.prototxt"]


def random_weights(p, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights scaled by fan-in (activations stay near 1, so a softmax does not saturate and
    hide differences), BatchNorm statistics a valid variance and scale factor."""
    rng = np.random.default_rng(seed)
    w = {}
    for q in p.params:
        if q.owner:
            continue
        fan = int(np.prod(q.shape[1:])) if len(q.shape) > 1 else 1
        a = rng.standard_normal(q.shape) / np.sqrt(fan)
        if q.name == "variance":
            a = np.abs(a) + 0.5
        elif q.name == "scale_factor":
            a = np.full(q.shape, 2.0)
        w[q.key] = a.astype(np.float32)
    return w


def load_any(path: str):
    """A netspec net file, or a Caffe prototxt converted in memory."""
    if path.endswith(".prototxt"):
        from netspec.caffe.convert_net import NetOptions, convert_net_file

        shapes = {"data": "4/"} if "hdf5" in path else {}
        return convert_net_file(path, NetOptions(data_shapes=shapes, check=False)).net
    return api.load_net(ROOT / path)


def assert_parity(net, seed: int = 0, batch=None, deep: bool = False):
    w = random_weights(deploy_plan(net), seed)
    e = export_model(net, w, batch=batch)
    onnx.checker.check_model(e.model, full_check=True)
    res = check_parity(e, w, seed=seed)
    assert res.outputs, "the net has outputs to compare"
    for name, (a, r) in res.outputs.items():
        assert a <= ABS or (deep and r <= REL), f"{name}: max abs {a:.3g}, max rel {r:.3g}"
    return e, w


@pytest.mark.parametrize("path", NET_FILES)
def test_shipped_nets_export_with_parity(path):
    assert_parity(load_any(path))


@pytest.mark.parametrize("rel", CAFFE_NETS)
def test_caffe_reference_nets_export_with_parity(rel):
    path = SHARED_CAFFE / "examples" / rel
    if not path.exists():
        pytest.skip(f"{rel} is not in ../shared/caffe")
    assert_parity(load_any(str(path)), deep=True)


# ---- one small net per mapping ------------------------------------------------------------------

def net_of(layers: str, shape=(2, 4, 9, 9)) -> object:
    text = f"netspec: 1\nname: t\nlayers:\n  - {{name: data, type: Input, shape: {list(shape)}}}\n" + layers
    return api.load_net_text(text, file="<test.yaml>")


LAYER_NETS = {
    "conv_group_dilation": """
  - {name: c1, type: Convolution, num_output: 6, kernel_size: 3, pad: 2, stride: 2, dilation: 2, group: 2}
  - {name: c2, type: Convolution, num_output: 3, kernel_size: [1, 3], bias_term: false}
""",
    "deconv": """
  - {name: d1, type: Deconvolution, num_output: 6, kernel_size: 3, stride: 2, pad: 1, group: 2}
  - {name: d2, type: Deconvolution, num_output: 2, kernel_size: 2, dilation: 2, bias_term: false}
""",
    "pool_ceil_overhang": """
  - {name: p1, type: Pooling, bottom: data, top: p1, pool: AVE, kernel_size: 3, stride: 2}
  - {name: p2, type: Pooling, bottom: data, top: p2, pool: AVE, kernel_size: 3, stride: 2, pad: 1}
  - {name: p3, type: Pooling, bottom: data, top: p3, pool: MAX, kernel_size: 3, stride: 2, pad: 1}
  - {name: p4, type: Pooling, bottom: data, top: p4, pool: AVE, kernel_size: [2, 4], stride: [3, 2], round_mode: FLOOR}
  - {name: p5, type: Pooling, bottom: data, top: p5, pool: MAX, kernel_size: 4, stride: 3, pad: 2}
  - {name: g1, type: Pooling, bottom: data, top: g1, pool: AVE, global_pooling: true}
  - {name: g2, type: Pooling, bottom: data, top: g2, pool: MAX, global_pooling: true}
""",
    "inner_product_axes": """
  - {name: ip1, type: InnerProduct, bottom: data, top: ip1, num_output: 5}
  - {name: ip2, type: InnerProduct, bottom: data, top: ip2, num_output: 3, axis: 2}
  - {name: ip3, type: InnerProduct, bottom: data, top: ip3, num_output: 3, axis: -1, transpose: true, bias_term: false}
  - {name: ip4, type: InnerProduct, bottom: ip1, top: ip4, num_output: 2, transpose: true}
""",
    "lrn_both_regions": """
  - {name: n1, type: LRN, bottom: data, top: n1, local_size: 3, alpha: 0.5, beta: 0.75, k: 2.0}
  - {name: n2, type: LRN, bottom: data, top: n2, local_size: 3, alpha: 0.5, beta: 0.75, norm_region: WITHIN_CHANNEL}
""",
    "batchnorm_scale": """
  - {name: bn, type: BatchNorm, eps: 0.001}
  - {name: sc, type: Scale, bias_term: true}
  - {name: bn2, type: BatchNorm, bottom: data, top: bn2, use_global_stats: false}
  - {name: bias, type: Bias, bottom: bn2, top: b2}
  - {name: sc2, type: Scale, bottom: [b2, sc], top: sc2, axis: 0}
  - {name: sc3, type: Scale, bottom: sc2, top: sc3, axis: 2, num_axes: 2}
""",
    "eltwise_concat_slice": """
  - {name: a, type: ReLU, bottom: data, top: a}
  - {name: b, type: Sigmoid, bottom: data, top: b}
  - {name: s, type: Eltwise, bottom: [a, b], top: s, coeff: [0.5, -2.0]}
  - {name: m, type: Eltwise, bottom: [a, b, s], top: m, operation: PROD}
  - {name: x, type: Eltwise, bottom: [a, b], top: x, operation: MAX}
  - {name: cat, type: Concat, bottom: [s, m, x], top: cat, axis: 1}
  - {name: sl, type: Slice, bottom: cat, top: [sl1, sl2, sl3], axis: 1, slice_point: [2, 7]}
  - {name: sl4, type: Slice, bottom: cat, top: [h1, h2], axis: 3, slice_point: [4]}
  - {name: cat2, type: Concat, bottom: [sl1, sl3], top: cat2, axis: 1}
""",
    "softmax_flatten_reshape": """
  - {name: sm, type: Softmax, bottom: data, top: sm, axis: 2}
  - {name: fl, type: Flatten, bottom: sm, top: fl, axis: 2}
  - {name: rs, type: Reshape, bottom: fl, top: rs, shape: [0, -1, 3]}
  - {name: rs2, type: Reshape, bottom: rs, top: rs2, shape: [12, 27], axis: 1}
  - {name: sm2, type: Softmax, bottom: rs2, top: sm2, axis: -1}
  - {name: tile, type: Tile, bottom: sm2, top: tile, axis: 1, tiles: 2}
""",
    "activations": """
  - {name: r, type: ReLU, bottom: data, top: r, negative_slope: 0.1}
  - {name: t, type: TanH, bottom: data, top: t}
  - {name: av, type: AbsVal, bottom: data, top: av}
  - {name: bnll, type: BNLL, bottom: data, top: bnll}
  - {name: elu, type: ELU, bottom: data, top: elu, alpha: 0.7}
  - {name: pw, type: Power, bottom: av, top: pw, power: 1.5, scale: 2.0, shift: 0.5}
  - {name: pw1, type: Power, bottom: data, top: pw1, scale: -3.0, shift: 0.5}
  - {name: ex, type: Exp, bottom: data, top: ex, base: 2.0, scale: 0.5, shift: 0.1}
  - {name: ex2, type: Exp, bottom: data, top: ex2}
  - {name: lg, type: Log, bottom: ex, top: lg, base: 10.0, scale: 2.0, shift: 1.0}
  - {name: lg2, type: Log, bottom: ex, top: lg2}
  - {name: sw, type: Swish, bottom: data, top: sw, beta: 1.5}
  - {name: cl, type: Clip, bottom: data, top: cl, min: -0.5, max: 0.7}
  - {name: th, type: Threshold, bottom: data, top: th, threshold: 0.2}
  - {name: pr, type: PReLU, bottom: data, top: pr}
  - {name: pr2, type: PReLU, bottom: data, top: pr2, channel_shared: true}
  - {name: dr, type: Dropout, bottom: data, top: dr, dropout_ratio: 0.3}
  - {name: inplace, type: ReLU, bottom: dr, top: dr}
""",
    "reduction_mvn": """
  - {name: mvn, type: MVN, bottom: data, top: mvn}
  - {name: mvn2, type: MVN, bottom: data, top: mvn2, across_channels: true, normalize_variance: false}
  - {name: red, type: Reduction, bottom: data, top: red, axis: 1, operation: SUMSQ, coeff: 0.5}
  - {name: red2, type: Reduction, bottom: data, top: red2, axis: 2, operation: MEAN}
  - {name: red3, type: Reduction, bottom: data, top: red3, axis: -1, operation: ASUM}
""",
    "crop_embed": """
  - {name: c, type: Convolution, num_output: 5, kernel_size: 3, pad: 2}
  - {name: crop, type: Crop, bottom: [c, data], top: crop, axis: 2, offset: [1, 2]}
  - {name: crop2, type: Crop, bottom: [c, data], top: crop2, axis: 1, offset: 0}
  - {name: idx, type: Threshold, bottom: data, top: idx}
  - {name: emb, type: Embed, bottom: idx, top: emb, num_output: 3, input_dim: 2}
  - {name: emb2, type: Embed, bottom: idx, top: emb2, num_output: 2, input_dim: 4, bias_term: false}
""",
    "argmax": """
  - {name: am1, type: ArgMax, bottom: data, top: am1, axis: 1}
  - {name: am2, type: ArgMax, bottom: data, top: am2, axis: -1, out_max_val: true}
  - {name: am3, type: ArgMax, bottom: data, top: am3}
  - {name: am4, type: ArgMax, bottom: data, top: am4, out_max_val: true}
  - {name: r, type: Power, bottom: data, top: r, power: 2.0}
  - {name: ties, type: Threshold, bottom: r, top: ties, threshold: 0.5}
  - {name: am5, type: ArgMax, bottom: ties, top: am5, axis: 1}
  - {name: am6, type: ArgMax, bottom: ties, top: am6}
""",
}


SHAPES = {"pool_ceil_overhang": (2, 3, 10, 10)}


@pytest.mark.parametrize("case", sorted(LAYER_NETS))
def test_layer_mapping_parity(case):
    e, _ = assert_parity(net_of(LAYER_NETS[case], SHAPES.get(case, (2, 4, 9, 9))), seed=3)
    assert e.outputs


def test_caffe_pooling_sizes_and_divisors():
    """cifar10_quick's 3x3/2 AVE pools on 16x16 overhang the input: Caffe divides the last
    windows by 6, not 9; the export multiplies by the constant ratio, no approximation."""
    e, w = assert_parity(net_of(LAYER_NETS["pool_ceil_overhang"], SHAPES["pool_ceil_overhang"]))
    ops = e.layers
    assert ops["p1"] == ["AveragePool", "Mul"]     # ceil overhang: divisor map
    assert ops["p4"] == ["AveragePool"]            # floor mode: every window whole
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in e.model.graph.output}
    # 10x10: ceil((10 - 3) / 2) + 1 = 5; padded: 6; 4x4/3 pad 2 drops the window starting in the padding
    assert shapes["p1"] == [2, 3, 5, 5] and shapes["p2"] == [2, 3, 6, 6] and shapes["p5"] == [2, 3, 4, 4]


def test_dynamic_batch():
    net = api.load_net(ROOT / "models/lenet/train_val.yaml")
    w = random_weights(deploy_plan(net))
    e = export_model(net, w, batch="dynamic")
    dim = e.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"
    x = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    ours = run_netspec(e.plan, w, {"data": x})["prob"]
    theirs = run_onnxruntime(e.model, {"data": x})["prob"]
    assert ours.shape == (7, 10)
    np.testing.assert_allclose(ours, theirs, atol=ABS)


def test_fixed_batch_and_opset():
    net = api.load_net(ROOT / "models/mlp/train_val.yaml")
    w = random_weights(deploy_plan(net))
    e = export_model(net, w, batch=3, opset=13)
    assert e.inputs["data"][0] == 3
    assert e.model.opset_import[0].version == 13
    assert check_parity(e, w).max_abs <= ABS
    with pytest.raises(NetspecError, match="opset 9 is not supported"):
        export_model(net, w, opset=9)


@pytest.mark.parametrize("opset", [18, 21])
def test_newer_opsets_axes_as_inputs(opset):
    net = net_of(LAYER_NETS["reduction_mvn"])
    w = random_weights(deploy_plan(net))
    e = export_model(net, w, opset=opset)
    assert check_parity(e, w).max_abs <= ABS
    assert any(n.op_type == "ReduceMean" and len(n.input) == 2 for n in e.model.graph.node)


def test_no_exact_equivalent_names_the_layer():
    net = net_of("  - {name: im, type: Im2col, kernel_size: 2}\n")
    with pytest.raises(GraphError) as ei:
        export_model(net, {})
    e = ei.value
    assert e.layer == "im" and "Im2col" in str(e) and "<test.yaml>" in str(e)
    topk = net_of("  - {name: am, type: ArgMax, axis: 1, top_k: 2}\n")
    with pytest.raises(GraphError, match="am.*top_k > 1"):
        export_model(topk, {})
    stoch = net_of("  - {name: sp, type: Pooling, pool: STOCHASTIC, kernel_size: 2, stride: 2}\n")
    with pytest.raises(GraphError, match="sp.*STOCHASTIC"):
        export_model(stoch, {})


def test_symbolic_batch_cannot_fold_into_features():
    net = net_of("  - {name: ip, type: InnerProduct, num_output: 2, axis: 0}\n")
    with pytest.raises(GraphError, match="--batch K"):
        export_model(net, random_weights(deploy_plan(net)), batch="dynamic")


def test_missing_weights_are_named():
    net = api.load_net(ROOT / "models/lenet/train_val.yaml")
    w = random_weights(deploy_plan(net))
    del w["ip2/bias"]
    with pytest.raises(WeightsError, match="ip2/bias"):
        export_model(net, w, weights_name="w.safetensors")


def test_cli_export_zoo_lenet(tmp_path):
    out = tmp_path / "lenet.onnx"
    r = CliRunner().invoke(cli, ["export", str(ROOT / "models/lenet/train_val.yaml"), "--weights",
                                 "zoo:lenet-fashion-mnist", "-o", str(out), "--batch", "dynamic"])
    assert r.exit_code == 0, r.output
    assert "parity against ONNX Runtime" in r.output and "prob: max abs diff" in r.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    abs_diff = float(r.output.split("max abs diff ")[1].split(",")[0])
    assert abs_diff <= ABS
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_export_errors_are_one_paragraph(tmp_path):
    bad = tmp_path / "argmax.yaml"
    bad.write_text("netspec: 1\nlayers:\n  - {name: data, type: Input, shape: [1, 3]}\n"
                   "  - {name: am, type: ArgMax, top_k: 2}\n")
    w = tmp_path / "w.safetensors"
    from netspec.io.weights import write_safetensors

    write_safetensors(w, {"x/y": np.zeros(1, np.float32)})
    r = CliRunner().invoke(cli, ["export", str(bad), "--weights", str(w), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 1
    assert "Traceback" not in r.output and "am" in r.output and "ArgMax" in r.output
    assert not (tmp_path / "m.onnx").exists()
    r = CliRunner().invoke(cli, ["export", str(bad), "--weights", str(w), "-o", "m.onnx", "--batch", "zero"])
    assert r.exit_code == 2 and "dynamic" in r.output


def test_missing_extra_says_how_to_install(monkeypatch):
    import importlib

    from netspec.onnx import require

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(NetspecError, match=r"'onnxruntime' package.*pip install -e \"\.\[onnx\]\""):
        require("onnxruntime", "the parity check")
