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


EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


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
    binary = ("is not a text file (netspec reads YAML or JSON net and solver files; weights are "
              "given with --weights, and Caffe .prototxt files are converted with 'netspec convert')")
    if b"\x00" in raw:  # valid UTF-8, but no text file holds NUL bytes
        raise SpecError(binary, file=name, line=raw[: raw.index(b"\x00")].count(b"\n") + 1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(binary.replace("is not a text file", "is not UTF-8 text (a binary file?)"),
                        file=name, line=raw[: e.start].count(b"\n") + 1) from None
    return load_text(text, file=name, base_dir=p.resolve().parent, json_only=p.suffix.lower() == ".json")


def load_text(text: str, file: str = "<string>", base_dir: Path | None = None, json_only: bool = False) -> Doc:
    """Parse YAML (or JSON, which is read the same way) from a string."""
    if json_only:
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise _json_error(e, text, file) from None
        except RecursionError:
            raise SpecError("JSON syntax error: the brackets nest too deeply (more than Python can read; net "
                            "files nest a few levels)", file=file, line=1) from None
    if not text.strip():
        raise SpecError("the file is empty", file=file, line=1)
    _check_nesting(text, file)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text, file) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file holds no data (only comments?)", file=file, line=1)
        lines: dict[Path_, int] = {}
        data = _construct(loader, node, (), lines, file)
    except RecursionError:
        raise SpecError(f"the brackets or indented blocks nest too deeply (more than Python can read; net files "
                        f"nest a few levels)", file=file, line=1) from None
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text, file) from None
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e, file, text) from None
    except yaml.YAMLError as e:  # unmarked errors are rare; still no traceback
        raise SpecError(f"YAML error: {e}", file=file) from None
    finally:
        loader.dispose()
    return Doc(data=data, lines=lines, file=file, base_dir=base_dir)


def _reader_error(e: yaml.reader.ReaderError, text: str, file: str) -> SpecError:
    """A control character YAML refuses (a binary file, or a stray byte pasted in), at its line."""
    pos = e.position if isinstance(e.position, int) else 0
    line = text.count("\n", 0, pos) + 1
    return SpecError(f"YAML syntax error: the control character U+{e.character:04X} is not allowed in a YAML file "
                     f"(a binary file, or a stray byte?)" if isinstance(e.character, int) else f"YAML error: {e}",
                     file=file, line=line, column=pos - text.rfind("\n", 0, pos))


