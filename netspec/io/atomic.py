"""Write a file so that a crash at any moment leaves either the old file or the new one.

The bytes go to a temporary file in the same folder (same file system, so the rename is
atomic), are flushed and fsynced, and the temporary file is renamed over the target with
``os.replace``; the folder is fsynced afterwards so the rename itself survives a power cut.
Temporary names are ``.<name>.tmp<pid>``; readers never look at them.  A write that fails
(a full disk, a folder that became read-only) removes its temporary file and raises the
``OSError``, so the old file, if any, is untouched; a process killed mid-write leaves its
temporary file behind, which ``stale_temps`` finds (its writer is no longer running) so that
it can be removed before the next run writes there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temp(path: str | os.PathLike) -> bool:
    """Whether this is the temporary file of a write (``.<name>.tmp<pid>``)."""
    return _TEMP.match(Path(path).name) is not None


def temp_target(path: str | os.PathLike) -> tuple[str, int] | None:
    """(the name it was to be renamed to, the writer's pid) of a temporary file, else None."""
    m = _TEMP.match(Path(path).name)
    return (m.group("name"), int(m.group("pid"))) if m else None


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path.  On any failure the
    temporary file is removed and the error raised: ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass    # the first error is the one to report; the stale file is swept later
        raise
    _fsync_dir(path.parent)
    return path


def probe_writable(folder: str | os.PathLike) -> None:
    """Create, fsync and remove a small file in ``folder``; raises the ``OSError`` a write
    there would meet (read-only file system, no permission, no space)."""
    probe = Path(folder) / f".netspec-probe.tmp{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"netspec")
            f.flush()
            os.fsync(f.fileno())
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True     # someone else's process, or we cannot tell: assume it still writes
    return True


def stale_temps(folder: str | os.PathLike, targets: re.Pattern | None = None) -> list[Path]:
    """Temporary files in ``folder`` left by writers that are no longer running (killed
    mid-write); with ``targets``, only those whose final name it matches."""
    d = Path(folder)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        t = temp_target(p)
        if t is None or (targets is not None and not targets.search(t[0])):
            continue
        if not pid_alive(t[1]) and p.is_file():
            out.append(p)
    return sorted(out)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)
