"""The model zoo: trained models with their recipes, found by name and verified before use.

An entry is a folder ``<name>/`` holding ``manifest.yaml`` (what the model is, how it was
trained and measured: ``MANIFEST_SCHEMA``), the net and solver YAML it was trained with, and
its weights (safetensors) with their sha256.  Entries are looked up, first match wins, in:

1. the built-in zoo shipped with netspec (the repository's ``zoo/`` folder; a wheel carries it
   as ``netspec/_zoo``);
2. each folder of ``$NETSPEC_ZOO`` (``os.pathsep``-separated);
3. the user's zoo, ``$XDG_DATA_HOME/netspec/zoo`` (``~/.local/share/netspec/zoo``).

``zoo:<name>`` works wherever a weights file does (``--weights``, ``init_from:``,
``weights:``): ``resolve_weights`` checks the manifest and the weights' sha256 before anything
reads them, so a damaged or altered file is an error, never a silent load.  ``evaluate``
re-measures an entry's metrics, ``add_run`` packages a finished training run as an entry, and
``reproduce`` re-trains an entry from its recipe.  Nothing here imports numba until a net runs.

The registry half (locations, manifests, ``resolve_weights``) is ``netspec.zoo_registry``, re-exported
here: training resolves ``zoo:<name>`` through it, so that only this module imports the training code.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from netspec.errors import NetspecError, ZooError
from netspec.zoo_registry import (  # noqa: F401  (the registry is public here too)
    BUILTIN, MANIFEST, MANIFEST_SCHEMA, NAME_PATTERN, PREFIX, TASKS, Entry, Found, builtin_dir,
    committed_schema_path, entries, file_sha256, find, is_zoo_ref, load_entry, locations, ref_name,
    resolve_weights, scan, schema_text, sources, user_dir, verify_weights,
)

# |measured - recorded| <= tolerance * max(1, |recorded|): an absolute tolerance for metrics
# of order 1 (accuracy), a relative one for large losses.
EVAL_TOLERANCE = 0.001     # re-evaluating the same weights: only summation order may differ
TRAIN_TOLERANCE = 0.01     # re-training: other BLAS thread counts round differently
ENTRY_FILES = {"net": "train_val.yaml", "solver": "solver.yaml", "weights": "weights.safetensors"}
# Solver fields that name files relative to the solver, or the run's own output folder: an
# entry's recipe names its own net and writes where 'netspec zoo reproduce' says.
_SOLVER_PATH_KEYS = ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param",
                     "snapshot_prefix")
_START_KEYS = ("init_from", "weights", "reinit", "freeze")   # what makes a recipe a fine-tuning

Echo = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


# ---- verification --------------------------------------------------------------------------

@dataclass
class Check:
    """What ``verify`` found for one entry."""

    entry: Entry
    size: int = 0
    params: int = 0
    notes: list[str] = field(default_factory=list)


def verify(entry: Entry) -> Check:
    """Checksum, then structure: the file decodes and holds exactly the params of the entry's
    net, with their shapes.  Opens no data and imports no kernels."""
    from netspec.io.weights import read_safetensors

    weights = verify_weights(entry)
    tensors, _ = read_safetensors(weights)
    check = Check(entry, weights.stat().st_size, len(tensors))
    if not entry.get("net"):
        check.notes.append("no net file: the params were not compared with a net")
        return check
    plan = _plan(entry, "TEST")
    need = {p.key: tuple(p.shape) for lp in plan.layers for p in lp.params if p.owner is None}
    problems = [f"the net's param {k} ({'x'.join(map(str, s))}) is not in the weights" for k, s in need.items()
                if k not in tensors]
    problems += [f"{k} has shape {'x'.join(map(str, tensors[k].shape))}, the net needs {'x'.join(map(str, s))}"
                 for k, s in need.items() if k in tensors and tuple(tensors[k].shape) != s]
    if problems:
        raise entry.error(f"the weights of zoo entry '{entry.name}' do not fit its net {entry.data['net']}: "
                          + "; ".join(problems[:6]) + (" ..." if len(problems) > 6 else ""), "weights")
    extra = sorted(set(tensors) - set(need))
    if extra:
        check.notes.append(f"{len(extra)} tensor(s) the TEST net does not use: {', '.join(extra[:4])}"
                           + (" ..." if len(extra) > 4 else ""))
    if entry.get("solver") and not entry.path("solver").is_file():
        raise entry.error(f"the solver file {entry.data['solver']} of zoo entry '{entry.name}' is missing", "solver")
    parent = entry.get("parent")
    if parent and parent not in entries():
        check.notes.append(f"its parent '{parent}' is not in the zoo (reproducing it needs the parent)")
    return check


def _net_path(entry: Entry) -> Path:
    net = entry.path("net")
    if not net.is_file():
        raise entry.error(f"the net file {entry.data['net']} of zoo entry '{entry.name}' is missing", "net")
    return net


def _stages(entry: Entry) -> list[str] | None:
    from netspec.spec.model import as_list

    st = entry.evaluation.get("stage")
    return as_list(st) if st is not None else None


def _plan(entry: Entry, phase: str):
    from netspec import api

    ev = entry.evaluation
    return api.compile_net(api.load_net(_net_path(entry)), phase, ev.get("level"),
                           _stages(entry) if phase == "TEST" else None)


def within(recorded: float, measured: float, tolerance: float) -> bool:
    return abs(measured - recorded) <= tolerance * max(1.0, abs(recorded))


@dataclass
class Comparison:
    """Recorded vs measured metrics."""

    rows: list[tuple[str, float, float | None, bool]]       # metric, recorded, measured, within tolerance
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(r[3] for r in self.rows)

    def lines(self, recorded_label: str = "manifest") -> list[str]:
        out = []
        width = max([len(r[0]) for r in self.rows] + [6])
        for name, want, got, ok in self.rows:
            shown = "missing" if got is None else f"{got:.6g}"
            diff = "" if got is None else f"  diff {got - want:+.3g}"
            out.append(f"  {name:<{width}}  {shown:>10}  ({recorded_label} {want:.6g}){diff}  "
                       f"{'ok' if ok else 'DIFFERS'}")
        return out


def compare(recorded: dict[str, float], measured: dict[str, float], tolerance: float) -> Comparison:
    rows = []
    for name, want in recorded.items():
        got = measured.get(name)
        rows.append((name, float(want), got, got is not None and within(float(want), got, tolerance)))
    return Comparison(rows, tolerance)


def measure(entry: Entry, weights: Path, *, iterations: int | None = None, progress: bool = False) -> dict[str, float]:
    """The scalar TEST-phase outputs of the entry's net with these weights, as the manifest's
    evaluation block says (stages, level, iterations: default a full pass)."""
    from netspec.solvers.run import evaluate as run_evaluate

    ev = entry.evaluation
    if iterations is None:
        iterations = ev.get("iterations") or full_pass(entry)
    result = run_evaluate(_net_path(entry), str(weights), iterations=iterations, stages=_stages(entry),
                          level=ev.get("level"), progress=progress)
    return {k: float(v[0]) for k, v in result.items() if len(v) == 1}


def evaluate(entry: Entry, *, tolerance: float | None = None, iterations: int | None = None,
             progress: bool = False) -> Comparison:
    """Verify the entry, re-run its TEST phase, and compare with the manifest's metrics."""
    if not entry.metrics:
        raise entry.error(f"zoo entry '{entry.name}' records no metrics to compare with (metrics: ...)")
    verify(entry)
    measured = measure(entry, entry.path("weights"), iterations=iterations, progress=progress)
    if tolerance is None:
        tolerance = float(entry.evaluation.get("tolerance", EVAL_TOLERANCE))
    return compare(entry.metrics, measured, tolerance)


