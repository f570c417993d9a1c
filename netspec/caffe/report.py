"""The coverage report of a conversion: what happened to every field of the Caffe file.

Each field read lands in one of these groups:
- ``mapped``: carried over (possibly renamed or reshaped: ``convolution_param.num_output`` ->
  ``num_output``, ``blobs_lr`` -> ``param.weight.lr_mult``);
- ``default``: not in the file, but Caffe's default differs from netspec's, so it is written out;
- ``renamed``: a layer name changed (netspec requires unique names within a phase);
- ``ignored``: dropped because it changes nothing netspec computes (``engine: CUDNN`` picks an
  implementation, ``backend: LMDB`` a reader), with why;
- ``unsupported``: dropped although Caffe would use it, with why;
- ``note``: something the user should know or do (point a data source at a dataset, ...).

``text()`` is what ``netspec convert`` prints on stderr; ``to_json()`` is what ``--report FILE``
writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from netspec.errors import NetspecError

STATUSES = ("mapped", "default", "renamed", "ignored", "unsupported", "note")


@dataclass
class Item:
    status: str
    where: str                     # "layer 'conv1' (Convolution)", "solver", "net"
    field: str | None = None       # the Caffe field path, e.g. convolution_param.engine
    to: str | None = None          # the netspec field it became (mapped, default, renamed)
    why: str | None = None
    file: str | None = None
    line: int | None = None

    def location(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file


class Report:
    def __init__(self, source: str, kind: str):
        self.source = source          # the Caffe file read
        self.kind = kind              # net, solver, weights, export
        self.output: str | None = None
        self.items: list[Item] = []
        self.summary: dict = {}       # kind-specific facts (layer counts, params, ...)
        self.children: list[Report] = []   # the nets a solver conversion wrote

    def add(self, status: str, where: str, field: str | None = None, *, to: str | None = None,
            why: str | None = None, file: str | None = None, line: int | None = None) -> None:
        assert status in STATUSES, status
        self.items.append(Item(status, where, field, to, why, file if file is not None else self.source, line))

    def mapped(self, where: str, field: str, to: str | None = None, line: int | None = None) -> None:
        self.add("mapped", where, field, to=to or field, line=line)

    def ignored(self, where: str, field: str, why: str, line: int | None = None) -> None:
        self.add("ignored", where, field, why=why, line=line)

    def unsupported(self, where: str, field: str, why: str, line: int | None = None) -> None:
        self.add("unsupported", where, field, why=why, line=line)

    def note(self, where: str, why: str, line: int | None = None, field: str | None = None) -> None:
        self.add("note", where, field, why=why, line=line)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for it in self.items:
            out[it.status] += 1
        return out

    def of(self, status: str) -> list[Item]:
        return [it for it in self.items if it.status == status]

    def text(self, verbose: bool = False) -> str:
        """The human report: a summary line, then every field that was not simply mapped."""
        c = self.counts()
        fields = c["mapped"] + c["default"] + c["ignored"] + c["unsupported"]
        head = f"{self.source}"
        if self.output:
            head += f" -> {self.output}"
        facts = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in self.summary.items()
                          if isinstance(v, (int, str)))
        lines = [f"converted {self.kind} {head}" + (f" ({facts})" if facts else "")]
        if fields and self.kind in ("weights", "export"):
            lines.append(f"  {c['mapped']} params copied")
        elif fields:
            lines.append(f"  {fields} fields: {c['mapped']} mapped, {c['default']} Caffe defaults written out, "
                         f"{c['ignored']} ignored, {c['unsupported']} unsupported")
        shown = STATUSES if verbose else ("default", "renamed", "ignored", "unsupported", "note")
        for status in shown:
            for it in self.of(status):
                loc = it.location()
                subject = it.where + (f" {it.field}" if it.field else "")
                if it.to and it.to != it.field and status in ("mapped", "default", "renamed"):
                    subject += f" -> {it.to}"
                lines.append(f"  {status:<11} " + (f"{loc}: " if loc else "") + subject
                             + (f": {it.why}" if it.why else ""))
        text = "\n".join(lines)
        for child in self.children:
            text += "\n" + child.text(verbose)
        return text

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "source": self.source, "output": self.output, "summary": self.summary,
            "counts": self.counts(), "items": [asdict(it) for it in self.items],
            "nets": [ch.to_json() for ch in self.children],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_json(), indent=1) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise NetspecError(f"cannot write the file: {e.strerror or e}", file=str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
