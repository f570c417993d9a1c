"""The record of a training run: Caffe-format log lines and ``log.jsonl``.

``info`` prints a line (through tqdm, so a progress bar stays intact) and appends it to
``<run dir>/train.log`` with a glog-style prefix (``I0210 13:39:22.381027 <pid> netspec]``),
so ``parse_log``-style tools that read Caffe logs work on it.  ``record`` appends one JSON
object per displayed or tested value to ``<run dir>/log.jsonl`` (iter, phase, name, value, lr,
seconds, data_wait, ...), flushed at once: a killed run loses at most a partial last line,
which ``read_jsonl`` skips.  A log file that can no longer be written (a full disk) is closed
with one warning on the screen, and training goes on: the snapshots decide what a full disk
means for the run (``snapshot_failure``), not the log.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterator

LOG_JSONL = "log.jsonl"
TRAIN_LOG = "train.log"


def _echo_default(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg)


class RunLog:
    def __init__(self, run_dir: Path | None, echo: Callable[[str], None] | None = _echo_default):
        self.run_dir = run_dir
        self.echo = echo
        self._text = None
        self._jsonl = None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._text = open(run_dir / TRAIN_LOG, "a", encoding="utf-8")
            self._jsonl = open(run_dir / LOG_JSONL, "a", encoding="utf-8")

    def info(self, msg: str, echo: bool = True) -> None:
        if echo and self.echo is not None:
            self.echo(msg)
        if self._text is not None:
            now = datetime.datetime.now()
            self._text = self._append(self._text, f"I{now:%m%d %H:%M:%S.%f} {os.getpid()} netspec] {msg}\n")

    def warning(self, msg: str) -> None:
        self.info(f"warning: {msg}")

    def record(self, **fields) -> None:
        if self._jsonl is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()}
        self._jsonl = self._append(self._jsonl, json.dumps(clean) + "\n")

    def _append(self, f, text: str):
        """``f`` after writing ``text`` to it, or None when it could not be written."""
        try:
            f.write(text)
            f.flush()
            return f
        except OSError as e:
            try:
                f.close()
            except OSError:
                pass
            if self.echo is not None:
                self.echo(f"warning: cannot write {f.name}: {e.strerror}; it is no longer written "
                          f"(this run's lines still come here)")
            return None

    def close(self) -> None:
        for f in (self._text, self._jsonl):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass    # a full disk: what could not be flushed is lost, the run is not
        self._text = self._jsonl = None


def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of a log.jsonl, skipping a line cut short by a killed run."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec
