"""What the dashboard reads from run folders: which runs there are, their curves, solver, net and snapshots.

A run folder is a directory holding a ``log.jsonl`` (``netspec train`` writes one per run; see
``netspec/solvers/runlog.py``).  The folders named on the command line are either runs or trees of
runs (``runs/`` holds ``<net>/<timestamp>/``); they are walked again on every listing, without
following symbolic links, so a run started after the dashboard appears by itself.

Nothing here writes.  Every path a request names is resolved (symbolic links included) and must
stay inside one run folder, else it does not exist as far as the dashboard is concerned.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

LOG_JSONL = "log.jsonl"      # the names netspec.solvers.runlog writes (not imported: that pulls in
TRAIN_LOG = "train.log"      # nothing heavy, but the dashboard must stay a reader of folders only)
STATE_SUFFIX = ".solverstate.safetensors"
WEIGHTS_SUFFIX = ".safetensors"
MAX_DEPTH = 4                # runs/<net>/<timestamp> is depth 2; leave room for a folder of those
MAX_HEADER = 64 * 1024 * 1024
LIVE_SECONDS = 60.0          # a log written to this recently is a run that is still going
_ITER = re.compile(r"_iter_(\d+)\.(?:solverstate\.)?safetensors$")
_SNAPSHOT_LINE = re.compile(r"Snapshotting (?:solver state )?to safetensors file (.+)$")
_ENDINGS = {"Optimization Done.": "done", "Optimization stopped early.": "stopped"}


@dataclass(frozen=True)
class Run:
    id: str          # a hash of the real path: stable across listings, reveals nothing in the URL
    path: Path       # resolved
    name: str        # relative to the folder it was found under, for people


def run_id(path: Path) -> str:
    return hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:12]


def discover(roots: list[Path]) -> list[Run]:
    """Every run folder at or below the roots (depth <= MAX_DEPTH), newest log first."""
    found: dict[str, Run] = {}
    for root in roots:
        root = Path(os.path.realpath(root))
        if not root.is_dir():
            continue
        base_depth = len(root.parts)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            d = Path(dirpath)
            if LOG_JSONL in filenames and (d / LOG_JSONL).is_file() and not (d / LOG_JSONL).is_symlink():
                rel = d.relative_to(root)
                name = root.name if str(rel) == "." else f"{root.name}/{rel}"
                rid = run_id(d)
                found.setdefault(rid, Run(rid, d, name))
                dirnames[:] = []          # a run's own subfolders are not runs
                continue
            if len(d.parts) - base_depth >= MAX_DEPTH:
                dirnames[:] = []
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
    return sorted(found.values(), key=lambda r: (-_mtime(r.path / LOG_JSONL), r.name))


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def inside(run: Run, rel: str) -> Path | None:
    """The regular file ``rel`` names inside the run folder, or None (absent, or anywhere else:
    ``..``, an absolute path, a symbolic link that leads out, a NUL byte)."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or os.path.isabs(rel):
        return None
    if any(part in ("..", "") for part in rel.split("/")):
        return None
    target = Path(os.path.realpath(run.path / rel))
    try:
        target.relative_to(run.path)
    except ValueError:
        return None
    return target if target.is_file() else None


# ---- the log: records and the points they make --------------------------------------------

