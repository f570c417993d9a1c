"""Normalize a validated document into a NetSpec: every default and shorthand made explicit.

What changes (and nothing else):
- ``bottom`` defaults to the previous layer's first top, ``top`` to the layer's name; both
  become lists, as do ``include``/``exclude`` (lists of rules, whose stages are lists),
  ``loss_weight``, ``propagate_down`` and ``plugins``;
- loss layers get their loss weight written out (1 for the first top, 0 for the others);
- every field the layer's schema gives a ``default`` for is filled in;
- each type's own shorthands are rewritten by ``Layer.normalize`` (e.g. ``kernel_h``/``kernel_w``);
- keys are ordered: name, type, bottom, top, rules, the type's fields, then the rest.

The output validates against the same schema and normalizing it again changes nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from netspec.core.layer import SAME, layer_class
from netspec.spec.load import Doc
from netspec.spec.model import LayerSpec, NetSpec, Src, as_list
from netspec.spec.schema import NET_VERSION

HEAD = ("name", "type", "bottom", "top", "include", "exclude", "phase")
TAIL = ("param", "loss_weight", "propagate_down")
TOP_ORDER = ("netspec", "name", "description", "plugins", "force_backward", "state", "solver", "reinit", "freeze",
             "layers")


def normalize(doc: Doc) -> NetSpec:
    data = doc.data
    layers: list[LayerSpec] = []
    prev_top: str | None = None
    for i, raw in enumerate(data["layers"]):
        src = Src(doc.file, doc.sub_lines(("layers", i)))
        layer = normalize_layer(raw, prev_top, src)
        layers.append(layer)
        if layer["top"]:
            prev_top = layer["top"][0]
    top: dict[str, Any] = {"netspec": NET_VERSION}
    for key in TOP_ORDER:
        if key in data and key not in ("netspec", "layers"):
            top[key] = copy.deepcopy(data[key])
    for key in ("plugins", "reinit", "freeze"):
        if key in top:
            top[key] = as_list(top[key])
    if "state" in top and "stage" in top["state"]:
        top["state"]["stage"] = as_list(top["state"]["stage"])
    top["layers"] = layers
    return NetSpec(top, Src(doc.file, doc.lines), doc.base_dir)


def normalize_layer(raw: dict, prev_top: str | None, src: Src) -> LayerSpec:
    cls = layer_class(raw["type"])
    f = copy.deepcopy(dict(raw))
    if "bottom" in f:
        f["bottom"] = as_list(f["bottom"])
    else:
        lo = cls.num_bottom[0] if isinstance(cls.num_bottom, tuple) else cls.num_bottom
        f["bottom"] = [prev_top] if lo >= 1 and prev_top is not None else []
    if "top" in f:
        f["top"] = as_list(f["top"])
    else:
        if cls.num_top == SAME:
            n = len(f["bottom"])
            f["top"] = [f["name"]] if n <= 1 else [f"{f['name']}_{k}" for k in range(n)]
        else:
            hi = cls.num_top[1] if isinstance(cls.num_top, tuple) else cls.num_top
            f["top"] = [f["name"]] if hi is None or hi >= 1 else []
    for key in ("include", "exclude"):
        if key in f:
            f[key] = [_rule(r) for r in as_list(f[key])]
    for key in ("loss_weight", "propagate_down"):
        if key in f:
            f[key] = as_list(f[key])
    if cls.is_loss and "loss_weight" not in f and f["top"]:
        f["loss_weight"] = [1.0] + [0.0] * (len(f["top"]) - 1)
    own = (cls.schema or {}).get("properties", {})
    for key, sub in own.items():
        if key not in f and isinstance(sub, dict) and "default" in sub:
            f[key] = copy.deepcopy(sub["default"])
    for key in ("weight_filler", "bias_filler", "filler"):
        if isinstance(f.get(key), dict) and key in own:
            f[key] = _filler(f[key])
    f = cls.normalize(f)
    if not f["bottom"] and cls.num_bottom == 0:
        del f["bottom"]
    return LayerSpec(_order(f, list(own)), src)


def _rule(rule: dict) -> dict:
    r = dict(rule)
    for key in ("stage", "not_stage"):
        if key in r:
            r[key] = as_list(r[key])
    return r


def _filler(filler: dict) -> dict:
    """Spell out a filler's defaults so the rendered net says what it will do."""
    out = dict(filler)
    t = out.get("type", "constant")
    out["type"] = t
    defaults = {"constant": {"value": 0.0}, "uniform": {"min": 0.0, "max": 1.0},
                "gaussian": {"mean": 0.0, "std": 1.0}, "xavier": {"variance_norm": "FAN_IN"},
                "msra": {"variance_norm": "FAN_IN"}}.get(t, {})
    for k, v in defaults.items():
        out.setdefault(k, v)
    return out


def _order(f: dict, own: list[str]) -> dict:
    out = {}
    for k in HEAD:
        if k in f:
            out[k] = f[k]
    for k in own:
        if k in f and k not in out:
            out[k] = f[k]
    for k in f:
        if k not in out and k not in TAIL:
            out[k] = f[k]
    for k in TAIL:
        if k in f:
            out[k] = f[k]
    return out

