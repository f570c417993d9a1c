"""``netspec zoo`` through click's CliRunner, on a small entry packaged from a real run:
add, list, show, verify (checksums, params, --evaluate), reproduce, fine-tuning from zoo:,
and a clear error (exit 1, no traceback) for each way an entry can be broken."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from netspec import zoo
from netspec.cli.main import cli
from netspec.errors import NetspecError, ZooError
from netspec.io.weights import read_safetensors

# Logistic regression on scikit-learn's 8x8 digits: trains in a second, evaluates on 360 images.
NET = """\
name: Digits
layers:
  - {name: digits, type: Data, top: [data, label], include: {phase: TRAIN}, source: "digits:train",
     batch_size: 32, transform: {scale: 0.0625}}
  - {name: digits, type: Data, top: [data, label], include: {phase: TEST}, source: "digits:test",
     batch_size: 40, transform: {scale: 0.0625}}
  - {name: hidden, type: InnerProduct, bottom: data, num_output: 16, weight_filler: {type: xavier}}
  - {name: relu, type: ReLU, bottom: hidden, top: hidden}
  - {name: HEAD, type: InnerProduct, num_output: 10, weight_filler: {type: xavier}}
  - {name: accuracy, type: Accuracy, bottom: [HEAD, label], include: {phase: TEST}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [HEAD, label]}
