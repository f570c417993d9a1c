"""Tier one of validation: JSON Schema, turned into located, human messages.

Every schema violation in a document is reported at once, each as a ``SpecError`` carrying the
file, the line of the offending key, the layer (name and type) it sits in and the field, with
a did-you-mean for unknown names and enum values.  Used for net, solver and manifest files.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterable

import jsonschema
from jsonschema import Draft202012Validator

from netspec.errors import ErrorList, SpecError, did_you_mean, raise_all, suggestion
from netspec.spec import types as T
from netspec.spec.load import Doc

_JSON_TYPES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "array": "a list", "object": "a mapping", "null": "nothing"}


def _json_type(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


def _show(v: Any) -> str:
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nothing"
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=8)
def _validator(schema_json: str) -> Draft202012Validator:
    # the schemas are checked against the meta-schema by the test-suite, not on every run
    return Draft202012Validator(json.loads(schema_json))


def validator_for(schema: dict) -> Draft202012Validator:
    return _validator(json.dumps(schema, sort_keys=True))


def validate(doc: Doc, schema: dict, *, list_key: str | None = "layers") -> None:
    """Raise every violation of ``schema`` in ``doc`` together (an ErrorList), or return."""
    raise_all(schema_errors(doc, schema, list_key=list_key))


def schema_errors(doc: Doc, schema: dict, *, list_key: str | None = "layers") -> list[SpecError]:
    v = validator_for(schema)
    found: list[tuple[tuple, str, SpecError]] = []   # (document path, kind, error)
    for err in v.iter_errors(doc.data):
        for leaf in _leaves(err):
            found.extend(_convert(leaf, doc, v.schema, list_key))
    # A value of the wrong type explains every other complaint about it (an enum, a 'not'
    # rule), and an unknown key that looks like a missing required one explains the latter.
    wrong_type = {path for path, kind, _ in found if kind == "type"}
    suggested = {(path[:-1], getattr(e, "suggested", None)) for path, kind, e in found if kind == "unknown"}
    out: list[SpecError] = []
    seen: set[tuple] = set()
    for path, kind, e in found:
        if kind != "type" and any(path[:k] in wrong_type for k in range(len(path) + 1)):
            continue
        if kind == "required" and path and (path[:-1], path[-1]) in suggested:
            continue
        key = (e.line, e.field, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _leaves(err: jsonschema.ValidationError) -> Iterable[jsonschema.ValidationError]:
    """The most specific errors: inside anyOf/oneOf, the branch that got furthest."""
    if err.validator in ("anyOf", "oneOf") and err.context:
        best = jsonschema.exceptions.best_match(err.context)
        yield from _leaves(best)
    else:
        yield err


def _resolve(schema: dict, sub: Any) -> Any:
    """Follow a local ``$ref`` (one level is all our schemas use)."""
    while isinstance(sub, dict) and "$ref" in sub and sub["$ref"].startswith("#/"):
        node: Any = schema
        for part in sub["$ref"][2:].split("/"):
            node = node[part]
        sub = node
    return sub


def _context(doc: Doc, path: tuple, list_key: str | None):
    """(layer name, layer type, field path inside the layer) for a document path."""
    data = doc.data
    if list_key and len(path) >= 2 and path[0] == list_key and isinstance(path[1], int):
        items = data.get(list_key) if isinstance(data, dict) else None
        item = items[path[1]] if isinstance(items, list) and path[1] < len(items) else None
        if isinstance(item, dict):
            name = item.get("name") if isinstance(item.get("name"), str) else f"#{path[1] + 1}"
            ltype = item.get("type") if isinstance(item.get("type"), str) else None
            return name, ltype, path[2:]
        return f"#{path[1] + 1}", None, path[2:]
    return None, None, path


def _field_name(rel: tuple, container: Any = None) -> str | None:
    """``("param", "weight", "lr_mult")`` -> ``param.weight.lr_mult``; list indexes as ``[i]``.

    ``container`` (the value ``rel`` starts in) tells a list index from a mapping key that
    YAML read as a number or a boolean.
    """
    text = ""
    node = container
    for p in rel:
        if isinstance(node, list) or (node is None and isinstance(p, int) and not isinstance(p, bool)):
            text += f"[{p}]"
        else:
            text += ("." if text else "") + _key_text(p)
        try:
            node = node[p] if node is not None else None
        except (KeyError, IndexError, TypeError):
            node = None
    return text or None


def _key_text(key: Any) -> str:
    """A mapping key as the user wrote it (YAML reads ``on``/``yes``/``true`` keys as booleans)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _convert(err: jsonschema.ValidationError, doc: Doc, root: dict, list_key: str | None) -> list[tuple]:
    """(document path, kind, located error) for each complaint in one schema error."""
    path = tuple(err.absolute_path)
    inst = err.instance
    if err.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(inst, dict):
        allowed = list(_resolve(root, err.schema).get("properties", {}))
        known = [a for a in allowed if a != "type"]
        out = []
        for key in [k for k in inst if k not in allowed]:
            what = "top-level key" if not path else ("param name" if path[-1] == "param" else "field")
            msg = f"unknown {what} '{_key_text(key)}'"
            hint = None
            best = did_you_mean(key, known) if isinstance(key, str) else None
            if best is not None and best != key:
                msg += f"; did you mean '{best}'?"
            elif len(known) <= 40:
                msg += f" (known: {', '.join(sorted(known))})"
            if not isinstance(key, str):
                hint = ("YAML reads an unquoted yes/no/on/off/true/false or number as a value, not a name; "
                        "quote the key if a name was meant")
            e = _located(doc, path + (key,), list_key, msg, hint)
            e.suggested = best
            out.append((path + (key,), "unknown", e))
        return out
    msg, hint, extra = _message(err, path, inst, list_key)
    kind = err.validator if err.validator in ("type", "required") else "other"
    return [(path + extra, kind, _located(doc, path + extra, list_key, msg, hint))]


