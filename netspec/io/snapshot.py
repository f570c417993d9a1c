"""Snapshot files: ``<prefix>_iter_<N>.safetensors`` (weights) and
``<prefix>_iter_<N>.solverstate.safetensors`` (everything needed to resume bit for bit).

The state file is self-contained, unlike Caffe's (which stores a path to the weights): it
holds the params in their training dtype (``param/<layer>/<param>``), the update rule's
state (``rule/<state>/<layer>/<param>``), and, in the safetensors metadata, one JSON record
(``netspec``: iteration, current_step, rule, every RNG state, every layer's ``get_state()``,
the loss window, elapsed time) plus the resolved net and solver text (``net``, ``solver``) and
their sha256.  Arrays inside RNG or layer states are stored as tensors (``layer/...``) and
referred to from the JSON by name.  Both files are written atomically; the state file is
written last, so a state file always has its weights file beside it (retention removes the
state first, for the same reason).

``retain`` keeps the newest ``snapshot_keep`` snapshots of a prefix; ``stale_temps`` finds the
temporary files of snapshot writes whose process was killed; ``latest_loadable`` is what
``--resume latest`` takes: the newest state file that reads back whole.
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
from netspec.io import atomic
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
    except (json.JSONDecodeError, RecursionError):
        raise WeightsError("is corrupt: its state record is not valid JSON", file=name) from None
    if not isinstance(record, dict) or not isinstance(record.get("version", 0), int):
        raise WeightsError("is corrupt: its state record is not a mapping with an integer version", file=name)
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


def loadable_states(folders: list[Path]) -> list[Path]:
    """Every state file, newest first (the order ``latest_state`` picks in)."""
    return sorted(find_states(folders), key=lambda p: (p.stat().st_mtime_ns, iteration_of(p) or 0), reverse=True)


def latest_loadable(folders: list[Path]) -> tuple[Path, tuple, list[WeightsError]] | None:
    """The newest state file that reads back whole: (its path, what ``read_state`` returned,
    the errors of newer ones that did not read); None when there is no state file at all.
    Atomic writes mean a state file under its final name is whole, but a file copied in by
    hand, or a file system that lost data in a power cut, may not be; the run then goes on
    from the snapshot before it instead of stopping.  When none reads, the newest one's error
    is raised."""
    states = loadable_states(folders)
    if not states:
        return None
    errors: list[WeightsError] = []
    for p in states:
        try:
            return p, read_state(p), errors
        except WeightsError as e:
            errors.append(e)
    raise errors[0]


# ---- retention and leftovers ---------------------------------------------------------------

def _files_re(prefix: Path) -> re.Pattern:
    return re.compile(rf"^{re.escape(prefix.name)}_iter_(\d+)(\.solverstate)?\.safetensors$")


def snapshot_files(prefix: str | os.PathLike) -> dict[int, list[Path]]:
    """The snapshot files of ``prefix`` (``<prefix>_iter_<N>.safetensors`` and its state),
    by iteration."""
    prefix = Path(prefix)
    pat = _files_re(prefix)
    out: dict[int, list[Path]] = {}
    if not prefix.parent.is_dir():
        return out
    for p in prefix.parent.iterdir():
        m = pat.match(p.name)
        if m and p.is_file():
            out.setdefault(int(m.group(1)), []).append(p)
    return out


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


def retain(prefix: str | os.PathLike, keep: int, current: int) -> tuple[list[Path], list[int], list[str]]:
    """Keep the ``keep`` most recently written snapshots of ``prefix`` (always the one of
    iteration ``current``, just written) and remove every other file of that prefix: older
    snapshots and weights files whose state was never written.  "Most recent" is the order
    ``--resume latest`` uses (write time, then iteration), so a run resumed from an older
    snapshot keeps what it writes now, not what it is about to overwrite.

    Returns (the files removed, the iterations kept, newest first, and an error line per file
    that could not be removed)."""
    prefix = Path(prefix)
    groups = snapshot_files(prefix)
    complete = [it for it, files in groups.items() if any(f.name.endswith(STATE_SUFFIX) for f in files)]

    def written(it: int) -> tuple[int, int]:
        state = [f for f in groups[it] if f.name.endswith(STATE_SUFFIX)]
        return _mtime(state[0]), it

    order = sorted((it for it in complete if it != current), key=written, reverse=True)
    kept = ([current] if current in groups else []) + order
    kept = kept[:max(keep, 1)]
    removed: list[Path] = []
    failed: list[str] = []
    for it in sorted(set(groups) - set(kept)):
        # the state first: a state file always has its weights file beside it
        for f in sorted(groups[it], key=lambda f: not f.name.endswith(STATE_SUFFIX)):
            try:
                f.unlink()
                removed.append(f)
            except FileNotFoundError:
                pass
            except OSError as e:
                failed.append(f"{f}: {e.strerror}")
    return removed, kept, failed


#: the final names of snapshot files (any prefix)
SNAPSHOT_NAME = re.compile(r"_iter_\d+(\.solverstate)?\.safetensors$")


def stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of snapshot writes in ``folder`` whose writer is no longer running."""
    return atomic.stale_temps(folder, SNAPSHOT_NAME)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove what ``stale_temps`` finds; returns what was removed."""
    out = []
    for p in stale_temps(folder):
        try:
            p.unlink()
            out.append(p)
        except OSError:
            pass    # another process swept it, or the folder is read-only: never taken anyway
    return out
