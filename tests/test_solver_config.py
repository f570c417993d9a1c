"""Solver files: schema, located errors, defaults, and the nets a training run builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec.errors import ErrorList, NetspecError, SolverError, SpecError
from netspec.solvers import schema as S
from netspec.solvers.config import load_solver, resolve_training
from netspec.spec.validate import validator_for

ROOT = Path(__file__).resolve().parent.parent

NET = """\
name: tiny
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[4, 3], [4]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: acc_only, type: Accuracy, bottom: [data, label], include: {phase: TEST, stage: extra}}
  - {name: ip, type: InnerProduct, bottom: data, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}
"""

GOOD = """\
net: net.yaml
base_lr: 0.01
lr_policy: fixed
max_iter: 10
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def errors_of(exc: NetspecError) -> list[NetspecError]:
    return exc.errors if isinstance(exc, ErrorList) else [exc]


def test_defaults_are_caffes(tmp_path):
    write(tmp_path, "net.yaml", NET)
    s = load_solver(write(tmp_path, "s.yaml", GOOD))
    assert s["type"] == "SGD" and s["momentum"] == 0.0 and s["iter_size"] == 1 and s["average_loss"] == 1
    assert s["clip_gradients"] == -1.0 and s["regularization_type"] == "L2" and s["delta"] == 1e-8
    assert s["momentum2"] == 0.999 and s["rms_decay"] == 0.99 and s["random_seed"] == -1
    assert s["test_initialization"] is True and s["snapshot_after_train"] is True and s["display"] == 0
    assert s.warnings == []


def test_lenet_solver_has_caffes_semantics():
    s = load_solver(ROOT / "solvers" / "lenet_caffe.yaml")
    want = {"test_iter": [100], "test_interval": 500, "base_lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
            "lr_policy": "inv", "gamma": 1e-4, "power": 0.75, "display": 100, "max_iter": 10000, "snapshot": 5000}
    assert {k: s[k] for k in want} == want
    assert s.path(s["net"]).resolve() == (ROOT / "models" / "lenet" / "train_val.yaml").resolve()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "solvers").glob("*.yaml")))
def test_every_shipped_solver_resolves(name):
    t = resolve_training(ROOT / "solvers" / name)
    assert t.warnings == []
    assert len(t.tests) == len(t.solver["test_iter"])
    stem = name[:-5]
    for variant in ("_caffe", "_fp16", "_bf16"):    # the same model with Caffe's recipe, or half precision
        stem = stem.removesuffix(variant)
    assert t.train.spec.file.endswith(f"models/{stem}/train_val.yaml")


def test_lr_policy_is_required_and_typos_are_suggested(tmp_path):
    write(tmp_path, "net.yaml", NET)
    p = write(tmp_path, "s.yaml", "net: net.yaml\nbase_lr: 0.1\nmax_iter: 5\nmomentun: 0.9\n")
    with pytest.raises(NetspecError) as e:
        load_solver(p)
    msgs = [str(x) for x in errors_of(e.value)]
    assert any("missing required field 'lr_policy'" in m for m in msgs)
    assert any("s.yaml:4" in m and "did you mean 'momentum'" in m for m in msgs)


def test_per_policy_required_fields_point_at_the_policy(tmp_path):
    write(tmp_path, "net.yaml", NET)
    p = write(tmp_path, "s.yaml", "net: net.yaml\nbase_lr: 0.1\nmax_iter: 5\nlr_policy: inv\n")
    with pytest.raises(NetspecError) as e:
        load_solver(p)
    errs = errors_of(e.value)
    assert {x.field for x in errs} == {"gamma", "power"}
    assert all(x.line == 4 and "lr_policy 'inv' needs" in x.message for x in errs)
    for policy, fields in S.POLICY_FIELDS.items():
        text = f"net: net.yaml\nbase_lr: 0.1\nmax_iter: 5\nlr_policy: {policy}\n"
        if fields:
            with pytest.raises(NetspecError) as e:
                load_solver(write(tmp_path, "p.yaml", text))
            assert {x.field for x in errors_of(e.value)} == set(fields), policy
        else:
            load_solver(write(tmp_path, "p.yaml", text))


def test_momentum_must_be_zero_for_adagrad_and_rmsprop(tmp_path):
    write(tmp_path, "net.yaml", NET)
    for rule in ("AdaGrad", "RMSProp"):
        p = write(tmp_path, "s.yaml", GOOD + f"type: {rule}\nmomentum: 0.9\n")
        with pytest.raises(SpecError, match=f"{rule} takes no momentum") as e:
            load_solver(p)
        assert e.value.line == 6
        load_solver(write(tmp_path, "s.yaml", GOOD + f"type: {rule}\nmomentum: 0\n"))