def _check_nesting(text: str, file: str) -> None:
    """Refuse brackets nested deeper than MAX_DEPTH before PyYAML sees them: its scanner takes
    time quadratic in the depth (thousands of '[' take minutes) before any error could be raised."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for ln, row in enumerate(text.split("\n")):
        quote = None
        for col, ch in enumerate(row):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'" and (col == 0 or row[col - 1] in " \t[{,:"):
                quote = ch
            elif ch == "#" and (col == 0 or row[col - 1] in " \t"):
                break
            elif ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError(f"brackets nest more than {MAX_DEPTH} levels deep here (net files nest a "
                                    f"few levels; an unclosed '{ch}' repeated?)", file=file, line=ln + 1,
                                    column=col + 1)
            elif ch in "]}" and depth:
                depth -= 1


def _json_error(e: json.JSONDecodeError, text: str, file: str) -> SpecError:
    """Python's JSON message, with the two commonest slips named: a trailing comma, and
    single quotes (JSON strings take double quotes)."""
    msg = e.msg
    before = text[: e.pos].rstrip()
    here = text[e.pos: e.pos + 1]
    if before.endswith(",") and here in "]}" and here:
        msg = f"a ',' before '{here}' (JSON allows no trailing comma)"
        k = len(before) - 1
        return SpecError(f"JSON syntax error: {msg}", file=file, line=text.count("\n", 0, k) + 1,
                         column=k - text.rfind("\n", 0, k))
    if here == "'":
        msg += " (JSON strings take double quotes)"
    return SpecError(f"JSON syntax error: {msg}", file=file, line=e.lineno, column=e.colno)


# A net file a person writes has a few thousand values nested a few levels deep.  Aliases can
# make a short file expand to billions of values (each alias copies its anchor's whole tree),
# and brackets can nest deeper than Python's stack; both are refused with the line they reach.
MAX_VALUES = 200_000
MAX_DEPTH = 100


_PLAIN_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


def _construct(loader: _Loader, node: yaml.Node, path: Path_, lines: dict, file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    count = loader.__dict__["_values"] = loader.__dict__.get("_values", 0) + 1
    if count > MAX_VALUES:
        raise SpecError(f"the file expands to more than {MAX_VALUES:,} values (aliases '*name' that copy large "
                        f"anchored blocks many times over?)", file=file, line=node.start_mark.line + 1,
                        column=node.start_mark.column + 1)
    if len(path) > MAX_DEPTH:
        raise SpecError(f"values nest more than {MAX_DEPTH} levels deep (a recursive alias, or brackets that are "
                        f"never closed?)", file=file, line=node.start_mark.line + 1, column=node.start_mark.column + 1)
    plain = _PLAIN_TAGS.get(type(node))
    if plain is not None and node.tag != plain:
        # scalars with a foreign tag fail in construct_object; collections are built here,
        # so their tags (!!python/..., !!set, !!omap) are refused here
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise SpecError(f"YAML syntax error: the tag {tag} is not allowed; net files hold plain data "
                        f"(maps, lists, numbers, strings)", file=file, line=node.start_mark.line + 1,
                        column=node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        merged = _flatten(loader, node)
        out: dict = {}
        explicit: dict = {}
        for k, (key_node, value_node) in enumerate(node.value):
            key = loader.construct_object(key_node, deep=True)
            kline = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)):
                raise SpecError("a mapping key must be a plain name", file=file, line=kline)
            # Keys brought in by a '<<' merge come first and may be overridden (that is what a
            # merge is for); a key written twice by hand is a mistake YAML would hide.
            if k >= merged:
                if key in explicit:
                    raise SpecError(
                        f"key '{key}' appears twice in the same mapping (the first was on line "
                        f"{explicit[key]}); YAML keeps only one, so remove or rename one",
                        file=file,
                        line=kline,
                    )
                explicit[key] = kline
            if key in out:  # an overridden merged value leaves no stale lines behind
                for p in [p for p in lines if p[: len(path) + 1] == path + (key,)]:
                    del lines[p]
            lines[path + (key,)] = kline
            out[key] = _construct(loader, value_node, path + (key,), lines, file)
            lines[path + (key,)] = kline  # the key's line, not the value's first line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _flatten(loader: _Loader, node: yaml.MappingNode) -> int:
    """Resolve '<<: *anchor' merges in place; return how many leading pairs came from merges.

    An anchored mapping is visited once per alias, so the count is remembered per node.
    """
    memo = loader.__dict__.setdefault("_merged", {})
    if id(node) not in memo:
        explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
        loader.flatten_mapping(node)
        memo[id(node)] = len(node.value) - explicit
    return memo[id(node)]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous_content(lines: list[str], index: int) -> str | None:
    """The nearest line above ``index`` that holds more than blanks or a comment."""
    for k in range(index - 1, -1, -1):
        if lines[k].strip() and not lines[k].lstrip().startswith("#"):
            return lines[k]
    return None


def _owner_key(lines: list[str], index: int) -> tuple[str, int] | None:
    """(key, 0-based line) of the block key ('key:' alone on its line) that holds line ``index``."""
    target = lines[index] if index < len(lines) else ""
    ind = _indent(target)
    for k in range(index - 1, -1, -1):
        row = lines[k]
        if not row.strip() or row.lstrip().startswith("#"):
            continue
        if _indent(row) < ind:
            body = row.split(" #", 1)[0].strip()
            if body.startswith("- "):
                body = body[2:].strip()
            if body.endswith(":") and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*:", body):
                # only a key whose value is this indented block (the block's first line follows it)
                return body[:-1], k
            return None
    return None


def _unclosed_bracket(text: str, end_line: int, end_col: int) -> tuple[str, int, int] | None:
    """The innermost '[' or '{' still open at (end_line, end_col): (char, line, column), 0-based.

    Quotes and comments are skipped, so brackets inside strings do not count.
    """
    stack: list[tuple[str, int, int]] = []
    for ln, row in enumerate(text.splitlines()):
        if ln > end_line:
            break
        quote = None
        for col, ch in enumerate(row):
            if ln == end_line and col >= end_col:
                break
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#" and (col == 0 or row[col - 1] in " \t"):
                break
            elif ch in "[{":
                stack.append((ch, ln, col))
            elif ch in "]}" and stack:
                stack.pop()
    return stack[-1] if stack else None


def _yaml_error(e: yaml.MarkedYAMLError, file: str, text: str) -> SpecError:
    """One clear sentence for PyYAML's parser messages, located where the mistake is."""
    mark = e.problem_mark or e.context_mark
    problem = (e.problem or e.context or "syntax error").strip()
    if mark is None:  # PyYAML marks every parser error; keep a plain message if one is not
        return SpecError(f"YAML syntax error: {problem}", file=file)
    line, column = mark.line + 1, mark.column + 1
    context = e.context or ""
    hint = None
    text_lines = text.splitlines()
    bad_line = text_lines[mark.line] if mark.line < len(text_lines) else ""
    if "\t" in problem or "'\\t'" in problem or "\t" in bad_line[: mark.column + 1]:
        problem = "a tab character; YAML indentation must use spaces"
        hint = "replace the tabs with spaces"
    elif context.startswith("while parsing a flow") and e.context_mark is not None:
        opener, oline, ocol = "[" if "sequence" in context else "{", e.context_mark.line, e.context_mark.column
        if "flow node" in context:  # PyYAML marks the empty value, not the bracket; find it
            found = _unclosed_bracket(text, mark.line, mark.column)
            if found is not None:
                opener, oline, ocol = found
        closer = "]" if opener == "[" else "}"
        got = problem.split("but found", 1)[-1].split("but got", 1)[-1].strip()
        problem = (f"the '{opener}' opened here is never closed (at line {line} found {got} "
                   f"where ',' or '{closer}' was expected)")
        line, column = oline + 1, ocol + 1
    elif "escape character" in problem:
        ch = problem.split("'")[1] if "'" in problem else "?"
        problem = f"'\\{ch}' is not an escape sequence in a double-quoted string"
        hint = "use single quotes, or write the backslash twice"
    elif "quoted scalar" in context and e.context_mark is not None:
        problem = f"the quoted string opened here is never closed ({problem} at line {line})"
        line, column = e.context_mark.line + 1, e.context_mark.column + 1
    elif "but found ']'" in problem or "but found '}'" in problem:
        closer = "]" if "']'" in problem else "}"
        problem = f"a '{closer}' that closes nothing (no matching '{'[' if closer == ']' else '{'}' before it)"
    elif "expected <block end>" in problem:
        prev = _previous_content(text_lines, mark.line)
        hint = "indent the keys of one mapping, and the '-' items of one list, by the same number of spaces"
        owner = _owner_key(text_lines, mark.line)
        if bad_line.lstrip().startswith("-") and prev is not None and not prev.lstrip().startswith("-"):
            problem = ("a '-' list item among the keys of a mapping; a list belongs under a key ('key:' on "
                       "the line above, the items indented below it)")
            if owner is not None:   # the key whose value is both a mapping and a list is the mistake
                problem = (f"the value of '{owner[0]}' is a mapping (its keys start on line {owner[1] + 2}) but "
                           f"line {line} adds a '-' list item to it; " + problem)
                line, column = owner[1] + 1, None
        elif prev is not None and prev.lstrip().startswith("-") and _indent(prev) == _indent(bad_line) \
                and not bad_line.lstrip().startswith("-"):
            item = prev.lstrip()[1:]
            key_col = _indent(prev) + 2 + len(item) - len(item.lstrip(" "))
            problem = (f"bad indentation: this line starts at the column of the '-' above it; a key of that "
                       f"list item must line up with the item's first key (column {key_col})")
        else:
            above = f" (the line above starts at column {_indent(prev) + 1})" if prev is not None else ""
            problem = (f"bad indentation: this line starts at column {_indent(bad_line) + 1}, which lines up "
                       f"with no block above it{above}")
    elif "mapping values are not allowed" in problem:
        prev = _previous_content(text_lines, mark.line)
        if prev is not None and ":" not in prev and not prev.lstrip().startswith(("-", "[", "{")) and \
                _indent(prev) <= _indent(bad_line):
            problem = (f"the line above this one ('{prev.strip()[:40]}') is not 'key: value', so this key "
                       f"reads as part of its value")
            hint = "remove the stray text, or add the missing ':'"
        elif prev is not None and _indent(bad_line) > _indent(prev) and ":" in prev and \
                prev.split(":", 1)[1].strip() and not prev.rstrip().endswith(("[", "{", ",")):
            problem = (f"bad indentation: this line is indented more than the line above it (column "
                       f"{_indent(bad_line) + 1}, not {_indent(prev) + 1}), so it reads as part of that line's value")
            hint = "align it with the keys above"
            column = _indent(bad_line) + 1
        else:
            problem = "a ':' followed by a space inside a value"
            hint = "put the value in quotes, or check the indentation of this key"
    elif "could not find expected ':'" in problem and e.context_mark is not None:
        key_line = text_lines[e.context_mark.line] if e.context_mark.line < len(text_lines) else ""
        problem = f"'{key_line.strip()[:40]}' has no ':' (a key is written 'key: value')"
        line, column = e.context_mark.line + 1, e.context_mark.column + 1
        hint = "add the ':' and the value, or remove the stray text"
    elif "duplicate anchor" in context and e.context_mark is not None:
        name = context.split("'")[1] if "'" in context else "?"
        problem = (f"the anchor &{name} is defined twice (first on line {e.context_mark.line + 1}); "
                   f"give each anchor its own name")
    elif "while scanning an alias" in context or "while scanning an anchor" in context:
        sign = "*" if "alias" in context else "&"
        problem = f"'{sign}' must be followed by a name ({sign}name)"
        hint = f"put the value in quotes if a '{sign}' was meant"
    elif "<document start>" in problem:
        prev = _previous_content(text_lines, mark.line)
        problem = "a mapping starts here after a value that ends above it" + (
            f" ('{prev.strip()[:40]}')" if prev is not None else "")
        hint = "remove the stray text above, or add its missing ':'"
    elif "expected the node content" in problem:
        found = problem.split("but found", 1)[-1].strip()
        problem = f"{found} where a key or a value was expected"
    elif "undefined alias" in problem:
        name = problem.split("'")[1] if "'" in problem else "?"
        problem = f"the alias *{name} refers to no anchor: define '&{name}' on a value above it"
    elif "could not determine a constructor" in problem:
        tag = problem.split("tag", 1)[-1].strip().strip("'").replace("tag:yaml.org,2002:", "!!")
        problem = f"the tag {tag} is not allowed; net files hold plain data (maps, lists, numbers, strings)"
    elif "expected a single document" in context:
        problem = "a second YAML document ('---'); a net file holds one document"
    elif "cannot start any token" in problem:
        ch = problem.split("'")[1] if "'" in problem else "?"
        problem = f"'{ch}' cannot start a plain value"
        hint = "put the value in quotes"
    elif context and problem and "expected" in problem:
        problem = f"{context}, {problem}"
    return SpecError(f"YAML syntax error: {problem}", file=file, line=line, column=column, hint=hint)
