"""Every error a user can cause, located in the file that caused it.

A ``NetspecError`` carries the file, line, layer and field it is about, and renders as one
paragraph: ``lenet.yaml:21: layer 'conv1' (Convolution), field 'kernel_size': ...``.  The CLI
prints ``str(err)`` and exits 1; no traceback ever reaches a user for one of these.
"""

from __future__ import annotations

import difflib
import os
from typing import Iterable, Sequence


class NetspecError(Exception):
    """Base of every user-facing error."""

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike | None = None,
        line: int | None = None,
        column: int | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.file = os.fspath(file) if file is not None else None
        self.line = line
        self.column = column
        self.layer = layer
        self.layer_type = layer_type
        self.field = field
        self.hint = hint

    @property
    def location(self) -> str:
        if self.file is None:
            return ""
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return loc

    def __str__(self) -> str:
        parts = []
        if self.location:
            parts.append(self.location + ":")
        subject = []
        if self.layer is not None:
            subject.append(f"layer '{self.layer}'" + (f" ({self.layer_type})" if self.layer_type else ""))
        if self.field is not None:
            subject.append(f"field '{self.field}'")
        if subject:
            parts.append(", ".join(subject) + ":")
        parts.append(self.message)
        text = " ".join(parts)
        if self.hint:
            text += f" ({self.hint})"
        return text

    def sort_key(self):
        return (self.file or "", self.line or 0, self.column or 0, self.message)


class SpecError(NetspecError):
    """The text of a file is malformed: syntax, types, ranges, unknown names."""


class GraphError(NetspecError):
    """The layers do not connect: unknown bottoms, duplicate producers, wrong arity."""


class ShapeError(NetspecError):
    """Shapes do not fit: a kernel larger than its input, mismatched batches."""


class DataError(NetspecError):
    """A dataset is missing, corrupt, or does not match the net."""


class WeightsError(NetspecError):
    """A weights or snapshot file is missing, corrupt, or does not match the net."""


class SolverError(NetspecError):
    """A solver configuration cannot be run, or training cannot go on."""


class DeviceError(NetspecError):
    """A device that was asked for cannot be used: no driver, no package, no such GPU."""


class ZooError(NetspecError):
    """A model-zoo entry is missing, corrupt, or fails verification."""


class PluginError(NetspecError):
    """A user plugin file cannot be loaded or breaks the layer contract."""


class ErrorList(NetspecError):
    """Several errors found in one pass, reported together, sorted by position."""

    def __init__(self, errors: Sequence[NetspecError]):
        errs = sorted(_flatten(errors), key=NetspecError.sort_key)
        self.errors = errs
        first = errs[0] if errs else None
        super().__init__(
            "\n".join(str(e) for e in errs),
            file=first.file if first else None,
            line=first.line if first else None,
        )

    def __str__(self) -> str:
        lines = [str(e) for e in self.errors]
        if len(lines) > 1:
            files = sorted({e.file for e in self.errors if e.file})
            where = f" in {', '.join(files)}" if files else ""
            lines.append(f"{len(lines)} errors{where}")
        return "\n".join(lines)


def _flatten(errors: Iterable[NetspecError]) -> list[NetspecError]:
    out: list[NetspecError] = []
    for e in errors:
        if isinstance(e, ErrorList):
            out.extend(e.errors)
        else:
            out.append(e)
    return out


def raise_all(errors: Sequence[NetspecError]) -> None:
    """Raise the one error, or all of them together; do nothing for none."""
    if not errors:
        return
    if len(errors) == 1 and not isinstance(errors[0], ErrorList):
        raise errors[0]
    raise ErrorList(errors)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a mistyped word, or None when nothing is close.

    Case differences alone always match (``max`` -> ``MAX``); otherwise difflib's ratio picks
    the nearest name above a similarity threshold.
    """
    cands = [c for c in candidates if isinstance(c, str)]
    if not isinstance(word, str) or not cands:
        return None
    lowered = {c.lower(): c for c in cands}
    if word.lower() in lowered:
        return lowered[word.lower()]
    simple = {c.lower().replace("_", ""): c for c in cands}
    if word.lower().replace("_", "") in simple:
        return simple[word.lower().replace("_", "")]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def suggestion(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` or an empty string."""
    best = did_you_mean(word, candidates)
    return f"; did you mean '{best}'?" if best is not None and best != word else ""
