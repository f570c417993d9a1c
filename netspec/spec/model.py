"""The in-memory net: plain dicts that remember which file and line each field came from.

``LayerSpec`` and ``NetSpec`` are ``dict`` subclasses, so every compiler pass reads and writes
ordinary mappings (and fixtures compare them with ``==``), while ``.src`` keeps the location
that error messages need.  Passes never mutate their input: they build new specs with
``LayerSpec.derive`` / ``NetSpec.with_layers``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from netspec.errors import NetspecError


@dataclass(frozen=True)
class Src:
    """Where a mapping came from: its file and the lines of its fields (paths relative to it)."""

    file: str | None = None
    lines: Mapping[tuple, int] = field(default_factory=dict)

    def line(self, *path) -> int | None:
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def moved(self, mapping: Mapping[tuple, tuple]) -> "Src":
        """A copy where the lines of ``old`` paths are also known under ``new`` paths."""
        lines = dict(self.lines)
        for new, old in mapping.items():
            for p, ln in self.lines.items():
                if p[: len(old)] == old:
                    lines.setdefault(new + p[len(old):], ln)
        return Src(self.file, lines)


NO_SRC = Src()


class LayerSpec(dict):
    """One layer's fields (a plain mapping) plus ``src``: where it was written."""

    __slots__ = ("src",)

    def __init__(self, fields: Mapping[str, Any] = (), src: Src = NO_SRC):
        super().__init__(fields)
        self.src = src

    @property
    def name(self) -> str:
        return self.get("name", "?")

    @property
    def type(self) -> str:
        return self.get("type", "?")

    def derive(self, **changes) -> "LayerSpec":
        """A new LayerSpec with some fields replaced (a value of ``None`` removes the field)."""
        d = copy.deepcopy(dict(self))
        for k, v in changes.items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
        return LayerSpec(d, self.src)

    def line(self, *path) -> int | None:
        return self.src.line(*path)

    def error(self, cls: type[NetspecError], message: str, field: str | None = None,
              path: Iterable | None = None, hint: str | None = None) -> NetspecError:
        """An error located at this layer's ``field`` (or at ``path`` inside it)."""
        p = tuple(path) if path is not None else ((field,) if field else ())
        return cls(message, file=self.src.file, line=self.src.line(*p), layer=self.get("name"),
                   layer_type=self.get("type"), field=field, hint=hint)

    def __deepcopy__(self, memo):
        return LayerSpec(copy.deepcopy(dict(self), memo), self.src)

    def __reduce__(self):
        return (LayerSpec, (dict(self), self.src))


class NetSpec(dict):
    """A whole net: top-level fields, ``layers`` (a list of LayerSpec), and where it came from."""

    __slots__ = ("src", "base_dir")

    def __init__(self, fields: Mapping[str, Any] = (), src: Src = NO_SRC, base_dir: Path | None = None):
        super().__init__(fields)
        self.src = src
        self.base_dir = base_dir

    @property
    def layers(self) -> list[LayerSpec]:
        return self.get("layers", [])

    @property
    def file(self) -> str | None:
        return self.src.file

    def with_layers(self, layers: Iterable[LayerSpec], **changes) -> "NetSpec":
        d = {k: copy.deepcopy(v) for k, v in self.items() if k != "layers"}
        d.update(changes)
        d["layers"] = list(layers)
        out = NetSpec(d, self.src, self.base_dir)
        return out

    def error(self, cls: type[NetspecError], message: str, field: str | None = None,
              hint: str | None = None) -> NetspecError:
        return cls(message, file=self.src.file, line=self.src.line(field) if field else None,
                   field=field, hint=hint)

    def __deepcopy__(self, memo):
        return NetSpec(copy.deepcopy(dict(self), memo), self.src, self.base_dir)

    def __reduce__(self):
        return (NetSpec, (dict(self), self.src, self.base_dir))


def as_list(value) -> list:
    """``x`` -> ``[x]``, ``[x, y]`` -> ``[x, y]``, missing -> ``[]``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def to_plain(obj: Any) -> Any:
    """Strip LayerSpec/NetSpec wrappers: nested plain dicts and lists, for dumping and tests."""
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
