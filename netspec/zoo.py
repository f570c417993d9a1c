"""The model zoo, as far as training needs it: resolve ``zoo:<name>`` to a verified weights file.

An entry is a folder ``<name>/`` holding ``manifest.yaml`` (at least ``weights:``, a file
beside it, and ``sha256:`` of that file).  Entries are looked up in the built-in ``zoo/``
folder, then in each folder of ``$NETSPEC_ZOO`` (``os.pathsep``-separated).  The weights are
checked against the manifest's sha256 before anything loads them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from netspec.errors import ZooError, suggestion

PREFIX = "zoo:"
BUILTIN = Path(__file__).resolve().parent.parent / "zoo"


def locations() -> list[Path]:
    out = [BUILTIN]
    for part in os.environ.get("NETSPEC_ZOO", "").split(os.pathsep):
        if part:
            out.append(Path(part).expanduser())
    return out


def entries() -> dict[str, Path]:
    """Every entry name -> its folder (the first location that has it wins)."""
    found: dict[str, Path] = {}
    for loc in locations():
        if loc.is_dir():
            for d in sorted(loc.iterdir()):
                if (d / "manifest.yaml").is_file():
                    found.setdefault(d.name, d)
    return found


def is_zoo_ref(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(ref: str) -> Path:
    """``zoo:<name>`` -> the entry's weights file, after verifying its sha256."""
    import yaml

    name = ref[len(PREFIX):] if is_zoo_ref(ref) else ref
    known = entries()
    if name not in known:
        where = ", ".join(str(p) for p in locations())
        raise ZooError(f"no zoo entry named '{name}'" + suggestion(name, known),
                       hint=f"looked in {where}; 'netspec zoo list' shows the entries")
    folder = known[name]
    manifest = folder / "manifest.yaml"
    try:
        info = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ZooError(f"cannot read the manifest: {e}", file=str(manifest)) from None
    if not isinstance(info, dict) or not info.get("weights"):
        raise ZooError("the manifest names no weights file (weights: <file>)", file=str(manifest))
    weights = folder / str(info["weights"])
    if not weights.is_file():
        raise ZooError(f"the weights file {info['weights']} of zoo entry '{name}' is missing", file=str(manifest))
    want = str(info.get("sha256", "")).lower()
    if not want:
        raise ZooError(f"zoo entry '{name}' has no sha256 to verify its weights against", file=str(manifest))
    got = file_sha256(weights)
    if got != want:
        raise ZooError(f"the weights of zoo entry '{name}' fail verification: sha256 {got}, the manifest "
                       f"says {want} (a partial download or a modified file?)", file=str(manifest))
    return weights
