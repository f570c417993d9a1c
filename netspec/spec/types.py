"""Small builders for JSON Schema fragments, so each layer states its fields in one line each.

Every builder returns a plain dict; a ``default`` in it is what ``normalize`` fills in when the
field is absent, and ``description`` is what editors show.  Fragments that several schemas
share (fillers, rules, param specs, shapes) are ``$ref``s into ``$defs`` of the assembled
schema, defined once in ``DEFS``.
"""

from __future__ import annotations

from typing import Any, Iterable

PHASES = ("TRAIN", "TEST")


def _with(d: dict, default: Any, desc: str | None) -> dict:
    if default is not None:
        d["default"] = default
    if desc:
        d["description"] = desc
    return d


def integer(minimum: int | None = None, maximum: int | None = None, default: int | None = None,
            desc: str | None = None) -> dict:
    d: dict = {"type": "integer"}
    if minimum is not None:
        d["minimum"] = minimum
    if maximum is not None:
        d["maximum"] = maximum
    return _with(d, default, desc)


def number(minimum: float | None = None, maximum: float | None = None, default: float | None = None,
           desc: str | None = None, exclusive_minimum: float | None = None,
           exclusive_maximum: float | None = None) -> dict:
    d: dict = {"type": "number"}
    if minimum is not None:
        d["minimum"] = minimum
    if maximum is not None:
        d["maximum"] = maximum
    if exclusive_minimum is not None:
        d["exclusiveMinimum"] = exclusive_minimum
    if exclusive_maximum is not None:
        d["exclusiveMaximum"] = exclusive_maximum
    return _with(d, default, desc)


def boolean(default: bool | None = None, desc: str | None = None) -> dict:
    return _with({"type": "boolean"}, default, desc)


def string(default: str | None = None, desc: str | None = None, min_length: int | None = 1) -> dict:
    d: dict = {"type": "string"}
    if min_length:
        d["minLength"] = min_length
    return _with(d, default, desc)


def enum(values: Iterable[str], default: str | None = None, desc: str | None = None) -> dict:
    return _with({"type": "string", "enum": list(values)}, default, desc)


def ints(minimum: int | None = None, default=None, desc: str | None = None, min_items: int = 1) -> dict:
    """An integer or a list of integers (``kernel_size: 3`` or ``[3, 5]``)."""
    item = integer(minimum)
    d: dict = {"type": ["integer", "array"], "items": item, "minItems": min_items}
    if minimum is not None:
        d["minimum"] = minimum
    return _with(d, default, desc)


def numbers(default=None, desc: str | None = None, minimum: float | None = None) -> dict:
    """A number or a list of numbers (``mean_value: 128`` or ``[104, 117, 123]``)."""
    item = number(minimum)
    d: dict = {"type": ["number", "array"], "items": item}
    if minimum is not None:
        d["minimum"] = minimum
    return _with(d, default, desc)


def strings(desc: str | None = None) -> dict:
    """A string or a list of strings (``bottom: data`` or ``[data, label]``)."""
    return _with({"type": ["string", "array"], "items": string(), "minLength": 1}, None, desc)


def ref(name: str, desc: str | None = None) -> dict:
    d = {"$ref": f"#/$defs/{name}"}
    if desc:
        d["description"] = desc
    return d


def filler(default_type: str | None = None, desc: str | None = None) -> dict:
    d = ref("filler", desc)
    if default_type is not None:
        d["default"] = {"type": default_type}
    return d


def shape(desc: str | None = None) -> dict:
    """One blob shape as a list of ints; ``-1``/``0`` allowed where a layer gives them meaning."""
    return ref("shape", desc)


def shapes(desc: str | None = None) -> dict:
    """One shape for all tops, or a list of shapes, one per top."""
    return _with({"type": "array", "minItems": 1,
                  "items": {"type": ["integer", "array"], "minimum": -1,
                            "items": {"type": "integer", "minimum": -1}}}, None, desc)


def param_names(*names: str) -> dict:
    """The ``param`` field of a layer with learnable params called ``names``."""
    return {"type": "object", "properties": {n: ref("param_spec") for n in names},
            "additionalProperties": False,
            "description": "per-param settings by name: lr_mult, decay_mult, and name for sharing"}


FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear")

DEFS: dict[str, dict] = {
    "filler": {
        "type": "object",
        "description": "how a param is initialised (Caffe's FillerParameter)",
        "properties": {
            "type": enum(FILLER_TYPES, default="constant"),
            "value": number(desc="constant: the value"),
            "min": number(desc="uniform: lower bound"),
            "max": number(desc="uniform: upper bound"),
            "mean": number(desc="gaussian: mean"),
            "std": number(minimum=0, desc="gaussian: standard deviation"),
            "sparse": integer(minimum=-1, desc="gaussian: expected non-zeros per output (-1: dense)"),
            "variance_norm": enum(("FAN_IN", "FAN_OUT", "AVERAGE"), desc="xavier/msra: which fan"),
        },
        # no "required": as in Caffe, a filler without a type is constant ({value: 0.1})
        "additionalProperties": False,
    },
    "rule": {
        "type": "object",
        "description": "a NetStateRule: met when every field given holds",
        "properties": {
            "phase": enum(PHASES),
            "min_level": integer(),
            "max_level": integer(),
            "stage": strings(),
            "not_stage": strings(),
        },
        "additionalProperties": False,
    },
    "param_spec": {
        "type": "object",
        "properties": {
            "name": string(desc="share this param with every other param of the same name"),
            "lr_mult": number(desc="learning-rate multiplier; 0 freezes the param"),
            "decay_mult": number(desc="weight-decay multiplier"),
            "share_mode": enum(("STRICT", "PERMISSIVE"), desc="STRICT: equal shapes; PERMISSIVE: equal counts"),
        },
        "additionalProperties": False,
    },
    "shape": {
        "type": "array",
        "items": {"type": "integer", "minimum": -1},
        "description": "a blob shape, e.g. [64, 1, 28, 28]",
    },
}


def rules(desc: str) -> dict:
    """``include:``/``exclude:``: one rule or a list of rules."""
    r = DEFS["rule"]
    return {"type": ["object", "array"], "items": ref("rule"), "properties": r["properties"],
            "additionalProperties": False, "description": desc}


COMMON_LAYER_PROPS: dict[str, dict] = {
    "name": string(desc="the layer's name; unique within the net; weights are copied by it"),
    "type": string(desc="the layer type (Caffe's name, e.g. Convolution)"),
    "bottom": strings("input blobs; defaults to the previous layer's first top"),
    "top": strings("output blobs; defaults to the layer's name; equal to bottom means in place"),
    "include": rules("keep the layer only when one of these rules is met"),
    "exclude": rules("drop the layer when one of these rules is met"),
    "loss_weight": numbers(desc="weight of each top in the loss (loss layers default to 1)"),
    "propagate_down": {"type": ["boolean", "array"], "items": {"type": "boolean"},
                       "description": "per bottom: force (true) or stop (false) its gradient"},
    "phase": enum(PHASES, desc="override the net's phase for this layer"),
}