def read_records(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The records of ``log.jsonl`` from byte ``offset``, and the offset after the last whole line.

    A line still being written (no newline yet) is left for the next read; a line that is not a
    JSON object is skipped, as ``read_jsonl`` does.  A log shorter than ``offset`` was started
    again (the run folder reused): it is read from its start."""
    try:
        size = path.stat().st_size
    except OSError:
        return [], offset
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(size - offset)
    end = raw.rfind(b"\n")
    if end < 0:
        return [], offset
    out = []
    for line in raw[:end].split(b"\n"):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out, offset + end + 1


def chart_of(name: str) -> str:
    low = name.lower()
    if "acc" in low:
        return "accuracy"
    if "loss" in low:
        return "loss"
    return "other"


class Tracker:
    """Turns records into chart points, remembering the last display to measure throughput.

    A point is ``[chart, label, iteration, value]``; the charts are ``loss``, ``accuracy``,
    ``other`` (outputs named neither), ``lr`` and ``throughput`` (iterations per second between
    two displays of the train loss, from the run's own clock ``seconds``; an interval in which
    the test nets ran is left out, as its time is not training speed)."""

    def __init__(self, last_iter: int | None = None, last_seconds: float | None = None):
        self.last_iter = last_iter
        self.last_seconds = last_seconds
        self.tested = False      # a test since the last display: its time is not training speed

    def points(self, records: list[dict]) -> list[list]:
        out: list[list] = []
        for rec in records:
            it, name, value = rec.get("iter"), rec.get("name"), rec.get("value")
            if not isinstance(it, int) or isinstance(it, bool) or not isinstance(name, str):
                continue
            phase = rec.get("phase", "TRAIN")
            if phase == "TEST":
                self.tested = True
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                if phase == "TRAIN":
                    label = "train loss (smoothed)" if name == "smoothed_loss" else f"train {name}"
                else:
                    label = f"test#{rec.get('test_net', 0)} {name}"
                out.append([chart_of(name), label, it, float(value)])
            if phase == "TRAIN" and name == "smoothed_loss":
                lr = rec.get("lr")
                if isinstance(lr, (int, float)) and math.isfinite(lr):
                    out.append(["lr", "learning rate", it, float(lr)])
                sec = rec.get("seconds")
                if isinstance(sec, (int, float)):
                    if self.last_iter is not None and it > self.last_iter and sec > self.last_seconds \
                            and not self.tested:
                        out.append(["throughput", "iterations/s", it,
                                    round((it - self.last_iter) / (sec - self.last_seconds), 3)])
                    self.last_iter, self.last_seconds, self.tested = it, float(sec), False
        return out

    # the polling cursor carries the tracker, so a client that polls gets the same points
    def cursor(self, offset: int) -> str:
        if self.last_iter is None:
            return str(offset)
        return f"{offset}_{self.last_iter}_{int(self.tested)}_{self.last_seconds!r}"

    @staticmethod
    def from_cursor(text: str | None) -> tuple[int, "Tracker"]:
        """A cursor from ``cursor()``; anything else starts from the beginning of the log."""
        if not text:
            return 0, Tracker()
        parts = text.split("_", 3)
        try:
            offset = max(0, int(parts[0]))
            if len(parts) == 4:
                t = Tracker(int(parts[1]), float(parts[3]))
                t.tested = parts[2] == "1"
                if math.isfinite(t.last_seconds):
                    return offset, t
            elif len(parts) == 1:
                return offset, Tracker()
        except ValueError:
            pass
        return 0, Tracker()


# ---- train.log: how the run stands, where its snapshots went -------------------------------

_parsed: dict[str, tuple[tuple, dict, str | None]] = {}   # train.log -> ((mtime, size), facts, ending)


def log_facts(run: Run) -> dict:
    """Status (running / done / stopped / failed / ended), the last line, snapshot paths named.

    ``ended`` is a run whose log stopped without a last word (killed) for LIVE_SECONDS."""
    text_path = run.path / TRAIN_LOG
    try:
        st = text_path.stat()
        key = (st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    cached = _parsed.get(str(text_path))
    if cached is not None and cached[0] == key:
        facts, ending = dict(cached[1]), cached[2]
    else:
        facts, ending = _parse_train_log(text_path)
        if len(_parsed) > 256:
            _parsed.clear()
        _parsed[str(text_path)] = (key, dict(facts), ending)
    age = time.time() - max(_mtime(run.path / LOG_JSONL), _mtime(text_path))
    facts["status"] = ending if ending is not None else ("running" if age < LIVE_SECONDS else "ended")
    facts["age_seconds"] = round(age, 1)
    return facts


def _parse_train_log(text_path: Path) -> tuple[dict, str | None]:
    facts: dict = {"last_line": "", "snapshots_logged": [], "error": None}
    lines: list[str] = []
    try:
        with open(text_path, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip("\n") for ln in f]
    except OSError:
        pass
    ending = None
    for ln in lines:
        msg = ln.split("netspec] ", 1)[1] if "netspec] " in ln else ln
        m = _SNAPSHOT_LINE.search(msg)
        if m:
            facts["snapshots_logged"].append(m.group(1).strip())
        if msg in _ENDINGS:
            ending = _ENDINGS[msg]
        elif msg.startswith("error: "):
            ending, facts["error"] = "failed", msg[len("error: "):]
        elif msg.startswith("Solving "):
            ending = None       # a resumed run starts again in the same folder
    if lines:
        last = lines[-1]
        facts["last_line"] = last.split("netspec] ", 1)[1] if "netspec] " in last else last
    return facts, ending


def summary(run: Run) -> dict:
    """What the runs list shows: name, status, the last iteration and values."""
    records, _ = read_records(run.path / LOG_JSONL)
    last_iter = max((r["iter"] for r in records if isinstance(r.get("iter"), int)), default=None)
    latest: dict[str, float] = {}
    for r in records:
        if isinstance(r.get("name"), str) and isinstance(r.get("value"), (int, float)):
            key = r["name"] if r.get("phase", "TRAIN") == "TRAIN" else f"test#{r.get('test_net', 0)} {r['name']}"
            latest[key] = r["value"]
    facts = log_facts(run)
    return {"id": run.id, "name": run.name, "path": str(run.path), "status": facts["status"],
            "iter": last_iter, "records": len(records), "latest": latest,
            "seconds": max((r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float))),
                           default=None),
            "modified": _mtime(run.path / LOG_JSONL)}


# ---- snapshots and what the newest state holds ---------------------------------------------

def snapshots(run: Run) -> list[dict]:
    """The snapshots inside the run folder, newest iteration last; and those the log names elsewhere."""
    out = []
    for p in run.path.rglob(f"*{WEIGHTS_SUFFIX}"):
        if p.name.startswith(".") or p.is_symlink() or not p.is_file():
            continue          # temporary files of writes in progress start with a dot
        m = _ITER.search(p.name)
        kind = "state" if p.name.endswith(STATE_SUFFIX) else "weights"
        st = p.stat()
        out.append({"file": str(p.relative_to(run.path)), "kind": kind, "iter": int(m.group(1)) if m else None,
                    "bytes": st.st_size, "modified": st.st_mtime})
    out.sort(key=lambda s: (s["iter"] if s["iter"] is not None else -1, s["modified"], s["kind"]))
    return out


def elsewhere(run: Run) -> list[str]:
    """Snapshot paths the log names outside the run folder (shown, never read).  A file of the
    same name inside the folder is that snapshot, in a run folder moved since it was written."""
    here = {Path(s["file"]).name for s in snapshots(run)}
    out = []
    for p in log_facts(run)["snapshots_logged"]:
        rp = Path(os.path.realpath(p))
        try:
            rp.relative_to(run.path)
        except ValueError:
            if rp.name not in here and p not in out:
                out.append(p)
    return out


def latest_state(run: Run) -> Path | None:
    states = [run.path / s["file"] for s in snapshots(run) if s["kind"] == "state"]
    states = [p for p in states if inside(run, str(p.relative_to(run.path))) is not None]
    return max(states, key=lambda p: (_mtime(p), _iter_of(p))) if states else None


def _iter_of(p: Path) -> int:
    m = _ITER.search(p.name)
    return int(m.group(1)) if m else -1


def state_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, reading its header only (a state file is large)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            raise ValueError("its header is implausibly large")
        raw = f.read(n)
    if len(raw) < n:
        raise ValueError("truncated header")
    header = json.loads(raw.decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("no metadata")
    return meta


def state_info(path: Path) -> dict:
    """The solver settings, the net (as netspec stored it) and the state record of a state file."""
    meta = state_metadata(path)
    if meta.get("format") != "netspec-solverstate":
        raise ValueError("not a netspec solver state")
    record = json.loads(meta.get("netspec", "{}"))
    return {"record": record, "solver": json.loads(meta.get("solver") or "{}"),
            "nets": json.loads(meta.get("net") or "{}")}
