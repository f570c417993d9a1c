"""Caffe net prototxt -> netspec YAML, with a coverage report of every field.

The conversion is mechanical because netspec keeps Caffe's names: each ``*_param`` block is
flattened into its layer, ``transform_param`` becomes ``transform``, a BlobShape a list of ints,
``param { lr_mult: 1 } param { lr_mult: 2 }`` the named ``param: {weight: {lr_mult: 1}, bias:
{lr_mult: 2}}`` (names from each layer class's ``param_names``), fillers maps, enums their names.
Then the YAML is made to read like a hand-written file: ``bottom`` is left out where it is the
previous layer's first top and ``top`` where it is the layer's name, short layers go on one line,
and the prototxt's comments are kept above the layer (or field) they described.

Where Caffe and netspec differ, the report says so: a field Caffe reads but netspec lacks is
*unsupported*, one that changes nothing netspec computes (``engine``, ``backend``) is *ignored*,
a Caffe default that differs from netspec's is written out.  LMDB/LevelDB data sources cannot be
read here; the layer is kept and ``--data-source NAME[:PHASE]=SOURCE`` points it at a dataset
netspec reads.  The result is loaded back through ``netspec.api`` (schema and all), and checked
(shapes of every phase) when its data shapes can be known.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.caffe import messages as M
from netspec.caffe import textformat as tf
from netspec.caffe.emit import Item, net_document
from netspec.caffe.report import Report
from netspec.caffe.textformat import Meta, Msg
from netspec.caffe.upgrade import upgrade_net
from netspec.errors import DataError, ErrorList, NetspecError, SpecError, raise_all, suggestion

#: Caffe's example databases: their sample shapes, so converted example nets check before a
#: netspec data source is chosen, and what to point them at
CAFFE_EXAMPLE_DBS: list[tuple[re.Pattern, tuple[int, ...], str | None]] = [
    (re.compile(r"mnist_siamese_(train|test)_(lmdb|leveldb)$"), (2, 28, 28), None),
    (re.compile(r"mnist_(train|test)_(lmdb|leveldb)$"), (1, 28, 28), "fashion-mnist:{split}"),
    (re.compile(r"cifar10_(train|test)_(lmdb|leveldb)$"), (3, 32, 32), None),
    (re.compile(r"ilsvrc12_(train|val)_(lmdb|leveldb)$"), (3, 256, 256), None),
]

ENGINE_WHY = "selects Caffe's implementation (CAFFE or CUDNN); netspec picks its own kernels"
BACKEND_WHY = "netspec reads a source by its dataset name or file type, not through LMDB/LevelDB"
HEAD = ("name", "type", "bottom", "top", "include", "exclude", "phase")
TAIL = ("transform", "param", "loss_weight", "propagate_down")


@dataclass
class NetOptions:
    """How to convert: data sources and shapes to substitute, where paths are relative to."""

    data_sources: dict[str, str] = field(default_factory=dict)   # "name" or "name:PHASE" -> source
    data_shapes: dict[str, str] = field(default_factory=dict)    # same keys -> "3x32x32" or "4/"
    caffe_root: Path | None = None     # the folder Caffe ran in (its relative paths start there)
    out_path: Path | None = None       # where the YAML goes (None: printed)
    check: bool = True
    strict_options: bool = True        # every --data-source/--data-shape key must name a data layer


@dataclass
class ConvertedNet:
    text: str                          # the YAML
    net: Any                           # the loaded NetSpec
    report: Report
    layer_lines: dict[str, int]        # netspec layer name -> prototxt line
    check_error: NetspecError | None = None   # set when netspec check fails for another reason than data
    used_options: set[str] = field(default_factory=set)   # the --data-source/--data-shape keys it used
    data_layers: list[str] = field(default_factory=list)


def convert_net_file(path: str | os.PathLike, options: NetOptions | None = None) -> ConvertedNet:
    from netspec.spec.load import display_name

    file = display_name(path)
    text = read_text(path)
    return convert_net_text(text, file, options)


def read_text(path: str | os.PathLike) -> str:
    from netspec.spec.load import display_name

    p = Path(path)
    name = display_name(p)
    if not p.is_file():
        raise SpecError("no such file" if not p.exists() else "is not a file", file=name)
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(f"is not text (byte {e.start} cannot be read as UTF-8); a .caffemodel is converted with "
                        f"--net", file=name, line=raw[:e.start].count(b"\n") + 1) from None


def convert_net_text(text: str, file: str = "<string>", options: NetOptions | None = None) -> ConvertedNet:
    msg = tf.load(text, "NetParameter", file)
    return convert_net_msg(msg, file, options or NetOptions(), Report(file, "net"))


def convert_net_msg(msg: Msg, file: str, options: NetOptions, report: Report) -> ConvertedNet:
    """Convert a parsed NetParameter (a whole file, or a solver's inline ``net_param``)."""
    from netspec import api
    from netspec.spec.load import display_name

    net = upgrade_net(msg, file, report)
    ctx = _Context(file, options, report)
    errors: list[NetspecError] = []
    items: list[_LayerItem] = []
    layers = net.get("layer", [])
    if not layers:
        raise SpecError("the net has no layers", file=file, line=msg.line or 1)
    for k, layer in enumerate(layers):
        try:
            items.append(ctx.layer(layer, net.meta["layer"][k], k))
        except ErrorList as e:
            errors.extend(e.errors)
        except NetspecError as e:
            errors.append(e)
    if options.strict_options:
        errors.extend(ctx.unused_options())
    raise_all(errors)
    _unique_names(items, report)
    _chain_defaults(items)

    top = Item({"netspec": 1})
    header: list[str] = []
    for k, (name, idx) in enumerate(net.order):
        meta = net.meta[name][idx]
        comments = [c.text for c in meta.comments]
        if k == 0:
            # the comments above the first field describe the file: they become its header
            header, comments = comments, []
            if name == "layer" and items:
                items[0].item.comments = items[0].item.comments[len(header):]
        if name == "layer":
            continue
        if name == "debug_info":
            report.ignored("net", name, "netspec has no per-net debug output; the solver's debug_info logs "
                                        "per-layer magnitudes", meta.line)
            continue
        value = net[name]
        top.fields[name] = _state(value) if name == "state" else value
        report.mapped("net", meta.origin or name, name, meta.line)
        if comments:
            top.key_comments[name] = comments
        if meta.trailing:
            top.key_trailing[name] = meta.trailing.text
    footer = [c.text for c in net.end_comments]
    text = net_document(header, top, [it.item for it in items], footer)

    out = options.out_path
    out_name = display_name(out) if out is not None else f"<{Path(file).stem}.yaml>"
    base_dir = out.resolve().parent if out is not None else Path.cwd()
    lines: dict[str, int] = {}
    for it in items:
        lines.setdefault(it.item.fields["name"], it.line)
    try:
        loaded = api.load_net_text(text, file=out_name, base_dir=base_dir)
    except NetspecError as e:
        raise _relocate(e, lines, file, "the converted net is not valid netspec") from None
    report.output = out_name if out is not None else None
    report.summary["layers"] = len(items)
    result = ConvertedNet(text, loaded, report, lines, used_options=ctx.used_sources | ctx.used_shapes,
                          data_layers=ctx.data_layers)
    if options.check:
        _check(result, file)
    return result


# ---- one layer ------------------------------------------------------------------------------

@dataclass
class _LayerItem:
    item: Item
    line: int                 # where the layer starts in the prototxt


class _Context:
    def __init__(self, file: str, options: NetOptions, report: Report):
        from netspec.core.layer import registry

        self.file = file
        self.options = options
        self.report = report
        self.registry = registry()
        self.used_sources: set[str] = set()
        self.used_shapes: set[str] = set()
        self.data_layers: list[str] = []

    def err(self, msg: str, line: int, col: int | None = None, hint: str | None = None) -> SpecError:
        return SpecError(msg, file=self.file, line=line, column=col, hint=hint)

    # -- the layer as a whole ------------------------------------------------------------------
    def layer(self, layer: Msg, meta: Meta, index: int) -> _LayerItem:
        from netspec.spec.schema import layer_schema

        line = meta.line
        ltype = layer.get("type")
        name = layer.get("name") or ""
        if not ltype:
            raise self.err(f"layer '{name}' has no type", line, meta.col)
        if ltype in M.UNSUPPORTED_TYPES:
            raise self.err(f"layer '{name}': netspec has no {ltype} layer: {M.UNSUPPORTED_TYPES[ltype]}",
                           *layer.where("type"))
        if ltype not in self.registry:
            known = sorted(set(self.registry) | set(M.TYPE_PARAMS))
            raise self.err(f"layer '{name}': unknown layer type '{ltype}'" + suggestion(ltype, known),
                           *layer.where("type"))
        cls = self.registry[ltype]
        if not name:
            name = f"{ltype.lower()}{index}"
            self.report.add("renamed", f"layer #{index} ({ltype})", "name", to=name,
                            why="netspec layers need a name", line=line)
        where = f"layer '{name}' ({ltype})"
        props = layer_schema(cls)["properties"]
        lc = _LayerConv(self, layer, cls, name, where, props, line)
        lc.run()
        comments = [c.text for c in meta.comments] + ([meta.head.text] if meta.head else [])
        comments += [c.text for c in layer.end_comments]
        if meta.trailing:
            comments.append(meta.trailing.text)
        item = Item(_order(lc.fields, list(props)), comments, lc.key_comments, lc.key_trailing)
        return _LayerItem(item, line)

    def unused_options(self) -> list[SpecError]:
        return unused_options(self.options, self.used_sources | self.used_shapes, self.data_layers, self.file)


def unused_options(options: NetOptions, used: set[str], data_layers: list[str], file: str) -> list[SpecError]:
    """An error for each --data-source/--data-shape key that names no data layer."""
    out = []
    for flag, given in (("--data-source", options.data_sources), ("--data-shape", options.data_shapes)):
        for key in given:
            if key not in used:
                names = ", ".join(dict.fromkeys(data_layers)) or "none"
                out.append(SpecError(f"{flag} {key}: no data layer is called '{key}' (the data layers: {names}; "
                                     f"NAME or NAME:PHASE)", file=file))
    return out


class _LayerConv:
    """Converts one LayerParameter into netspec fields, reporting every field."""

    def __init__(self, ctx: _Context, layer: Msg, cls, name: str, where: str, props: dict, line: int):
        self.ctx = ctx
        self.layer = layer
        self.cls = cls
        self.type = cls.type
        self.name = name
        self.where = where
        self.props = props
        self.line = line
        self.fields: dict[str, Any] = {}
        self.key_comments: dict[str, list[str]] = {}
        self.key_trailing: dict[str, str] = {}
        self.origins: dict[str, str] = {}      # netspec key -> Caffe field it came from
        self.report = ctx.report
        self.errors: list[NetspecError] = []

    # -- helpers -------------------------------------------------------------------------------
    def comment(self, key: str, meta: Meta | None, msg: Msg | None = None) -> None:
        """Keep the comments of a Caffe field (and of everything inside it) above ``key``."""
        if meta is not None:
            texts = [c.text for c in meta.comments] + ([meta.head.text] if meta.head else [])
            if texts:
                self.key_comments.setdefault(key, []).extend(texts)
            if meta.trailing:
                if key in self.key_trailing:
                    self.key_comments.setdefault(key, []).append(meta.trailing.text)
                else:
                    self.key_trailing[key] = meta.trailing.text
        if msg is not None:
            for n, i in msg.order:
                sub = msg[n][i] if isinstance(msg[n], list) else msg[n]
                self.comment(key, msg.meta[n][i], sub if isinstance(sub, Msg) else None)
            if msg.end_comments:
                self.key_comments.setdefault(key, []).extend(c.text for c in msg.end_comments)

    def set(self, key: str, value: Any, origin: str, line: int | None) -> None:
        if key in self.fields and self.fields[key] != value:
            self.errors.append(self.ctx.err(f"{self.where}: '{origin}' and '{self.origins[key]}' both give "
                                            f"'{key}', with different values", line or self.line))
            return
        self.fields[key] = value
        self.origins[key] = origin
        self.report.mapped(self.where, origin, key, line)

    def scalar_or_list(self, key: str, values: list, props: dict | None = None) -> Any:
        prop = (props or self.props).get(key, {})
        if len(values) == 1 and _allows_scalar(prop):
            return values[0]
        return list(values)

    # -- the whole layer -----------------------------------------------------------------------
    def run(self) -> None:
        layer = self.layer
        self.fields["name"] = self.name
        self.fields["type"] = self.type
        blocks = M.TYPE_PARAMS.get(self.type, ())
        for fname, idx in layer.order:
            if idx > 0:
                continue          # repeated fields are handled whole, at their first value
            meta = layer.meta[fname][0]
            value = layer[fname]
            origin = meta.origin or fname
            if fname in ("name", "type"):
                self.report.mapped(self.where, origin, fname, meta.line)
                self.comment(fname, meta)
            elif fname in ("bottom", "top"):
                self.fields[fname] = list(value)
                self.report.mapped(self.where, origin, fname, meta.line)
                for m in layer.meta[fname]:
                    self.comment(fname, m)
            elif fname == "phase":
                self.set("phase", value, origin, meta.line)
                self.comment("phase", meta)
            elif fname in ("loss_weight", "propagate_down"):
                self.set(fname, self.scalar_or_list(fname, value), origin, meta.line)
                for m in layer.meta[fname]:
                    self.comment(fname, m)
            elif fname in ("include", "exclude"):
                rules = [_rule(r) for r in value]
                self.set(fname, rules[0] if len(rules) == 1 else rules, origin, meta.line)
                for k, r in enumerate(value):
                    self.comment(fname, layer.meta[fname][k], r)
            elif fname == "param":
                pass              # after the loop: which params exist depends on bias_term and bottoms
            elif fname == "blobs":
                self.report.unsupported(self.where, "blobs", "netspec does not take initial values inside a net "
                                        "file; put them in a weights file (netspec convert MODEL.caffemodel "
                                        "--net NET)", meta.line)
            elif fname == "transform_param":
                self.transform(value, meta)
            elif fname.endswith("_param"):
                if fname in blocks:
                    self.block(fname, value, meta)
                else:
                    self.report.ignored(self.where, fname, f"Caffe's {self.type} layer does not read {fname}",
                                        meta.line)
            else:   # pragma: no cover - every LayerParameter field is handled above
                self.report.unsupported(self.where, fname, "not converted", meta.line)
        if "include" in self.fields and "exclude" in self.fields:
            self.errors.append(self.ctx.err(f"{self.where}: give include or exclude rules, not both",
                                            *layer.where("exclude")))
        if "param" in layer:
            self.params(layer["param"], layer.meta["param"])
        self.caffe_defaults(blocks)
        self.data_source()
        raise_all(self.errors)

    def learned(self) -> tuple[str, ...]:
        """The params this layer has, in Caffe's blob order (``param`` entries apply to them in turn)."""
        names = self.cls.param_names
        with_bias = self.fields.get("bias_term", self.type != "Scale")
        two_bottoms = len(self.fields.get("bottom", [])) == 2
        if self.type == "Scale":
            return (() if two_bottoms else ("scale",)) + (("bias",) if with_bias else ())
        if self.type == "Bias" and two_bottoms:
            return ()
        if "bias" in names and not with_bias:
            return tuple(n for n in names if n != "bias")
        return names

    def params(self, specs: list[Msg], metas: list[Meta]) -> None:
        names = self.learned()
        if self.type == "BatchNorm":
            self.report.ignored(self.where, "param", "BatchNorm's statistics are never learned: Caffe forces their "
                                "lr_mult and decay_mult to 0 and so does netspec", metas[0].line)
            return
        if len(specs) > len(names):
            self.errors.append(self.ctx.err(
                f"{self.where}: {len(specs)} param entries, but this {self.type} learns "
                f"{len(names)} ({', '.join(names) or 'none'}); Caffe rejects this too (\"Too many params "
                f"specified for layer\")", metas[0].line))
            return
        out: dict[str, dict] = {}
        for k, (spec, meta) in enumerate(zip(specs, metas)):
            d = {}
            for f in M.MESSAGES["ParamSpec"]:      # name, share_mode, lr_mult, decay_mult
                if f not in spec:
                    continue
                sub = spec.first_meta(f)
                d[f] = spec[f]
                self.report.mapped(self.where, sub.origin or f"param[{k}].{f}", f"param.{names[k]}.{f}", sub.line)
            if d:
                out[names[k]] = d
            self.comment("param", meta, spec)
        if out:
            self.fields["param"] = out
            self.origins["param"] = "param"

    def transform(self, tp: Msg, meta: Meta) -> None:
        if "transform" not in self.props:
            if self.type == "HDF5Data":
                self.report.unsupported(self.where, "transform_param", "Caffe's HDF5Data rejects transform_param "
                                        "(preprocess the HDF5 files instead)", meta.line)
            else:
                self.report.ignored(self.where, "transform_param",
                                    f"Caffe's {self.type} layer does not read transform_param", meta.line)
            return
        tprops = self.props["transform"].get("properties", {})
        out = dict(self.fields.get("transform", {}))
        for f, idx in tp.order:
            if idx > 0:
                continue
            sub = tp.first_meta(f)
            origin = sub.origin or f"transform_param.{f}"
            if f not in tprops:
                self.report.unsupported(self.where, origin, f"netspec's transform has no '{f}'", sub.line)
                continue
            value = tp[f]
            if f == "mean_value":
                value = self.scalar_or_list(f, value, tprops)
            if f == "mean_file":
                value = self.path(value, origin, sub.line)
            out[f] = value
            self.report.mapped(self.where, origin, f"transform.{f}", sub.line)
        if out:
            self.fields["transform"] = out
            self.origins["transform"] = "transform_param"
        self.comment("transform", meta, tp)

    # -- a *_param block -----------------------------------------------------------------------
    def block(self, block: str, p: Msg, meta: Meta) -> None:
        first_key = None
        for f, idx in p.order:
            if idx > 0:
                continue          # a repeated field is converted whole, at its first value
            sub = p.first_meta(f)
            origin = sub.origin or f"{block}.{f}"
            value = p[f]
            field_type = M.MESSAGES[p.type][f]
            if f == "engine":
                self.report.ignored(self.where, origin, ENGINE_WHY, sub.line)
                continue
            if block == "data_param" and f == "backend":
                self.report.ignored(self.where, origin, BACKEND_WHY, sub.line)
                continue
            if block == "data_param" and f == "force_encoded_color":
                if value:
                    self.transform_flag("force_color", origin, sub.line)
                else:
                    self.report.mapped(self.where, origin, "(false: the default)", sub.line)
                continue
            key = f
            if key not in self.props:
                if block == "loss_param":
                    self.report.ignored(self.where, origin, f"Caffe's {self.type} does not read loss_param.{f}",
                                        sub.line)
                else:
                    self.report.unsupported(self.where, origin, f"netspec's {self.type} has no field '{key}'",
                                            sub.line)
                continue
            self.set(key, self.value(key, value, field_type, origin, sub.line), origin, sub.line)
            for i, m in enumerate(p.meta[f]):
                item = value[i] if isinstance(value, list) else value
                self.comment(key, m, item if isinstance(item, Msg) else None)
            first_key = first_key or key
        if first_key:
            self.comment(first_key, meta)
        elif meta.comments:
            self.comment("type", meta)
        if p.end_comments:
            self.key_comments.setdefault(first_key or "type", []).extend(c.text for c in p.end_comments)

    def transform_flag(self, flag: str, origin: str, line: int) -> None:
        tprops = self.props.get("transform", {}).get("properties", {})
        if flag not in tprops:
            self.report.unsupported(self.where, origin, f"netspec's transform has no '{flag}'", line)
            return
        self.fields.setdefault("transform", {})[flag] = True
        self.report.mapped(self.where, origin, f"transform.{flag}", line)

    def value(self, key: str, value: Any, ftype: M.Field, origin: str, line: int) -> Any:
        """A Caffe value in netspec's form (fillers as maps, shapes as lists, paths rewritten)."""
        if ftype.type == "FillerParameter":
            fills = [_filler(v) for v in (value if ftype.repeated else [value])]
            return self.scalar_or_list(key, fills) if ftype.repeated else fills[0]
        if ftype.type == "BlobShape":
            shapes = [list(v.get("dim", [])) for v in (value if ftype.repeated else [value])]
            if not ftype.repeated:
                return shapes[0]
            return shapes[0] if len(shapes) == 1 else shapes
        if ftype.repeated:
            return self.scalar_or_list(key, value)
        if key in ("source", "mean_file", "root_folder") and isinstance(value, str):
            return self.path(value, origin, line)
        return value

    def path(self, value: str, origin: str, line: int) -> str:
        """A relative Caffe path (relative to where Caffe ran) as netspec reads it (relative to
        the YAML's folder): rewritten when --caffe-root says where Caffe ran, else noted."""
        if not value or os.path.isabs(value) or self.type == "Data" and origin.endswith("source"):
            return value
        root = self.ctx.options.caffe_root
        if root is None:
            self.report.note(self.where, f"'{value}' is relative to the folder Caffe ran in; netspec reads it "
                                         f"relative to the YAML file's folder (give --caffe-root to rewrite it)",
                             line, origin)
            return value
        target = Path(root).resolve() / value
        out = self.ctx.options.out_path
        new = os.path.relpath(target, out.resolve().parent) if out is not None else str(target)
        if value.endswith("/") and not new.endswith("/"):
            new += "/"
        return new

    # -- defaults and data ---------------------------------------------------------------------
    def caffe_defaults(self, blocks: tuple[str, ...]) -> None:
        """Write out Caffe defaults that netspec's defaults would change."""
        for block in blocks:
            if block == "loss_param":
                continue   # loss layers override the proto default themselves (SigmoidCrossEntropy)
            mtype = M.MESSAGES["LayerParameter"][block].type
            for f in M.MESSAGES[mtype].values():
                if f.default is None or f.name in self.fields or f.name not in self.props:
                    continue
                if f.name == "engine" or f.name in ("concat_dim", "slice_dim"):
                    continue
                prop = self.props[f.name]
                if "default" in prop and prop["default"] != f.default:
                    self.fields[f.name] = f.default
                    self.report.add("default", self.where, f"{block}.{f.name}", to=f"{f.name}: {f.default}",
                                    why=f"Caffe's default is {f.default}, netspec's {prop['default']}",
                                    line=self.line)
                elif f.name == "shuffle" and "default" not in prop:
                    self.fields["shuffle"] = f.default
                    self.report.add("default", self.where, f"{block}.shuffle", to="shuffle: false",
                                    why="Caffe does not shuffle unless told to; netspec shuffles TRAIN data "
                                        "by default", line=self.line)
        if self.type == "ImageData" and "channel_order" in self.props and "channel_order" not in self.fields:
            self.fields["channel_order"] = "BGR"
            self.report.add("default", self.where, "(OpenCV decoding)", to="channel_order: BGR",
                            why="Caffe decodes images with OpenCV, in BGR order", line=self.line)

    def phase_of(self) -> str | None:
        if "phase" in self.fields:
            return self.fields["phase"]
        inc = self.layer.get("include", [])
        phases = {r.get("phase") for r in inc}
        return phases.pop() if len(phases) == 1 and None not in phases else None

    def option(self, given: dict, used: set) -> str | None:
        phase = self.phase_of()
        name = self.layer.get("name", "")
        for key in ([f"{name}:{phase}"] if phase else []) + [name]:
            if key in given:
                used.add(key)
                return given[key]
        return None

    def data_source(self) -> None:
        if not getattr(self.cls, "is_data", False):
            return
        opts = self.ctx.options
        caffe_name = self.layer.get("name", "")
        self.ctx.data_layers.append(caffe_name + (f":{self.phase_of()}" if self.phase_of() else ""))
        new_source = self.option(opts.data_sources, self.ctx.used_sources)
        shape_spec = self.option(opts.data_shapes, self.ctx.used_shapes)
        old = self.fields.get("source")
        if new_source is not None:
            given = Path(new_source)
            if opts.out_path is not None and not given.is_absolute() and given.exists():
                # a file named on the command line is relative to where the command ran
                new_source = os.path.relpath(given.resolve(), opts.out_path.resolve().parent)
            self.fields["source"] = new_source
            self.report.note(self.where, f"source '{old}' replaced by '{new_source}' (--data-source)", self.line,
                             "source")
        if shape_spec is not None:
            self.fields["shape"] = _parse_shape(shape_spec, self.type, len(self.fields.get("top", [])),
                                                self.ctx.err, self.line)
            self.report.note(self.where, f"sample shape {self.fields['shape']} from --data-shape", self.line,
                             "shape")
        if self.type != "Data" or new_source is not None:
            return
        # a Caffe Data layer reads an LMDB or LevelDB database, which netspec cannot open
        phase = self.phase_of()
        key = caffe_name + (f":{phase}" if phase else "")
        base = os.path.basename(str(old or "").rstrip("/"))
        known = next(((shape, hint, m) for pat, shape, hint in CAFFE_EXAMPLE_DBS
                      for m in [pat.search(base)] if m), None)
        example = "fashion-mnist:train"
        if known and known[1]:
            example = known[1].format(split=known[2].group(1))
        self.report.note(self.where, f"source '{old}' is a Caffe database (LMDB/LevelDB), which netspec does not "
                                     f"read; point it at a dataset netspec reads: --data-source {key}=SOURCE "
                                     f"(a built-in name such as {example}, or an .npz/IDX/HDF5/CSV file or an "
                                     f"image folder)", self.line, "source")
        if known and "shape" not in self.fields and "shape" in self.props:
            self.fields["shape"] = list(known[0])
            self.report.add("note", self.where, "shape", to=f"shape: {list(known[0])}",
                            why=f"shape {list(known[0])} written out: the sample shape of Caffe's example "
                                f"database {base}, so the net checks before its data is chosen", line=self.line)
        elif "shape" not in self.fields:
            self.report.note(self.where, f"the sample shape of '{old}' is unknown, so netspec check cannot "
                                         f"infer shapes: give --data-source or --data-shape {key}=CxHxW",
                             self.line, "shape")


def _allows_scalar(prop: dict) -> bool:
    t = prop.get("type")
    if isinstance(t, list):
        return any(x != "array" for x in t)
    return t is not None and t != "array"


def _filler(f: Msg) -> dict:
    out = {"type": f.get("type", "constant")}
    for k, _ in f.order:
        if k != "type":
            out[k] = f[k]
    return out


def _rule(r: Msg) -> dict:
    out = {}
    for k, _ in r.order:
        if k in out:
            continue
        v = r[k]
        out[k] = v[0] if isinstance(v, list) and len(v) == 1 else v
    return out


def _state(s: Msg) -> dict:
    out = {}
    for k, _ in s.order:
        if k in out:
            continue
        v = s[k]
        out[k] = v[0] if isinstance(v, list) and len(v) == 1 else v
    return out


def _order(f: dict, own: list[str]) -> dict:
    out = {k: f[k] for k in HEAD if k in f}
    for k in f:
        if k not in out and k not in TAIL:
            out[k] = f[k]
    out.update({k: f[k] for k in TAIL if k in f})
    return out


def _parse_shape(spec: str, ltype: str, n_top: int, err, line: int) -> list:
    """``3x32x32`` (or ``3,32,32``) -> [3, 32, 32]; for HDF5Data one shape per top, ``/`` between
    them, an empty one for a scalar per record: ``4/`` -> [[4], []]."""
    groups = [g.strip() for g in re.split(r"[/;]", spec)]
    try:
        shapes = [[int(d) for d in re.split(r"[x,\s]+", g) if d] for g in groups]
    except ValueError:
        raise err(f"--data-shape '{spec}': write the dims of one sample as CxHxW (e.g. 3x32x32)", line) from None
    if ltype == "HDF5Data":
        if len(shapes) != max(n_top, 1):
            raise err(f"--data-shape '{spec}': HDF5Data needs one shape per top ({n_top}), separated by '/'", line)
        return shapes
    if len(shapes) != 1 or not shapes[0]:
        raise err(f"--data-shape '{spec}': give the dims of one sample (e.g. 3x32x32)", line)
    return shapes[0]


# ---- whole-net passes -----------------------------------------------------------------------

def _unique_names(items: list[_LayerItem], report: Report) -> None:
    """netspec requires unique layer names within a phase (Caffe does not: the autoencoder has two
    layers named 'loss'); a later layer that can be active together with an earlier one of the
    same name gets a numbered name."""
    from netspec.graph.state import layer_kept

    taken = {it.item.fields["name"] for it in items}
    states = _states([it.item.fields for it in items])
    seen: dict[str, list[dict]] = {}
    for it in items:
        f = it.item.fields
        name = f["name"]
        clash = any(any(layer_kept(_as_spec(f), *s) and layer_kept(_as_spec(g), *s) for s in states)
                    for g in seen.get(name, []))
        if clash:
            k = 2
            while f"{name}_{k}" in taken:
                k += 1
            new = f"{name}_{k}"
            taken.add(new)
            f["name"] = new
            report.add("renamed", f"layer '{name}' ({f['type']})", "name", to=new,
                       why="an earlier layer active in the same phase has this name; netspec layer names are "
                           "unique within a phase (weights are copied by name)", line=it.line)
        seen.setdefault(f["name"] if not clash else name, []).append(f)


def _as_spec(f: dict):
    from netspec.spec.model import LayerSpec, as_list

    d = dict(f)
    for k in ("include", "exclude"):
        if k in d:
            d[k] = as_list(d[k])
    return LayerSpec(d)


def _states(layers: list[dict]) -> list[tuple[str, int, list[str]]]:
    """The (phase, level, stages) states worth comparing: as ``netspec check`` does, each phase
    with each stage list its include rules name, and with none."""
    from netspec.spec.model import as_list

    levels = {0}
    stage_lists: list[list[str]] = [[]]
    for f in layers:
        for key in ("include", "exclude"):
            for r in as_list(f.get(key)):
                for lk in ("min_level", "max_level"):
                    if lk in r:
                        levels.update({r[lk] - 1, r[lk], r[lk] + 1})
                st = sorted(as_list(r.get("stage")))
                if key == "include" and st not in stage_lists:
                    stage_lists.append(st)
    return [(ph, lv, st) for ph in ("TRAIN", "TEST") for lv in sorted(levels) for st in stage_lists]


def _chain_defaults(items: list[_LayerItem]) -> None:
    """Leave out ``bottom`` and ``top`` where netspec's defaults give the same blobs."""
    from netspec.core.layer import SAME, registry

    reg = registry()
    prev: str | None = None
    for it in items:
        f = it.item.fields
        cls = reg[f["type"]]
        bottoms = f.get("bottom", [])
        lo = cls.num_bottom[0] if isinstance(cls.num_bottom, tuple) else cls.num_bottom
        default_bottom = [prev] if lo >= 1 and prev is not None else []
        tops = f.get("top", [])
        in_place = bool(bottoms) and tops[:len(bottoms)] == bottoms
        if bottoms == default_bottom and not in_place:   # in place reads best with both written
            f.pop("bottom", None)
        else:
            f["bottom"] = bottoms[0] if len(bottoms) == 1 else bottoms
        if cls.num_top == SAME:
            n = len(bottoms)
            default_top = [f["name"]] if n <= 1 else [f"{f['name']}_{k}" for k in range(n)]
        else:
            hi = cls.num_top[1] if isinstance(cls.num_top, tuple) else cls.num_top
            default_top = [f["name"]] if hi is None or hi >= 1 else []
        if tops == default_top or (not tops and cls.is_loss):
            # a Caffe loss layer without tops gets an automatic one: netspec's default top
            f.pop("top", None)
            tops = default_top
        else:
            f["top"] = tops[0] if len(tops) == 1 else tops
        prev = tops[0] if tops else prev
        it.item.fields = _order(f, [])


# ---- checking -------------------------------------------------------------------------------

def _relocate(e: NetspecError, lines: dict[str, int], file: str, what: str) -> NetspecError:
    errs = e.errors if isinstance(e, ErrorList) else [e]
    out = []
    for x in errs:
        line = lines.get(x.layer) if x.layer else None
        out.append(SpecError(f"{what}: {x}", file=file, line=line))
    return out[0] if len(out) == 1 else ErrorList(out)


def _is_data_error(e: NetspecError) -> bool:
    return isinstance(e, DataError) or (e.field in ("source", "shape") and e.layer is not None)


def _check(result: ConvertedNet, file: str) -> None:
    """Run netspec check; data that cannot be opened is a note, anything else an error kept on
    the result (the YAML is still written, so the user can look at it)."""
    from netspec import api

    try:
        res = api.check(result.net)
    except NetspecError as e:
        errs = e.errors if isinstance(e, ErrorList) else [e]
        data = [x for x in errs if _is_data_error(x)]
        other = [x for x in errs if not _is_data_error(x)]
        for x in data:
            result.report.note(f"layer '{x.layer}'" if x.layer else "net",
                               f"netspec check cannot infer shapes until the data is available: {x.message}",
                               result.layer_lines.get(x.layer))
        if other:
            result.check_error = _relocate(ErrorList(other) if len(other) > 1 else other[0], result.layer_lines,
                                           file, "the converted net does not pass netspec check")
        result.report.summary["checked"] = "no"
        return
    train = res.plans.get("TRAIN") or next(iter(res.plans.values()))
    result.report.summary["params"] = train.num_params
    result.report.summary["checked"] = "yes"
    for w in res.warnings:
        result.report.note(f"layer '{w.layer}'" if w.layer else "net", f"netspec check: {w.message}",
                           result.layer_lines.get(w.layer))
