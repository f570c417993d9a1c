"""``netspec convert MODEL.onnx``: ONNX models become netspec nets and weights that compute the
same outputs (a PyTorch-exported CNN against PyTorch, netspec's own exports round trip), with
located errors for unsupported operators and for files that are not valid ONNX models."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netspec import api  # noqa: E402
from netspec.cli.main import cli  # noqa: E402
from netspec.errors import NetspecError, SpecError  # noqa: E402
from netspec.io.weights import load_weights  # noqa: E402
from netspec.onnx.export import deploy_plan, export_model  # noqa: E402
from netspec.onnx.importer import convert_model  # noqa: E402
from netspec.onnx.parity import random_inputs, run_netspec, run_onnxruntime  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.test_onnx_export import LAYER_NETS, NET_FILES, SHAPES, load_any, net_of, random_weights  # noqa: E402

# composites of the export that use operators netspec has no layer for (batch-statistics
# reductions that keep their axes, Slice, Gather, ArgMax); their layers are checked by the export tests
NOT_ROUND_TRIPPED = {"batchnorm_scale", "reduction_mvn", "crop_embed", "argmax"}


def round_trip(net, seed: int = 0):
    """net -> ONNX -> netspec -> ONNX: the imported net matches the first model under ONNX Runtime
    and under netspec, and its own export matches both."""
    w = random_weights(deploy_plan(net), seed)
    first = export_model(net, w)
    conv = convert_model(first.model, "<first.onnx>")
    second = export_model(conv.net, conv.weights)
    x = random_inputs(first.inputs, seed)
    want = run_onnxruntime(first.model, x)
    ours = run_netspec(second.plan, conv.weights, x)
    again = run_onnxruntime(second.model, x)
    assert set(second.outputs) == set(first.outputs)
    for name in first.outputs:
        blob = first.plan.outputs[first.outputs.index(name)]
        np.testing.assert_allclose(ours[name], want[name], atol=1e-4, rtol=1e-3, err_msg=f"{blob} in netspec")
        np.testing.assert_allclose(again[name], want[name], atol=1e-5, rtol=1e-4, err_msg=f"{blob} re-exported")
    return conv


@pytest.mark.parametrize("path", NET_FILES)
def test_shipped_nets_round_trip(path):
    net = load_any(path)
    conv = round_trip(net)
    # the layer names and param keys survive, so weights files stay interchangeable
    assert set(conv.weights) == {q.key for q in deploy_plan(net).params if q.owner is None}


@pytest.mark.parametrize("case", sorted(set(LAYER_NETS) - NOT_ROUND_TRIPPED))
def test_layer_nets_round_trip(case):
    round_trip(net_of(LAYER_NETS[case], SHAPES.get(case, (2, 4, 9, 9))), seed=5)


def test_lenet_yaml_reads_like_the_original():
    net = api.load_net(ROOT / "models/lenet/train_val.yaml")
    conv = convert_model(export_model(net, random_weights(deploy_plan(net))).model, "<lenet.onnx>")
    assert "  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}" in conv.text
    assert "  - {name: conv1, type: Convolution, num_output: 20, kernel_size: 5}" in conv.text
    assert conv.report.counts()["unsupported"] == 0 and conv.report.summary["layers"] == 9


# ---- PyTorch ---------------------------------------------------------------------------------

def test_pytorch_cnn_imports_and_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 12, 3, stride=2, groups=4, bias=False)
            self.pool = nn.MaxPool2d(2, 2)
            self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
            self.drop = nn.Dropout(0.3)
            self.fc1 = nn.Linear(12 * 3 * 3, 20)
            self.fc2 = nn.Linear(20, 5)

        def forward(self, x):
            x = self.bn1(torch.relu(self.conv1(x)))   # after the ReLU, so the exporter cannot fold it
            x = nn.functional.leaky_relu(self.conv2(x), 0.1)
            x = self.avg(self.pool(x))
            x = self.drop(torch.flatten(x, 1))
            x = torch.sigmoid(self.fc1(x)) * 2.0 + 0.5
            return torch.softmax(self.fc2(x), dim=1)

    model = Net()
    with torch.no_grad():   # non-trivial running statistics, so BatchNorm + Scale both matter
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(4, 3, 13, 13)
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["prob"], opset_version=17,
                      dynamo=False, dynamic_axes={"x": {0: "batch"}, "prob": {0: "batch"}})
    out = tmp_path / "cnn.yaml"
    r = CliRunner().invoke(cli, ["convert", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "cnn.onnx -> " in r.output and "0 unsupported" in r.output and "symbolic (batch)" in r.output
    net = api.load_net(out)
    weights = load_weights(tmp_path / "cnn.safetensors")
    p = deploy_plan(net)
    got = run_netspec(p, weights, {"x": x.numpy()})["prob"]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    types = [l["type"] for l in net.layers]
    assert {"BatchNorm", "Scale", "Pooling", "InnerProduct", "Convolution", "Softmax"} <= set(types)


# ---- errors ------------------------------------------------------------------------------------

def _model(nodes, inits=(), inputs=None, outputs=None, opset=17):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_operators_are_named_with_their_nodes():
    m = _model([helper.make_node("Transpose", ["x"], ["t"], name="perm", perm=[0, 2, 3, 1]),
                helper.make_node("Relu", ["t"], ["r"], name="act"),
                helper.make_node("Einsum", ["r"], ["y"], name="ein", equation="bhwc->bchw")])
    with pytest.raises(NetspecError) as ei:
        convert_model(m, "m.onnx")
    text = str(ei.value)
    assert "node 'perm' (Transpose)" in text and "node 'ein' (Einsum)" in text and "m.onnx" in text
    assert "act" not in text


def test_unexpressible_attributes_are_errors_not_approximations():
    w = np.ones((2, 3, 3, 3), np.float32)
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[0, 0, 1, 1])], [("w", w)])
    with pytest.raises(SpecError, match="node 'c' \\(Conv\\).*asymmetric"):
        convert_model(m, "m.onnx")
    m = _model([helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[3, 3], strides=[2, 2],
                                 ceil_mode=1)], inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                       [1, 1, 6, 6])])
    with pytest.raises(SpecError, match="node 'ap'.*ceil_mode"):
        convert_model(m, "m.onnx")
    m = _model([helper.make_node("Relu", ["x"], ["y"])],
               inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "c", 4, 4])])
    with pytest.raises(SpecError, match="symbolic size on axis 1"):
        convert_model(m, "m.onnx")


def test_count_exclude_pad_becomes_pooling_and_a_divisor_scale():
    m = _model([helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                 count_include_pad=0)],
               inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])])
    conv = convert_model(m, "m.onnx")
    assert [l["type"] for l in conv.net.layers] == ["Input", "Pooling", "Scale"]
    assert conv.report.of("note")
    x = random_inputs({"x": (2, 3, 5, 5)})
    got = run_netspec(deploy_plan(conv.net), conv.weights, x)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(m, x)["y"], atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"not a model at all\n", "truncated", "garbage-tail"])
def test_malformed_files_are_one_paragraph_errors(tmp_path, content):
    net = api.load_net(ROOT / "models/lenet/train_val.yaml")
    good = export_model(net, random_weights(deploy_plan(net))).model.SerializeToString()
    if content == "truncated":
        content = good[: len(good) // 2]
    elif content == "garbage-tail":
        content = good[:200] + bytes(range(256)) * 4
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    r = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "net.yaml")])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "bad.onnx" in r.output
    assert not (tmp_path / "net.yaml").exists() and not (tmp_path / "net.safetensors").exists()


def test_cli_convert_needs_output_and_missing_file(tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "n.yaml")])
    assert r.exit_code == 1 and "no such file" in r.output
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "none.onnx")])
    assert r.exit_code == 2 and "-o" in r.output


def test_cli_round_trip_files(tmp_path):
    onnx_path = tmp_path / "lenet.onnx"
    r = CliRunner().invoke(cli, ["export", str(ROOT / "models/lenet/train_val.yaml"), "--weights",
                                 "zoo:lenet-fashion-mnist", "-o", str(onnx_path), "--parity", "none"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "net" / "lenet.yaml"
    wout = tmp_path / "w.safetensors"
    rep = tmp_path / "report.json"
    r = CliRunner().invoke(cli, ["convert", str(onnx_path), "-o", str(out), "--weights-out", str(wout),
                                 "--report", str(rep)])
    assert r.exit_code == 0, r.output
    import json

    assert json.loads(rep.read_text())["counts"]["mapped"] > 0
    from netspec.zoo_registry import resolve_weights

    zoo = load_weights(resolve_weights("zoo:lenet-fashion-mnist"))
    got = load_weights(wout)
    assert set(got) == set(zoo)
    for k in zoo:
        np.testing.assert_array_equal(got[k], zoo[k])
    # the converted net exports again, with the same parity
    r = CliRunner().invoke(cli, ["export", str(out), "--weights", str(wout), "-o", str(tmp_path / "again.onnx"),
                                 "--parity", "random"])
    assert r.exit_code == 0, r.output
