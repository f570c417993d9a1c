"""Snapshot files: ``<prefix>_iter_<N>.safetensors`` (weights) and
``<prefix>_iter_<N>.solverstate.safetensors`` (everything needed to resume bit for bit).

The state file is self-contained, unlike Caffe's (which stores a path to the weights): it
holds the params in their training dtype (``param/<layer>/<param>``), the update rule's
state (``rule/<state>/<layer>/<param>``), and, in the safetensors metadata, one JSON record
(``netspec``: iteration, current_step, rule, every RNG state, every layer's ``get_state()``,
the loss window, elapsed time) plus the resolved net and solver text (``net``, ``solver``) and
their sha256.  Arrays inside RNG or layer states are stored as tensors (``layer/...``) and
referred to from the JSON by name.  Both files are written atomically; the state file is
written last, so a state file always has its weights file beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from netspec.errors import WeightsError
from netspec.io.atomic import is_temp
from netspec.io.weights import read_safetensors, write_safetensors

STATE_FORMAT = "netspec-solverstate"
STATE_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".solverstate.safetensors"
_ITER = re.compile(r"_iter_(\d+)\.solverstate\.safetensors$")


def weights_path(prefix: str | os.PathLike, it: int) -> Path:
    return Path(f"{prefix}_iter_{it}{WEIGHTS_SUFFIX}")


def state_path(prefix: str | os.PathLike, it: int) -> Path:
    return Path(f"{prefix}_iter_{it}{STATE_SUFFIX}")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- JSON with arrays --------------------------------------------------------------------

def pack(obj: Any, prefix: str, tensors: dict[str, np.ndarray]) -> Any:
    """``obj`` as JSON data; numpy arrays move into ``tensors`` and leave ``{"__tensor__": key}``."""
    if isinstance(obj, np.ndarray):
        tensors[prefix] = np.ascontiguousarray(obj)
        return {"__tensor__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): pack(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [pack(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def unpack(obj: Any, tensors: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]].copy()
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


# ---- state files -------------------------------------------------------------------------

def write_state(path: str | os.PathLike, tensors: dict[str, np.ndarray], record: dict,
                net_text: str, solver_text: str) -> Path:
    record = dict(record, format=STATE_FORMAT, version=STATE_VERSION,
                  net_sha256=sha256(net_text), solver_sha256=sha256(solver_text))
    meta = {"format": STATE_FORMAT, "netspec": json.dumps(record), "net": net_text, "solver": solver_text}
    return write_safetensors(path, tensors, meta)


def read_state(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, str, str]:
    """(tensors, record, net text, solver text) of a state file."""
    tensors, meta = read_safetensors(path)
    from netspec.spec.load import display_name

    name = display_name(path)
    if meta.get("format") != STATE_FORMAT or "netspec" not in meta:
        hint = " (this is a weights file: resume from the .solverstate.safetensors beside it)" \
            if meta.get("format") == "netspec-weights" else ""
        raise WeightsError("is not a netspec solver state" + hint, file=name)
    try:
        record = json.loads(meta["netspec"])
    except json.JSONDecodeError:
        raise WeightsError("is corrupt: its state record is not valid JSON", file=name) from None
    if record.get("version", 0) > STATE_VERSION:
        raise WeightsError(f"was written by a newer netspec (state version {record.get('version')}); "
                           f"this one reads version {STATE_VERSION}", file=name)
    net_text, solver_text = meta.get("net", ""), meta.get("solver", "")
    if sha256(net_text) != record.get("net_sha256") or sha256(solver_text) != record.get("solver_sha256"):
        raise WeightsError("is corrupt: the stored net or solver does not match its sha256", file=name)
    return tensors, record, net_text, solver_text


def iteration_of(path: str | os.PathLike) -> int | None:
    m = _ITER.search(Path(path).name)
    return int(m.group(1)) if m else None


def find_states(folders: list[Path]) -> list[Path]:
    """Every state file under these folders (temporary files of interrupted writes excluded)."""
    out: list[Path] = []
    for d in folders:
        if d.is_dir():
            out.extend(p for p in d.rglob(f"*{STATE_SUFFIX}") if not is_temp(p) and p.is_file())
    return out


def latest_state(folders: list[Path]) -> Path | None:
    """The newest state file: the last written, then the highest iteration."""
    states = find_states(folders)
    if not states:
        return None
    return max(states, key=lambda p: (p.stat().st_mtime_ns, iteration_of(p) or 0))
