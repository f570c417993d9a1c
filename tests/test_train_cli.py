"""``netspec train``, ``netspec test`` and ``netspec plot`` through click's CliRunner: exit
codes, messages, run folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent

LAYERS = """\
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[8, 5], [8]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: ip1, type: InnerProduct, num_output: 6, weight_filler: {type: xavier}}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""

SOLVER = """\
net: net.yaml
base_lr: 0.1
lr_policy: fixed
max_iter: 4
display: 2
test_iter: 2
test_interval: 2
random_seed: 3
"""


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.yaml").write_text("name: tiny\n" + LAYERS)
    (tmp_path / "solver.yaml").write_text(SOLVER)
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_train_a_solver_file_into_the_default_run_folder(files):
    r = invoke("train", "solver.yaml", "-q")
    assert r.exit_code == 0, r.output
    assert "Solving tiny" in r.output and r.output.rstrip().endswith("Optimization Done.")
    runs = list((files / "runs" / "tiny").iterdir())
    assert len(runs) == 1
    names = {p.name for p in runs[0].iterdir()}
    assert {"log.jsonl", "train.log", "tiny_iter_4.safetensors", "tiny_iter_4.solverstate.safetensors"} <= names


def test_train_a_net_that_names_its_solver_and_override_it(files):
    (files / "net2.yaml").write_text("name: tiny\nsolver: solver.yaml\n" + LAYERS)
    r = invoke("train", "net2.yaml", "--run-dir", "a", "-q")
    assert r.exit_code == 0, r.output
    assert (files / "a" / "tiny_iter_4.safetensors").exists()
    (files / "short.yaml").write_text(SOLVER.replace("max_iter: 4", "max_iter: 1"))
    r = invoke("train", "net2.yaml", "--solver", "short.yaml", "--run-dir", "b", "-q")
    assert r.exit_code == 0, r.output
    assert (files / "b" / "tiny_iter_1.safetensors").exists()


def test_resume_latest_continues_in_the_run_folder(files):
    (files / "s2.yaml").write_text(SOLVER.replace("max_iter: 4", "max_iter: 2"))
    assert invoke("train", "s2.yaml", "--run-dir", "run", "-q").exit_code == 0
    r = invoke("train", "solver.yaml", "--resume", "latest", "--run-dir", "run", "-q")
    assert r.exit_code == 0, r.output
    assert "Restoring previous solver status from run/tiny_iter_2.solverstate.safetensors" in r.output
    assert (files / "run" / "tiny_iter_4.solverstate.safetensors").exists()
    # a state file by name, with the run folder taken from the state
    r = invoke("train", "solver.yaml", "--resume", "run/tiny_iter_2.solverstate.safetensors", "-q")
    assert r.exit_code == 0, r.output
    assert "Run folder: " in r.output and str(files / "run") in r.output


def test_resume_refuses_a_changed_solver(files):
    assert invoke("train", "solver.yaml", "--run-dir", "run", "-q").exit_code == 0
    (files / "solver.yaml").write_text(SOLVER.replace("base_lr: 0.1", "base_lr: 0.2"))
    r = invoke("train", "solver.yaml", "--resume", "latest", "--run-dir", "run", "-q")
    assert r.exit_code == 1
    assert "cannot resume" in r.output and "solver: base_lr 0.1 -> 0.2" in r.output


def test_errors_are_located_and_exit_1(files):
    (files / "bad.yaml").write_text(SOLVER + "momentun: 0.9\n")
    r = invoke("train", "bad.yaml")
    assert r.exit_code == 1
    assert "bad.yaml:9: field 'momentun': unknown solver field 'momentun'; did you mean 'momentum'?" in r.output
    r = invoke("train", "net.yaml")
    assert r.exit_code == 1 and "names no solver" in r.output
    r = invoke("train", "solver.yaml", "--resume", "latest")
    assert r.exit_code == 1 and "no solver state" in r.output
    (files / "gpu.yaml").write_text(SOLVER + "solver_mode: GPU\n")
    r = invoke("train", "gpu.yaml")   # no GPU here (nor the simulator): a clear error, no CPU run
    if not _gpu_usable():
        assert r.exit_code == 1 and "--device cuda" in r.output and "Traceback" not in r.output
    r = invoke("train", "solver.yaml", "--device", "tpu")
    assert r.exit_code == 1 and "unknown device 'tpu'" in r.output


def test_a_missing_cuda_extra_is_named_before_any_driver_check(files, monkeypatch):
    """Without numba-cuda, `numba.cuda` is numba's retired target, which reports a missing driver;
    the error must name the packages (and the extra) instead."""
    import importlib.util

    from netspec.kernels import cuda as kc

    if kc.simulated():
        pytest.skip("the simulator needs no GPU packages")
    real = importlib.util.find_spec
    for gone, said in ((("numba_cuda", "cupy"), "needs numba-cuda and CuPy, which are not installed"),
                       (("cupy",), "needs CuPy, which is not installed")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, _g=gone: None if name in _g else real(name, *a))
        monkeypatch.setattr(kc, "_RUNTIMES", {})
        r = invoke("train", "solver.yaml", "--device", "cuda")
        assert r.exit_code == 1 and said in r.output and 'pip install -e ".[cuda]"' in r.output, r.output
        assert "driver" not in r.output and "Traceback" not in r.output


