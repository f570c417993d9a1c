"""The JSON Schema (Draft 2020-12) of net files, assembled from the layer registry.

Each layer type states its own fields (``Layer.schema``); this module adds the fields every
layer shares, the ``param`` names it learns, and a dispatcher that picks the type's schema by
its ``type``.  The result is committed under ``netspec/spec/schemas/`` for editors (a test
keeps it current) and printed by ``netspec schema``; validation uses the same assembly, so a
plugin's layer types are checked like built-in ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netspec.spec import types as T

SCHEMA_DIR = Path(__file__).parent / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
NET_VERSION = 1


def layer_schema(cls) -> dict:
    """The full schema of one layer type: shared fields, its params, its own fields."""
    own = cls.schema or {}
    props: dict[str, Any] = dict(T.COMMON_LAYER_PROPS)
    props["type"] = {"const": cls.type}
    if cls.param_names:
        props["param"] = T.param_names(*cls.param_names)
    props.update(own.get("properties", {}))
    doc = (cls.__doc__ or cls.type).strip().splitlines()[0]
    out: dict[str, Any] = {
        "type": "object",
        "description": doc,
        "properties": props,
        "required": ["name", "type"] + [r for r in own.get("required", []) if r not in ("name", "type")],
        "additionalProperties": False,
        "not": {"required": ["include", "exclude"]},
    }
    for key in ("allOf", "dependentRequired", "dependentSchemas"):
        if key in own:
            out[key] = own[key]
    return out


def build_net_schema(reg: dict | None = None) -> dict:
    """The net-file schema for the given registry (default: every registered type)."""
    if reg is None:
        from netspec.core.layer import registry

        reg = registry()
    types = sorted(reg)
    defs: dict[str, Any] = dict(T.DEFS)
    dispatch = []
    for t in types:
        defs[f"layer.{t}"] = layer_schema(reg[t])
        # "type": "object" in the condition: without it a layer written as a string or a list
        # would match every type's branch (properties and required hold for non-objects).
        dispatch.append({"if": {"type": "object", "properties": {"type": {"const": t}}, "required": ["type"]},
                         "then": {"$ref": f"#/$defs/layer.{t}"}})
    from netspec.spec.solver_schema import build_solver_schema

    defs["solver"] = build_solver_schema(inline=True)
    defs["layer"] = {
        "type": "object",
        "description": "one layer; its fields depend on its type",
        "required": ["name", "type"],
        "properties": {"type": {"type": "string", "enum": types}, "name": T.string()},
        "allOf": dispatch,
    }
    return {
        "$schema": DRAFT,
        "$id": f"urn:netspec:net:{NET_VERSION}",
        "title": "netspec net",
        "description": "A neural network described as a list of Caffe-style layers.",
        "type": "object",
        "properties": {
            "netspec": {"type": "integer", "const": NET_VERSION,
                        "description": "the format version; omit for the current one"},
            "name": T.string(desc="the net's name"),
            "description": {"type": "string"},
            "layers": {"type": "array", "minItems": 1, "items": T.ref("layer")},
            "plugins": {"type": ["string", "array"], "items": T.string(), "minLength": 1,
                        "description": "Python files that register extra layer types"},
            "force_backward": T.boolean(False, "compute gradients for every bottom"),
            "state": {"type": "object", "additionalProperties": False,
                      "description": "the default NetState (phase, level, stages)",
                      "properties": {"phase": T.enum(T.PHASES), "level": T.integer(),
                                     "stage": T.strings()}},
            "solver": {"type": ["string", "object"], "minLength": 1,
                       "if": {"type": "object"}, "then": T.ref("solver"),
                       "description": "the solver: a file (relative to this one) or inline settings"},
            "reinit": {"type": ["string", "array"], "items": T.string(), "minLength": 1,
                       "description": "fine-tuning: layer-name globs that keep their fillers even when "
                                      "the weights file has them with another shape"},
            "freeze": {"type": ["string", "array"], "items": T.string(), "minLength": 1,
                       "description": "fine-tuning: layer-name globs whose params are not updated"},
        },
        "required": ["layers"],
        "additionalProperties": False,
        "$defs": defs,
    }


def dump(schema: dict) -> str:
    return json.dumps(schema, indent=1, sort_keys=False) + "\n"


def committed_path(name: str = "net") -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def builtin_net_schema() -> dict:
    """The net schema of netspec's own layer types (plugins loaded in this process left out)."""
    from netspec.core.layer import REGISTRY, registry

    registry()
    return build_net_schema({t: c for t, c in REGISTRY.items() if c.__module__.startswith("netspec.")})


def write_committed() -> Path:
    """Regenerate the committed net schema (run by ``scripts/gen_schemas.py``)."""
    p = committed_path("net")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dump(builtin_net_schema()))
    return p
