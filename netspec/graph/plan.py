"""Tier two of validation and the last compiler pass: connect the layers, infer every shape,
decide which layers run backward, and list the params.

``plan`` takes a filtered, split net and returns a ``Plan``: layers in execution order with
their bottom/top names and shapes, loss weights, backward needs, and params (with sharing
resolved).  Every semantic error of the net is collected and raised together, each located
at the layer and field that caused it: unknown bottoms, tops produced twice, wrong blob
counts, duplicate names, shapes that do not fit.  No data is opened and numba is not imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netspec.core.fillers import check_filler
from netspec.core.layer import Layer, Shape, count, layer_class
from netspec.errors import GraphError, NetspecError, ShapeError, SpecError, raise_all, suggestion
from netspec.graph.splits import is_inserted_split
from netspec.spec.model import LayerSpec, NetSpec, as_list

DTYPE_BYTES = 4


@dataclass
class ParamInfo:
    layer: str
    name: str
    shape: Shape
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    share_name: str | None = None
    owner: str | None = None      # key of the param that owns the storage, when shared
    filler: dict = field(default_factory=lambda: {"type": "constant"})
    share_mode: str = "STRICT"
    explicit: frozenset = frozenset()   # which of lr_mult/decay_mult the file sets

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"

    @property
    def size(self) -> int:
        return count(self.shape)


@dataclass
class LayerPlan:
    spec: LayerSpec
    layer: Layer
    bottoms: list[str]
    tops: list[str]
    bottom_shapes: list[Shape]
    top_shapes: list[Shape]
    loss_weights: list[float]
    params: list[ParamInfo]
    need_backward: bool = False
    bottom_need_backward: list[bool] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def type(self) -> str:
        return self.spec["type"]

    @property
    def inplace(self) -> list[bool]:
        return [j < len(self.bottoms) and t == self.bottoms[j] for j, t in enumerate(self.tops)]


@dataclass
class Plan:
    net: NetSpec
    phase: str
    layers: list[LayerPlan]
    blobs: dict[str, Shape]
    inputs: list[str]
    outputs: list[str]
    params: list[ParamInfo]
    warnings: list[NetspecError] = field(default_factory=list)

    def layer(self, name: str) -> LayerPlan:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(name)

    @property
    def num_params(self) -> int:
        """Learnable values, counting shared storage once."""
        return sum(p.size for p in self.params if p.owner is None)


def plan(net: NetSpec, input_shapes: dict[str, Shape] | None = None) -> Plan:
    """Connect, shape and analyse a filtered, split net.  Raises every error found, together."""
    phase = net.get("state", {}).get("phase", "TEST")
    errors: list[NetspecError] = []
    warnings: list[NetspecError] = []
    names: dict[str, LayerSpec] = {}
    producers: dict[str, tuple[LayerSpec, int]] = {}   # blob -> (layer, top index) of its latest producer
    all_tops: dict[str, list[LayerSpec]] = {}          # every producer of each blob, in file order
    shapes: dict[str, Shape | None] = {}
    available: dict[str, None] = {}                    # blobs not yet consumed (ordered)
    origins: dict[str, tuple[LayerSpec, int]] = {}     # blob -> the layer whose top made its shape
    layers: list[LayerPlan] = []
    for l in net.layers:
        for t in l.get("top", []):
            all_tops.setdefault(t, []).append(l)

    for spec in net.layers:
        name, ltype = spec["name"], spec["type"]
        dup_name = name in names
        if dup_name:
            first = names[name]
            errors.append(spec.error(GraphError, f"a layer named '{name}' already exists (line {first.line()}); "
                                     f"names must be unique among the layers of a phase", field="name"))
        names.setdefault(name, spec)
        try:
            cls = layer_class(ltype, spec)
        except NetspecError as e:
            errors.append(e)
            continue
        bottoms, tops = list(spec.get("bottom", [])), list(spec.get("top", []))
        layer_ok = True
        for fld, msg in cls.check_arity(len(bottoms), len(tops)):
            hint = None
            if fld == "bottom" and "bottom" not in _explicit(spec):
                hint = "the bottom was defaulted to the previous layer's top; list the bottoms explicitly"
            errors.append(spec.error(GraphError, msg, field=fld, hint=hint))
            layer_ok = False
        # bottoms
        bshapes: list[Shape | None] = []
        for j, b in enumerate(bottoms):
            if b not in producers:
                errors.append(_unknown_bottom(spec, j, b, producers, all_tops, phase))
                bshapes.append(None)
                layer_ok = False
                continue
            bshapes.append(shapes.get(b))
            available.pop(b, None)
        # tops
        for j, t in enumerate(tops):
            inplace = j < len(bottoms) and bottoms[j] == t
            if dup_name and "top" not in _explicit(spec):
                # the top defaulted to the duplicate name (and may have become "in place" on
                # the previous layer's top of that name): the name error says it all
                layer_ok = False
            elif inplace and not cls.inplace:
                errors.append(spec.error(GraphError, f"{ltype} cannot run in place (top '{t}' is also its "
                                         f"bottom); give the top another name", field="top"))
                layer_ok = False
            elif not inplace and t in producers:
                other = producers[t][0]
                errors.append(spec.error(GraphError, f"top '{t}' is already produced by layer '{other['name']}' "
                                         f"(line {other.line('top')}); a blob has one producer, except in-place "
                                         f"layers whose top equals their bottom at the same position", field="top"))
                layer_ok = False
            elif t in tops[:j]:
                errors.append(spec.error(GraphError, f"top '{t}' is listed twice", field="top"))
                layer_ok = False
        # per-bottom and per-top lists
        pd = spec.get("propagate_down")
        if pd is not None and len(pd) != len(bottoms):
            errors.append(spec.error(GraphError, f"propagate_down needs one entry per bottom ({len(bottoms)}), "
                                     f"got {len(pd)}", field="propagate_down"))
        lw = spec.get("loss_weight")
        if lw is not None and len(lw) > len(tops):
            errors.append(spec.error(GraphError, f"loss_weight has {len(lw)} entries but the layer has "
                                     f"{len(tops)} top(s); give one per top", field="loss_weight"))
        for j in cls.no_grad_bottoms:
            if pd is not None and j < len(pd) and pd[j]:
                errors.append(spec.error(GraphError, f"bottom {j} ('{bottoms[j]}') of {ltype} is a label and "
                                         f"cannot receive a gradient", field="propagate_down"))
        layer = cls(spec, phase)
        layer.base_dir = net.base_dir
        tshapes: list[Shape | None] = [None] * len(tops)
        pinfos: list[ParamInfo] = []
        if layer_ok and all(s is not None for s in bshapes):
            try:
                ts = layer.reshape([tuple(s) for s in bshapes])
                if input_shapes and cls.type == "Input":
                    ts = [tuple(input_shapes.get(t, s)) for t, s in zip(tops, ts)]
                if len(ts) != len(tops):
                    raise spec.error(GraphError, f"{ltype} produced {len(ts)} top shape(s) for {len(tops)} top(s)",
                                     field="top")
                tshapes = [tuple(int(d) for d in s) for s in ts]
                pshapes = layer.param_shapes([tuple(s) for s in bshapes])
                pinfos = _params(spec, cls, layer, pshapes, errors)
            except NetspecError as e:
                if e.file is None:
                    e = spec.error(type(e), e.message, field=e.field, hint=e.hint)
                if isinstance(e, ShapeError):
                    e.message += _made_where(spec, bottoms, bshapes, origins)
                errors.append(e)
            except (ValueError, TypeError, ZeroDivisionError, IndexError, KeyError) as e:
                errors.append(spec.error(ShapeError, f"cannot infer the output shape: {e}"
                                         + _made_where(spec, bottoms, bshapes, origins)))
        for j, t in enumerate(tops):
            if ltype == "Split" and bottoms and bottoms[0] in origins:
                origins[t] = origins[bottoms[0]]        # a split copies its bottom: the shape is made above
            elif not (j < len(bottoms) and bottoms[j] == t and t in origins):
                origins[t] = (spec, j)                  # in place keeps the shape its first producer made
            producers[t] = (spec, j)
            shapes[t] = tshapes[j]
            available[t] = None
        layers.append(LayerPlan(spec=spec, layer=layer, bottoms=bottoms, tops=tops,
                                bottom_shapes=[tuple(s) if s is not None else None for s in bshapes],
                                top_shapes=tshapes, loss_weights=_loss_weights(spec, cls, len(tops)),
                                params=pinfos))
    params = _share(layers, errors)
    raise_all(errors)
    if not layers:
        raise net.error(GraphError, f"the {phase} net has no layers (are all of them excluded by rules?)",
                        field="layers")
    _backward_need(layers, bool(net.get("force_backward", False)))
    inputs = [t for lp in layers if lp.type == "Input" for t in lp.tops]
    warnings.extend(_lint(layers))
    return Plan(net=net, phase=phase, layers=layers, blobs={k: v for k, v in shapes.items()},
                inputs=inputs, outputs=sorted(available), params=params, warnings=warnings)


def _made_where(spec: LayerSpec, bottoms: list[str], bshapes: list, origins: dict) -> str:
    """Where each bottom's shape was made (the Input or data layer, or the layer whose output
    has it), so a shape error found at a consumer also names its source and that line."""
    parts = []
    for b, s in zip(bottoms, bshapes):
        if b not in origins or s is None:
            continue
        src, j = origins[b]
        if src is spec:
            continue
        line = src.line("shape") if "shape" in _explicit(src) else (src.line("top") or src.line())
        made = src.get("top", [b])[j] if j < len(src.get("top", [])) else b   # a split's copy: its source's name
        parts.append(f"bottom '{made}' {list(s)} is made by layer '{src['name']}' ({src['type']})"
                     + (f" at line {line}" if line else ""))
    return ("; " + "; ".join(parts)) if parts else ""


def _explicit(spec: LayerSpec) -> set:
    """Fields written in the file (normalize records no line for the ones it defaulted)."""
    return {p[0] for p in spec.src.lines if p}


def _unknown_bottom(spec: LayerSpec, j: int, b: str, producers: dict, all_tops: dict, phase: str) -> NetspecError:
    msg = f"unknown bottom '{b}'"
    hint = None
    # a layer "in place" on a blob nobody made before it is not a later producer of it
    later = next((l for l in all_tops.get(b, []) if l is not spec), None)
    if later is not None:
        msg += f": it is produced later, by layer '{later['name']}' (line {later.line()}); layers run in file order"
    else:
        # the blobs of inserted Split layers are the compiler's, not names the user wrote
        known = [t for t, (layer, _) in producers.items() if not is_inserted_split(layer)]
        msg += suggestion(b, known)
        if known and not suggestion(b, known):
            hint = f"blobs available here: {', '.join(known[-8:])}"
        if not producers:
            hint = f"no layer before it produces anything in the {phase} net"
    if "bottom" not in _explicit(spec):
        why = "the bottom defaulted to the previous layer's first top; name it with 'bottom:'"
        hint = f"{why}; {hint}" if hint else why
    return spec.error(GraphError, msg, field="bottom", path=("bottom", j), hint=hint)


def _loss_weights(spec: LayerSpec, cls: type[Layer], ntop: int) -> list[float]:
    lw = spec.get("loss_weight")
    if lw is None:
        lw = [1.0] + [0.0] * (ntop - 1) if cls.is_loss and ntop else [0.0] * ntop
    lw = [float(w) for w in lw][:ntop]
    return lw + [0.0] * (ntop - len(lw))


def _params(spec: LayerSpec, cls: type[Layer], layer: Layer, pshapes: dict, errors: list) -> list[ParamInfo]:
    pspec = spec.get("param", {}) or {}
    fillers = layer.fillers()
    out = []
    for pname, shp in pshapes.items():
        ps = pspec.get(pname, {}) or {}
        lr = ps.get("lr_mult", cls.fixed_lr_mult.get(pname, 1.0))
        if pname in cls.fixed_lr_mult and float(lr) != cls.fixed_lr_mult[pname]:
            errors.append(spec.error(GraphError, f"the lr_mult of {cls.type} param '{pname}' is fixed at "
                                     f"{cls.fixed_lr_mult[pname]:g}; it is not learned by gradient descent",
                                     path=("param", pname, "lr_mult"), field=f"param.{pname}.lr_mult"))
        dm = ps.get("decay_mult", 0.0 if pname in cls.fixed_lr_mult else 1.0)
        bad = check_filler(fillers.get(pname, {}), tuple(shp))
        if bad:
            fld = cls.filler_fields.get(pname, "param")
            errors.append(spec.error(SpecError, bad, field=fld))
        out.append(ParamInfo(layer=spec["name"], name=pname, shape=tuple(int(d) for d in shp),
                             lr_mult=float(lr), decay_mult=float(dm), share_name=ps.get("name"),
                             filler=fillers.get(pname, {"type": "constant"}),
                             share_mode=ps.get("share_mode", "STRICT"),
                             explicit=frozenset(k for k in ("lr_mult", "decay_mult") if k in ps)))
    return out


def _share(layers: list[LayerPlan], errors: list) -> list[ParamInfo]:
    """Resolve ``param.<p>.name`` sharing: the first user owns, later ones must fit."""
    owners: dict[str, tuple[ParamInfo, LayerPlan]] = {}
    out = []
    for lp in layers:
        for p in lp.params:
            out.append(p)
            if not p.share_name:
                continue
            if p.share_name not in owners:
                owners[p.share_name] = (p, lp)
                continue
            owner, olp = owners[p.share_name]
            p.owner = owner.key
            path = ("param", p.name, "name")
            fld = f"param.{p.name}.name"
            strict = p.share_mode == "STRICT"
            if strict and p.shape != owner.shape:
                errors.append(lp.spec.error(ShapeError, f"shares '{p.share_name}' with {owner.key} but its shape "
                                            f"{list(p.shape)} differs from {list(owner.shape)} (share_mode STRICT)",
                                            path=path, field=fld))
            elif not strict and p.size != owner.size:
                errors.append(lp.spec.error(ShapeError, f"shares '{p.share_name}' with {owner.key} but has "
                                            f"{p.size} values, not {owner.size} (share_mode PERMISSIVE)",
                                            path=path, field=fld))
            for attr in ("lr_mult", "decay_mult"):
                if attr in p.explicit and attr in owner.explicit and getattr(p, attr) != getattr(owner, attr):
                    errors.append(lp.spec.error(GraphError, f"{attr} {getattr(p, attr):g} differs from "
                                                f"{getattr(owner, attr):g} of {owner.key}, which owns the shared "
                                                f"param '{p.share_name}'", path=("param", p.name, attr),
                                                field=f"param.{p.name}.{attr}"))
                elif attr in p.explicit and attr not in owner.explicit:
                    setattr(owner, attr, getattr(p, attr))
                    owner.explicit = owner.explicit | {attr}
            p.lr_mult, p.decay_mult = owner.lr_mult, owner.decay_mult
    return out


def _backward_need(layers: list[LayerPlan], force_backward: bool) -> None:
    """Caffe's analysis (net.cpp): forward sweep for need, reverse sweep for loss reach."""
    blob_need: dict[str, bool] = {}
    for lp in layers:
        need = False
        bneed = []
        pd = lp.spec.get("propagate_down")
        for j, b in enumerate(lp.bottoms):
            n = blob_need.get(b, False)
            if pd is not None and j < len(pd):
                n = bool(pd[j])
            if j in lp.layer.no_grad_bottoms or not lp.layer.differentiable:
                n = False
            bneed.append(n)
            need = need or n
        for p in lp.params:
            need = need or p.lr_mult != 0
        if not lp.layer.differentiable:
            need = False
        lp.need_backward = need
        lp.bottom_need_backward = bneed
        for t in lp.tops:
            blob_need[t] = need or (t in lp.bottoms and blob_need.get(t, False))
    under_loss: set[str] = set()
    skip_backp: set[str] = set()
    for lp in reversed(layers):
        contributes = False
        skip = True
        for j, t in enumerate(lp.tops):
            if lp.loss_weights[j] != 0 or t in under_loss:
                contributes = True
            if t not in skip_backp:
                skip = False
            if contributes and not skip:
                break
        if lp.need_backward and skip:
            lp.need_backward = False
            lp.bottom_need_backward = [False] * len(lp.bottoms)
        if not contributes:
            lp.need_backward = False
        for j, b in enumerate(lp.bottoms):
            if contributes:
                under_loss.add(b)
            else:
                lp.bottom_need_backward[j] = False
            if not lp.bottom_need_backward[j]:
                skip_backp.add(b)
    if force_backward:
        for lp in layers:
            if not lp.layer.differentiable:
                continue
            lp.need_backward = True
            lp.bottom_need_backward = [n or (j not in lp.layer.no_grad_bottoms)
                                       for j, n in enumerate(lp.bottom_need_backward)]


def _lint(layers: list[LayerPlan]) -> list[NetspecError]:
    """Things that are legal but almost always a mistake."""
    out = []
    for lp in layers:
        for p in lp.params:
            if p.name == "weight" and p.owner is None and p.filler.get("type") == "constant" and \
                    float(p.filler.get("value", 0) or 0) == 0 and p.lr_mult != 0 and "weight_filler" not in lp.spec:
                out.append(lp.spec.error(SpecError, "no weight_filler: the weights start at 0 (Caffe's default), "
                                         "which usually stops the layer from learning",
                                         field="weight_filler", hint="add e.g. weight_filler: {type: xavier}"))
    return out


def describe_shape(s: Any) -> str:
    return "?" if s is None else ("scalar" if len(s) == 0 else "x".join(str(d) for d in s))


def memory_bytes(shape: Shape | None) -> int:
    return 0 if shape is None else count(shape) * DTYPE_BYTES


__all__ = ["plan", "Plan", "LayerPlan", "ParamInfo", "as_list"]
