"""The training loop: Caffe's order of operations, its log lines, log.jsonl, testing,
snapshots, signals and the NaN stop, on small DummyData nets."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from netspec.errors import SolverError
from netspec.solvers.config import resolve_training
from netspec.solvers.runlog import RunLog
from netspec.solvers.solver import INTERRUPTED, Solver

LAYERS = """\
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[8, 5], [8]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: ip1, type: InnerProduct, num_output: 6, weight_filler: {type: xavier}}
  - {name: relu1, type: ReLU, top: ip1}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""


def net_text(solver: dict, layers: str = LAYERS) -> str:
    return "name: tiny\nsolver: " + json.dumps(solver) + "\n" + layers


def make(tmp_path: Path, layers: str = LAYERS, **solver) -> tuple[Solver, list[str]]:
    cfg = {"base_lr": 0.1, "lr_policy": "fixed", "max_iter": 4, "random_seed": 5}
    cfg.update(solver)
    f = tmp_path / "net.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    f.write_text(net_text(cfg, layers))
    lines: list[str] = []
    run = tmp_path / "run"
    s = Solver(resolve_training(f), run, RunLog(run, lines.append))
    return s, lines


def jsonl(tmp_path: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]


def test_caffe_log_lines_in_caffes_order(tmp_path):
    s, lines = make(tmp_path, max_iter=4, display=2, test_iter=2, test_interval=2, snapshot=2)
    assert s.solve() == 0
    s.log.close()
    shape = [l if l.startswith("Snapshotting") else re.sub(r"(?<![A-Za-z_])-?\d+(\.\d+)?(e[-+]?\d+)?", "N", l)
             for l in lines]
    run = str(tmp_path / "run" / "tiny")
    want = [
        "Solving tiny",
        "Learning Rate Policy: fixed",
        "Iteration N, Testing net (#N)",
        "    Test net output #N: accuracy = N",
        "    Test net output #N: loss = N (* N = N loss)",
        "Iteration N (N iter/s, Ns/N iters), loss = N",
        "    Train net output #N: loss = N (* N = N loss)",
        "Iteration N, lr = N",
        f"Snapshotting to safetensors file {run}_iter_2.safetensors",
        f"Snapshotting solver state to safetensors file {run}_iter_2.solverstate.safetensors",
        "Iteration N, Testing net (#N)",
    ]
    assert shape[:len(want)] == want
    assert lines[2] == "Iteration 0, Testing net (#0)" and lines[10] == "Iteration 2, Testing net (#0)"
    # after the last update: the snapshot, a forward pass for the loss, a final test
    assert lines[-6].endswith("tiny_iter_4.solverstate.safetensors")
    assert re.fullmatch(r"Iteration 4, loss = [-+0-9.e]+", lines[-5])
    assert lines[-4] == "Iteration 4, Testing net (#0)"
    assert lines[-1] == "Optimization Done."
    assert (tmp_path / "run" / "tiny_iter_4.solverstate.safetensors").exists()
    text = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert re.match(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ netspec\] Solving tiny$", text[0])


def test_no_test_at_zero_without_test_initialization(tmp_path):
    s, lines = make(tmp_path, max_iter=3, test_iter=1, test_interval=2, test_initialization=False,
                    snapshot_after_train=False)
    s.solve()
    assert [l for l in lines if "Testing" in l] == ["Iteration 2, Testing net (#0)"]


def test_test_compute_loss(tmp_path):
    s, lines = make(tmp_path, max_iter=1, test_iter=3, test_interval=1, test_compute_loss=True,
                    snapshot_after_train=False)
    s.solve()
    losses = [l for l in lines if l.startswith("Test loss: ")]
    assert len(losses) == 2
    outputs = [l for l in lines if "Test net output #1: loss" in l]
    assert losses[0].split(": ")[1] == outputs[0].split(" = ")[1].split(" ")[0]


