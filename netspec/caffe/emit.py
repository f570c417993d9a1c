"""Write converted nets and solvers as YAML that reads like the hand-written models, comments kept.

PyYAML cannot place comments, so the documents are assembled line by line here, and every
value is written in flow style by ``flow``: plain words where YAML reads them back as the same
string, double quotes (JSON escapes, which YAML shares) otherwise; floats always with a dot
before an exponent so every YAML reader sees a float.  A layer goes on one line when it fits
and has no comments inside, else one field per line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import yaml

WIDTH = 100
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./\-]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"}


def fmt_float(x: float) -> str:
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    r = repr(float(x))
    if "e" in r:
        mant, exp = r.split("e")
        if "." not in mant:
            mant += ".0"
        if exp[0] not in "+-":
            exp = "+" + exp
        r = f"{mant}e{exp}"
    return r


def fmt_str(s: str) -> str:
    if _PLAIN.fullmatch(s) and s.lower() not in _RESERVED:
        try:
            if yaml.safe_load(f"[{s}]") == [s]:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s, ensure_ascii=False)


def flow(v) -> str:
    """One value in YAML flow style."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return fmt_float(v)
    if isinstance(v, str):
        return fmt_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{fmt_str(str(k))}: {flow(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as YAML")


def comment_lines(comments: list[str], indent: str) -> list[str]:
    return [f"{indent}#{c}" if c else f"{indent}#" for c in comments]


@dataclass
class Item:
    """A mapping entry or a list item, with the comments to write around it."""

    fields: dict
    comments: list[str] = field(default_factory=list)              # above it
    key_comments: dict[str, list[str]] = field(default_factory=dict)   # above one of its keys
    key_trailing: dict[str, str] = field(default_factory=dict)         # after one of its keys


def list_item(item: Item, indent: str, width: int = WIDTH, force_block: bool = False) -> list[str]:
    """A mapping as an item of a block list: ``- {a: 1, b: 2}`` or one key per line."""
    out = comment_lines(item.comments, indent)
    one = f"{indent}- {flow(item.fields)}"
    if not force_block and not item.key_comments and not item.key_trailing and len(one) <= width:
        return out + [one]
    first = True
    for k, v in item.fields.items():
        lead = f"{indent}- " if first else f"{indent}  "
        out.extend(comment_lines(item.key_comments.get(k, []), indent if first else f"{indent}  "))
        line = f"{lead}{fmt_str(str(k))}: {flow(v)}"
        if k in item.key_trailing:
            line += f"  #{item.key_trailing[k]}"
        out.append(line)
        first = False
    return out


def mapping_lines(item: Item, indent: str = "") -> list[str]:
    """A top-level mapping, one key per line, comments above and after keys."""
    out = comment_lines(item.comments, indent)
    for k, v in item.fields.items():
        out.extend(comment_lines(item.key_comments.get(k, []), indent))
        line = f"{indent}{fmt_str(str(k))}: {flow(v)}"
        if k in item.key_trailing:
            line += f"  #{item.key_trailing[k]}"
        out.append(line)
    return out


def net_document(header: list[str], top: Item, layers: list[Item], footer: list[str] | None = None,
                 indent: str = "") -> str:
    """A net file: header comments, top-level fields, then ``layers:`` one item each."""
    lines = comment_lines(header, indent)
    lines += mapping_lines(top, indent)
    lines.append(f"{indent}layers:")
    for it in layers:
        lines += list_item(it, indent + "  ")
    lines += comment_lines(footer or [], indent)
    return "\n".join(lines) + "\n"
