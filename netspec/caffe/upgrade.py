"""Bring old Caffe files to the current Caffe form, as Caffe's own ``upgrade_proto.cpp`` does.

- V1 ``layers { type: CONVOLUTION blobs_lr: 1 weight_decay: 1 param: "w" }`` become
  ``layer { type: "Convolution" param { lr_mult: 1 decay_mult: 1 name: "w" } }``;
- the legacy net inputs ``input:`` with ``input_dim:`` (four per input) or ``input_shape:``
  become one ``Input`` layer named ``input``, placed first;
- the deprecated data-layer fields ``scale``, ``mean_file``, ``crop_size`` and ``mirror`` move
  from ``data_param``/``image_data_param``/``window_data_param`` to ``transform_param``;
- deprecated aliases Caffe still reads at run time: ``concat_dim`` and ``slice_dim`` become
  ``axis``, ``loss_param.normalize`` becomes ``normalization``, DummyData's ``num``/``channels``/
  ``height``/``width`` become ``shape``; and in solvers ``solver_type`` becomes ``type``.

Every moved value keeps its position and comments (``Meta.origin`` names where it was written),
so errors and the coverage report still point at the line the user wrote.
"""

from __future__ import annotations

from netspec.caffe import messages as M
from netspec.caffe.report import Report
from netspec.caffe.textformat import Meta, Msg
from netspec.errors import SpecError, raise_all

#: SolverParameter.SolverType -> the type string (upgrade_proto.cpp's UpgradeSolverType)
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def _moved(meta: Meta | None, origin: str, fallback: Msg) -> Meta:
    if meta is None:
        return Meta(fallback.line, fallback.col, origin=origin)
    return Meta(meta.line, meta.col, list(meta.comments), meta.trailing, meta.head,
                origin=meta.origin or origin)


def layer_where(layer: Msg) -> str:
    name = layer.get("name", "")
    return f"layer '{name}' ({layer.get('type', '?')})"


def upgrade_net(net: Msg, file: str, report: Report) -> Msg:
    """A NetParameter in today's form: only ``layer`` entries, no legacy fields."""
    errors: list[SpecError] = []
    out = Msg("NetParameter", net.line, net.col)
    out.end_comments = net.end_comments
    if "layer" in net and "layers" in net:
        line, col = net.where("layers")
        errors.append(SpecError("the file has both 'layer' and the legacy 'layers' entries; use one form",
                                file=file, line=line, column=col))
    inputs = _input_layer(net, file, errors)
    for name, idx in net.order:
        meta = net.meta[name][idx]
        if name in ("input", "input_dim", "input_shape"):
            if inputs is not None and name == "input" and idx == 0:
                out.add("layer", inputs, meta, True)
            continue
        value = net[name][idx] if isinstance(net[name], list) else net[name]
        if name == "layers":
            try:
                value = _v1_layer(value, file)
            except SpecError as e:
                errors.append(e)
                continue
            name = "layer"
        if name == "layer":
            _upgrade_layer(value, file, report, errors)
        out.add(name, value, meta, M.MESSAGES["NetParameter"][name].repeated)
    raise_all(errors)
    return out