def test_log_jsonl_records_every_displayed_and_tested_value(tmp_path):
    s, _ = make(tmp_path, max_iter=4, display=2, test_iter=1, test_interval=4, snapshot_after_train=False,
                lr_policy="step", gamma=0.5, stepsize=2)
    s.solve()
    s.log.close()
    recs = jsonl(tmp_path)
    train = [r for r in recs if r["phase"] == "TRAIN"]
    assert {(r["iter"], r["name"]) for r in train} == {(0, "smoothed_loss"), (0, "loss"), (2, "smoothed_loss"),
                                                        (2, "loss")}
    assert {r["iter"]: r["lr"] for r in train} == {0: 0.1, 2: 0.05}
    for r in train:
        assert set(r) == {"iter", "phase", "name", "value", "lr", "seconds", "data_wait"}
    test = [r for r in recs if r["phase"] == "TEST"]
    assert {(r["iter"], r["name"], r["test_net"]) for r in test} == {
        (i, n, 0) for i in (0, 4) for n in ("accuracy", "loss")}


def test_average_loss_is_the_mean_of_the_last_losses(tmp_path):
    s, _ = make(tmp_path, max_iter=6, display=1, average_loss=3, snapshot_after_train=False)
    s.solve()
    s.log.close()
    recs = [r for r in jsonl(tmp_path) if r["phase"] == "TRAIN"]
    raw = [r["value"] for r in recs if r["name"] == "loss"]
    smooth = [r["value"] for r in recs if r["name"] == "smoothed_loss"]
    want = [np.mean(raw[max(0, i - 2):i + 1]) for i in range(len(raw))]
    assert smooth == pytest.approx(want, rel=1e-12)


def test_iter_size_averages_the_gradients_of_several_batches(tmp_path):
    s, _ = make(tmp_path, max_iter=1, iter_size=2, snapshot_after_train=False)
    # the same net and seed, by hand: two forward/backward passes, half the summed gradient
    ref, _ = make(tmp_path / "ref", max_iter=1, snapshot_after_train=False)
    w0 = ref.net.param_data.copy()
    assert np.array_equal(w0, s.net.param_data)
    ref.net.clear_param_grads()
    l1 = ref.net.forward_backward()
    l2 = ref.net.forward_backward()
    g = ref.net.param_grad * np.float32(0.5)
    s.solve()
    np.testing.assert_allclose(s.net.param_data, w0 - np.float32(0.1) * g, rtol=1e-6, atol=1e-7)
    assert s.losses == [pytest.approx((l1 + l2) / 2)]


def test_test_nets_share_the_train_params(tmp_path):
    s, _ = make(tmp_path, test_iter=1, test_interval=2)
    for key, blob in s.test_nets[0].params.items():
        assert np.shares_memory(blob.data, s.net.params[key].data)


def test_random_seed_decides_everything(tmp_path):
    a, _ = make(tmp_path / "a", random_seed=7, snapshot_after_train=False)
    b, _ = make(tmp_path / "b", random_seed=7, snapshot_after_train=False)
    c, _ = make(tmp_path / "c", random_seed=8, snapshot_after_train=False)
    assert np.array_equal(a.net.param_data, b.net.param_data)
    assert not np.array_equal(a.net.param_data, c.net.param_data)
    for x in (a, b, c):
        x.solve()
    assert np.array_equal(a.net.param_data, b.net.param_data)


def test_snapshot_schedule_and_snapshot_after_train(tmp_path):
    def files(**kw):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        s, _ = make(d, max_iter=5, **kw)
        s.solve()
        return sorted(p.name for p in (d / "run").glob("*.safetensors"))

    assert files(snapshot=2) == [f"tiny_iter_{i}{suf}" for i in (2, 4, 5)
                                 for suf in (".safetensors", ".solverstate.safetensors")]
    assert files(snapshot=2, snapshot_after_train=False) == [f"tiny_iter_{i}{suf}" for i in (2, 4)
                                                             for suf in (".safetensors", ".solverstate.safetensors")]
    assert files(snapshot=5) == ["tiny_iter_5.safetensors", "tiny_iter_5.solverstate.safetensors"]