def test_gpu_mode_is_read_like_caffe(tmp_path):
    write(tmp_path, "net.yaml", NET)
    s = load_solver(write(tmp_path, "s.yaml", GOOD + "solver_mode: GPU\ndevice_id: 1\n"))
    assert (s["solver_mode"], s["device_id"]) == ("GPU", 1)
    assert load_solver(write(tmp_path, "s.yaml", GOOD + "solver_mode: CPU\n"))["solver_mode"] == "CPU"


def test_semantic_errors(tmp_path):
    write(tmp_path, "net.yaml", NET)
    with pytest.raises(SpecError, match="stepvalue must rise"):
        load_solver(write(tmp_path, "s.yaml", "net: net.yaml\nbase_lr: 1\nmax_iter: 5\nlr_policy: multistep\n"
                                             "gamma: 0.1\nstepvalue: [5, 3]\n"))
    with pytest.raises(SpecError, match="exactly one of net"):
        load_solver(write(tmp_path, "s.yaml", GOOD + "train_net: net.yaml\n"))
    with pytest.raises(SpecError, match="not both"):
        load_solver(write(tmp_path, "s.yaml", GOOD + "type: SGD\nsolver_type: SGD\n"))
    with pytest.raises(SpecError, match="names no net"):
        load_solver(write(tmp_path, "s.yaml", "base_lr: 1\nmax_iter: 5\nlr_policy: fixed\n"))


def test_legacy_solver_type_and_comma_separated_weights(tmp_path):
    write(tmp_path, "net.yaml", NET)
    s = load_solver(write(tmp_path, "s.yaml", GOOD + "solver_type: NESTEROV\nweights: 'a.safetensors, b.safetensors'\n"))
    assert s["type"] == "Nesterov" and "solver_type" not in s
    assert s["weights"] == ["a.safetensors", "b.safetensors"]


def test_unused_fields_are_warnings(tmp_path):
    write(tmp_path, "net.yaml", NET)
    s = load_solver(write(tmp_path, "s.yaml", GOOD + "gamma: 0.1\nmomentum2: 0.9\nsnapshot_format: HDF5\n"))
    msgs = [str(w) for w in s.warnings]
    assert any("lr_policy 'fixed' does not use gamma" in m and "s.yaml:5" in m for m in msgs)
    assert any("SGD rule does not use momentum2" in m for m in msgs)
    assert any("safetensors" in m for m in msgs)


def test_json_solver_files_work(tmp_path):
    write(tmp_path, "net.yaml", NET)
    p = write(tmp_path, "s.json", json.dumps({"net": "net.yaml", "base_lr": 0.1, "lr_policy": "fixed", "max_iter": 3}))
    assert load_solver(p)["base_lr"] == 0.1


def test_net_path_is_relative_to_the_solver_file(tmp_path):
    write(tmp_path, "nets/net.yaml", NET)
    p = write(tmp_path, "solvers/s.yaml", GOOD.replace("net.yaml", "../nets/net.yaml"))
    t = resolve_training(p)
    assert Path(t.train.spec.file).resolve() == (tmp_path / "nets" / "net.yaml").resolve()
    assert t.net_name == "tiny"


def test_generic_test_nets_one_per_test_iter_with_states(tmp_path):
    write(tmp_path, "net.yaml", NET)
    p = write(tmp_path, "s.yaml", GOOD + "test_iter: [3, 2]\ntest_interval: 5\ntest_state: [{stage: extra}, {}]\n")
    t = resolve_training(p)
    assert [u.test_iter for u in t.tests] == [3, 2]
    assert [u.stages for u in t.tests] == [["extra"], None]
    with pytest.raises(SpecError, match="test_state needs one entry per test net"):
        resolve_training(write(tmp_path, "s.yaml", GOOD + "test_iter: [3, 2]\ntest_interval: 5\n"
                                                       "test_state: {stage: extra}\n"))
    with pytest.raises(SpecError, match="test_interval must be > 0"):
        resolve_training(write(tmp_path, "s.yaml", GOOD + "test_iter: 3\n"))


def test_train_net_and_test_net_files(tmp_path):
    write(tmp_path, "net.yaml", NET)
    write(tmp_path, "other.yaml", NET.replace("name: tiny", "name: other"))
    p = write(tmp_path, "s.yaml", "train_net: net.yaml\ntest_net: [other.yaml]\ntest_iter: 2\ntest_interval: 4\n"
                                  "base_lr: 0.1\nlr_policy: fixed\nmax_iter: 3\n")
    t = resolve_training(p)
    assert t.net_name == "tiny" and [u.name for u in t.tests] == ["other"]
    with pytest.raises(SpecError, match="one entry per test net"):
        resolve_training(write(tmp_path, "s.yaml", "train_net: net.yaml\ntest_net: [other.yaml]\n"
                                                   "test_interval: 4\nbase_lr: 0.1\nlr_policy: fixed\nmax_iter: 3\n"))