# ---- packaging a run -------------------------------------------------------------------------

@dataclass
class RunSnapshot:
    """The final (or a chosen) snapshot of a training run, as a state file records it."""

    state: Path
    weights: Path
    record: dict
    nets: dict
    solver: dict
    log: Path | None


def find_snapshot(run: str | os.PathLike, iteration: int | None = None) -> RunSnapshot:
    """The state file of a run folder (its highest iteration, or ``iteration``), or the state
    file given itself, with the weights file written beside it."""
    from netspec.io import snapshot as snap
    from netspec.spec.load import display_name

    run = Path(run)
    if run.is_file():
        if not run.name.endswith(snap.STATE_SUFFIX):
            raise ZooError(f"expected a run folder or a {snap.STATE_SUFFIX} file", file=display_name(run))
        states = [run]
        folder = run.parent
    elif run.is_dir():
        folder = run
        states = snap.find_states([run])
        if iteration is not None:
            states = [s for s in states if snap.iteration_of(s) == iteration]
        if not states:
            what = f"no snapshot of iteration {iteration}" if iteration is not None else "no snapshot"
            raise ZooError(f"{what} (*{snap.STATE_SUFFIX}) in this run folder", file=display_name(run),
                           hint="a solver with snapshot_prefix writes them elsewhere: give that folder, or "
                                "the state file")
    else:
        raise ZooError("no such run folder", file=display_name(run))
    state = max(states, key=lambda p: (snap.iteration_of(p) or 0, p.stat().st_mtime_ns))
    tensors, record, net_text, solver_text = snap.read_state(state)
    del tensors
    weights = state.with_name(state.name[: -len(snap.STATE_SUFFIX)] + snap.WEIGHTS_SUFFIX)
    if not weights.is_file():
        raise ZooError(f"the weights file {weights.name} written with this state is missing",
                       file=display_name(state))
    log = folder / "train.log"
    return RunSnapshot(state, weights, record, json.loads(net_text), json.loads(solver_text),
                       log if log.is_file() else None)