def _located(doc: Doc, full: tuple, list_key: str | None, msg: str, hint: str | None) -> SpecError:
    name, ltype, rel = _context(doc, full, list_key)
    container = doc.data
    for p in full[: len(full) - len(rel)]:
        try:
            container = container[p]
        except (KeyError, IndexError, TypeError):
            container = None
            break
    return SpecError(msg, file=doc.file, line=doc.line(full), layer=name, layer_type=ltype,
                     field=_field_name(rel, container), hint=hint)


def _message(err: jsonschema.ValidationError, path: tuple, inst: Any, list_key: str | None):
    """(message, hint, extra path) for one non-property error."""
    v = err.validator
    hint = None
    extra: tuple = ()
    if v == "required":
        missing = [r for r in err.validator_value if not (isinstance(inst, dict) and r in inst)]
        key = missing[0] if missing else "?"
        msg = f"missing required field '{key}'"
        if isinstance(inst, dict) and key not in inst:
            extra = (key,)
    elif v == "type":
        want = err.validator_value
        wants = [want] if isinstance(want, str) else list(want)
        want_text = " or ".join(_JSON_TYPES.get(w, w) for w in wants)
        if inst is None:
            msg = f"expected {want_text}, but the value is empty"
            hint = ("write a value after the ':', or remove the key" if path and isinstance(path[-1], str)
                    else "write the item after the '-', or remove the '-'")
        else:
            msg = f"expected {want_text}, got {_json_type(inst)} {_show(inst)}"
        if "integer" in wants and isinstance(inst, float):
            hint = "write it without a decimal point"
        last = next((k for k in reversed(path) if isinstance(k, str)), None)
        if isinstance(inst, str) and "object" in wants:
            # the value a mapping would hold, written alone: name the mapping it belongs in
            if last in ("include", "exclude") and inst in T.PHASES:
                hint = f"write {last}: {{phase: {inst}}}"
            elif last is not None and last.endswith("filler") and inst in T.FILLER_TYPES:
                hint = f"write {last}: {{type: {inst}}}"
        if isinstance(inst, str) and any(w in ("number", "integer") for w in wants):
            try:
                float(inst)
                hint = "remove the quotes around the number"
            except ValueError:
                pass
    elif v == "enum":
        options = list(err.validator_value)
        if list_key and len(path) == 3 and path[0] == list_key and path[-1] == "type":
            sug = suggestion(str(inst), options)
            msg = f"unknown layer type {_show(inst)}" + sug
            if not sug:
                hint = "'netspec schema --types' lists every type"
        else:
            msg = f"{_show(inst)} is not one of {', '.join(map(str, options))}" + suggestion(str(inst), options)
    elif v == "const":
        if path == ("netspec",):
            msg = (f"format version {_show(inst)} is not supported; this netspec reads version "
                   f"{err.validator_value} (omit the key to mean the current version)")
        else:
            msg = f"must be {_show(err.validator_value)}, got {_show(inst)}"
    elif v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        msg = f"must be {op} {err.validator_value}, got {_show(inst)}"
    elif v == "minItems":
        n = err.validator_value
        msg = "must not be an empty list" if n == 1 else f"needs at least {n} items, got {len(inst)}"
    elif v == "maxItems":
        msg = f"allows at most {err.validator_value} items, got {len(inst)}"
    elif v == "minLength":
        msg = "must not be empty"
    elif v == "not" and isinstance(err.validator_value, dict) and "required" in err.validator_value:
        keys = err.validator_value["required"]
        msg = ("give include or exclude rules, not both" if keys == ["include", "exclude"]
               else f"give only one of {', '.join(keys)}")
        extra = (keys[-1],)
    elif v == "pattern":
        msg = f"{_show(inst)} does not match the expected form {err.validator_value}"
    elif v == "uniqueItems":
        msg = "items must be unique"
    else:
        msg = err.message
    return msg, hint, extra


__all__ = ["validate", "schema_errors", "validator_for", "ErrorList"]
