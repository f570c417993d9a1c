"""Resume determinism: N iterations, snapshot, resume, N more == 2N uninterrupted, bit for bit
(params, update-rule state, every RNG, the loss window, and every logged value)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from netspec.errors import SolverError, WeightsError
from netspec.io import snapshot as snap
from netspec.io.weights import read_safetensors, write_safetensors
from netspec.solvers.config import resolve_training
from netspec.solvers.runlog import RunLog
from netspec.solvers.solver import Solver

LAYERS = """\
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[6, 4], [6]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 2}]}
  - {name: ip1, type: InnerProduct, num_output: 8, weight_filler: {type: xavier},
     param: {weight: {lr_mult: 1}, bias: {lr_mult: 2, decay_mult: 0}}}
  - {name: relu1, type: ReLU, top: ip1}
  - {name: drop1, type: Dropout, top: ip1, dropout_ratio: 0.3}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""

BASE = {"base_lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "random_seed": 11, "display": 2,
        "average_loss": 3, "iter_size": 2, "test_iter": 2, "test_interval": 4, "clip_gradients": 5.0}


def write_net(folder: Path, solver: dict, layers: str = LAYERS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "net.yaml"
    f.write_text("name: tiny\nsolver: " + json.dumps(solver) + "\n" + layers)
    return f


def solver_for(folder: Path, solver: dict, layers: str = LAYERS, run: str = "run") -> Solver:
    f = write_net(folder, solver, layers)
    rd = folder / run
    return Solver(resolve_training(f), rd, RunLog(rd, None))


def records(folder: Path) -> list[dict]:
    out = {}
    for line in (folder / "run" / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("seconds")
        r.pop("data_wait", None)
        out[(r["iter"], r["phase"], r["name"], r.get("test_net"))] = r
    return [out[k] for k in sorted(out, key=str)]


def final_state(s: Solver) -> tuple[dict, dict]:
    tensors, record = s.state()
    record = dict(record)
    for key in ("elapsed", "run_dir"):
        record.pop(key)
    return {k: v.copy() for k, v in tensors.items()}, record


RULES = {
    "SGD-multistep": {"type": "SGD", "lr_policy": "multistep", "gamma": 0.5, "stepvalue": [3, 4, 5, 9]},
    "Adam-warmup-cosine": {"type": "Adam", "momentum": 0.9, "lr_policy": "cosine", "warmup_iter": 3},
    "AdaDelta": {"type": "AdaDelta", "momentum": 0.95, "base_lr": 1.0, "lr_policy": "fixed"},
    "Nesterov-inv": {"type": "Nesterov", "lr_policy": "inv", "gamma": 0.1, "power": 0.75},
    "RMSProp-step": {"type": "RMSProp", "momentum": 0.0, "lr_policy": "step", "gamma": 0.5, "stepsize": 3},
}


@pytest.mark.parametrize("rule", list(RULES))
def test_resume_continues_bit_for_bit(tmp_path, rule):
    n = 5
    cfg = dict(BASE, **RULES[rule])
    # 2N uninterrupted
    whole = solver_for(tmp_path / "whole", dict(cfg, max_iter=2 * n))
    assert whole.solve() == 0
    # N, snapshot, then a new solver resumes to 2N.  Cosine depends on max_iter, so that run
    # stops after N steps (as Ctrl-C would) instead of ending at max_iter N.
    if cfg["lr_policy"] == "cosine":
        first = solver_for(tmp_path / "split", dict(cfg, max_iter=2 * n))
        first.step(n)
        first.snapshot()
    else:
        first = solver_for(tmp_path / "split", dict(cfg, max_iter=n))
        assert first.solve() == 0
    state = tmp_path / "split" / "run" / f"tiny_iter_{n}.solverstate.safetensors"
    assert state.exists()
    first.log.close()
    second = solver_for(tmp_path / "split", dict(cfg, max_iter=2 * n))
    second.restore(state)
    assert second.iter == n
    assert second.solve() == 0
    whole.log.close()
    second.log.close()
    a_tensors, a_record = final_state(whole)
    b_tensors, b_record = final_state(second)
    assert sorted(a_tensors) == sorted(b_tensors)
    for k in a_tensors:
        assert np.array_equal(a_tensors[k], b_tensors[k]), k
    assert a_record == b_record
    assert records(tmp_path / "whole") == records(tmp_path / "split")
    # the weights files agree too
    wa, _ = read_safetensors(tmp_path / "whole" / "run" / f"tiny_iter_{2 * n}.safetensors")
    wb, _ = read_safetensors(tmp_path / "split" / "run" / f"tiny_iter_{2 * n}.safetensors")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_state_file_contents(tmp_path):
    s = solver_for(tmp_path, dict(BASE, type="Adam", momentum=0.9, lr_policy="fixed", max_iter=2))
    s.solve()
    path = tmp_path / "run" / "tiny_iter_2.solverstate.safetensors"
    tensors, record, net_text, solver_text = snap.read_state(path)
    assert record["iter"] == 2 and record["rule"] == "Adam" and record["seed"] == 11
    assert record["net_sha256"] == snap.sha256(net_text) and record["solver_sha256"] == snap.sha256(solver_text)
    assert json.loads(solver_text)["type"] == "Adam"
    assert json.loads(net_text)["train"]["name"] == "tiny"
    assert {"param/ip1/weight", "rule/m/ip1/weight", "rule/v/ip2/bias"} <= set(tensors)
    assert record["nets"]["train"]["rng"]["bit_generator"] == "PCG64"
    assert set(record["nets"]) == {"train", "test0"}


def test_resume_refuses_a_changed_net_or_solver_and_says_what_changed(tmp_path):
    cfg = dict(BASE, type="SGD", lr_policy="fixed", max_iter=2)
    solver_for(tmp_path, cfg).solve()
    state = tmp_path / "run" / "tiny_iter_2.solverstate.safetensors"
    changed = solver_for(tmp_path, dict(cfg, base_lr=0.5, momentum=0.8),
                         LAYERS.replace("num_output: 8", "num_output: 9"))
    with pytest.raises(SolverError) as e:
        changed.restore(state)
    msg = str(e.value)
    assert "cannot resume" in msg
    assert "net: train.layers[ip1].num_output 8 -> 9" in msg
    assert "solver: base_lr 0.05 -> 0.5" in msg and "solver: momentum 0.9 -> 0.8" in msg
    # these may change
    ok = solver_for(tmp_path, dict(cfg, max_iter=9, display=1, snapshot=3, test_interval=2))
    ok.restore(state)
    assert ok.iter == 2


def test_resume_reads_only_solver_states(tmp_path):
    cfg = dict(BASE, type="SGD", lr_policy="fixed", max_iter=1)
    s = solver_for(tmp_path, cfg)
    s.solve()
    with pytest.raises(WeightsError, match="this is a weights file"):
        s.restore(tmp_path / "run" / "tiny_iter_1.safetensors")
    # a state whose stored net text was edited no longer matches its hash
    path = tmp_path / "run" / "tiny_iter_1.solverstate.safetensors"
    tensors, meta = read_safetensors(path)
    meta["net"] = meta["net"].replace("tiny", "tinY")
    write_safetensors(tmp_path / "edited.solverstate.safetensors", tensors, meta)
    with pytest.raises(WeightsError, match="does not match its sha256"):
        s.restore(tmp_path / "edited.solverstate.safetensors")


def test_latest_state_is_the_newest_and_skips_temporary_files(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    for i, it in enumerate((4, 8, 2)):
        p = d / f"x_iter_{it}.solverstate.safetensors"
        p.write_bytes(b"")
        os.utime(p, ns=(time.time_ns(), 1_000_000_000 * (i + 1)))
    (d / ".x_iter_9.solverstate.safetensors.tmp123").write_bytes(b"")
    assert snap.latest_state([d]).name == "x_iter_2.solverstate.safetensors"
    assert snap.iteration_of(d / "x_iter_8.solverstate.safetensors") == 8
    assert snap.latest_state([tmp_path / "none"]) is None


def test_pack_and_unpack_states_with_arrays():
    rng = np.random.Generator(np.random.MT19937(3))
    state = {"cursor": {"epoch": 2, "pos": 17}, "perm": np.arange(5, dtype=np.int64), "rng": rng.bit_generator.state,
             "list": [np.ones(2, np.float32), 3.5]}
    tensors: dict = {}
    packed = snap.pack(state, "layer/x", tensors)
    json.dumps(packed)
    assert set(tensors) == {"layer/x/perm", "layer/x/rng/state/key", "layer/x/list/0"}
    back = snap.unpack(packed, tensors)
    assert back["cursor"] == {"epoch": 2, "pos": 17} and np.array_equal(back["perm"], np.arange(5))
    rng2 = np.random.Generator(np.random.MT19937(0))
    rng2.bit_generator.state = back["rng"]
    assert rng2.random() == rng.random()


def test_multistep_lag_survives_a_resume(tmp_path):
    """Caffe advances multistep by one step per iteration; with the step restored from the state a
    resumed run sees exactly the rates of an uninterrupted one."""
    cfg = {"base_lr": 1.0, "lr_policy": "multistep", "gamma": 0.5, "stepvalue": [1, 2, 3], "random_seed": 1,
           "display": 1, "snapshot_after_train": True}
    whole = solver_for(tmp_path / "a", dict(cfg, max_iter=6))
    whole.solve()
    first = solver_for(tmp_path / "b", dict(cfg, max_iter=2))
    first.solve()
    second = solver_for(tmp_path / "b", dict(cfg, max_iter=6))
    second.restore(tmp_path / "b" / "run" / "tiny_iter_2.solverstate.safetensors")
    assert second.lr.current_step == 1
    second.solve()
    whole.log.close()
    second.log.close()

    def lrs(folder):
        return [(r["iter"], r["lr"]) for r in records(folder) if r["name"] == "smoothed_loss"]

    assert lrs(tmp_path / "a") == lrs(tmp_path / "b") == [(i, 0.5 ** min(i, 3)) for i in range(6)]