def _started_from(run: RunSnapshot) -> list[str]:
    """The weights a run was started from: the solver's init_from/weights, else the
    'Weights from X:' lines of its log (a --weights option leaves no trace in the solver)."""
    solver = run.solver
    if solver.get("init_from"):
        return [solver["init_from"]]
    if solver.get("weights"):
        return list(solver["weights"])
    if run.log is None:
        return []
    found = []
    for line in run.log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.search(r"netspec\] Weights from (.+):$", line)
        if m and m.group(1) not in found:
            found.append(m.group(1))
        if "Solving " in line:
            break
    return found


def recipe(run: RunSnapshot, echo: Echo = _quiet) -> tuple[dict, dict, list[tuple[str, dict]]]:
    """(net, solver, [(test net file, test net)]) documents of an entry that re-trains this run
    exactly: the resolved nets, the solver with its defaults left out, the run's seed, and the
    weights it started from when they are zoo entries."""
    from netspec.spec import solver_schema as S

    nets = run.nets
    train_doc: dict = {}
    for k, v in nets["train"].items():
        train_doc[k] = v
        if k == "name":
            train_doc["solver"] = ENTRY_FILES["solver"]
    if "solver" not in train_doc:
        train_doc = {"solver": ENTRY_FILES["solver"], **train_doc}
    tests = nets.get("test", [])
    specific = [(f"test_net_{k}.yaml", t) for k, t in enumerate(tests) if t != "train"]
    solver: dict = {"netspec": 1}
    for key, sub in S.PROPERTIES.items():
        if key not in run.solver or key in _SOLVER_PATH_KEYS or key == "netspec":
            continue
        value = run.solver[key]
        if "default" not in sub or value != sub["default"]:
            solver[key] = value
    solver["random_seed"] = int(run.record.get("seed", run.solver.get("random_seed", -1)))
    started = _started_from(run)
    solver.pop("weights", None)
    solver.pop("init_from", None)
    zoo_refs = [w for w in started if is_zoo_ref(w)]
    for w in started:
        if not is_zoo_ref(w):
            echo(f"warning: the run started from {w}, a file the entry cannot name; its recipe starts from "
                 f"the fillers unless you add init_from: by hand")
    if len(zoo_refs) == 1:
        solver["init_from"] = zoo_refs[0]
    elif zoo_refs:
        solver["weights"] = zoo_refs
    # net: before the test nets (Caffe's order puts specific test nets first, generic ones after)
    head = {"netspec": 1}
    if any(t == "train" for t in tests) or not tests:
        head["net"] = ENTRY_FILES["net"]
    else:
        head["train_net"] = ENTRY_FILES["net"]
    if specific:
        head["test_net"] = [f for f, _ in specific]
    solver = {**head, **{k: v for k, v in solver.items() if k != "netspec"}}
    return train_doc, solver, specific