"""

SOLVER = """\
net: net.yaml
base_lr: 0.1
momentum: 0.9
lr_policy: fixed
max_iter: 40
display: 0
test_iter: 9
test_interval: 40
random_seed: 5
"""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def failed(res, *messages: str) -> None:
    """Exit 1 with each message on stderr and no traceback."""
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    for m in messages:
        assert m in res.stderr, res.stderr


def write_recipe(folder: Path, head: str = "out", solver_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.yaml").write_text(NET.replace("HEAD", head))
    (folder / "solver.yaml").write_text(SOLVER + solver_extra)
    return folder / "solver.yaml"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    """A zoo folder holding 'digits', packaged from a finished run by 'netspec zoo add'."""
    base = tmp_path_factory.mktemp("zoo_cli")
    solver = write_recipe(base / "recipe")
    res = invoke("train", str(solver), "--run-dir", str(base / "run"), "-q")
    assert res.exit_code == 0, res.output
    res = invoke("zoo", "add", str(base / "run"), "--name", "digits", "--zoo", str(base / "zoo"),
                 "--licence", "BSD-3-Clause (scikit-learn's digits)", "--description", "a digits test model")
    assert res.exit_code == 0, res.output
    assert "added zoo entry 'digits'" in res.output and "not a zoo location" in res.output
    return base / "zoo"


@pytest.fixture
def zoo_dir(packaged, tmp_path, monkeypatch) -> Path:
    """A private copy of the packaged zoo, as the only zoo besides the built-in one."""
    z = tmp_path / "zoo"
    shutil.copytree(packaged, z)
    monkeypatch.setenv("NETSPEC_ZOO", str(z))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return z


def manifest(zoo_dir: Path, name: str = "digits") -> dict:
    return yaml.safe_load((zoo_dir / name / "manifest.yaml").read_text())


# ---- add ---------------------------------------------------------------------------------

def test_add_writes_a_complete_entry(zoo_dir):
    m = manifest(zoo_dir)
    entry = zoo_dir / "digits"
    assert sorted(p.name for p in entry.iterdir()) == ["manifest.yaml", "solver.yaml", "train_val.yaml",
                                                       "weights.safetensors"]
    assert m["sha256"] == hashlib.sha256((entry / "weights.safetensors").read_bytes()).hexdigest()
    assert m["task"] == "classification" and m["parent"] is None
    assert m["dataset"] == {"train": "digits:train", "test": "digits:test"}
    assert m["input"] == {"blob": "data", "shape": [1, 8, 8], "preprocessing": {"scale": 0.0625},
                          "classes": [str(d) for d in range(10)]}
    assert m["evaluation"]["command"] == "netspec zoo verify --evaluate digits"
    assert m["evaluation"]["iterations"] == 9            # 360 test images in batches of 40
    assert m["training"]["iterations"] == 40 and m["training"]["seed"] == 5
    assert set(m["metrics"]) == {"accuracy", "loss"} and 0.5 < m["metrics"]["accuracy"] <= 1
    solver = yaml.safe_load((entry / "solver.yaml").read_text())
    assert solver["net"] == "train_val.yaml" and solver["random_seed"] == 5 and solver["max_iter"] == 40
    assert "display" not in solver and "snapshot_prefix" not in solver   # defaults are left out
    net = yaml.safe_load((entry / "train_val.yaml").read_text())
    assert net["solver"] == "solver.yaml" and [l["name"] for l in net["layers"]][-1] == "loss"


def test_the_metrics_of_add_are_those_of_the_runs_last_test(packaged, tmp_path):
    """The run tested its final weights on the same 9 batches: the same accuracy."""
    import json

    records = [json.loads(l) for l in (packaged.parent / "run" / "log.jsonl").read_text().splitlines()]
    last = [r for r in records if r["phase"] == "TEST" and r["name"] == "accuracy"][-1]
    assert last["iter"] == 40
    assert manifest(packaged)["metrics"]["accuracy"] == pytest.approx(last["value"], abs=1e-6)


def test_add_refuses_an_existing_entry_an_unfinished_run_and_an_empty_folder(zoo_dir, packaged, tmp_path):
    run = packaged.parent / "run"
    failed(invoke("zoo", "add", str(run), "--name", "digits", "--zoo", str(zoo_dir)),
           "zoo entry 'digits' already exists", "--force")
    assert invoke("zoo", "add", str(run), "--name", "digits", "--zoo", str(zoo_dir), "--force").exit_code == 0
    (tmp_path / "empty").mkdir()
    failed(invoke("zoo", "add", str(tmp_path / "empty"), "--name", "x", "--zoo", str(zoo_dir)),
           "no snapshot (*.solverstate.safetensors) in this run folder")
    failed(invoke("zoo", "add", str(run), "--name", "bad name", "--zoo", str(zoo_dir)), "not a valid entry name")
    # a run stopped half way: only --iter packages it
    solver = write_recipe(tmp_path / "half", solver_extra="snapshot: 20\n")
    assert invoke("train", str(solver), "--run-dir", str(tmp_path / "half_run"), "-q").exit_code == 0
    (tmp_path / "half_run" / "Digits_iter_40.solverstate.safetensors").unlink()
    failed(invoke("zoo", "add", str(tmp_path / "half_run"), "--name", "half", "--zoo", str(zoo_dir)),
           "the run stopped at iteration 20 of max_iter 40", "--iter 20")
    res = invoke("zoo", "add", str(tmp_path / "half_run"), "--name", "half", "--zoo", str(zoo_dir), "--iter", "20")
    assert res.exit_code == 0, res.output
    assert manifest(zoo_dir, "half")["training"]["iterations"] == 20


# ---- list, show, verify --------------------------------------------------------------------

def test_list_and_show(zoo_dir):
    res = invoke("zoo", "list")
    assert res.exit_code == 0, res.output
    row = next(l for l in res.output.splitlines() if l.startswith("digits "))
    assert "classification" in row and "digits:test" in row and "accuracy" in row and "$NETSPEC_ZOO" in row
    res = invoke("zoo", "show", "zoo:digits")
    assert res.exit_code == 0, res.output
    for text in ("digits: a digits test model", "input:      data 1x8x8; preprocessing {scale: 0.0625}",
                 "measured:   netspec zoo verify --evaluate digits (9 test batches)",
                 "licence:    BSD-3-Clause (scikit-learn's digits)", "re-train:   netspec zoo reproduce digits"):
        assert text in res.output


def test_verify_and_evaluate(zoo_dir):
    res = invoke("zoo", "verify", "digits")
    assert res.exit_code == 0, res.output
    assert "digits: sha256 ok, 4 params fit train_val.yaml" in res.output
    res = invoke("zoo", "verify", "digits", "--evaluate")
    assert res.exit_code == 0, res.output
    assert "1 entry verified and re-evaluated" in res.output
    assert [l.split()[0] for l in res.output.splitlines() if l.endswith(" ok")] == ["loss", "accuracy"]


def test_evaluate_outside_the_tolerance_fails(zoo_dir):
    m = manifest(zoo_dir)
    m["metrics"]["accuracy"] -= 0.05
    (zoo_dir / "digits" / "manifest.yaml").write_text(zoo.manifest_text(m))
    failed(invoke("zoo", "verify", "digits", "--evaluate"),
           "the metrics of zoo entry 'digits' differ from the manifest by more than the tolerance 0.001")
    assert "DIFFERS" in invoke("zoo", "verify", "digits", "--evaluate").output
    assert invoke("zoo", "verify", "digits", "--evaluate", "--tolerance", "0.1").exit_code == 0


# ---- broken entries: exit 1, the message, no traceback ----------------------------------------

def test_a_corrupted_weights_file(zoo_dir):
    w = zoo_dir / "digits" / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-5] ^= 0xFF                                   # one flipped byte in the data
    w.write_bytes(bytes(raw))
    msg = "the weights of zoo entry 'digits' fail verification: sha256 "
    failed(invoke("zoo", "verify", "digits"), msg, "a partial download or a modified file?")
    failed(invoke("zoo", "verify"), msg, f"1 of {len(zoo.entries())} zoo entries failed verification: digits")
    solver = write_recipe(zoo_dir.parent / "ft")
    failed(invoke("train", str(solver), "--weights", "zoo:digits", "-q"), msg)
    failed(invoke("test", str(solver.parent / "net.yaml"), "--weights", "zoo:digits"), msg)


def test_a_wrong_hash(zoo_dir):
    m = manifest(zoo_dir)
    m["sha256"] = "0" * 64
    (zoo_dir / "digits" / "manifest.yaml").write_text(zoo.manifest_text(m))
    res = invoke("zoo", "verify", "digits")
    failed(res, "fail verification", "the manifest says " + "0" * 64)
    assert "manifest.yaml:" in res.stderr                      # located at the sha256 line
    # written by hand without quotes, YAML reads the digits as the number 0: the text counts
    path = zoo_dir / "digits" / "manifest.yaml"
    path.write_text(path.read_text().replace(f"'{'0' * 64}'", "0" * 64))
    assert f"sha256: {'0' * 64}\n" in path.read_text()
    failed(invoke("zoo", "verify", "digits"), "the manifest says " + "0" * 64)


def test_a_missing_entry(zoo_dir):
    failed(invoke("zoo", "show", "digitz"), "no zoo entry named 'digitz'; did you mean 'digits'?",
           "'netspec zoo list' shows the entries")
    failed(invoke("zoo", "verify", "zoo:digitz"), "no zoo entry named 'digitz'")
    failed(invoke("zoo", "reproduce", "nothing-like-it"), "no zoo entry named 'nothing-like-it'")
    solver = write_recipe(zoo_dir.parent / "ft")
    failed(invoke("train", str(solver), "--weights", "zoo:digitz", "-q"), "did you mean 'digits'?")


def test_a_manifest_with_a_typo(zoo_dir):
    path = zoo_dir / "digits" / "manifest.yaml"
    text = path.read_text()
    path.write_text(text.replace("licence:", "licnce:").replace("task: classification", "task: clasification"))
    line_of = {k: n + 1 for n, l in enumerate(path.read_text().splitlines()) for k in ("licnce", "task") if
               l.startswith(k + ":")}
    res = invoke("zoo", "show", "digits")
    failed(res, f"manifest.yaml:{line_of['licnce']}: field 'licnce': unknown manifest field 'licnce'; did you mean "
                f"'licence'?",
           f"manifest.yaml:{line_of['task']}: field 'task': 'clasification' is not one of",
           "did you mean 'classification'?", "2 errors")
    failed(invoke("zoo", "verify", "digits"), "unknown manifest field 'licnce'")
    res = invoke("zoo", "list")
    assert res.exit_code == 1 and "invalid manifest" in res.stdout and "licnce" in res.stderr
    solver = write_recipe(zoo_dir.parent / "ft")
    failed(invoke("train", str(solver), "--weights", "zoo:digits", "-q"), "unknown manifest field 'licnce'")


def test_a_missing_weights_file_and_a_renamed_folder(zoo_dir):
    shutil.move(zoo_dir / "digits", zoo_dir / "digits2")
    failed(invoke("zoo", "show", "digits2"), "the manifest names the entry 'digits' but its folder is 'digits2'")
    shutil.move(zoo_dir / "digits2", zoo_dir / "digits")
    (zoo_dir / "digits" / "weights.safetensors").unlink()
    failed(invoke("zoo", "verify", "digits"), "the weights file weights.safetensors of zoo entry 'digits' is missing")


def test_weights_that_match_their_hash_but_not_the_format_or_the_net(zoo_dir):
    """An entry packaged from a bad file: the hash passes, the structure check does not."""
    entry = zoo_dir / "digits"
    w = entry / "weights.safetensors"

    def rehash():
        m = manifest(zoo_dir)
        m["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
        (entry / "manifest.yaml").write_text(zoo.manifest_text(m))

    good = w.read_bytes()
    w.write_bytes(good[:-12])
    rehash()
    failed(invoke("zoo", "verify", "digits"), "is truncated")
    from netspec.io.weights import write_safetensors

    w.write_bytes(good)
    t = read_safetensors(w)[0]
    t["hidden/weight"] = np.zeros((3, 64), np.float32)
    del t["out/bias"]
    write_safetensors(w, t)
    rehash()
    failed(invoke("zoo", "verify", "digits"), "do not fit its net train_val.yaml",
           "the net's param out/bias (10) is not in the weights", "hidden/weight has shape 3x64, the net needs 16x64")


# ---- locations -------------------------------------------------------------------------------

def test_lookup_order_builtin_then_netspec_zoo_then_user(zoo_dir, tmp_path, monkeypatch):
    user = tmp_path / "xdg" / "netspec" / "zoo"
    shutil.copytree(zoo_dir / "digits", user / "digits")
    shutil.copytree(zoo_dir / "digits", user / "mine")
    m = manifest(zoo_dir)
    m["name"] = "mine"
    (user / "mine" / "manifest.yaml").write_text(zoo.manifest_text(m))
    assert zoo.locations()[0] == zoo.builtin_dir()
    assert zoo.locations()[1:] == [zoo_dir, user]
    assert zoo.entries()["digits"] == zoo_dir / "digits"            # $NETSPEC_ZOO before the user's
    assert zoo.entries()["mine"] == user / "mine"
    hidden = [f for f in zoo.scan() if f.shadowed_by is not None]
    assert [(f.name, f.source) for f in hidden] == [("digits", "user")]
    res = invoke("zoo", "list")
    assert res.exit_code == 0 and f"(hidden by {zoo_dir / 'digits'})" in res.output
    # several $NETSPEC_ZOO folders, separated by ':'
    other = tmp_path / "other"
    shutil.copytree(user / "mine", other / "mine")
    monkeypatch.setenv("NETSPEC_ZOO", f"{other}:{zoo_dir}")
    assert zoo.entries()["mine"] == other / "mine" and zoo.entries()["digits"] == zoo_dir / "digits"


def test_the_builtin_zoo_is_found_from_the_package():
    assert zoo.builtin_dir() == Path(zoo.__file__).resolve().parent.parent / "zoo"
    assert (zoo.builtin_dir() / "mlp-fashion-mnist" / "manifest.yaml").is_file()


# ---- fine-tuning from the zoo, and re-training ---------------------------------------------------

def test_init_from_a_zoo_entry_with_reinit_and_freeze(zoo_dir, tmp_path):
    solver = write_recipe(tmp_path / "ft", head="out_new", solver_extra="init_from: zoo:digits\nfreeze: [hidden]\n")
    res = invoke("train", str(solver), "--run-dir", str(tmp_path / "ft_run"), "-q")
    assert res.exit_code == 0, res.output
    table = res.output[res.output.index("Weights from zoo:digits:"):]
    rows = {l.split()[0]: l.split()[1:] for l in table.splitlines()[3:7]}
    assert rows["hidden/weight"] == ["16x64", "copied", "frozen"]
    assert rows["out_new/weight"][:3] == ["10x16", "not", "in"]
    assert "ignoring source layer out (not in this net)" in table
    assert "2 copied, 2 not in source, 0 reinitialized, 2 frozen" in table
    src = read_safetensors(zoo_dir / "digits" / "weights.safetensors")[0]
    after = read_safetensors(tmp_path / "ft_run" / "Digits_iter_40.safetensors")[0]
    assert np.array_equal(after["hidden/weight"], src["hidden/weight"])        # frozen
    # packaging the fine-tuned run: the recipe keeps init_from, the manifest names the parent
    res = invoke("zoo", "add", str(tmp_path / "ft_run"), "--name", "digits-ft", "--zoo", str(zoo_dir))
    assert res.exit_code == 0, res.output
    m = manifest(zoo_dir, "digits-ft")
    assert m["parent"] == "digits"
    solver_doc = yaml.safe_load((zoo_dir / "digits-ft" / "solver.yaml").read_text())
    assert solver_doc["init_from"] == "zoo:digits" and solver_doc["freeze"] == ["hidden"]


def test_a_weights_option_is_recorded_as_the_recipes_init_from(zoo_dir, tmp_path):
    solver = write_recipe(tmp_path / "ft", solver_extra="reinit: [out]\n")
    res = invoke("train", str(solver), "--weights", "zoo:digits", "--run-dir", str(tmp_path / "ft_run"), "-q")
    assert res.exit_code == 0, res.output
    assert "out/weight" in res.output and "reinit (source 10x16)" in res.output
    res = invoke("zoo", "add", str(tmp_path / "ft_run"), "--name", "digits-ft", "--zoo", str(zoo_dir))
    assert res.exit_code == 0, res.output
    solver_doc = yaml.safe_load((zoo_dir / "digits-ft" / "solver.yaml").read_text())
    assert solver_doc["init_from"] == "zoo:digits" and solver_doc["reinit"] == ["out"]
    assert manifest(zoo_dir, "digits-ft")["parent"] == "digits"


def test_reproduce_gives_the_same_weights(zoo_dir, tmp_path):
    res = invoke("zoo", "reproduce", "digits", "--run-dir", str(tmp_path / "again"), "-q")
    assert res.exit_code == 0, res.output
    assert "the weights are bit for bit the entry's" in res.output
    assert "reproduced within the tolerance 0.01" in res.output


def test_reproduce_that_differs_fails(zoo_dir, tmp_path):
    m = manifest(zoo_dir)
    m["metrics"]["loss"] *= 2
    (zoo_dir / "digits" / "manifest.yaml").write_text(zoo.manifest_text(m))
    res = invoke("zoo", "reproduce", "digits", "--run-dir", str(tmp_path / "again"), "-q")
    failed(res, "the re-trained model's metrics differ from the manifest's by more than the tolerance 0.01")
    assert "DIFFERS" in res.stdout


def test_a_baseline_run_and_reproduce_baseline(zoo_dir, tmp_path):
    ft = write_recipe(tmp_path / "ft", head="out_new", solver_extra="init_from: zoo:digits\nfreeze: [hidden]\n")
    scratch = write_recipe(tmp_path / "scratch", head="out_new")
    for solver, rd in ((ft, "ft_run"), (scratch, "scratch_run")):
        assert invoke("train", str(solver), "--run-dir", str(tmp_path / rd), "-q").exit_code == 0
    # a baseline trained with another recipe is refused
    other = write_recipe(tmp_path / "other", head="out_new", solver_extra="weight_decay: 0.01\n")
    assert invoke("train", str(other), "--run-dir", str(tmp_path / "other_run"), "-q").exit_code == 0
    failed(invoke("zoo", "add", str(tmp_path / "ft_run"), "--name", "ft", "--zoo", str(zoo_dir), "--baseline",
                  str(tmp_path / "other_run")), "the baseline run is not the entry's recipe without init_from: "
                                                "weight_decay differ")
    res = invoke("zoo", "add", str(tmp_path / "ft_run"), "--name", "ft", "--zoo", str(zoo_dir), "--baseline",
                 str(tmp_path / "scratch_run"))
    assert res.exit_code == 0, res.output
    base = manifest(zoo_dir, "ft")["baseline"]
    assert base["iterations"] == 40 and base["seed"] == 5 and base["command"] == "netspec zoo reproduce ft --baseline"
    assert set(base["metrics"]) == {"accuracy", "loss"}
    res = invoke("zoo", "reproduce", "ft", "--baseline", "--run-dir", str(tmp_path / "again"), "-q")
    assert res.exit_code == 0, res.output
    assert "(baseline " in res.output and "Weights from" not in res.output
    after = read_safetensors(tmp_path / "again" / "Digits_iter_40.safetensors")[0]
    assert np.array_equal(after["out_new/weight"],
                          read_safetensors(tmp_path / "scratch_run" / "Digits_iter_40.safetensors")[0]["out_new/weight"])
    failed(invoke("zoo", "reproduce", "digits", "--baseline"), "records no baseline")


def test_load_entry_reports_every_schema_error_at_once(zoo_dir):
    path = zoo_dir / "digits" / "manifest.yaml"
    m = manifest(zoo_dir)
    m.update(sha256="abc", metrics={"accuracy": "high"}, extra=1)
    path.write_text(zoo.manifest_text(m))
    with pytest.raises(NetspecError) as e:
        zoo.load_entry("digits")
    text = str(e.value)
    assert "field 'sha256': 'abc' is not a sha256: 64 hex digits in lower case" in text
    assert "field 'metrics.accuracy': expected a number, got a string 'high'" in text
    assert "unknown manifest field 'extra'" in text and "3 errors" in text
    with pytest.raises(ZooError, match="no zoo entry named"):
        zoo.resolve_weights("zoo:nope")


def test_a_run_reading_a_relative_data_file_cannot_be_packaged(tmp_path, monkeypatch):
    """The entry keeps the net as the run resolved it: a path relative to the old net's folder
    would be read from the entry's folder.  An absolute path works (with a warning)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    xor = (Path(__file__).resolve().parent.parent / "models" / "xor")
    shutil.copy(xor / "xor.csv", tmp_path / "xor.csv")
    solver = "solver: {base_lr: 0.5, lr_policy: fixed, max_iter: 5, random_seed: 1}\n"
    for source, name in (("xor.csv", "rel"), (str(tmp_path / "xor.csv"), "abs")):
        net = (xor / "train_val.yaml").read_text().replace("solver: ../../solvers/xor.yaml\n", solver)
        (tmp_path / f"{name}.yaml").write_text(net.replace("source: xor.csv", f"source: {source}"))
        assert invoke("train", str(tmp_path / f"{name}.yaml"), "--run-dir", str(tmp_path / name), "-q").exit_code == 0
    failed(invoke("zoo", "add", str(tmp_path / "rel"), "--name", "xor"),
           "the run's net cannot be built from the entry's folder: data source 'xor.csv' is neither",
           "an entry's data sources must be built-in datasets or absolute paths")
    assert not (tmp_path / "xdg" / "netspec" / "zoo" / "xor").exists()
    assert not [p for p in (tmp_path / "xdg" / "netspec" / "zoo").iterdir()]     # no half-written folder
    res = invoke("zoo", "add", str(tmp_path / "abs"), "--name", "xor")
    assert res.exit_code == 0, res.output
    assert "is a file, not a built-in dataset" in res.output
    e = zoo.load_entry("xor")                          # the user's zoo, the default target
    assert e.folder == tmp_path / "xdg" / "netspec" / "zoo" / "xor" and e.data["task"] == "other"
    assert set(e.metrics) == {"loss"}
