"""Caffe solver prototxt -> netspec solver YAML, converting the nets it names too.

netspec's solver files keep Caffe's ``SolverParameter`` names, so most fields are copied as
they are.  What changes:
- ``net:``, ``train_net:`` and ``test_net:`` point at the converted nets; the Caffe nets they
  name are found (relative to ``--caffe-root``, the solver's folder and its parents, or the
  working folder) and converted next to the solver's output, as ``<net stem>.yaml`` (or
  ``--net-out`` for the one net);
- inline nets (``net_param``, ``train_net_param``, ``test_net_param``; V1 in Caffe's
  ``lenet_consolidated_solver.prototxt``) are converted too: written beside the solver as
  ``<solver stem>_net.yaml`` and named by ``net:``, or kept inline when the solver is printed;
- ``solver_type: ADAM`` becomes ``type: Adam``;
- ``solver_mode`` and ``device_id`` (netspec chooses its device itself), ``snapshot_format``
  (netspec writes safetensors) and ``layer_wise_reduce`` (multi-GPU) are dropped, with a note;
- a relative ``snapshot_prefix`` was relative to the folder Caffe ran in: it is left out (snapshots
  go to the run folder) unless ``--caffe-root`` says where that folder is; ``weights:`` name the
  ``.safetensors`` files that ``netspec convert MODEL.caffemodel`` writes.

The YAML is validated with netspec's solver schema before it is returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from netspec.caffe import textformat as tf
from netspec.caffe.convert_net import ConvertedNet, NetOptions, convert_net_msg, read_text, unused_options
from netspec.caffe.emit import Item, comment_lines, mapping_lines
from netspec.caffe.report import Report
from netspec.caffe.textformat import Msg
from netspec.caffe.upgrade import upgrade_solver
from netspec.errors import ErrorList, NetspecError, SpecError, raise_all

NET_FILE_KEYS = ("net", "train_net", "test_net")
NET_INLINE_KEYS = ("net_param", "train_net_param", "test_net_param")
DROPPED = {
    "solver_mode": "the device is chosen when training (netspec train --device cuda), so that the "
                   "converted solver runs on machines with and without a GPU",
    "device_id": "the device is chosen when training (--device cuda:N)",
    "snapshot_format": "netspec always writes one self-describing safetensors snapshot",
    "layer_wise_reduce": "a multi-GPU communication setting; netspec trains on one device",
}


@dataclass
class SolverOptions:
    net: NetOptions = field(default_factory=NetOptions)   # data sources and shapes for its nets
    out_path: Path | None = None       # the solver YAML (None: printed)
    net_out: Path | None = None        # where the (single) converted net goes
    caffe_root: Path | None = None


@dataclass
class ConvertedSolver:
    text: str
    report: Report
    nets: list[tuple[Path, ConvertedNet]] = field(default_factory=list)   # files to write


def convert_solver_file(path: str | os.PathLike, options: SolverOptions | None = None) -> ConvertedSolver:
    from netspec.spec.load import display_name

    return convert_solver_text(read_text(path), display_name(path), options, Path(path).resolve().parent)


def convert_solver_text(text: str, file: str = "<string>", options: SolverOptions | None = None,
                        solver_dir: Path | None = None) -> ConvertedSolver:
    msg = tf.load(text, "SolverParameter", file)
    return _Solver(msg, file, options or SolverOptions(), solver_dir or Path.cwd()).run()


class _Solver:
    def __init__(self, msg: Msg, file: str, options: SolverOptions, solver_dir: Path):
        self.msg = upgrade_solver(msg, file)
        self.file = file
        self.options = options
        self.solver_dir = solver_dir
        self.report = Report(file, "solver")
        self.out = Item({"netspec": 1})
        self.nets: list[tuple[Path, ConvertedNet]] = []
        self.inline: dict[str, list[ConvertedNet]] = {}
        self.errors: list[NetspecError] = []
        self.out_dir = options.out_path.resolve().parent if options.out_path else None
        self.used: set[str] = set()
        self.data_layers: list[str] = []

    def where(self, name: str) -> int:
        return self.msg.where(name)[0]

    def run(self) -> ConvertedSolver:
        m = self.msg
        given = [k for k in ("net", "net_param", "train_net", "train_net_param") if k in m]
        if len(given) > 1:
            raise SpecError(f"give exactly one of net, net_param, train_net, train_net_param; this solver gives "
                            f"{', '.join(given)}", file=self.file, line=self.where(given[1]))
        if not given:
            raise SpecError("the solver names no net (net, net_param, train_net or train_net_param)",
                            file=self.file, line=m.line or 1)
        header: list[str] = []
        for k, (name, idx) in enumerate(m.order):
            if idx > 0:
                continue
            meta = m.meta[name][0]
            comments = [c.text for c in meta.comments]
            if k == 0:
                header, comments = _split_header(meta.comments, meta.line)
            key = self.field(name, m[name], meta.line)
            if key is None:
                continue
            if comments:
                self.out.key_comments[key] = self.out.key_comments.get(key, []) + comments
            if meta.trailing:
                self.out.key_trailing[key] = meta.trailing.text
        if self.options.net.strict_options:
            self.errors.extend(unused_options(self.options.net, self.used, self.data_layers, self.file))
        raise_all(self.errors)
        lines = comment_lines(header, "") + mapping_lines(Item(self.out.fields, [], self.out.key_comments,
                                                               self.out.key_trailing))
        # inline nets (printed solvers) go under their key, as block mappings
        text = "\n".join(lines) + "\n"
        for key, converted in self.inline.items():
            text += self.inline_text(key, converted)
        text += "".join(f"#{c.text}\n" for c in m.end_comments)
        self.validate(text)
        self.report.output = str(self.options.out_path) if self.options.out_path else None
        return ConvertedSolver(text, self.report, self.nets)

    # -- one field -----------------------------------------------------------------------------
    def field(self, name: str, value, line: int) -> str | None:
        """Convert one solver field; the netspec key it became (None: dropped or inline)."""
        rep = self.report
        meta = self.msg.first_meta(name)
        origin = meta.origin or name
        if name in DROPPED:
            rep.ignored("solver", name, DROPPED[name], line)
            return None
        if name in NET_FILE_KEYS:
            paths = value if isinstance(value, list) else [value]
            out = [self.net_file(name, p, line) for p in paths]
            return self.put(name, out if isinstance(value, list) and len(out) > 1 else out[0], origin, line)
        if name in NET_INLINE_KEYS:
            msgs = value if isinstance(value, list) else [value]
            return self.net_inline(name, msgs, line)
        if name in ("train_state", "test_state"):
            states = [_state(s) for s in (value if isinstance(value, list) else [value])]
            return self.put(name, states[0] if len(states) == 1 else states, origin, line)
        if name == "snapshot_prefix":
            prefix = self.snapshot_prefix(value, line)
            return None if prefix is None else self.put(name, prefix, origin, line)
        if name == "weights":
            return self.put(name, self.weights(value, line), origin, line)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 and name != "weights" else value
        try:
            from netspec.spec.solver_schema import PROPERTIES
        except ImportError:       # the solver schema is optional: keep Caffe's names
            PROPERTIES = None
        if PROPERTIES is not None and name not in PROPERTIES:
            rep.unsupported("solver", name, "netspec's solver has no such field", line)
            return None
        return self.put(name, value, origin, line)

    def put(self, key: str, value, origin: str, line: int) -> str:
        self.out.fields[key] = value
        self.report.mapped("solver", origin, key, line)
        return key

    def snapshot_prefix(self, value: str, line: int) -> str | None:
        if os.path.isabs(value):
            return value
        root = self.options.caffe_root
        if root is not None:
            target = Path(root).resolve() / value
            return os.path.relpath(target, self.out_dir) if self.out_dir else str(target)
        self.report.ignored("solver", "snapshot_prefix",
                            f"'{value}' was relative to the folder Caffe ran in; left out, so snapshots go to the "
                            f"run folder (netspec train --run-dir); give --caffe-root to keep Caffe's place", line)
        return None

    def weights(self, value: list, line: int):
        out = []
        for entry in value:
            for w in (x.strip() for x in entry.split(",")):
                if not w:
                    continue
                if w.endswith(".caffemodel"):
                    new = w[: -len(".caffemodel")] + ".safetensors"
                    self.report.note("solver", f"weights '{w}' is a Caffe model; convert it with: netspec convert "
                                               f"{w} --net NET -o {new}", line, "weights")
                    w = new
                out.append(w)
        return out[0] if len(out) == 1 else out

    # -- the nets --------------------------------------------------------------------------------
    def net_options(self, out_path: Path | None) -> NetOptions:
        o = self.options.net
        return NetOptions(dict(o.data_sources), dict(o.data_shapes), self.options.caffe_root or o.caffe_root,
                          out_path, o.check, strict_options=False)

    def find(self, value: str) -> Path | None:
        """A Caffe path (relative to where Caffe ran): under --caffe-root, beside the solver or
        in one of its parent folders (the Caffe checkout), or in the working folder."""
        p = Path(value)
        if p.is_absolute():
            return p if p.is_file() else None
        cands = []
        if self.options.caffe_root is not None:
            cands.append(Path(self.options.caffe_root) / p)
        cands.append(self.solver_dir / p)
        cands += [parent / p for parent in self.solver_dir.parents]
        cands.append(Path.cwd() / p)
        return next((c for c in cands if c.is_file()), None)

    def net_file(self, key: str, value: str, line: int) -> str:
        stem = Path(value).stem
        single = key == "net" or key == "train_net" and "test_net" not in self.msg
        out_path = self.options.net_out if single and self.options.net_out else (
            self.out_dir / f"{stem}.yaml" if self.out_dir else None)
        ref = self.ref(out_path, f"{stem}.yaml")
        found = self.find(value)
        if found is None:
            self.report.note("solver", f"the net file '{value}' was not found (looked under --caffe-root, beside "
                                       f"the solver and its parent folders, and here); convert it with: netspec "
                                       f"convert NET.prototxt -o {ref}", line, key)
            return ref
        from netspec.caffe.convert_net import convert_net_file

        try:
            converted = convert_net_file(found, self.net_options(out_path))
        except NetspecError as e:
            self.errors.append(e)
            return ref
        self.account(converted)
        if out_path is not None:
            self.nets.append((out_path, converted))
        else:
            self.report.note("solver", f"the net '{value}' was converted but not written (no -o or --net-out); "
                                       f"write it with: netspec convert {found} -o {ref}", line, key)
        return ref

    def net_inline(self, key: str, msgs: list[Msg], line: int) -> str | None:
        target = "net" if key == "net_param" else ("train_net" if key == "train_net_param" else "test_net")
        refs = []
        converted_all = []
        for k, net in enumerate(msgs):
            stem = Path(self.options.out_path).stem if self.options.out_path else "solver"
            suffix = {"net_param": "_net", "train_net_param": "_train_net"}.get(key, f"_test_net{k}")
            out_path = None
            if key == "net_param" and self.options.net_out:
                out_path = self.options.net_out
            elif self.out_dir is not None:
                out_path = self.out_dir / f"{stem}{suffix}.yaml"
            try:
                converted = convert_net_msg(net, self.file, self.net_options(out_path),
                                            Report(f"{self.file} ({key})", "net"))
            except NetspecError as e:
                self.errors.append(e)
                continue
            self.account(converted)
            if out_path is not None:
                self.nets.append((out_path, converted))
                refs.append(self.ref(out_path, out_path.name))
            converted_all.append(converted)
        if not refs and converted_all:
            self.inline[key] = converted_all
            self.report.mapped("solver", key, f"{key} (inline)", line)
            return None
        value = refs[0] if len(refs) == 1 and key != "test_net_param" else refs
        return self.put(target, value, key, line)

    def ref(self, out_path: Path | None, fallback: str) -> str:
        """How the solver names a net file: relative to the solver's folder (as given when the
        solver is printed)."""
        if out_path is None:
            return fallback
        if self.out_dir is None:
            return str(out_path)
        return os.path.relpath(Path(out_path).resolve(), self.out_dir)

    def account(self, converted: ConvertedNet) -> None:
        self.used |= converted.used_options
        self.data_layers += converted.data_layers
        self.report.children.append(converted.report)
        if converted.check_error is not None:
            self.errors.append(converted.check_error)

    def inline_text(self, key: str, converted: list[ConvertedNet]) -> str:
        """Printed solvers keep inline nets inline (``net_param:`` followed by the net)."""
        if len(converted) == 1 and key != "test_net_param":
            return f"{key}:\n" + _indent(converted[0].text, "  ")
        return f"{key}:\n" + "".join("  -\n" + _indent(c.text, "    ") for c in converted)

    # -- checking ----------------------------------------------------------------------------------
    def validate(self, text: str) -> None:
        try:
            from netspec.solvers.config import solver_from_doc
        except ImportError:
            return
        from netspec.spec.load import load_text

        name = str(self.options.out_path) if self.options.out_path else "<converted solver>"
        try:
            solver_from_doc(load_text(text, file=name, base_dir=self.out_dir))
        except NetspecError as e:
            errs = e.errors if isinstance(e, ErrorList) else [e]
            out = [SpecError(f"the converted solver is not valid netspec: {x.message}", file=self.file,
                             line=self.where(x.field) if x.field and x.field in self.msg else None,
                             field=x.field) for x in errs]
            raise_all(out)


def _split_header(comments: list, line: int) -> tuple[list[str], list[str]]:
    """The comments above the first field: the block touching it describes the field, the
    blocks before it (separated by blank lines) describe the file."""
    k = len(comments)
    expect = line - 1
    while k > 0 and comments[k - 1].line == expect:
        k -= 1
        expect -= 1
    # within the touching block, a bare '#' line also ends the file's description
    bare = [i for i in range(k, len(comments)) if not comments[i].text.strip()]
    if bare:
        return [c.text for c in comments[:bare[-1]]], [c.text for c in comments[bare[-1] + 1:]]
    return [c.text for c in comments[:k]], [c.text for c in comments[k:]]


def _indent(text: str, pad: str) -> str:
    return "".join(pad + ln if ln.strip() else ln for ln in text.splitlines(keepends=True))


def _state(s: Msg) -> dict:
    out = {}
    for k, _ in s.order:
        if k not in out:
            v = s[k]
            out[k] = v[0] if isinstance(v, list) and len(v) == 1 else v
    return out