def _input_layer(net: Msg, file: str, errors: list) -> Msg | None:
    names = net.get("input", [])
    dims = net.get("input_dim", [])
    shapes = net.get("input_shape", [])
    if not names:
        for field in ("input_dim", "input_shape"):
            if field in net:
                line, col = net.where(field)
                errors.append(SpecError(f"'{field}' without 'input' (the names of the net inputs)", file=file,
                                        line=line, column=col))
        return None
    line, col = net.where("input")
    if shapes and dims:
        errors.append(SpecError("give the input shapes with input_shape or with input_dim, not both", file=file,
                                line=line, column=col))
        return None
    if shapes:
        if len(shapes) != len(names):
            errors.append(SpecError(f"{len(names)} inputs but {len(shapes)} input_shape entries; give one per input",
                                    file=file, line=line, column=col))
            return None
        shape_list = [list(s.get("dim", [])) for s in shapes]
    elif dims:
        if len(dims) != 4 * len(names):
            errors.append(SpecError(f"{len(names)} inputs need {4 * len(names)} input_dim values (4 each: num, "
                                    f"channels, height, width), got {len(dims)}", file=file, line=line, column=col))
            return None
        shape_list = [list(dims[4 * i:4 * i + 4]) for i in range(len(names))]
    else:
        errors.append(SpecError("the net inputs have no shapes: give input_shape or input_dim for each",
                                file=file, line=line, column=col))
        return None
    layer = Msg("LayerParameter", line, col)
    first = net.meta["input"][0]
    layer.add("name", "input", Meta(line, col, origin="input"), False)
    layer.add("type", "Input", Meta(line, col, origin="input"), False)
    for k, n in enumerate(names):
        m = net.meta["input"][k]     # its comments go with the layer, above it
        layer.add("top", n, Meta(m.line, m.col, [] if k == 0 else list(m.comments),
                                 None if k == 0 else m.trailing, origin="input"), True)
    param = Msg("InputParameter", line, col)
    for s in shape_list:
        shape = Msg("BlobShape", line, col)
        for d in s:
            shape.add("dim", d, Meta(line, col), True)
        param.add("shape", shape, Meta(line, col, origin="input_shape" if shapes else "input_dim"), True)
    layer.add("input_param", param, Meta(line, col, origin="input_dim"), False)
    layer.line, layer.col = first.line, first.col
    return layer


def _v1_layer(v1: Msg, file: str) -> Msg:
    """A V1LayerParameter as a LayerParameter."""
    layer = Msg("LayerParameter", v1.line, v1.col)
    params: list[Msg] = []

    def param(i: int, meta: Meta) -> Msg:
        while len(params) <= i:
            params.append(Msg("ParamSpec", meta.line, meta.col))
        return params[i]

    moved = {"blobs_lr": "lr_mult", "weight_decay": "decay_mult", "param": "name", "blob_share_mode": "share_mode"}
    for name, idx in v1.order:
        meta = v1.meta[name][idx]
        value = v1[name][idx] if isinstance(v1[name], list) else v1[name]
        if name == "type":
            if value == "NONE":
                raise SpecError("layer type NONE is not a layer", file=file, line=meta.line, column=meta.col)
            layer.add("type", M.V1_TYPES[value], meta, False)
        elif name in moved:
            p = param(idx, meta)
            p.add(moved[name], value, _moved(meta, f"{name}[{idx}]", v1), False)
        else:
            layer.add(name, value, meta, M.MESSAGES["LayerParameter"][name].repeated)
    meta0 = None
    for k, p in enumerate(params):
        firsts = [p.first_meta(f) for f in p]
        meta0 = next((m for m in firsts if m is not None), meta0)
        layer.add("param", p, Meta(meta0.line, meta0.col, origin="blobs_lr") if meta0 else Meta(v1.line, v1.col),
                  True)
    return layer