def _data_info(entry_net: Path, stages: list[str] | None, level: int | None) -> tuple[dict, dict, str]:
    """(dataset, input, task guess) from the entry's TRAIN and TEST nets (no data is opened)."""
    from netspec import api
    from netspec.data.catalog import parse_builtin

    spec = api.load_net(entry_net)
    dataset: dict = {}
    inputs: dict = {}
    task = "other"
    for phase, key in (("TRAIN", "train"), ("TEST", "test")):
        plan = api.compile_net(spec, phase, level if phase == "TEST" else None, stages if phase == "TEST" else None)
        seen = False
        for lp in plan.layers:
            if lp.type == "Accuracy":
                task = "classification"
            if not lp.layer.is_data or seen:
                continue
            seen = True                       # the first data layer feeds the net's input
            source = lp.spec.get("source")
            if source:
                dataset[key] = str(source)
            if phase == "TEST":
                inputs["blob"] = lp.tops[0]
                inputs["shape"] = [int(d) for d in lp.top_shapes[0][1:]]
                if lp.spec.get("transform"):
                    inputs["preprocessing"] = dict(lp.spec["transform"])
    if "test" in dataset and _is_builtin(dataset["test"]) and task == "classification":
        names = parse_builtin(dataset["test"])[0].class_names
        if names:
            inputs["classes"] = list(names)
    return dataset, inputs, task


def _is_builtin(source: str) -> bool:
    from netspec.data.catalog import parse_builtin

    try:
        return parse_builtin(source) is not None
    except NetspecError:
        return False


def _round(v: float) -> float:
    return float(f"{v:.6g}")


def add_run(run: str | os.PathLike, name: str, *, zoo_dir: str | os.PathLike | None = None,
            description: str | None = None, licence: str | None = None, task: str | None = None,
            stages: Iterable[str] | None = None, iteration: int | None = None, baseline: str | None = None,
            threads: int | None = None, machine: str | None = None, force: bool = False, progress: bool = False,
            echo: Echo = _quiet) -> Path:
    """Package a finished training run as zoo entry ``name`` in ``zoo_dir`` (default: the user's
    zoo): the recipe, the weights and their sha256, and the metrics measured on the TEST net
    exactly as ``netspec zoo verify --evaluate`` measures them.  ``baseline``: a run of the same
    recipe trained from the fillers, whose metrics are recorded beside the entry's.  ``threads``
    and ``machine`` describe the run for the record (its files do not say)."""
    from netspec import __version__
    from netspec.spec.dump import dump

    if not re.match(NAME_PATTERN, name):
        raise ZooError(f"'{name}' is not a valid entry name: use letters, digits, '.', '_' and '-', starting "
                       f"with a letter or digit")
    target_root = Path(zoo_dir) if zoo_dir is not None else user_dir()
    target = target_root / name
    if target.exists() and not force:
        raise ZooError(f"zoo entry '{name}' already exists in {target_root}", hint="pass --force to replace it")
    snapshot = find_snapshot(run, iteration)
    max_iter = int(snapshot.solver.get("max_iter", 0))
    done = int(snapshot.record.get("iter", 0))
    if iteration is None and done < max_iter:
        raise ZooError(f"the run stopped at iteration {done} of max_iter {max_iter}",
                       hint="finish it with 'netspec train ... --resume latest', or pass --iter "
                            f"{done} to package this snapshot anyway")
    net_doc, solver_doc, test_files = recipe(snapshot, echo)
    parent = next((ref_name(w) for w in [solver_doc.get("init_from")] + list(solver_doc.get("weights", []))
                   if w and is_zoo_ref(w)), None)
    tests = snapshot.nets.get("test_state", [])
    if stages is None and tests:
        stages = tests[0].get("stage")
    level = tests[0].get("level") if tests else None
    stages = list(stages) if stages is not None else None

    target_root.mkdir(parents=True, exist_ok=True)
    work = target_root / f".{name}.adding-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        header = f"zoo entry {name}: the {{}} of the run, as netspec resolved it (written by 'netspec zoo add')"
        (work / ENTRY_FILES["net"]).write_text(dump(net_doc, header.format("net")), encoding="utf-8")
        (work / ENTRY_FILES["solver"]).write_text(dump(solver_doc, header.format("solver")), encoding="utf-8")
        for fname, tnet in test_files:
            (work / fname).write_text(dump(tnet, header.format("test net")), encoding="utf-8")
        shutil.copyfile(snapshot.weights, work / ENTRY_FILES["weights"])
        try:
            dataset, inputs, guessed = _data_info(work / ENTRY_FILES["net"], stages, level)
        except NetspecError as e:
            # the run's net is kept as written; a data path relative to its old folder is lost
            raise ZooError(f"the run's net cannot be built from the entry's folder: {e.message}",
                           hint="an entry's data sources must be built-in datasets or absolute paths; train "
                                "with such a source, then add the run") from None
        for source in sorted(set(dataset.values())):
            if not _is_builtin(source):
                echo(f"warning: the data source '{source}' is a file, not a built-in dataset: evaluating or "
                     f"re-training the entry needs it at that path")
        manifest: dict[str, Any] = {"netspec": 1, "name": name,
                                    "description": description or f"{net_doc.get('name', name)} trained by netspec",
                                    "task": task or guessed}
        if inputs:
            manifest["input"] = inputs
        manifest.update({"net": ENTRY_FILES["net"], "solver": ENTRY_FILES["solver"],
                         "weights": ENTRY_FILES["weights"], "sha256": file_sha256(work / ENTRY_FILES["weights"])})
        if dataset:
            manifest["dataset"] = dataset
        evaluation: dict[str, Any] = {"command": f"netspec zoo verify --evaluate {name}"}
        if stages is not None:
            evaluation["stage"] = stages
        if level is not None:
            evaluation["level"] = level
        manifest["evaluation"] = evaluation
        manifest["training"] = {"command": f"netspec zoo reproduce {name}", "iterations": done,
                                "seed": int(solver_doc["random_seed"]),
                                "seconds": round(float(snapshot.record.get("elapsed", 0.0)), 1)}
        # the run's files do not say how many threads it had or where it ran: the caller does
        if threads is not None:
            manifest["training"]["threads"] = int(threads)
        if machine:
            manifest["training"]["machine"] = machine
        if licence:
            manifest["licence"] = licence
        manifest["parent"] = parent
        manifest["netspec_version"] = __version__
        _write_manifest(work, manifest)
        entry = load_entry(work.resolve(), check_name=False)
        entry.name = name
        evaluation["iterations"] = full_pass(entry)
        evaluation["tolerance"] = EVAL_TOLERANCE
        echo(f"evaluating {name} on {dataset.get('test', 'its TEST net')} ({evaluation['iterations']} batches) ...")
        measured = measure(entry, work / ENTRY_FILES["weights"], iterations=evaluation["iterations"],
                           progress=progress)
        manifest["metrics"] = {k: _round(v) for k, v in measured.items()}
        if baseline is not None:
            manifest["baseline"] = _baseline(entry, snapshot, baseline, progress, echo)
        # the schema's order: what it is, its files, what it measures, how it was made
        manifest = {k: manifest[k] for k in MANIFEST_SCHEMA["properties"] if k in manifest}
        _write_manifest(work, manifest)
        load_entry(work.resolve(), check_name=False)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work)
    load_entry(target)
    return target