def test_snapshot_prefix_is_relative_to_the_solver_file(tmp_path):
    s, _ = make(tmp_path, max_iter=1, snapshot_prefix="snaps/lenet")
    s.solve()
    assert (tmp_path / "snaps" / "lenet_iter_1.safetensors").exists()
    s2, _ = make(tmp_path, max_iter=1, snapshot_prefix="folder/")
    s2.solve()
    assert (tmp_path / "folder" / "tiny_iter_1.safetensors").exists()


def test_snapshot_weights_file_holds_float32_params_by_name(tmp_path):
    from netspec.io.weights import read_safetensors

    s, _ = make(tmp_path, max_iter=2, snapshot_diff=True)
    s.solve()
    tensors, meta = read_safetensors(tmp_path / "run" / "tiny_iter_2.safetensors")
    assert meta["format"] == "netspec-weights" and meta["iter"] == "2"
    assert sorted(tensors) == ["diff/ip1/bias", "diff/ip1/weight", "diff/ip2/bias", "diff/ip2/weight",
                               "ip1/bias", "ip1/weight", "ip2/bias", "ip2/weight"]
    assert tensors["ip1/weight"].dtype == np.float32
    assert np.array_equal(tensors["ip2/weight"], s.net.params["ip2/weight"].data)


def test_sigterm_finishes_the_iteration_snapshots_and_returns_130(tmp_path):
    s, lines = make(tmp_path, max_iter=50, display=1, snapshot=0)

    def echo(msg):
        lines.append(msg)
        if msg == "Iteration 3, lr = 0.1":
            os.kill(os.getpid(), signal.SIGTERM)

    s.log.echo = echo
    before = signal.getsignal(signal.SIGTERM)
    assert s.solve() == INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) is before
    assert s.iter == 4
    assert (tmp_path / "run" / "tiny_iter_4.solverstate.safetensors").exists()
    assert lines[-1] == "Optimization stopped early."
    assert "SIGTERM received" in " ".join(lines)


def test_a_signal_during_a_test_puts_the_test_nets_back(tmp_path):
    s, lines = make(tmp_path, max_iter=50, test_iter=5, test_interval=10)
    ref, _ = make(tmp_path / "ref", max_iter=50, test_iter=5, test_interval=10)
    state0 = ref.test_nets[0].rng.bit_generator.state

    def echo(msg):
        lines.append(msg)
        if msg == "Iteration 0, Testing net (#0)":
            os.kill(os.getpid(), signal.SIGINT)

    s.log.echo = echo
    assert s.solve() == INTERRUPTED
    assert "Test interrupted." in lines and s.iter == 0
    assert s.test_nets[0].rng.bit_generator.state == state0


def test_debug_info_and_data_wait(tmp_path):
    import time

    s, lines = make(tmp_path, max_iter=2, display=1, debug_info=True, snapshot_after_train=False)
    layer = s.net.layers[0].layer
    layer.wait_seconds = 0.0
    forward = layer.forward

    def slow(bottom, top):
        time.sleep(0.002)
        layer.wait_seconds += 0.002
        forward(bottom, top)

    layer.forward = slow
    s.solve()
    s.log.close()
    assert any(l.startswith("    [Forward] Layer ip1, top blob ip1 data: ") for l in lines)
    assert any(l.startswith("    [Backward] Layer ip2, param blob weight diff: ") for l in lines)
    assert any(l.startswith("    Data wait: ") for l in lines)
    assert jsonl(tmp_path)[-1]["data_wait"] > 0


