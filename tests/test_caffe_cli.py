"""``netspec convert`` through click's CliRunner: outputs, the report, and clean failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netspec.cli.main import cli

FIXTURES = Path(__file__).parent / "fixtures" / "caffe"


def run(*args):
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


def test_net_to_stdout_with_report_on_stderr():
    res = run(FIXTURES / "legacy_v1.prototxt")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("# A small net in Caffe's legacy forms")
    assert yaml.safe_load(res.stdout)["name"] == "LegacyV1"
    assert "converted net" in res.stderr and "convolution_param.engine" in res.stderr
    quiet = run(FIXTURES / "legacy_v1.prototxt", "-q")
    assert quiet.stderr == "" and quiet.stdout == res.stdout


def test_net_to_file_with_json_report(tmp_path):
    out, rep = tmp_path / "net.yaml", tmp_path / "report.json"
    res = run(FIXTURES / "deprecated.prototxt", "-o", out, "--report", rep, "-v")
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    check = CliRunner().invoke(cli, ["check", str(out)])
    assert check.exit_code == 0, check.output
    js = json.loads(rep.read_text())
    assert js["kind"] == "net" and js["output"].endswith("net.yaml") and js["summary"]["checked"] == "yes"
    statuses = {it["status"] for it in js["items"]}
    assert {"mapped", "ignored", "note"} <= statuses
    assert "mapped " in res.stderr       # -v lists mapped fields too


def test_solver_writes_solver_and_net(caffe_examples, tmp_path):
    res = run(caffe_examples / "mnist/lenet_solver.prototxt", "-o", tmp_path / "solver.yaml",
              "--net-out", tmp_path / "nets" / "lenet.yaml", "--data-source", "mnist:train=fashion-mnist:train",
              "--data-source", "mnist:TEST=fashion-mnist:test")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "solver.yaml").read_text())["net"] == "nets/lenet.yaml"
    net = yaml.safe_load((tmp_path / "nets" / "lenet.yaml").read_text())
    assert [l.get("source") for l in net["layers"][:2]] == ["fashion-mnist:train", "fashion-mnist:test"]
    assert "converted solver" in res.stderr and "converted net" in res.stderr


@pytest.mark.parametrize("text, line, col, words", [
    ('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n', 2, 7, "never closed"),
    ('layer {\n  name: "p" type: "Pooling"\n  pooling_param { pool: MEDIAN }\n}\n', 3, 25, "MEDIAN"),
    ('layer {\n  name: "a"\n  typ: "ReLU"\n}\n', 3, 3, "did you mean 'type'"),
    ('layer {\n  name: "a\n}\n', 2, 9, "no closing"),
    ('layer {\n  name: "c"\n  type: "Convolution"\n  convolution_param { num_output: "many" }\n}\n', 4, 35,
     "expected an integer"),
])
def test_malformed_prototxt_exit_1_located(tmp_path, text, line, col, words):
    p = tmp_path / "bad.prototxt"
    p.write_text(text)
    res = run(p, "-o", tmp_path / "out.yaml")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    assert f"bad.prototxt:{line}:{col}:" in res.stderr and words in res.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_net_that_does_not_check_is_written_then_exit_1(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
                 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 '
                 'kernel_size: 3 } }\n')
    res = run(p, "-o", tmp_path / "n.yaml")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "n.prototxt:2" in res.stderr and "does not pass netspec check" in res.stderr
    assert (tmp_path / "n.yaml").exists()


def test_usage_errors(tmp_path):
    res = run(FIXTURES / "legacy_v1.prototxt", "--data-source", "nothing")
    assert res.exit_code == 2 and "NAME=VALUE" in res.output
    res = run(FIXTURES / "legacy_v1.prototxt", "--net", "x.yaml")
    assert res.exit_code == 2
    res = run(tmp_path / "missing.prototxt")
    assert res.exit_code == 1 and "no such file" in res.stderr
    binary = tmp_path / "model.prototxt"
    binary.write_bytes(b"\x0a\x02\xff\xfe")
    res = run(binary)
    assert res.exit_code == 1 and "not text" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("data, words", [
    (b"\x0b\x0c", "wire type 3"),
    (b"\xa2\x06\x05\x0a\x02fc", "runs past the end"),
    (b"\xa2\x06\x80", "ends inside a number"),
])
def test_corrupt_caffemodel_exit_1(tmp_path, data, words):
    net = tmp_path / "n.prototxt"
    net.write_text('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }')
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(data)
    res = run(bad, "--net", net, "-o", tmp_path / "w.safetensors")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    assert "bad.caffemodel" in res.stderr and "at byte" in res.stderr and words in res.stderr