def _gpu_usable() -> bool:
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
        return True
    except DeviceError:
        return False


def test_nan_exits_1_with_the_layer(files):
    (files / "nan.yaml").write_text("name: tiny\n" + LAYERS.replace("{type: gaussian, std: 1}", "{type: constant, value: .nan}"))
    (files / "s.yaml").write_text(SOLVER.replace("net.yaml", "nan.yaml"))
    r = invoke("train", "s.yaml", "-q")
    assert r.exit_code == 1
    assert "training stopped at iteration 0: the loss is nan; it first appears in the input 'data' of layer 'data'" \
        in r.output


def test_sigint_snapshots_and_exits_130(files, monkeypatch):
    import netspec.cli.train as train_cli

    echo = train_cli._echo

    def interrupting(msg):
        echo(msg)
        if msg.startswith("Iteration 2, lr"):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_cli, "_echo", interrupting)
    (files / "long.yaml").write_text(SOLVER.replace("max_iter: 4", "max_iter: 100000"))
    r = invoke("train", "long.yaml", "--run-dir", "run", "-q")
    assert r.exit_code == 130, r.output
    assert "SIGINT received" in r.output and "Optimization stopped early." in r.output
    assert (files / "run" / "tiny_iter_3.solverstate.safetensors").exists()


def test_sigterm_to_a_training_process(files):
    (files / "long.yaml").write_text(SOLVER.replace("max_iter: 4", "max_iter: 100000").replace("display: 2", "display: 1"))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "netspec.cli.main", "train", "long.yaml", "--run-dir", "run", "-q"],
                            cwd=files, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("Iteration 5, lr"):
                proc.send_signal(signal.SIGTERM)
                break
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    states = sorted((files / "run").glob("*.solverstate.safetensors"))
    assert len(states) == 1 and "Optimization stopped early." in out


def test_test_command_prints_caffes_summary(files):
    assert invoke("train", "solver.yaml", "--run-dir", "run", "-q").exit_code == 0
    r = invoke("test", "net.yaml", "--weights", "run/tiny_iter_4.safetensors", "--iterations", "3", "-q")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("Loss: ")
    assert lines[1].startswith("accuracy = ")
    assert lines[2].startswith("loss = ") and lines[2].endswith(" loss)")
    assert lines[0].split(": ")[1] == lines[2].split(" = ")[1].split(" ")[0]
    # a solver file works too (its first test net)
    assert invoke("test", "solver.yaml", "--weights", "run/tiny_iter_4.safetensors", "-q").exit_code == 0
    r = invoke("test", "net.yaml", "--weights", "run/missing.safetensors")
    assert r.exit_code == 1 and "no such weights file" in r.output
    r = invoke("test", "net.yaml")
    assert r.exit_code == 2 and "--weights" in r.output


def test_test_defaults_to_a_full_pass_when_the_data_size_is_known():
    from netspec import api
    from netspec.core.net import Net
    from netspec.solvers.run import DEFAULT_TEST_ITERATIONS, full_pass_iterations

    xor = Net(api.compile_net(api.load_net(ROOT / "models" / "xor" / "train_val.yaml"), "TEST"))
    assert full_pass_iterations(xor) == 1          # 4 records, batch 4
    dummy = Net(api.compile_net(api.load_net_text("name: t\n" + LAYERS), "TEST"))
    assert full_pass_iterations(dummy) is None and DEFAULT_TEST_ITERATIONS == 50


def test_plot_draws_the_curves(files):
    assert invoke("train", "solver.yaml", "--run-dir", "run", "-q").exit_code == 0
    r = invoke("plot", "run")
    assert r.exit_code == 0, r.output
    png = files / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = invoke("plot", "run", "-o", "out/c.png")
    assert r.exit_code == 0 and (files / "out" / "c.png").exists()
    r = invoke("plot", "nowhere")
    assert r.exit_code == 1 and "no log.jsonl here" in r.output


def test_plot_curves_from_the_log(files):
    from netspec.solvers.plot import curves

    assert invoke("train", "solver.yaml", "--run-dir", "run", "-q").exit_code == 0
    c = curves(files / "run")
    assert [it for it, _ in c["loss"]["train smoothed_loss"]] == [0, 2]
    assert [it for it, _ in c["accuracy"]["test#0 accuracy"]] == [0, 2, 4]
    assert c["lr"]["learning rate"] == [(0, 0.1), (2, 0.1)]
    # a line cut short by a kill is skipped
    with open(files / "run" / "log.jsonl", "a") as f:
        f.write('{"iter": 6, "pha')
    assert curves(files / "run")["accuracy"] == c["accuracy"]


def test_help_does_not_import_numba():
    code = ("import sys; from click.testing import CliRunner; from netspec.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['train', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--resume' in r.output; print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_log_jsonl_lines_are_json(files):
    assert invoke("train", "solver.yaml", "--run-dir", "run", "-q").exit_code == 0
    for line in (files / "run" / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert {"iter", "phase", "name", "value", "lr", "seconds"} <= set(rec)
