"""Caffe solver prototxt -> netspec solver YAML, with the nets it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netspec import api
from netspec.caffe.convert_net import NetOptions
from netspec.caffe.convert_solver import SolverOptions, convert_solver_file, convert_solver_text
from netspec.cli.main import cli
from netspec.errors import SpecError
from netspec.spec.load import load_text

MNIST_SOURCES = {"mnist:TRAIN": "fashion-mnist:train", "mnist:TEST": "fashion-mnist:test"}


def solvers(examples: Path) -> list[str]:
    return sorted(str(p.relative_to(examples)) for p in examples.rglob("*solver*.prototxt"))


def convert(examples: Path, rel: str, tmp_path: Path, **net_opts) -> tuple:
    out = tmp_path / (Path(rel).stem + ".yaml")
    res = convert_solver_file(examples / rel, SolverOptions(NetOptions(**net_opts), out_path=out))
    for path, net in res.nets:
        path.write_text(net.text)
    out.write_text(res.text)
    return res, out


def load_solver(path: Path):
    config = pytest.importorskip("netspec.solvers.config")
    return config.load_solver(path)


def test_every_example_solver_converts_and_validates(caffe_examples, tmp_path):
    names = solvers(caffe_examples)
    assert len(names) == 13
    for rel in names:
        res, out = convert(caffe_examples, rel, tmp_path)
        solver = load_solver(out)
        assert solver["max_iter"] > 0 and solver["lr_policy"]
        assert "solver_mode" not in yaml.safe_load(out.read_text())
        for path, net in res.nets:
            assert path.exists() and net.report.summary["checked"] == "yes"


@pytest.mark.parametrize("rel, net, rule, policy", [
    ("mnist/lenet_solver.prototxt", "lenet_train_test.yaml", "SGD", "inv"),
    ("mnist/lenet_solver_adam.prototxt", "lenet_train_test.yaml", "Adam", "fixed"),
    ("mnist/lenet_solver_rmsprop.prototxt", "lenet_train_test.yaml", "RMSProp", "inv"),
    ("mnist/lenet_adadelta_solver.prototxt", "lenet_train_test.yaml", "AdaDelta", "fixed"),
    ("mnist/mnist_autoencoder_solver_nesterov.prototxt", "mnist_autoencoder.yaml", "Nesterov", "step"),
    ("cifar10/cifar10_quick_solver_lr1.prototxt", "cifar10_quick_train_test.yaml", "SGD", "fixed"),
])
def test_solver_fields_keep_caffe_names(caffe_examples, tmp_path, rel, net, rule, policy):
    res, out = convert(caffe_examples, rel, tmp_path)
    data = yaml.safe_load(out.read_text())
    assert data["net"] == net and (tmp_path / net).exists()
    assert data.get("type", "SGD") == rule and data["lr_policy"] == policy
    if rel.endswith("adadelta_solver.prototxt"):
        assert data["delta"] == 1e-6 and data["base_lr"] == 1.0 and data["momentum"] == 0.95
    if rel.endswith("lr1.prototxt"):
        assert "snapshot_format" not in data
        assert any(it.field == "snapshot_format" for it in res.report.of("ignored"))
    assert "snapshot_prefix" not in data          # it was relative to where Caffe ran: snapshots go to the run dir
    assert any(it.field == "snapshot_prefix" for it in res.report.of("ignored"))


def test_autoencoder_solver_two_test_nets_from_one_file(caffe_examples, tmp_path):
    _, out = convert(caffe_examples, "mnist/mnist_autoencoder_solver.prototxt", tmp_path)
    data = yaml.safe_load(out.read_text())
    assert data["test_state"] == [{"stage": "test-on-train"}, {"stage": "test-on-test"}]
    assert data["test_iter"] == [500, 100] and data["test_compute_loss"] is True
    config = pytest.importorskip("netspec.solvers.config")
    training = config.resolve_training(out)
    assert [t.stages for t in training.tests] == [["test-on-train"], ["test-on-test"]]
    for use in [training.train] + training.tests:
        plan = api.compile_net(use.spec, use.phase, use.level, use.stages)
        assert plan.num_params == 2_837_314


def test_consolidated_solver_inline_v1_net_is_written_beside_it(caffe_examples, tmp_path):
    res, out = convert(caffe_examples, "mnist/lenet_consolidated_solver.prototxt", tmp_path,
                       data_sources={"mnist": "fashion-mnist:test", "mnist:TRAIN": "fashion-mnist:train"})
    data = yaml.safe_load(out.read_text())
    assert data["net"] == "lenet_consolidated_solver_net.yaml" and "net_param" not in data
    assert data["test_state"] == [{"stage": "test-on-test-set"}, {"stage": "test-on-train-set"}]
    assert data["random_seed"] == 1701
    text = out.read_text()
    assert text.startswith("# lenet_consolidated_solver.prototxt consolidates the lenet_solver, lenet_train,\n")
    assert "# if desired.\nnetspec: 1\n# Carry out testing every 500 training iterations.\ntest_interval: 500\n" in text
    assert "# Expected results for first and last 500 iterations:" in text      # the comments at the end
    net = api.load_net(tmp_path / data["net"])
    assert [l["type"] for l in net.layers][:4] == ["Data", "Data", "Data", "Convolution"]
    assert net.layers[3]["param"] == {"weight": {"lr_mult": 1}, "bias": {"lr_mult": 2}}   # from blobs_lr
    config = pytest.importorskip("netspec.solvers.config")
    training = config.resolve_training(out)
    for use in [training.train] + training.tests:
        assert api.compile_net(use.spec, use.phase, use.level, use.stages).num_params == 431_080


def test_printed_solver_keeps_inline_nets_inline(caffe_examples):
    res = convert_solver_file(caffe_examples / "mnist/lenet_consolidated_solver.prototxt")
    assert res.nets == []
    data = yaml.safe_load(res.text)
    assert "net" not in data and data["net_param"]["name"] == "LeNet"
    net = api.net_from_doc(load_text(yaml.safe_dump(data["net_param"]), file="inline"))
    assert len(net.layers) == 12


def test_lenet_solver_and_net_load_and_check(caffe_examples, tmp_path):
    _, out = convert(caffe_examples, "mnist/lenet_solver.prototxt", tmp_path, data_sources=MNIST_SOURCES)
    net_text = (tmp_path / "lenet_train_test.yaml").read_text()
    assert 'source: "fashion-mnist:train"' in net_text and 'source: "fashion-mnist:test"' in net_text
    config = pytest.importorskip("netspec.solvers.config")
    training = config.resolve_training(out)
    assert training.solver["type"] == "SGD" and training.solver["base_lr"] == 0.01
    assert training.tests[0].test_iter == 100
    check = CliRunner().invoke(cli, ["check", str(tmp_path / "lenet_train_test.yaml")])
    assert check.exit_code == 0, check.output
    assert "431,080 params" in check.output


@pytest.mark.slow
def test_converted_lenet_trains_50_iterations(caffe_examples, tmp_path):
    if "train" not in cli.commands:
        pytest.skip("netspec train is not available")
    _, out = convert(caffe_examples, "mnist/lenet_solver.prototxt", tmp_path, data_sources=MNIST_SOURCES)
    data = yaml.safe_load(out.read_text())
    data.update(max_iter=50, test_iter=5, test_interval=50, display=10, snapshot=0)
    out.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(cli, ["train", str(out), "--run-dir", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 0, res.output
    assert "Iteration 50" in res.output and "Optimization Done." in res.output


# ---- field by field ---------------------------------------------------------------------------

BASE = 'net: "n.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 10\n'


def test_solver_type_upgrade_and_conflict():
    res = convert_solver_text(BASE + "solver_type: ADAM\n", "s.prototxt")
    assert yaml.safe_load(res.text)["type"] == "Adam"
    assert any(it.field == "solver_type" and it.to == "type" for it in res.report.of("mapped"))
    with pytest.raises(SpecError) as e:
        convert_solver_text(BASE + 'type: "Adam"\nsolver_type: NESTEROV\n', "s.prototxt")
    assert (e.value.line, "not both") == (3, "not both") and "not both" in str(e.value)


def test_dropped_fields_and_notes(tmp_path):
    res = convert_solver_text(BASE + 'solver_mode: GPU device_id: 1 layer_wise_reduce: false\n'
                              'snapshot_prefix: "models/x/snap"\nweights: "a.caffemodel,b.safetensors"\n',
                              "s.prototxt", SolverOptions(out_path=tmp_path / "s.yaml"))
    data = yaml.safe_load(res.text)
    for k in ("solver_mode", "device_id", "layer_wise_reduce"):
        assert k not in data
    assert {it.field for it in res.report.of("ignored")} == {"solver_mode", "device_id", "layer_wise_reduce",
                                                            "snapshot_prefix"}
    assert "snapshot_prefix" not in data
    assert data["weights"] == ["a.safetensors", "b.safetensors"]
    notes = " ".join(it.why for it in res.report.of("note"))
    assert "netspec convert a.caffemodel --net NET -o a.safetensors" in notes
    assert "'n.prototxt' was not found" in notes
    assert data["net"] == "n.yaml"


def test_caffe_root_rewrites_snapshot_prefix(tmp_path):
    out = tmp_path / "out" / "s.yaml"
    out.parent.mkdir()
    res = convert_solver_text(BASE + 'snapshot_prefix: "models/x/snap"\n', "s.prototxt",
                              SolverOptions(out_path=out, caffe_root=tmp_path / "caffe"))
    assert yaml.safe_load(res.text)["snapshot_prefix"] == "../caffe/models/x/snap"


def test_net_found_under_caffe_root_and_net_out(tmp_path):
    root = tmp_path / "caffe"
    (root / "nets").mkdir(parents=True)
    (root / "nets" / "n.prototxt").write_text(
        'name: "n" layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }\n')
    out = tmp_path / "s.yaml"
    res = convert_solver_text(BASE.replace("n.prototxt", "nets/n.prototxt"), "s.prototxt",
                              SolverOptions(out_path=out, net_out=tmp_path / "sub" / "net.yaml", caffe_root=root))
    assert yaml.safe_load(res.text)["net"] == "sub/net.yaml"
    [(path, net)] = res.nets
    assert path == tmp_path / "sub" / "net.yaml" and net.report.summary["params"] == 9


@pytest.mark.parametrize("text, words", [
    ("base_lr: 0.1 lr_policy: 'fixed' max_iter: 1\n", "names no net"),
    ('net: "a" train_net: "b" base_lr: 0.1\n', "exactly one of"),
    ('net: "a" base_lr: "fast"\n', "expected a number"),
    ('net: "a" lr_polcy: "fixed"\n', "did you mean 'lr_policy'"),
    ('net: "a" solver_type: ADAMW\n', "ADAMW"),
    ('net: "a" base_lr: 0.1 lr_policy: "fixed"\n', "max_iter"),
])
def test_bad_solvers_are_located_errors(text, words):
    with pytest.raises(SpecError) as e:
        convert_solver_text(text, "s.prototxt")
    assert e.value.file == "s.prototxt" and words in str(e.value)
