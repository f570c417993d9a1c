"""The commands that read a net without running it: check, summary, render, schema, draw,
plus --help and --version, through click's CliRunner (and a real process for imports)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec import __version__, api
from netspec.cli.main import cli
from netspec.spec.load import load_file

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*/train_val.yaml"))
LENET = "models/lenet/train_val.yaml"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# ---- check ------------------------------------------------------------------------------

def test_check_ok_line():
    r = run("check", LENET)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"{LENET}: OK (431,080 params; TRAIN: 9 layers; TEST: 12 layers; DEPLOY: 9 layers)",
        "solvers/lenet.yaml: OK (solver SGD, lr_policy multistep, max_iter 15000; test nets: #0 x100)"]


def test_check_a_solver_file_checks_its_net():
    r = run("check", "solvers/lenet.yaml")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith(f"{LENET}: OK (431,080 params")
    assert "solvers/lenet.yaml: OK (solver SGD" in r.stdout


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.parent.name)
def test_every_shipped_model_checks(path):
    r = run("check", str(path.relative_to(ROOT)))
    assert r.exit_code == 0, r.output
    assert ": OK (" in r.stdout and "DEPLOY" in r.stdout


def test_check_quiet_prints_nothing():
    r = run("check", "-q", LENET)
    assert r.exit_code == 0 and r.stdout == ""


def test_check_names_each_stage_set():
    r = run("check", "models/autoencoder/train_val.yaml")
    assert r.exit_code == 0, r.output
    assert "TEST[test-on-train]: 22 layers; TEST[test-on-test]: 22 layers" in r.stdout
    r = run("check", "--stage", "test-on-test", "models/autoencoder/train_val.yaml")
    assert r.exit_code == 0, r.output
    assert "TEST[test-on-test]" in r.stdout and "test-on-train" not in r.stdout


def test_check_a_stage_that_leaves_no_data_layer_fails():
    r = run("check", "--stage", "nope", "models/autoencoder/train_val.yaml")
    assert r.exit_code == 1
    assert "unknown bottom 'data'" in r.stderr and "Traceback" not in r.output


def test_check_invalid_exits_1_with_location():
    r = run("check", "tests/bad/kernel_too_large.yaml")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.startswith("error: tests/bad/kernel_too_large.yaml:17: layer 'conv2' (Convolution)")


def test_check_missing_file():
    r = run("check", "models/nope/train_val.yaml")
    assert r.exit_code == 1
    assert "models/nope/train_val.yaml: no such file" in r.stderr


def test_check_warns_about_a_missing_weight_filler(tmp_path):
    p = tmp_path / "net.yaml"
    p.write_text("layers:\n  - {name: data, type: Input, top: [data, label], shape: [[2, 4], [2]]}\n"
                 "  - {name: ip, type: InnerProduct, bottom: data, num_output: 3}\n"
                 "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    r = run("check", str(p))
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and ":3: layer 'ip' (InnerProduct), field 'weight_filler'" in r.stderr


def _check_raising(monkeypatch, error: BaseException):
    """`netspec check` on LeNet with ``error`` raised inside it (NETSPEC_DEBUG unset)."""
    def boom(*a, **k):
        raise error

    monkeypatch.setattr(api, "check", boom)
    monkeypatch.delenv("NETSPEC_DEBUG", raising=False)
    return run("check", LENET)


@pytest.mark.parametrize("gpu", [False, True], ids=["host", "gpu"])
def test_running_out_of_memory_is_one_paragraph_and_exit_1(monkeypatch, gpu):
    # CuPy's OutOfMemoryError is a MemoryError of module cupy.cuda.memory, with its own message
    oom = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory" if gpu else "builtins"})
    r = _check_raising(monkeypatch, oom("Out of memory allocating 1,073,741,824 bytes (allocated so far: 2,048 bytes)."))
    assert r.exit_code == 1
    err = r.stderr.strip()
    assert err.startswith(f"error: {'the GPU' if gpu else 'this machine'} ran out of memory (Out of memory "
                          f"allocating 1,073,741,824 bytes") and "\n" not in err
    assert "lower batch_size" in err and ("precision: float16" in err) == gpu
    assert "internal error" not in err and "Traceback" not in r.output


def test_an_unexpected_exception_is_one_paragraph_and_exit_2(monkeypatch):
    r = _check_raising(monkeypatch, RuntimeError("something inside broke"))
    assert r.exit_code == 2
    assert "internal error: RuntimeError: something inside broke" in r.stderr
    assert "NETSPEC_DEBUG=1" in r.stderr and "Traceback" not in r.output


# ---- summary ----------------------------------------------------------------------------

def test_summary_lenet_table():
    r = run("summary", LENET)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.splitlines()[0] == "LeNet (TRAIN): 9 layers"
    assert "params: 431,080 (1.6 MiB)    learnable: 431,080" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line and not line.startswith("-")}
    assert rows["conv1"][2] == "64x20x24x24" and rows["conv1"][3] == "520"
    assert rows["pool2"][2] == "64x50x4x4"
    assert rows["ip1"][3] == "400,500"
    assert rows["total"][1] == "431,080"
    assert "outputs: loss" in out


def test_summary_json():
    r = run("summary", "--json", "--phase", "TEST", LENET)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["net"] == "LeNet" and data["phase"] == "TEST"
    assert data["total"]["params"] == 431080
    by = {row["layer"]: row for row in data["layers"]}
    assert by["conv2"]["tops"] == ["100x50x8x8"] and by["conv2"]["params"] == 25050
    # one multiply-add is 2 FLOPs: conv1 makes 100*20*24*24 outputs of 25 multiply-adds each
    assert by["conv1"]["flops"] == 2 * 25 * 100 * 20 * 24 * 24
    assert "label_mnist_1_split" in by and by["accuracy"]["tops"] == ["scalar"]


def test_summary_deploy_and_cifar():
    r = run("summary", "--phase", "deploy", "--json", "models/cifar10_quick/train_val.yaml")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["total"]["params"] == 145578
    assert [row["layer"] for row in data["layers"]][-1] == "prob"


# ---- render -----------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["TRAIN", "TEST", "DEPLOY", None])
@pytest.mark.parametrize("model", ["lenet", "autoencoder", "cifar10_quick", "xor"])
def test_render_reloads_and_checks(tmp_path, phase, model):
    src = ROOT / "models" / model / "train_val.yaml"
    args = ["render", str(src)] + (["--phase", phase] if phase else [])
    if phase == "TEST" and model == "autoencoder":
        args += ["--stage", "test-on-test"]
    r = run(*args)
    assert r.exit_code == 0, r.output
    # the rendered net reads its sources relative to its folder: render next to a copy of them
    folder = tmp_path / model
    shutil.copytree(src.parent, folder)
    out = folder / "rendered.yaml"
    out.write_text(r.stdout)
    res = api.check(out)
    assert res.plans
    original = api.compile_net(api.load_net(src), phase or "TRAIN",
                               stages=["test-on-test"] if (phase == "TEST" and model == "autoencoder") else None)
    again = api.compile_net(api.load_net(out), "TEST" if phase in ("TEST", "DEPLOY") else "TRAIN")
    if phase is not None:
        assert [lp.name for lp in again.layers] == [lp.name for lp in original.layers]
        assert [lp.top_shapes for lp in again.layers] == [lp.top_shapes for lp in original.layers]
    assert again.num_params == original.num_params


def test_render_deploy_is_caffe_lenet_prototxt():
    r = run("render", "--phase", "DEPLOY", LENET)
    assert r.exit_code == 0, r.output
    net = load_file_text(r.stdout)
    layers = net["layers"]
    assert layers[0] == {"name": "data", "type": "Input", "top": ["data"], "shape": [100, 1, 28, 28]}
    assert [l["type"] for l in layers] == ["Input", "Convolution", "Pooling", "Convolution", "Pooling",
                                          "InnerProduct", "ReLU", "InnerProduct", "Softmax"]
    assert layers[-1]["name"] == "prob" and layers[-1]["bottom"] == ["ip2"]


def test_render_splits_json_and_output_file(tmp_path):
    out = tmp_path / "test.json"
    r = run("render", "--phase", "TEST", "--splits", "--json", "-o", str(out), LENET)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    data = json.loads(out.read_text())
    names = [l["name"] for l in data["layers"]]
    assert "label_mnist_1_split" in names and "ip2_ip2_0_split" in names
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary name, then renamed


def test_render_normalized_without_phase_keeps_rules():
    r = run("render", LENET)
    assert r.exit_code == 0
    net = load_file_text(r.stdout)
    assert net["layers"][0]["include"] == [{"phase": "TRAIN"}]
    assert net["layers"][2]["pad"] == 0 and net["layers"][2]["bottom"] == ["data"]


def load_file_text(text: str) -> dict:
    from netspec.spec.load import load_text

    return load_text(text).data


# ---- schema -----------------------------------------------------------------------------

def test_schema_is_valid_and_validates_the_models():
    import jsonschema

    r = run("schema")
    assert r.exit_code == 0
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    for path in MODELS:
        assert not list(v.iter_errors(load_file(path).data)), path
    bad = load_file(ROOT / "tests" / "bad" / "field_typo.yaml").data
    assert list(v.iter_errors(bad))


def test_schema_types_count_line():
    from netspec.core.layer import registry

    r = run("schema", "--types")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    n = len(registry())
    assert lines[-1] == f"{n} layer types"
    assert len(lines) == n + 1
    assert any(l.startswith("Convolution ") for l in lines)


# ---- draw -------------------------------------------------------------------------------

def test_draw_dot(tmp_path):
    out = tmp_path / "lenet.dot"
    r = run("draw", LENET, "-o", str(out))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"wrote {out}"
    dot = out.read_text()
    assert dot.startswith('digraph "LeNet"')
    assert "conv1\\n(Convolution)" in dot and "64x20x24x24" in dot


def test_draw_test_phase_shows_splits(tmp_path):
    out = tmp_path / "t.gv"
    r = run("draw", "--phase", "TEST", "--rankdir", "LR", LENET, "-o", str(out))
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "rankdir=LR" in text and "label_mnist_1_split" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_svg(tmp_path):
    out = tmp_path / "lenet.svg"
    r = run("draw", LENET, "-o", str(out))
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    assert "<svg" in svg and "conv1" in svg


def test_draw_unknown_format(tmp_path):
    r = run("draw", LENET, "-o", str(tmp_path / "x.bmp"))
    assert r.exit_code == 1
    assert "use a .svg, .png, .pdf or .dot file" in r.stderr


# ---- help and version -------------------------------------------------------------------

def test_help():
    for args in (["--help"], ["-h"]):
        r = run(*args)
        assert r.exit_code == 0
        for cmd in ("check", "summary", "render", "schema", "draw"):
            assert f"  {cmd} " in r.stdout
    r = run("check", "--help")
    assert r.exit_code == 0 and "Validate a net or solver file" in r.stdout and "--stage" in r.stdout


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"netspec, version {__version__}"


def test_unknown_command_suggests():
    r = run("chek", LENET)
    assert r.exit_code == 2 and "Did you mean" in r.output


# ---- imports: --help and check never load numba ----------------------------------------

PROBE = textwrap.dedent("""
    import sys
    from netspec.cli.main import cli
    try:
        cli(sys.argv[1:], prog_name="netspec")
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    print("NUMBA" if any(m == "numba" or m.startswith("numba.") for m in sys.modules) else "NO-NUMBA", code)
""")


@pytest.mark.parametrize("args", [["--help"], ["check", LENET], ["check", "models/autoencoder/train_val.yaml"],
                                  ["check", "models/xor/train_val.yaml"], ["check", "models/cifar10_quick/train_val.yaml"],
                                  ["check", "tests/bad/kernel_too_large.yaml"], ["schema", "--types"],
                                  ["summary", LENET]], ids=lambda a: " ".join(a))
def test_no_numba_import(args):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.split()[0] == "NO-NUMBA", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_train_only_net_checks_its_one_phase(tmp_path):
    p = tmp_path / "train_only.yaml"
    p.write_text("layers:\n"
                 "  - {name: data, type: Input, top: [data, label], shape: [[2, 4], [2]], include: {phase: TRAIN}}\n"
                 "  - {name: ip, type: InnerProduct, bottom: data, num_output: 3, weight_filler: {type: xavier},\n"
                 "     include: {phase: TRAIN}}\n"
                 "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], include: {phase: TRAIN}}\n")
    r = run("check", str(p))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().endswith("OK (15 params; TRAIN: 3 layers)")
    # a layer left in both phases is checked in TEST too, where nothing feeds it
    p.write_text(p.read_text().replace(",\n     include: {phase: TRAIN}}", "}"))
    r = run("check", str(p))
    assert r.exit_code == 1 and "unknown bottom 'data'" in r.stderr
    assert "no layer before it produces anything in the TEST net" in r.stderr


def test_a_closed_pipe_ends_quietly(monkeypatch):
    """`netspec summary ... | head -1`: the reader leaves early; no 'internal error'."""
    import types

    import click

    import netspec.cli.net as net_commands

    def closed(*a, **k):
        raise BrokenPipeError(32, "Broken pipe")

    shim = types.SimpleNamespace(**{k: getattr(click, k) for k in dir(click) if not k.startswith("__")})
    shim.echo = closed
    monkeypatch.setattr(net_commands, "click", shim)
    r = run("summary", LENET)
    assert r.exit_code == 1
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "internal error" not in r.output


def test_summary_of_a_staged_test_net_names_its_stage():
    r = run("summary", "--phase", "TEST", "models/autoencoder/train_val.yaml")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "MNISTAutoencoder (TEST[test-on-train]): 22 layers"
    r = run("summary", "--phase", "TEST", "--stage", "test-on-test", "models/autoencoder/train_val.yaml")
    assert r.stdout.splitlines()[0] == "MNISTAutoencoder (TEST[test-on-test]): 22 layers"
