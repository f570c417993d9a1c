"""The protobuf text format as Caffe writes it (``.prototxt``), read without the protobuf package.

Two steps.  ``parse`` turns text into a generic tree of ``Entry`` (a field name with a scalar,
a ``{ }`` block or a ``[ ]`` list), keeping every comment and the line and column of every
token.  ``interpret`` then reads a tree as one of Caffe's messages (``netspec.caffe.messages``):
unknown fields, enum values that do not exist, values of the wrong type and singular fields
given twice are reported together, each at its line and column.  Every failure is a
``SpecError`` located as ``file:line:column``.

What is accepted is what protobuf's own text parser accepts: ``#`` comments; ``name { ... }``
and ``name: { ... }`` (and ``< >`` as braces); ``name: value``; ``name: [v1, v2]`` for repeated
fields; ``;`` or ``,`` after a field; enums as bare identifiers or their numbers; integers in
decimal, hex and octal; floats with exponents, an ``f`` suffix, ``inf``, ``-inf`` and ``nan``;
strings in double or single quotes with C escapes, adjacent strings joined.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from netspec.caffe import messages as M
from netspec.errors import SpecError, raise_all, suggestion


# ---- tokens ---------------------------------------------------------------------------------

@dataclass
class Comment:
    line: int
    text: str                      # without the leading '#', right-stripped


@dataclass
class Token:
    kind: str                      # ident, number, string, symbol, eof
    text: str                      # the source text (a string's decoded value for kind string)
    line: int
    col: int
    end_line: int
    leading: list[Comment] = field(default_factory=list)
    trailing: Comment | None = None


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"0[xX][0-9A-Fa-f]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[fF]?")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
                   "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def tokenize(text: str, file: str) -> list[Token]:
    """The tokens of ``text``; each comment is attached to the token it describes."""
    toks: list[Token] = []
    pending: list[Comment] = []
    i, n, line, line_start = 0, len(text), 1, 0

    def err(msg: str, ln: int, col: int, hint: str | None = None) -> SpecError:
        return SpecError(msg, file=file, line=ln, column=col, hint=hint)

    while i < n:
        c = text[i]
        if c == "\n":
            i += 1
            line += 1
            line_start = i
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        col = i - line_start + 1
        if c == "#":
            end = text.find("\n", i)
            end = n if end < 0 else end
            cm = Comment(line, text[i + 1:end].rstrip())
            if toks and toks[-1].end_line == line and not pending:
                toks[-1].trailing = cm
            else:
                pending.append(cm)
            i = end
            continue
        if c in "{}<>[]:;,-":
            toks.append(Token("symbol", c, line, col, line, pending))
            pending = []
            i += 1
            continue
        if c in "\"'":
            value, i = _read_string(text, i, file, line, col)
            toks.append(Token("string", value, line, col, line, pending))
            pending = []
            continue
        m = _NUMBER.match(text, i) if (c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit())) else None
        if m:
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] == "_"):
                stop = end
                while stop < n and (text[stop].isalnum() or text[stop] in "_."):
                    stop += 1
                raise err(f"'{text[i:stop]}' is not a number", line, col)
            toks.append(Token("number", m.group(), line, col, line, pending))
            pending = []
            i = end
            continue
        m = _IDENT.match(text, i)
        if m:
            toks.append(Token("ident", m.group(), line, col, line, pending))
            pending = []
            i = m.end()
            continue
        raise err(f"unexpected character {c!r}", line, col)
    toks.append(Token("eof", "", line, i - line_start + 1, line, pending))
    return toks


def _read_string(text: str, i: int, file: str, line: int, col: int) -> tuple[str, int]:
    """Decode the quoted string starting at ``text[i]``; return (value, index after it)."""
    quote = text[i]
    out = []
    j = i + 1
    n = len(text)
    while True:
        if j >= n or text[j] == "\n":
            raise SpecError(f"this string has no closing {quote} (a string ends on the line it starts)",
                            file=file, line=line, column=col)
        c = text[j]
        if c == quote:
            return "".join(out), j + 1
        if c != "\\":
            out.append(c)
            j += 1
            continue
        if j + 1 >= n:
            raise SpecError(f"this string has no closing {quote}", file=file, line=line, column=col)
        e = text[j + 1]
        ecol = col + (j - i)
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            j += 2
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", text[j + 1:j + 4])
            out.append(chr(int(m.group(), 8)))
            j += 1 + len(m.group())
        elif e in "xX":
            m = re.match(r"[0-9A-Fa-f]{1,2}", text[j + 2:j + 4])
            if not m:
                raise SpecError("'\\x' must be followed by hex digits", file=file, line=line, column=ecol)
            out.append(chr(int(m.group(), 16)))
            j += 2 + len(m.group())
        elif e in "uU":
            width = 4 if e == "u" else 8
            digits = text[j + 2:j + 2 + width]
            if not re.fullmatch(r"[0-9A-Fa-f]{%d}" % width, digits):
                raise SpecError(f"'\\{e}' must be followed by {width} hex digits", file=file, line=line,
                                column=ecol)
            out.append(chr(int(digits, 16)))
            j += 2 + width
        else:
            raise SpecError(f"unknown escape '\\{e}' in a string", file=file, line=line, column=ecol,
                            hint="write '\\\\' for a backslash")


# ---- the generic tree -----------------------------------------------------------------------

@dataclass
class Scalar:
    kind: str                      # ident, number, string
    text: str                      # as written (with a leading '-' when negative); decoded for strings
    line: int
    col: int


@dataclass
class Block:
    entries: list["Entry"]
    line: int                      # of the opening brace
    col: int
    end_comments: list[Comment] = field(default_factory=list)


@dataclass
class Entry:
    name: str
    value: Scalar | Block | list   # a list for the [a, b] form
    line: int
    col: int
    comments: list[Comment] = field(default_factory=list)     # the lines just above it
    trailing: Comment | None = None                             # after it, on its last line
    head: Comment | None = None                                 # after its '{', on that line


MAX_DEPTH = 100


class _Parser:
    def __init__(self, toks: list[Token], file: str):
        self.toks = toks
        self.i = 0
        self.file = file
        self.depth = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, msg: str, tok: Token, hint: str | None = None) -> SpecError:
        return SpecError(msg, file=self.file, line=tok.line, column=tok.col, hint=hint)

    @staticmethod
    def describe(tok: Token) -> str:
        if tok.kind == "eof":
            return "the end of the file"
        if tok.kind == "string":
            return "a string"
        return f"'{tok.text}'"

    def block(self, opener: Token | None, owner: str | None) -> Block:
        close = {"{": "}", "<": ">"}.get(opener.text) if opener else None
        if opener is not None:
            self.depth += 1
            if self.depth > MAX_DEPTH:   # protobuf's own text parser stops at 100 levels too
                raise self.error(f"blocks nest more than {MAX_DEPTH} levels deep here (Caffe messages nest a few "
                                 f"levels; an unclosed '{opener.text}' repeated?)", opener)
        try:
            return self._block(opener, owner, close)
        finally:
            if opener is not None:
                self.depth -= 1

    def _block(self, opener: Token | None, owner: str | None, close: str | None) -> Block:
        entries: list[Entry] = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if opener is not None:
                    raise self.error(f"the '{opener.text}' of '{owner}' opened here is never closed "
                                     f"(the file ends at line {tok.line})", opener)
                return Block(entries, 1, 1, tok.leading)
            if tok.kind == "symbol" and tok.text in "}>":
                if opener is None:
                    raise self.error(f"unexpected '{tok.text}': no block is open here", tok)
                if tok.text != close:
                    raise self.error(f"'{opener.text}' (line {opener.line}) is closed with '{tok.text}'", tok)
                self.take()
                return Block(entries, opener.line, opener.col, tok.leading)
            entries.append(self.entry())

    def entry(self) -> Entry:
        name = self.take()
        if name.kind == "symbol" and name.text == "[":
            raise self.error("extension fields ([name]) are not supported", name)
        if name.kind != "ident":
            raise self.error(f"expected a field name, found {self.describe(name)}", name)
        colon = False
        if self.peek().kind == "symbol" and self.peek().text == ":":
            self.take()
            colon = True
        tok = self.peek()
        e = Entry(name.text, None, name.line, name.col, list(name.leading))
        if tok.kind == "symbol" and tok.text in "{<":
            self.take()
            e.head = tok.trailing
            e.value = self.block(tok, name.text)
            e.trailing = self.toks[self.i - 1].trailing
        elif tok.kind == "symbol" and tok.text == "[" and colon:
            self.take()
            e.value = self.list_value(tok, name.text)
            e.trailing = self.toks[self.i - 1].trailing
        elif colon:
            e.value = self.scalar()
            e.trailing = self.toks[self.i - 1].trailing
        else:
            raise self.error(f"expected ':' or '{{' after the field name '{name.text}', found "
                             f"{self.describe(tok)}", tok)
        nxt = self.peek()
        if nxt.kind == "symbol" and nxt.text in ";,":
            self.take()
            e.trailing = e.trailing or nxt.trailing
        return e

    def list_value(self, opener: Token, owner: str) -> list:
        items: list = []
        if self.peek().kind == "symbol" and self.peek().text == "]":
            self.take()
            return items
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                raise self.error(f"the '[' of '{owner}' opened here is never closed", opener)
            if tok.kind == "symbol" and tok.text in "{<":
                self.take()
                items.append(self.block(tok, owner))
            else:
                items.append(self.scalar())
            tok = self.take()
            if tok.kind == "symbol" and tok.text == "]":
                return items
            if not (tok.kind == "symbol" and tok.text == ","):
                raise self.error(f"expected ',' or ']' in the list of '{owner}', found {self.describe(tok)}",
                                 tok if tok.kind != "eof" else opener)

    def scalar(self) -> Scalar:
        tok = self.take()
        if tok.kind == "symbol" and tok.text == "-":
            num = self.take()
            if num.kind == "number" or (num.kind == "ident" and num.text.lower() in ("inf", "infinity", "nan")):
                return Scalar(num.kind, "-" + num.text, tok.line, tok.col)
            raise self.error(f"'-' must be followed by a number, found {self.describe(num)}", num)
        if tok.kind == "string":
            text = tok.text
            while self.peek().kind == "string":   # adjacent literals are one string: "ab" "cd"
                text += self.take().text
            return Scalar("string", text, tok.line, tok.col)
        if tok.kind in ("ident", "number"):
            return Scalar(tok.kind, tok.text, tok.line, tok.col)
        raise self.error(f"expected a value, found {self.describe(tok)}", tok)


def parse(text: str, file: str = "<string>") -> Block:
    """The generic tree of a text-format file (syntax only; no message type needed)."""
    p = _Parser(tokenize(text, file), file)
    return p.block(None, None)


# ---- typed messages -------------------------------------------------------------------------

@dataclass
class Meta:
    """Where one value of a field was written, and the comments around it."""

    line: int
    col: int
    comments: list[Comment] = field(default_factory=list)
    trailing: Comment | None = None
    head: Comment | None = None
    origin: str | None = None      # the Caffe field this value came from, when an upgrade moved it


class Msg(dict):
    """One message read from a prototxt: field -> value (a list for repeated fields).

    ``meta[field]`` holds one ``Meta`` per value, in order; ``order`` lists (field, index) in
    the order they were written; ``line``/``col`` locate the message itself.
    """

    def __init__(self, type_: str, line: int = 0, col: int = 0):
        super().__init__()
        self.type = type_
        self.line = line
        self.col = col
        self.meta: dict[str, list[Meta]] = {}
        self.order: list[tuple[str, int]] = []
        self.end_comments: list[Comment] = []

    def where(self, name: str, index: int = 0) -> tuple[int, int]:
        """(line, column) of a field's value; the message's own position when it is absent."""
        m = self.meta.get(name)
        if m:
            mm = m[min(index, len(m) - 1)]
            return mm.line, mm.col
        return self.line, self.col

    def first_meta(self, name: str) -> Meta | None:
        m = self.meta.get(name)
        return m[0] if m else None

    def add(self, name: str, value: Any, meta: Meta, repeated: bool) -> None:
        if repeated:
            self.setdefault(name, []).append(value)
            self.order.append((name, len(self[name]) - 1))
        else:
            self[name] = value
            self.order.append((name, 0))
        self.meta.setdefault(name, []).append(meta)

    def remove(self, name: str) -> None:
        """Drop a field, its positions and its place in ``order``."""
        self.pop(name, None)
        self.meta.pop(name, None)
        self.order = [(n, i) for n, i in self.order if n != name]


_BOOLS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}


def interpret(block: Block, message: str, file: str = "<string>") -> Msg:
    """Read a generic tree as a Caffe message; every type error is reported, together."""
    errors: list[SpecError] = []
    msg = _interpret(block, message, file, errors)
    raise_all(errors)
    return msg


def _interpret(block: Block, message: str, file: str, errors: list[SpecError]) -> Msg:
    fields = M.MESSAGES[message]
    out = Msg(message, block.line, block.col)
    out.end_comments = list(block.end_comments)
    first_line: dict[str, int] = {}
    for e in block.entries:
        f = fields.get(e.name)
        if f is None:
            errors.append(SpecError(f"unknown field '{e.name}' in {message}" + suggestion(e.name, fields),
                                    file=file, line=e.line, column=e.col))
            continue
        if f.type == "V0LayerParameter":
            errors.append(SpecError("this is a V0 layer definition (Caffe before 2014), which netspec does not "
                                    "read", file=file, line=e.line, column=e.col,
                                    hint="upgrade the file first with Caffe's upgrade_net_proto_text"))
            continue
        if not f.repeated and e.name in first_line:
            errors.append(SpecError(f"'{e.name}' is given twice (first on line {first_line[e.name]}); it takes "
                                    f"one value", file=file, line=e.line, column=e.col))
            continue
        first_line.setdefault(e.name, e.line)
        values = e.value if isinstance(e.value, list) else [e.value]
        if isinstance(e.value, list) and not f.repeated:
            errors.append(SpecError(f"'{e.name}' takes one value, not a list", file=file, line=e.line,
                                    column=e.col))
            continue
        for k, v in enumerate(values):
            meta = Meta(e.line, e.col, e.comments if k == 0 else [], e.trailing, e.head)
            if isinstance(v, Block):
                meta.line, meta.col = (e.line, e.col) if k == 0 else (v.line, v.col)
                if not f.is_message:
                    errors.append(SpecError(f"'{e.name}' takes a value ({e.name}: ...), not a {{ }} block",
                                            file=file, line=e.line, column=e.col))
                    continue
                sub = _interpret(v, f.type, file, errors)
                sub.line, sub.col = meta.line, meta.col
                out.add(e.name, sub, meta, f.repeated)
                continue
            if k > 0:
                meta.line, meta.col = v.line, v.col
            if f.is_message:
                errors.append(SpecError(f"'{e.name}' is a {f.type} message: write {e.name} {{ ... }}",
                                        file=file, line=v.line, column=v.col))
                continue
            try:
                out.add(e.name, scalar_value(v, f), meta, f.repeated)
            except SpecError as err:
                err.file = file
                errors.append(err)
    return out


def scalar_value(v: Scalar, f: M.Field) -> Any:
    """The Python value of a scalar token for a field of type ``f.type``."""
    def bad(msg: str, hint: str | None = None) -> SpecError:
        return SpecError(msg, line=v.line, column=v.col, field=f.name, hint=hint)

    shown = f'"{v.text}"' if v.kind == "string" else v.text
    t = f.type
    if t in ("string", "bytes"):
        if v.kind != "string":
            hint = None
            if f.name == "type" and v.kind == "ident":
                hint = (f'in layer {{ }} the type is a quoted name ("{M.V1_TYPES.get(v.text, v.text)}"); '
                        f"upper-case types belong to the legacy layers {{ }} form")
            raise bad(f"expected a quoted string, found {shown}", hint)
        return v.text
    if t == "bool":
        if v.kind == "ident" and v.text in _BOOLS:
            return _BOOLS[v.text]
        if v.kind == "number" and v.text in ("0", "1"):
            return v.text == "1"
        raise bad(f"expected true or false, found {shown}")
    if t in ("int", "uint"):
        if v.kind != "number" or not _is_int_literal(v.text):
            raise bad(f"expected an integer, found {shown}")
        n = _int_value(v.text)
        if t == "uint" and n < 0:
            raise bad(f"must not be negative, found {v.text}")
        return n
    if t in ("float", "double"):
        if v.kind == "number":
            if _is_int_literal(v.text):
                return _int_value(v.text)   # kept as written: lr_mult: 1 stays 1
            return float(v.text.rstrip("fF"))
        if v.kind == "ident" and v.text.lstrip("-").lower() in ("inf", "infinity", "nan"):
            word = v.text.lstrip("-").lower()
            value = math.nan if word == "nan" else math.inf
            return -value if v.text.startswith("-") else value
        raise bad(f"expected a number, found {shown}")
    enum = M.ENUMS[t]
    if v.kind == "ident" and v.text in enum:
        return v.text
    if v.kind == "number" and _is_int_literal(v.text):
        name = M.enum_name(t, _int_value(v.text))
        if name is not None:
            return name
    choices = ", ".join(enum)
    raise bad(f"{shown} is not a value of {f.name}; expected one of {choices}"
              + (suggestion(v.text, enum) if v.kind == "ident" else ""))


def _is_int_literal(text: str) -> bool:
    body = text.lstrip("-")
    return bool(re.fullmatch(r"0[xX][0-9A-Fa-f]+|[0-9]+", body))


def _int_value(text: str) -> int:
    neg = text.startswith("-")
    body = text.lstrip("-")
    if body[:2] in ("0x", "0X"):
        n = int(body, 16)
    elif len(body) > 1 and body.startswith("0"):
        n = int(body, 8)     # protobuf reads a leading 0 as octal
    else:
        n = int(body)
    return -n if neg else n


def load(text: str, message: str, file: str = "<string>") -> Msg:
    """Parse and interpret ``text`` as a ``message`` (NetParameter, SolverParameter, ...)."""
    return interpret(parse(text, file), message, file)


def top_level_names(block: Block) -> Iterator[str]:
    for e in block.entries:
        yield e.name


__all__ = ["Block", "Comment", "Entry", "Meta", "Msg", "Scalar", "interpret", "load", "parse",
           "scalar_value", "tokenize", "top_level_names"]