def test_inline_net_param(tmp_path):
    import yaml

    net = yaml.safe_load(NET)
    p = write(tmp_path, "s.yaml", yaml.safe_dump({"net_param": net, "base_lr": 0.1, "lr_policy": "fixed",
                                                  "max_iter": 2}))
    assert resolve_training(p).net_name == "tiny"


def test_net_file_naming_its_solver(tmp_path):
    write(tmp_path, "solvers/s.yaml", GOOD.replace("net.yaml", "../net.yaml"))
    net = write(tmp_path, "net.yaml", NET.replace("name: tiny\n", "name: tiny\nsolver: solvers/s.yaml\n"))
    t = resolve_training(net)
    assert t.solver["max_iter"] == 10 and t.warnings == []
    missing = write(tmp_path, "net2.yaml", NET.replace("name: tiny\n", "name: tiny\nsolver: nope.yaml\n"))
    with pytest.raises(SpecError, match="the solver file 'nope.yaml' does not exist") as e:
        resolve_training(missing)
    assert e.value.line == 2


def test_net_file_with_inline_solver_and_override(tmp_path):
    inline = NET.replace("name: tiny\n", "name: tiny\nsolver: {base_lr: 0.5, lr_policy: fixed, max_iter: 7}\n")
    net = write(tmp_path, "net.yaml", inline)
    assert resolve_training(net).solver["base_lr"] == 0.5
    other = write(tmp_path, "other.yaml", "net: elsewhere.yaml\nbase_lr: 0.25\nlr_policy: fixed\nmax_iter: 3\n")
    t = resolve_training(net, solver_file=other)
    assert t.solver["base_lr"] == 0.25
    assert any("net is ignored" in str(w) for w in t.warnings)


def test_inline_solver_errors_are_located_in_the_net_file(tmp_path):
    bad = NET.replace("name: tiny\n", "name: tiny\nsolver:\n  base_lr: 0.5\n  lr_policy: steps\n  max_iter: 7\n")
    net = write(tmp_path, "net.yaml", bad)
    with pytest.raises(SpecError) as e:
        resolve_training(net)
    assert e.value.line == 4 and e.value.field == "solver.lr_policy" and "did you mean 'step'" in str(e.value)
    # netspec check validates it too, through the net schema
    from netspec import api

    with pytest.raises(NetspecError, match="solver.lr_policy"):
        api.load_net(net)


def test_a_solver_file_is_not_a_net_and_a_net_names_no_solver(tmp_path):
    net = write(tmp_path, "net.yaml", NET)
    with pytest.raises(SpecError, match="names no solver"):
        resolve_training(net)
    with pytest.raises(SpecError, match="is a net file, not a solver"):
        load_solver(net)
    s = write(tmp_path, "s.yaml", GOOD)
    with pytest.raises(SpecError, match="solver file already"):
        resolve_training(s, solver_file=s)


def test_stage_and_level_flags_set_the_train_state(tmp_path):
    write(tmp_path, "net.yaml", NET)
    t = resolve_training(write(tmp_path, "s.yaml", GOOD + "train_state: {stage: a, level: 1}\n"),
                         stages=["b"], level=2)
    assert t.train.stages == ["b"] and t.train.level == 2


def test_committed_schema_is_current_and_valid():
    committed = json.loads(S.committed_path().read_text())
    assert committed == S.build_solver_schema(), "run: python -c 'from netspec.solvers.schema import " \
                                                  "write_committed; write_committed()'"
    validator_for(committed)  # a valid Draft 2020-12 schema


def test_a_missing_net_file_points_at_the_solver_line(tmp_path):
    p = write(tmp_path, "s.yaml", GOOD.replace("net.yaml", "nets/missing.yaml"))
    with pytest.raises(SpecError, match="the net file 'nets/missing.yaml' does not exist") as e:
        resolve_training(p)
    assert e.value.line == 1 and e.value.field == "net"
    write(tmp_path, "net.yaml", NET)
    p = write(tmp_path, "s.yaml", "train_net: net.yaml\ntest_net: other.yaml\ntest_iter: 2\ntest_interval: 4\n"
                                  "base_lr: 0.1\nlr_policy: fixed\nmax_iter: 3\n")
    with pytest.raises(SpecError, match="the net file 'other.yaml' does not exist") as e:
        resolve_training(p)
    assert e.value.line == 2