_DATA_BLOCKS = ("data_param", "image_data_param", "window_data_param")
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _upgrade_layer(layer: Msg, file: str, report: Report, errors: list) -> None:
    where = layer_where(layer)
    for block in _DATA_BLOCKS:
        p = layer.get(block)
        if not isinstance(p, Msg) or not any(f in p for f in _TRANSFORM_FIELDS):
            continue
        tp = layer.get("transform_param")
        if tp is None:
            tp = Msg("TransformationParameter", p.line, p.col)
            layer.add("transform_param", tp, Meta(p.line, p.col, origin=block), False)
        for f in _TRANSFORM_FIELDS:
            if f not in p:
                continue
            meta = p.first_meta(f)
            if f in tp and tp[f] != p[f]:
                report.note(where, f"{block}.{f} ({p[f]}) replaces transform_param.{f} ({tp[f]}), as Caffe's "
                                   f"upgrade does", meta.line)
            tp.remove(f)
            tp.add(f, p[f], _moved(meta, f"{block}.{f}", p), False)
            p.remove(f)
    _alias(layer, "concat_param", "concat_dim", "axis", file, errors)
    _alias(layer, "slice_param", "slice_dim", "axis", file, errors)
    lp = layer.get("loss_param")
    if isinstance(lp, Msg) and "normalize" in lp:
        meta = lp.first_meta("normalize")
        if layer.get("type") == "InfogainLoss":
            errors.append(SpecError("InfogainLoss rejects the deprecated loss_param.normalize; use normalization",
                                    file=file, line=meta.line, column=meta.col))
        elif "normalization" in lp:
            report.ignored(where, "loss_param.normalize", "Caffe ignores normalize when normalization is given",
                           meta.line)
            lp.remove("normalize")
        else:
            mode = "VALID" if lp["normalize"] else "BATCH_SIZE"
            lp.remove("normalize")
            lp.add("normalization", mode, _moved(meta, "loss_param.normalize", lp), False)
    dd = layer.get("dummy_data_param")
    if isinstance(dd, Msg) and any(f in dd for f in ("num", "channels", "height", "width")):
        _dummy_shapes(layer, dd, file, errors)


def _alias(layer: Msg, block: str, old: str, new: str, file: str, errors: list) -> None:
    p = layer.get(block)
    if not isinstance(p, Msg) or old not in p:
        return
    meta = p.first_meta(old)
    if new in p:
        errors.append(SpecError(f"give {block}.{new} or the deprecated {old}, not both", file=file,
                                line=meta.line, column=meta.col))
        return
    value = p[old]
    p.remove(old)
    p.add(new, value, _moved(meta, f"{block}.{old}", p), False)


def _dummy_shapes(layer: Msg, dd: Msg, file: str, errors: list) -> None:
    """DummyData's legacy 4-D dims (1 or one per top each) as shapes."""
    legacy = ("num", "channels", "height", "width")
    line, col = dd.where("num")
    if "shape" in dd:
        errors.append(SpecError("give DummyData shapes with shape or with num/channels/height/width, not both",
                                file=file, line=line, column=col))
        return
    n_top = len(layer.get("top", []))
    sizes = {f: len(dd.get(f, [])) for f in legacy}
    if any(s not in (1, n_top) for s in sizes.values()):
        errors.append(SpecError(f"num, channels, height and width must each be given once or once per top "
                                f"({n_top}); got {', '.join(f'{k} {v}' for k, v in sizes.items())}", file=file,
                                line=line, column=col))
        return
    n = max(sizes.values())
    for i in range(n):
        shape = Msg("BlobShape", line, col)
        for f in legacy:
            vals = dd[f]
            shape.add("dim", vals[i if len(vals) > 1 else 0], Meta(line, col), True)
        dd.add("shape", shape, Meta(line, col, origin="dummy_data_param.num/channels/height/width"), True)
    for f in legacy:
        dd.remove(f)


def upgrade_solver(solver: Msg, file: str) -> Msg:
    """``solver_type: ADAM`` -> ``type: "Adam"`` (giving both is an error, as in Caffe)."""
    if "solver_type" not in solver:
        return solver
    meta = solver.first_meta("solver_type")
    if "type" in solver:
        raise SpecError("give type or the deprecated solver_type, not both", file=file, line=meta.line,
                        column=meta.col)
    out = Msg("SolverParameter", solver.line, solver.col)
    out.end_comments = solver.end_comments
    for name, idx in solver.order:
        m = solver.meta[name][idx]
        value = solver[name][idx] if isinstance(solver[name], list) else solver[name]
        if name == "solver_type":
            out.add("type", SOLVER_TYPES[value], _moved(m, "solver_type", solver), False)
        else:
            out.add(name, value, m, M.MESSAGES["SolverParameter"][name].repeated)
    return out
