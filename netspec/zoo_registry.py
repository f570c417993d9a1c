"""The zoo's registry: where entries live, their manifests (``MANIFEST_SCHEMA``), and
``zoo:<name>`` references resolved to weights whose sha256 was checked.

The lower half of ``netspec.zoo``: training (``netspec.solvers.run``) resolves ``zoo:<name>``
weights through this module, and ``netspec.zoo`` (which evaluates and re-trains entries, so it
imports the training code) re-exports it; the import arrow runs one way.  Nothing here imports
numba or the training code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import ZooError, suggestion

PREFIX = "zoo:"
MANIFEST = "manifest.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
TASKS = ("classification", "reconstruction", "regression", "other")


# ---- the manifest schema -------------------------------------------------------------------

def _s(desc: str, **extra) -> dict:
    return {"type": "string", "minLength": 1, "description": desc, **extra}


def _metrics(desc: str) -> dict:
    return {"type": "object", "description": desc, "minProperties": 1,
            "additionalProperties": {"type": "number"}}


MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "netspec zoo manifest",
    "description": "A trained model in the netspec zoo: zoo/<name>/manifest.yaml. File names are relative "
                   "to the manifest's folder.",
    "type": "object",
    "properties": {
        "netspec": {"const": 1, "description": "format version (optional: the current one)"},
        "name": _s("the entry's name, as in zoo:<name>; the same as its folder's name", pattern=NAME_PATTERN),
        "description": _s("what the model is and what it is for"),
        "task": {"type": "string", "enum": list(TASKS), "description": "what the model's output means"},
        "input": {
            "type": "object",
            "description": "what the model reads",
            "properties": {
                "blob": _s("the input blob of the deploy net"),
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                          "description": "one sample's shape, e.g. [1, 28, 28]"},
                "preprocessing": {"type": "object", "description": "the data layer's transform, as in the net "
                                  "file (scale, mean_value, crop_size, ...): apply it to raw samples"},
                "classes": {"type": "array", "items": {"type": "string"}, "description": "class names by index"},
            },
            "additionalProperties": False,
        },
        "net": _s("the net file the model was trained with"),
        "solver": _s("the solver file of its recipe (netspec zoo reproduce trains it)"),
        "weights": _s("the weights file (safetensors, keys <layer>/<param>)"),
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                   "description": "sha256 of the weights file, checked on every load"},
        "dataset": {
            "type": "object",
            "description": "the data sources of training and evaluation",
            "properties": {"train": _s("the training data source"), "test": _s("the evaluation data source")},
            "additionalProperties": False,
        },
        "metrics": _metrics("the TEST-phase outputs measured with evaluation.command (output name -> mean)"),
        "evaluation": {
            "type": "object",
            "description": "how the metrics were measured",
            "properties": {
                "command": _s("the command that measured the metrics and re-measures them"),
                "iterations": {"type": "integer", "minimum": 1, "description": "test batches (a full pass)"},
                "stage": {"type": ["string", "array"], "items": {"type": "string", "minLength": 1},
                          "description": "the TEST net's stages"},
                "level": {"type": "integer", "description": "the TEST net's level"},
                "tolerance": {"type": "number", "minimum": 0,
                              "description": "allowed |measured - recorded| / max(1, |recorded|)"},
            },
            "additionalProperties": False,
        },
        "training": {
            "type": "object",
            "description": "how the weights were trained",
            "properties": {
                "command": _s("the command that re-trains the model from its recipe"),
                "iterations": {"type": "integer", "minimum": 0},
                "seed": {"type": "integer", "description": "the run's random_seed"},
                "seconds": {"type": "number", "minimum": 0,
                            "description": "the time of the training loop (its tests included)"},
                "threads": {"type": "integer", "minimum": 1, "description": "compute threads of the run"},
                "machine": _s("where it ran"),
                "tolerance": {"type": "number", "minimum": 0,
                              "description": "allowed difference of a re-trained model's metrics"},
            },
            "additionalProperties": False,
        },
        "baseline": {
            "type": "object",
            "description": "the same recipe trained from the fillers (no init_from), for a fine-tuned model",
            "properties": {
                "description": _s("what the baseline is"),
                "command": _s("the command that trains and measures it"),
                "iterations": {"type": "integer", "minimum": 0},
                "seed": {"type": "integer"},
                "metrics": _metrics("its TEST-phase outputs, measured as the entry's"),
            },
            "required": ["metrics"],
            "additionalProperties": False,
        },
        "licence": _s("the licence of the weights (and of the data they were trained on)"),
        "parent": {"type": ["string", "null"], "description": "the zoo entry it was fine-tuned from"},
        "netspec_version": _s("the netspec version that trained it"),
    },
    "required": ["name", "weights", "sha256"],
    "additionalProperties": False,
}


def schema_text() -> str:
    return json.dumps(MANIFEST_SCHEMA, indent=1) + "\n"


def committed_schema_path() -> Path:
    return Path(__file__).resolve().parent / "spec" / "schemas" / "manifest.schema.json"


# ---- where entries live ----------------------------------------------------------------------

def builtin_dir() -> Path:
    """The zoo shipped with netspec: ``netspec/_zoo`` in a wheel, else the repository's ``zoo/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "_zoo"
    return packaged if packaged.is_dir() else here.parent / "zoo"


BUILTIN = builtin_dir()


def user_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "netspec" / "zoo"