def full_pass(entry: Entry) -> int:
    """Test batches for one pass over the largest data source of the entry's TEST net (what
    'netspec test' runs by default), from the sources' headers; 50 when no size is known."""
    import math

    from netspec.data.catalog import probe
    from netspec.solvers.run import DEFAULT_TEST_ITERATIONS

    best = None
    for lp in _plan(entry, "TEST").layers:
        if not (lp.layer.is_data and lp.spec.get("source") and lp.spec.get("batch_size")):
            continue
        try:
            info = probe(str(lp.spec["source"]), entry.folder)
        except NetspecError:
            continue
        if info.size:
            k = math.ceil(info.size / int(lp.spec["batch_size"]))
            best = k if best is None else max(best, k)
    return best or DEFAULT_TEST_ITERATIONS


def manifest_text(manifest: dict) -> str:
    """A manifest as YAML: mappings in block style (one field a line), lists of plain values
    inline."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def seq(dumper, data):
        flat = all(isinstance(x, (str, int, float, bool)) or x is None for x in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)

    def text(dumper, data):
        # long descriptions as folded blocks, not one quoted line
        style = ">" if len(data) > 80 and "\n" not in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(list, seq)
    Dumper.add_representer(str, text)
    body = yaml.dump(manifest, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100,
                     allow_unicode=True)
    return "# netspec zoo manifest (its fields: netspec/spec/schemas/manifest.schema.json)\n" + body


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(manifest_text(manifest), encoding="utf-8")


def _without_start(solver: dict) -> dict:
    return {k: v for k, v in solver.items() if k not in _START_KEYS}


def _baseline(entry: Entry, run: RunSnapshot, baseline_run: str, progress: bool, echo: Echo) -> dict:
    """The metrics of a from-scratch run of the same recipe, checked to be that recipe."""
    base = find_snapshot(baseline_run)
    _, ours, _ = recipe(run)
    _, theirs, _ = recipe(base)
    keys = sorted((set(ours) | set(theirs)) - set(_START_KEYS))
    diffs = [k for k in keys if ours.get(k) != theirs.get(k)]
    if run.nets["train"] != base.nets["train"]:
        diffs.insert(0, "the net")
    if diffs:
        raise ZooError(f"the baseline run is not the entry's recipe without init_from: {', '.join(diffs)} differ",
                       file=str(baseline_run))
    if _started_from(base):
        raise ZooError(f"the baseline run started from {', '.join(_started_from(base))}; a baseline trains from "
                       f"the fillers", file=str(baseline_run))
    echo(f"evaluating the baseline {baseline_run} ...")
    measured = measure(entry, base.weights, progress=progress)
    return {"description": "the same net and solver without init_from (and without freeze), trained from the "
                           "fillers with the same seed for the same iterations",
            "command": f"netspec zoo reproduce {entry.name} --baseline",
            "iterations": int(base.record.get("iter", 0)), "seed": int(base.record.get("seed", 0)),
            "metrics": {k: _round(v) for k, v in measured.items()}}


# ---- re-training -----------------------------------------------------------------------------

@dataclass
class Reproduction:
    run_dir: Path
    weights: Path
    comparison: Comparison
    identical: bool                 # the weights are bit for bit the entry's


def reproduce(entry: Entry, *, run_dir: str | os.PathLike | None = None, baseline: bool = False,
              tolerance: float | None = None, progress: bool = False, echo: Echo = _quiet) -> Reproduction:
    """Train the entry's recipe again (``baseline``: without its init_from, from the fillers),
    measure the result as the manifest's metrics were measured, and compare."""
    from netspec.solvers.run import train

    solver_file = entry.path("solver")
    if not solver_file.is_file():
        raise entry.error(f"the solver file {entry.data['solver']} of zoo entry '{entry.name}' is missing", "solver")
    recorded = entry.metrics
    if baseline:
        if not entry.get("baseline"):
            raise entry.error(f"zoo entry '{entry.name}' records no baseline to reproduce")
        recorded = dict(entry.data["baseline"]["metrics"])
    if not recorded:
        raise entry.error(f"zoo entry '{entry.name}' records no metrics to compare with (metrics: ...)")
    rdir = Path(run_dir) if run_dir is not None else Path("runs") / f"zoo-{entry.name}" / \
        datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if baseline:
        solver_file = _baseline_solver(entry, rdir)
    if tolerance is None:
        tolerance = float((entry.get("training") or {}).get("tolerance", TRAIN_TOLERANCE))
    status = train(solver_file, run_dir=rdir, progress=progress, echo=echo)
    if status:
        raise ZooError(f"the re-training of '{entry.name}' was stopped (status {status}); resume it with "
                       f"'netspec train {solver_file} --resume latest --run-dir {rdir}'")
    snapshot = find_snapshot(rdir)
    measured = measure(entry, snapshot.weights, progress=progress)
    identical = not baseline and _same_tensors(snapshot.weights, entry.path("weights"))
    return Reproduction(rdir, snapshot.weights, compare(recorded, measured, tolerance), identical)


def _same_tensors(a: Path, b: Path) -> bool:
    """Whether two weights files hold the same tensors bit for bit (the files' bytes may differ:
    the order of the metadata in a safetensors header is not fixed)."""
    import numpy as np

    from netspec.io.weights import read_safetensors

    ta, tb = read_safetensors(a)[0], read_safetensors(b)[0]
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and np.array_equal(ta[k], tb[k]) for k in ta)


def _baseline_solver(entry: Entry, rdir: Path) -> Path:
    """The entry's solver without init_from/weights/freeze/reinit, naming the entry's net."""
    from netspec.spec.dump import dump
    from netspec.spec.load import load_file

    data = dict(load_file(entry.path("solver")).data)
    plain = _without_start(data)
    for key in ("net", "train_net"):
        if key in plain:
            plain[key] = str((entry.folder / str(plain[key])).resolve())
    if "test_net" in plain:
        plain["test_net"] = [str((entry.folder / str(t)).resolve()) for t in plain["test_net"]]
    rdir.mkdir(parents=True, exist_ok=True)
    path = rdir / "baseline_solver.yaml"
    path.write_text(dump(plain, f"zoo entry {entry.name}'s recipe trained from the fillers (no init_from)"),
                    encoding="utf-8")
    return path
