"""Solver files: load, validate, fill in defaults, and find the nets a training run builds.

``load_solver(path)`` reads a YAML/JSON solver file with the same machinery as nets (located
errors, did-you-mean), then checks what a schema cannot say well: exactly one net source,
ascending ``stepvalue``, no momentum for AdaGrad/RMSProp, no GPU; fields the chosen rule or
policy never reads become warnings.  ``resolve_training(file)`` accepts a solver file, or a
net file whose ``solver:`` names one (relative path) or carries it inline, and returns the
train net and the test nets (Caffe's order: ``test_net_param``, ``test_net``, then one generic
instance of ``net`` per remaining ``test_iter`` entry).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from netspec.errors import NetspecError, SolverError, SpecError, raise_all
from netspec.solvers import schema as S
from netspec.spec.load import Doc, load_file
from netspec.spec.model import NetSpec, Src, as_list

FORMULAS = {"step": "base_lr * gamma ^ floor(iter / stepsize)", "exp": "base_lr * gamma ^ iter",
            "inv": "base_lr * (1 + gamma * iter) ^ -power",
            "multistep": "base_lr * gamma ^ (the number of stepvalue entries passed)",
            "poly": "base_lr * (1 - iter / max_iter) ^ power",
            "sigmoid": "base_lr / (1 + exp(-gamma * (iter - stepsize)))"}
LIST_KEYS = ("test_iter", "test_net", "test_net_param", "test_state", "stepvalue", "weights", "reinit", "freeze")


class SolverSpec(dict):
    """A validated solver with every default filled in (a plain mapping), plus where it came from."""

    __slots__ = ("src", "base_dir", "warnings")

    def __init__(self, fields: dict, src: Src, base_dir: Path | None, warnings: list | None = None):
        super().__init__(fields)
        self.src = src
        self.base_dir = base_dir
        self.warnings: list[NetspecError] = warnings or []

    @property
    def file(self) -> str | None:
        return self.src.file

    def error(self, message: str, field: str | None = None, cls: type[NetspecError] = SolverError,
              hint: str | None = None) -> NetspecError:
        return cls(message, file=self.file, line=self.src.line(field) if field else None, field=field, hint=hint)

    def path(self, value: str) -> Path:
        """A path written in this solver, resolved against its folder."""
        p = Path(os.path.expanduser(value))
        if p.is_absolute() or self.base_dir is None:
            return p
        return self.base_dir / p

    def plain(self) -> dict:
        """The settings as plain data (for snapshots and comparisons)."""
        return copy.deepcopy(dict(self))

    def __deepcopy__(self, memo):
        return SolverSpec(copy.deepcopy(dict(self), memo), self.src, self.base_dir, list(self.warnings))

    def __reduce__(self):
        return (SolverSpec, (dict(self), self.src, self.base_dir, self.warnings))


def is_solver_doc(doc: Doc) -> bool:
    return isinstance(doc.data, dict) and "layers" not in doc.data


def load_solver(path: str | os.PathLike) -> SolverSpec:
    doc = load_file(path)
    if isinstance(doc.data, dict) and "layers" in doc.data:
        raise SpecError("this is a net file, not a solver; give a solver file (with base_lr, lr_policy, "
                        "max_iter and net:)", file=doc.file, line=1)
    return solver_from_doc(doc)


def solver_from_doc(doc: Doc, inline: bool = False) -> SolverSpec:
    """Validate and normalize a solver document (``inline``: a net file's ``solver:`` mapping)."""
    from netspec.spec.validate import schema_errors

    data = doc.data
    if not isinstance(data, dict):
        raise SpecError("a solver file holds a mapping of settings (base_lr: 0.01, ...)", file=doc.file,
                        line=doc.line(()))
    errors = [_explain(e, doc, inline) for e in schema_errors(doc, S.build_solver_schema(inline), list_key=None)]
    raise_all(errors)
    src = Src(doc.file, doc.lines)
    fields = _normalize(data)
    spec = SolverSpec(fields, src, doc.base_dir)
    raise_all(_semantic_errors(spec, data, inline))
    spec.warnings.extend(_unused(spec, data))
    return spec


def _explain(e: SpecError, doc: Doc, inline: bool) -> SpecError:
    """Say why a conditional requirement holds instead of a bare 'missing' or 'must be'."""
    e = _explain_message(e, doc)
    e.message = e.message.replace("unknown top-level key", "unknown solver field")
    if inline:
        e.field = f"solver.{e.field}" if e.field else "solver"
    return e


def _explain_message(e: SpecError, doc: Doc) -> SpecError:
    data = doc.data
    policy = data.get("lr_policy")
    policy = policy if isinstance(policy, str) else None   # a wrong type has its own schema error
    if e.message.startswith("missing required field") and e.field in S.POLICY_FIELDS.get(policy, ()):
        e.message = f"lr_policy '{policy}' needs '{e.field}': rate = {FORMULAS[policy]}"
        e.line = doc.line(("lr_policy",))
    elif e.message.startswith("missing required field") and e.field == "net":
        e.message = "the solver names no net: give net: (a file relative to this one) or net_param: (inline)"
    elif e.field == "momentum" and e.message.startswith("must be"):
        e.message = (f"{data.get('type')} takes no momentum (Caffe requires 0); remove momentum, or use "
                     f"SGD, Nesterov or Adam")
    elif e.field == "solver_type" and "only one of" in e.message:
        e.message = "give type or the deprecated solver_type, not both"
    return e


def _normalize(data: dict) -> dict:
    out: dict[str, Any] = {}
    for key, sub in S.PROPERTIES.items():
        if key in data:
            out[key] = copy.deepcopy(data[key])
        elif "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    if "solver_type" in out:
        out["type"] = S.LEGACY_TYPES[out.pop("solver_type")]
    for key in LIST_KEYS:
        if key in out:
            out[key] = as_list(out[key])
    if "weights" in out:  # Caffe allows comma-separated lists inside each entry
        out["weights"] = [w.strip() for entry in out["weights"] for w in entry.split(",") if w.strip()]
    for st in ([out["train_state"]] if "train_state" in out else []) + out.get("test_state", []):
        if "stage" in st:
            st["stage"] = as_list(st["stage"])
    for key in ("base_lr", "gamma", "power", "momentum", "momentum2", "rms_decay", "delta", "weight_decay",
                "clip_gradients", "min_lr", "warmup_start_factor"):
        if key in out:
            out[key] = float(out[key])
    out.pop("netspec", None)
    return out


def _semantic_errors(spec: SolverSpec, data: dict, inline: bool) -> list[NetspecError]:
    errs: list[NetspecError] = []
    given = [k for k in S.NET_KEYS if k in data]
    if len(given) > 1:
        errs.append(spec.error(f"give exactly one of net, net_param, train_net, train_net_param; "
                               f"this solver gives {', '.join(given)}", given[-1], SpecError))
    sv = spec.get("stepvalue", [])
    for i in range(1, len(sv)):
        if sv[i] <= sv[i - 1]:
            errs.append(SpecError(f"stepvalue must rise: {sv[i]} follows {sv[i - 1]}", file=spec.file,
                                  line=spec.src.line("stepvalue", i), field="stepvalue"))
            break
    if spec.get("train_state", {}).get("phase", "TRAIN") != "TRAIN":
        errs.append(spec.error("the train net's phase is TRAIN", "train_state", SpecError))
    for i, st in enumerate(spec.get("test_state", [])):
        if st.get("phase", "TEST") != "TEST":
            errs.append(SpecError("a test net's phase is TEST", file=spec.file,
                                  line=spec.src.line("test_state", i), field="test_state"))
    if spec["lr_policy"] == "cosine" and spec["max_iter"] < 1:
        errs.append(spec.error("lr_policy 'cosine' needs max_iter > 0 (the rate reaches min_lr there)",
                               "max_iter", SpecError))
    if spec["lr_policy"] == "poly" and spec["max_iter"] < 1:
        errs.append(spec.error("lr_policy 'poly' needs max_iter > 0", "max_iter", SpecError))
    if "weights" in spec and "init_from" in spec:
        errs.append(spec.error("give weights or init_from, not both", "init_from", SpecError))
    if spec["lr_scaling"] == "linear" and "lr_base_batch" not in spec:
        errs.append(spec.error("lr_scaling 'linear' needs lr_base_batch, the global batch base_lr was chosen "
                               "for: rate = base_lr x global batch / lr_base_batch", "lr_scaling", SpecError))
    return errs


def _unused(spec: SolverSpec, data: dict) -> list[NetspecError]:
    """Fields given but never read with this policy and rule (Caffe ignores them silently)."""
    out: list[NetspecError] = []
    policy, rule = spec["lr_policy"], spec["type"]
    reads = set(S.POLICY_FIELDS[policy]) | set(S.POLICY_OPTIONAL.get(policy, ()))
    for key in ("gamma", "power", "stepsize", "stepvalue", "min_lr"):
        if key in data and key not in reads:
            out.append(spec.error(f"lr_policy '{policy}' does not use {key}; it is ignored", key, SpecError))
    rule_reads = {"momentum": ("SGD", "Nesterov", "AdaDelta", "Adam", "AdamW"),
                  "momentum2": ("Adam", "AdamW"), "rms_decay": ("RMSProp",),
                  "delta": ("AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW")}
    for key, rules in rule_reads.items():
        if key in data and rule not in rules and not (key == "momentum" and data[key] == 0):
            out.append(spec.error(f"the {rule} rule does not use {key}; it is ignored", key, SpecError))
    if "snapshot_format" in data:
        out.append(spec.error("snapshot_format is ignored: netspec writes safetensors snapshots",
                              "snapshot_format", SpecError))
    if "clip_after_normalize" in data and spec["clip_gradients"] < 0:
        out.append(spec.error("clip_after_normalize has no effect without clip_gradients",
                              "clip_after_normalize", SpecError))
    if "warmup_start_factor" in data and not spec["warmup_iter"]:
        out.append(spec.error("warmup_start_factor has no effect without warmup_iter",
                              "warmup_start_factor", SpecError))
    if "lr_base_batch" in data and spec["lr_scaling"] != "linear":
        out.append(spec.error("lr_base_batch has no effect without lr_scaling: linear", "lr_base_batch", SpecError))
    dynamic = spec.get("loss_scale", "dynamic" if spec.get("precision") == "float16" else 1) == "dynamic"
    if "loss_scale_window" in data and not dynamic:
        out.append(spec.error("loss_scale_window has no effect without a dynamic loss_scale (the default "
                              "with precision: float16)", "loss_scale_window", SpecError))
    if "regularization_type" in data and not spec["weight_decay"]:
        out.append(spec.error("regularization_type has no effect without weight_decay",
                              "regularization_type", SpecError))
    return out


# ---- the nets of a training run ---------------------------------------------------------

@dataclass
class NetUse:
    """One net the solver builds: its spec and the state it is filtered with."""

    spec: NetSpec
    phase: str
    level: int | None = None
    stages: list[str] | None = None
    test_iter: int = 0
    label: str = ""

    @property
    def name(self) -> str:
        return self.spec.get("name") or (Path(self.spec.file).stem if self.spec.file else "net")


@dataclass
class Training:
    """Everything a training run reads from its files."""

    solver: SolverSpec
    train: NetUse
    tests: list[NetUse] = field(default_factory=list)
    warnings: list[NetspecError] = field(default_factory=list)

    @property
    def net_name(self) -> str:
        return self.train.name


def _net_file(solver: SolverSpec, key: str, index: int | None = None) -> NetSpec:
    """The net a solver names under ``key`` (relative to the solver file)."""
    from netspec.api import load_net

    value = solver[key] if index is None else solver[key][index]
    path = solver.path(value)
    if not path.is_file():
        line = solver.src.line(key, index) if index is not None else solver.src.line(key)  # falls back to key's
        raise SpecError(f"the net file '{value}' does not exist (looked for {path})", file=solver.file, line=line,
                        field=key)
    return load_net(path)


def _inline(doc_src: SolverSpec, key: str, value: dict, index: int | None = None) -> Doc:
    prefix = (key,) if index is None else (key, index)
    lines = {p[len(prefix):]: ln for p, ln in doc_src.src.lines.items() if p[:len(prefix)] == prefix}
    return Doc(value, lines, doc_src.file or "<string>", doc_src.base_dir)


def resolve_training(file: str | os.PathLike, solver_file: str | os.PathLike | None = None,
                     stages: Iterable[str] | None = None, level: int | None = None) -> Training:
    """The solver and nets of ``netspec train FILE [--solver S] [--stage ...] [--level N]``.

    ``--stage``/``--level`` set the train net's state (as Caffe's flags do).
    """
    from netspec.api import net_from_doc

    doc = load_file(file)
    warnings: list[NetspecError] = []
    if is_solver_doc(doc):
        if solver_file is not None:
            raise SpecError(f"{doc.file} is a solver file already; --solver is for net files",
                            file=doc.file, line=1)
        solver = solver_from_doc(doc)
        net = None
    else:
        ref = doc.data.get("solver") if isinstance(doc.data, dict) else None
        if isinstance(ref, dict) and solver_file is None:
            # checked before the net: the solver's own messages say more than the net schema's
            solver = solver_from_doc(Doc(ref, doc.sub_lines(("solver",)), doc.file, doc.base_dir), inline=True)
        net = net_from_doc(doc)
        if solver_file is not None:
            solver = load_solver(solver_file)
        elif isinstance(ref, str):
            path = Path(doc.base_dir or ".") / ref
            if not path.exists():
                raise SpecError(f"the solver file '{ref}' does not exist (looked for {path})", file=doc.file,
                                line=doc.line(("solver",)), field="solver")
            solver = load_solver(path)
        elif not isinstance(ref, dict):
            raise SpecError("this net names no solver: add 'solver: <file>' (or an inline solver mapping) to "
                            "it, or give --solver FILE", file=doc.file, line=1)
        for k in S.NET_KEYS + ("test_net", "test_net_param"):
            if k in solver and not (k == "net" and solver.path(solver[k]).resolve() == Path(file).resolve()):
                warnings.append(solver.error(f"{k} is ignored: training the net in {doc.file}", k, SpecError))
    warnings.extend(solver.warnings)
    train_state = dict(solver.get("train_state", {}))
    if stages is not None:
        train_state["stage"] = list(stages)
    if level is not None:
        train_state["level"] = level
    tr_stages = as_list(train_state.get("stage")) if "stage" in train_state else None

    generic: NetSpec | None = net
    train: NetSpec | None = net
    if net is None:
        if "net" in solver:
            generic = _net_file(solver, "net")
        elif "net_param" in solver:
            generic = net_from_doc(_inline(solver, "net_param", solver["net_param"]))
        elif "train_net" in solver:
            train = _net_file(solver, "train_net")
        else:
            train = net_from_doc(_inline(solver, "train_net_param", solver["train_net_param"]))
        if generic is not None:
            train = generic
    specific: list[NetSpec] = []
    if net is None:
        listed = ("test_net_param", 0) in solver.src.lines
        for i, p in enumerate(solver.get("test_net_param", [])):
            specific.append(net_from_doc(_inline(solver, "test_net_param", p, i if listed else None)))
        for i in range(len(solver.get("test_net", []))):
            specific.append(_net_file(solver, "test_net", i))
    test_iter = solver.get("test_iter", [])
    n_generic = len(test_iter) - len(specific) if generic is not None else 0
    if n_generic < 0 or (generic is None and len(test_iter) != len(specific)):
        raise solver.error(f"test_iter needs one entry per test net: {len(specific)} test net(s), "
                           f"{len(test_iter)} test_iter entr{'y' if len(test_iter) == 1 else 'ies'}",
                           "test_iter", SpecError)
    test_specs = specific + [generic] * n_generic
    states = solver.get("test_state", [])
    if states and len(states) != len(test_specs):
        raise solver.error(f"test_state needs one entry per test net ({len(test_specs)}), got {len(states)}",
                           "test_state", SpecError)
    if test_specs and solver["test_interval"] <= 0:
        raise solver.error("test_interval must be > 0 when there are test nets (test_iter is given)",
                           "test_interval" if ("test_interval",) in solver.src.lines else "test_iter", SpecError)
    tests = []
    for k, (spec, iters) in enumerate(zip(test_specs, test_iter)):
        st = states[k] if states else {}
        tests.append(NetUse(spec, "TEST", st.get("level"), as_list(st["stage"]) if "stage" in st else None,
                            iters, label=f"#{k}"))
    return Training(solver, NetUse(train, "TRAIN", train_state.get("level"), tr_stages), tests, warnings)

