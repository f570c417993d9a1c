"""Read a YAML or JSON file into plain Python data plus a map from each path to its line.

The map lets every later stage say ``model.yaml:21`` about a field it found wrong.  YAML is
read with PyYAML's safe loader, two changes made: ``1e-4`` is a float (YAML 1.1 wants
``1.0e-4``, a trap for everyone who writes learning rates), and a key given twice in one
mapping is an error instead of a silent overwrite.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netspec.errors import SpecError

Path_ = tuple  # a path into the document: ("layers", 3, "kernel_size")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads exponent floats without a dot."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class Doc:
    """A loaded file: its data, where each part of it was, and the file's name and folder."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    file: str = "<string>"
    base_dir: Path | None = None

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def sub_lines(self, prefix: Path_) -> dict[Path_, int]:
        """The line map below ``prefix``, with ``prefix`` stripped from each path."""
        n = len(prefix)
        return {p[n:]: ln for p, ln in self.lines.items() if p[:n] == tuple(prefix)}


def display_name(path: str | os.PathLike) -> str:
    """A path as the user would recognise it: relative to the working folder when inside it."""
    p = Path(path)
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return rel if not rel.startswith("..") else str(p)


def load_file(path: str | os.PathLike) -> Doc:
    """Load a YAML or JSON file; every failure is a located SpecError."""
    p = Path(path)
    name = display_name(p)
    if not p.exists():
        raise SpecError("no such file", file=name)
    if p.is_dir():
        raise SpecError("is a folder, expected a YAML or JSON file", file=name)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror}", file=name) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(
            "is not UTF-8 text (is it a binary file? netspec reads YAML or JSON net and solver "
            "files; Caffe .prototxt files are converted with 'netspec convert')",
            file=name,
            line=line,
        ) from None
    return load_text(text, file=name, base_dir=p.resolve().parent, json_only=p.suffix.lower() == ".json")


def load_text(text: str, file: str = "<string>", base_dir: Path | None = None, json_only: bool = False) -> Doc:
    """Parse YAML (or JSON, which is read the same way) from a string."""
    if json_only:
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"JSON syntax error: {e.msg}", file=file, line=e.lineno, column=e.colno) from None
    if not text.strip():
        raise SpecError("the file is empty", file=file, line=1)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file holds no data (only comments?)", file=file, line=1)
        lines: dict[Path_, int] = {}
        data = _construct(loader, node, (), lines, file)
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e, file, text) from None
    except yaml.YAMLError as e:  # unmarked errors are rare; still no traceback
        raise SpecError(f"YAML error: {e}", file=file) from None
    finally:
        loader.dispose()
    return Doc(data=data, lines=lines, file=file, base_dir=base_dir)


def _construct(loader: _Loader, node: yaml.Node, path: Path_, lines: dict, file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves '<<: *anchor' merges
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            kline = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)):
                raise SpecError("a mapping key must be a plain name", file=file, line=kline)
            if key in out:
                raise SpecError(
                    f"key '{key}' appears twice in the same mapping (the first was on line "
                    f"{lines.get(path + (key,), '?')}); YAML keeps only one, so remove or rename one",
                    file=file,
                    line=kline,
                )
            lines[path + (key,)] = kline
            out[key] = _construct(loader, value_node, path + (key,), lines, file)
            lines[path + (key,)] = kline  # the key's line, not the value's first line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _yaml_error(e: yaml.MarkedYAMLError, file: str, text: str) -> SpecError:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    problem = (e.problem or e.context or "syntax error").strip()
    hint = None
    bad_line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
    if "\t" in problem or "'\\t'" in problem or ("\t" in bad_line[: (mark.column + 1 if mark else 0)]):
        problem = "a tab character; YAML indentation must use spaces"
        hint = "replace the tabs with spaces"
    elif e.context and e.context.startswith("while parsing a flow") and e.context_mark is not None:
        opener = "[" if "sequence" in e.context else "{"
        closer = "]" if opener == "[" else "}"
        got = e.problem.split("but found", 1)[-1].split("but got", 1)[-1].strip()
        problem = (f"the '{opener}' opened here is never closed (at line {line} found {got} "
                   f"where ',' or '{closer}' was expected)")
        line, column = e.context_mark.line + 1, e.context_mark.column + 1
    elif e.context and "quoted scalar" in e.context and e.context_mark is not None:
        problem = f"the quoted string opened here is never closed ({e.problem} at line {line})"
        line, column = e.context_mark.line + 1, e.context_mark.column + 1
    elif e.context and e.problem and "expected" in e.problem:
        problem = f"{e.context}, {e.problem}"
    elif "mapping values are not allowed" in problem:
        hint = "a ':' inside a value needs quotes, or a key is indented wrongly"
    return SpecError(f"YAML syntax error: {problem}", file=file, line=line, column=column, hint=hint)