def sources() -> list[tuple[str, Path]]:
    """(label, folder) of every zoo location, in lookup order."""
    out = [("built-in", builtin_dir())]
    for part in os.environ.get("NETSPEC_ZOO", "").split(os.pathsep):
        if part:
            out.append(("$NETSPEC_ZOO", Path(part).expanduser()))
    out.append(("user", user_dir()))
    return out


def locations() -> list[Path]:
    return [p for _, p in sources()]


@dataclass
class Found:
    name: str
    folder: Path
    source: str                     # built-in | $NETSPEC_ZOO | user
    shadowed_by: Path | None = None


def scan() -> list[Found]:
    """Every entry folder in every location, in lookup order; later ones with a name already
    seen are marked as shadowed."""
    out: list[Found] = []
    first: dict[str, Path] = {}
    for label, loc in sources():
        if not loc.is_dir():
            continue
        for d in sorted(loc.iterdir()):
            if (d / MANIFEST).is_file():
                out.append(Found(d.name, d, label, first.get(d.name)))
                first.setdefault(d.name, d)
    return out


def entries() -> dict[str, Path]:
    """Every entry name -> its folder (the first location that has it wins)."""
    return {f.name: f.folder for f in scan() if f.shadowed_by is None}


def is_zoo_ref(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def ref_name(ref: str) -> str:
    return ref[len(PREFIX):] if is_zoo_ref(ref) else ref


# ---- manifests -------------------------------------------------------------------------------

@dataclass
class Entry:
    """A zoo entry whose manifest passed the schema."""

    name: str
    folder: Path
    data: dict
    file: str                       # the manifest, as shown in messages
    lines: dict = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def path(self, key: str) -> Path:
        """The file a manifest field names (net, solver, weights), in the entry's folder."""
        value = self.data.get(key)
        if not value:
            raise self.error(f"zoo entry '{self.name}' names no {key} file ({key}: <file>)", key)
        return self.folder / str(value)

    def line(self, key: str) -> int | None:
        return self.lines.get((key,))

    def error(self, message: str, key: str | None = None, hint: str | None = None) -> ZooError:
        return ZooError(message, file=self.file, line=self.line(key) if key else None, hint=hint)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.data.get("metrics") or {})

    @property
    def evaluation(self) -> dict:
        return dict(self.data.get("evaluation") or {})


def find(name: str) -> Path:
    """The folder of entry ``name`` (or of ``zoo:name``); a ZooError with a suggestion if none."""
    name = ref_name(name)
    known = entries()
    if name not in known:
        where = ", ".join(str(p) for p in locations())
        raise ZooError(f"no zoo entry named '{name}'" + suggestion(name, known),
                       hint=f"looked in {where}; 'netspec zoo list' shows the entries")
    return known[name]


def load_entry(name_or_folder: str | os.PathLike, check_name: bool = True) -> Entry:
    """Read and check an entry's manifest (a name, or a folder given as a Path): every schema
    error at once, each with file:line."""
    from netspec.spec.load import load_file
    from netspec.spec.validate import schema_errors
    from netspec.errors import raise_all

    folder = Path(name_or_folder) if isinstance(name_or_folder, Path) else find(str(name_or_folder))
    doc = load_file(folder / MANIFEST)
    if not isinstance(doc.data, dict):
        raise ZooError("a manifest holds a mapping of fields (name: ..., weights: ..., sha256: ...)",
                       file=doc.file, line=1)
    sha = doc.data.get("sha256")
    if isinstance(sha, (int, float)) and not isinstance(sha, bool) and doc.line(("sha256",)):
        # an unquoted hash of digits only is a number to YAML (000... is 0): take the text as written
        text = (folder / MANIFEST).read_text(encoding="utf-8").splitlines()[doc.line(("sha256",)) - 1]
        doc.data["sha256"] = text.split(":", 1)[1].split("#", 1)[0].strip()
    errors = schema_errors(doc, MANIFEST_SCHEMA, list_key=None)
    for e in errors:
        e.message = e.message.replace("unknown top-level key", "unknown manifest field")
        if e.field == "sha256" and "expected form" in e.message:
            e.message = e.message.split(" does not match")[0] + " is not a sha256: 64 hex digits in lower case"
        elif e.field == "name" and "expected form" in e.message:
            e.message = e.message.split(" does not match")[0] + (" is not a valid entry name: letters, digits, "
                                                                 "'.', '_' and '-', starting with a letter or digit")
    raise_all(errors)
    entry = Entry(folder.name, folder, doc.data, doc.file, doc.lines)
    if check_name and doc.data["name"] != folder.name:
        raise entry.error(f"the manifest names the entry '{doc.data['name']}' but its folder is '{folder.name}'; "
                          f"zoo:<name> finds entries by folder, so make them the same", "name")
    return entry


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_weights(entry: Entry) -> Path:
    """The entry's weights file, after checking that it exists and matches the manifest's sha256."""
    weights = entry.path("weights")
    if not weights.is_file():
        raise entry.error(f"the weights file {entry.data['weights']} of zoo entry '{entry.name}' is missing",
                          "weights")
    want = str(entry.data["sha256"]).lower()
    got = file_sha256(weights)
    if got != want:
        raise entry.error(f"the weights of zoo entry '{entry.name}' fail verification: sha256 {got}, the manifest "
                          f"says {want} (a partial download or a modified file?)", "sha256",
                          hint="restore the file, or re-package the run with 'netspec zoo add'")
    return weights


def resolve_weights(ref: str) -> Path:
    """``zoo:<name>`` -> the entry's weights file, after verifying its sha256."""
    return verify_weights(load_entry(ref_name(ref)))
