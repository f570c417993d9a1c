"""Write a file so that a crash at any moment leaves either the old file or the new one.

The bytes go to a temporary file in the same folder (same file system, so the rename is
atomic), are flushed and fsynced, and the temporary file is renamed over the target with
``os.replace``; the folder is fsynced afterwards so the rename itself survives a power cut.
Temporary names start with a dot and end in ``.tmp<pid>``; readers never look at them.
"""

from __future__ import annotations

import os
from pathlib import Path


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temp(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
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
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


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