def test_nan_in_a_layer_stops_with_the_iteration_and_the_layer(tmp_path):
    layers = LAYERS.replace("  - {name: ip1,", "  - {name: log, type: Log, bottom: data}\n  - {name: ip1, bottom: log,")
    s, _ = make(tmp_path, layers=layers, max_iter=3)
    with pytest.raises(SolverError) as e:
        s.solve()
    msg = str(e.value)
    assert "training stopped at iteration 0: the loss is nan" in msg
    assert "it first appears in the output 'log' of layer 'log' (Log)" in msg
    assert "no snapshot was written" in msg
    assert not list((tmp_path / "run").glob("*.safetensors"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_diverging_params_stop_after_keeping_the_last_good_snapshot(tmp_path):
    # the rate grows 1e30-fold per iteration: float32 params overflow in the third update
    s, _ = make(tmp_path, max_iter=10, lr_policy="exp", base_lr=0.01, gamma=1e30, snapshot=1)
    with pytest.raises(SolverError) as e:
        s.solve()
    msg = str(e.value)
    assert re.search(r"training stopped at iteration 2: (the update \(lr .*\) made params NaN/Inf, first in "
                     r"layer 'ip\d'|the loss is)", msg), msg
    good = tmp_path / "run" / "tiny_iter_2.solverstate.safetensors"
    assert f"the last good snapshot, {good}, is kept" in msg
    assert good.exists() and not (tmp_path / "run" / "tiny_iter_3.safetensors").exists()


def test_freeze_and_lr_mult_zero_keep_params_unchanged(tmp_path):
    layers = LAYERS.replace("num_output: 3, weight_filler: {type: xavier}}",
                            "num_output: 3, weight_filler: {type: xavier}, param: {bias: {lr_mult: 0}}}")
    s, lines = make(tmp_path, layers=layers, max_iter=3, freeze=["ip1"], weight_decay=0.1)
    before = {k: v.copy() for k, v in s.net.state_dict().items()}
    s.solve()
    after = s.net.state_dict()
    for key in ("ip1/weight", "ip1/bias", "ip2/bias"):
        assert np.array_equal(after[key], before[key]), key
    assert not np.array_equal(after["ip2/weight"], before["ip2/weight"])
    # a frozen first layer needs no backward at all
    assert not s.net.plan.layer("ip1").need_backward


def test_a_bad_update_names_the_params_it_spoiled(tmp_path):
    s, _ = make(tmp_path, max_iter=5, snapshot=2)
    fb = s.net.forward_backward

    def spoiled():
        loss = fb()
        if s.iter == 3:
            s.net.params["ip2/bias"].grad[0] = np.inf    # as if a layer's backward overflowed
        return loss

    s.net.forward_backward = spoiled
    with pytest.raises(SolverError) as e:
        s.solve()
    msg = str(e.value)
    assert "training stopped at iteration 3: the update (lr 0.1) made params NaN/Inf, first in layer 'ip2' " \
           "(ip2/bias)" in msg
    assert "tiny_iter_2.solverstate.safetensors, is kept" in msg


def test_a_run_folder_given_on_the_command_line_beats_the_snapshot_prefix_folder(tmp_path):
    from netspec.solvers.run import train

    f = tmp_path / "net.yaml"
    f.write_text(net_text({"base_lr": 0.1, "lr_policy": "fixed", "max_iter": 2, "random_seed": 5,
                           "snapshot_prefix": "elsewhere/lenet"}, LAYERS))
    assert train(f, run_dir=tmp_path / "mine", progress=False, echo=lambda _: None) == 0
    assert (tmp_path / "mine" / "lenet_iter_2.safetensors").exists()
    assert not (tmp_path / "elsewhere").exists()
    # without --run-dir the solver's folder is used, as in Caffe
    s, _ = make(tmp_path / "b", max_iter=1, snapshot_prefix="elsewhere/lenet")
    s.solve()
    assert (tmp_path / "b" / "elsewhere" / "lenet_iter_1.safetensors").exists()
