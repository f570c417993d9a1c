"""The built-in zoo: every entry is complete, verified, trained with the shipped recipe, and
measures what its manifest says (a short evaluation here; the full one is a slow test).  The
fine-tuned LeNet beats the same recipe trained from scratch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec import api, zoo
from netspec.cli.main import cli
from netspec.solvers.config import load_solver
from netspec.spec.model import to_plain

ROOT = Path(__file__).resolve().parent.parent

# entry -> (the shipped net, the shipped solver it was trained with)
RECIPES = {
    "lenet-fashion-mnist": ("models/lenet/train_val.yaml", "solvers/lenet.yaml"),
    "mlp-fashion-mnist": ("models/mlp/train_val.yaml", "solvers/mlp.yaml"),
    "autoencoder-fashion-mnist": ("models/autoencoder/train_val.yaml", "solvers/zoo/autoencoder.yaml"),
    "lenet-mnist5k-finetune": ("models/lenet_finetune/train_val.yaml", "solvers/lenet_finetune.yaml"),
}
FIELDS = ("netspec", "name", "description", "task", "input", "net", "solver", "weights", "sha256", "dataset",
          "metrics", "evaluation", "training", "licence", "parent", "netspec_version")
# the solver fields that name files or outputs, and the seed a run may get from --seed
LOCAL = ("net", "train_net", "test_net", "snapshot_prefix", "random_seed")


@pytest.fixture(autouse=True)
def only_the_builtin_zoo(tmp_path, monkeypatch):
    monkeypatch.delenv("NETSPEC_ZOO", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def entry(name: str) -> zoo.Entry:
    return zoo.load_entry(name)


def test_the_builtin_zoo_holds_the_entries():
    assert set(zoo.entries()) == set(RECIPES)
    assert all(f.source == "built-in" for f in zoo.scan())


def test_committed_manifest_schema_is_current():
    assert zoo.committed_schema_path().read_text() == zoo.schema_text(), \
        "run `python scripts/gen_schemas.py` and commit netspec/spec/schemas/manifest.schema.json"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_manifest_is_complete(name):
    e = entry(name)
    missing = [f for f in FIELDS if f not in e.data]
    assert not missing, f"{name}: {missing}"
    assert e.data["evaluation"]["command"] == f"netspec zoo verify --evaluate {name}"
    assert e.data["training"]["command"] == f"netspec zoo reproduce {name}"
    assert e.data["evaluation"]["iterations"] == zoo.full_pass(e)
    assert {"iterations", "seed", "seconds", "threads", "machine"} <= set(e.data["training"])
    assert e.data["input"]["shape"] == [1, 28, 28] and e.data["input"]["preprocessing"]["scale"] > 0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_checksum_and_params(name):
    check = zoo.verify(entry(name))
    assert check.params >= 4 and not check.notes


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_trained_with_the_shipped_recipe(name):
    """The entry's net and solver are the shipped ones (resolved), with the run's seed."""
    e = entry(name)
    net_file, solver_file = RECIPES[name]

    def net(path):
        return {k: v for k, v in to_plain(api.load_net(path)).items() if k != "solver"}

    assert net(e.path("net")) == net(ROOT / net_file)
    ours = {k: v for k, v in load_solver(e.path("solver")).plain().items() if k not in LOCAL}
    shipped = {k: v for k, v in load_solver(ROOT / solver_file).plain().items() if k not in LOCAL}
    assert ours == shipped
    shipped_seed = load_solver(ROOT / solver_file).get("random_seed", -1)
    assert shipped_seed in (-1, e.data["training"]["seed"])
    assert load_solver(e.path("solver"))["random_seed"] == e.data["training"]["seed"]
    assert e.data["training"]["iterations"] == load_solver(ROOT / solver_file)["max_iter"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_short_evaluation_agrees_with_the_manifest(name):
    """Three test batches: near the full-pass metrics (which the slow test checks exactly)."""
    e = entry(name)
    measured = zoo.measure(e, zoo.verify_weights(e), iterations=3)
    for metric, recorded in e.metrics.items():
        if metric == "accuracy":
            assert abs(measured[metric] - recorded) < 0.08, (metric, measured[metric], recorded)
        else:
            assert abs(measured[metric] - recorded) < 0.35 * recorded, (metric, measured[metric], recorded)


def test_the_numbers_worth_shipping():
    assert entry("lenet-fashion-mnist").metrics["accuracy"] >= 0.89
    assert entry("mlp-fashion-mnist").metrics["accuracy"] >= 0.87
    ae = entry("autoencoder-fashion-mnist")
    assert ae.data["task"] == "reconstruction" and ae.data["evaluation"]["stage"] == ["test-on-test"]
    assert ae.data["dataset"]["test"] == "fashion-mnist:test"


def test_fine_tuning_beats_training_from_scratch():
    e = entry("lenet-mnist5k-finetune")
    assert e.data["parent"] == "lenet-fashion-mnist" and e.data["parent"] in zoo.entries()
    assert load_solver(e.path("solver"))["init_from"] == "zoo:lenet-fashion-mnist"
    base = e.data["baseline"]
    assert base["iterations"] == e.data["training"]["iterations"] <= 500
    assert base["seed"] == e.data["training"]["seed"]
    assert e.metrics["accuracy"] > base["metrics"]["accuracy"] + 0.01
    assert e.metrics["loss"] < base["metrics"]["loss"]
    # the README quotes the manifest's numbers
    readme = (ROOT / "README.md").read_text()
    assert f"{100 * e.metrics['accuracy']:.1f}%" in readme and f"{100 * base['metrics']['accuracy']:.1f}%" in readme


def test_list_show_and_verify_do_not_import_numba():
    code = ("import sys; from click.testing import CliRunner; from netspec.cli.main import cli\n"
            "for args in (['zoo', 'list'], ['zoo', 'show', 'lenet-fashion-mnist'], ['zoo', 'verify']):\n"
            "    r = CliRunner().invoke(cli, args); assert r.exit_code == 0, r.output\n"
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_zoo_list_shows_every_entry():
    res = CliRunner().invoke(cli, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    for name in RECIPES:
        assert any(l.startswith(name + " ") and "built-in" in l for l in res.output.splitlines())


@pytest.mark.slow
def test_verify_evaluate_passes_for_every_entry():
    """The command each manifest records as the one that measured its metrics."""
    res = CliRunner().invoke(cli, ["zoo", "verify", "--evaluate"])
    assert res.exit_code == 0, res.output
    assert f"{len(RECIPES)} entries verified and re-evaluated" in res.output
    assert "DIFFERS" not in res.output


@pytest.mark.slow
def test_fine_tuning_reproduces_and_wins(tmp_path):
    """Re-train the fine-tuning recipe and its from-scratch baseline (300 iterations each)."""
    out = {}
    for kind, extra in (("finetune", []), ("baseline", ["--baseline"])):
        res = CliRunner().invoke(cli, ["zoo", "reproduce", "lenet-mnist5k-finetune", "--run-dir",
                                       str(tmp_path / kind), "-q"] + extra)
        assert res.exit_code == 0, res.output
        line = next(l for l in res.output.splitlines() if l.strip().startswith("accuracy"))
        out[kind] = float(line.split()[1])
    assert out["finetune"] > out["baseline"] + 0.01
    records = [json.loads(l) for l in (tmp_path / "finetune" / "log.jsonl").read_text().splitlines()]
    assert records and (tmp_path / "finetune" / "train.log").read_text().count("Weights from zoo:lenet-fashion-mnist:") == 1
