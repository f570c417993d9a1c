"""Serving the dashboard: checks the folders, the extra and the address, then runs uvicorn.

Bound to 127.0.0.1 unless told otherwise: the page shows file paths and serves snapshots, so
it is for the person at this machine.  On a loopback address only ``localhost``-style Host
headers are answered, so a page elsewhere cannot reach it through a rebound DNS name.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from pathlib import Path
from typing import Callable

from netspec.errors import NetspecError

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def check_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise NetspecError(f"the dashboard needs the [dashboard] extra ({e.name} is not installed): "
                           f"pip install -e \".[dashboard]\"") from None


def check_roots(folders: list[str]) -> list[Path]:
    """The folders as real directories; a log.jsonl names its run folder."""
    out = []
    for f in folders:
        p = Path(os.path.expanduser(f))
        if p.is_file() and p.name == "log.jsonl":
            p = p.parent
        if not p.exists():
            raise NetspecError("no such run folder", file=f,
                               hint="give run folders (runs/<net>/<timestamp>) or a folder of them (runs)")
        if not p.is_dir():
            raise NetspecError("is not a folder: give a run folder or a folder of runs", file=f)
        out.append(p)
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(folders: list[str], host: str = "127.0.0.1", port: int = 8750, open_browser: bool = False,
          echo: Callable[[str], None] = print) -> None:
    """Serve the dashboard over these folders until interrupted (Ctrl-C)."""
    check_extra()
    roots = check_roots(folders)
    import uvicorn

    from netspec.dashboard.app import create_app

    # fail in one clear line when the port is taken, before uvicorn logs its own traceback
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]"), port))
    except OSError as e:
        why = "is in use (another dashboard?); choose another with --port" if e.errno == errno.EADDRINUSE \
            else f"cannot be opened: {e.strerror}"
        raise NetspecError(f"address {host}:{port} {why}") from None
    loopback = is_loopback(host)
    app = create_app(roots, allowed_hosts=LOOPBACK_NAMES if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    echo(f"netspec dashboard: {url} (runs under {', '.join(str(r) for r in roots)}); Ctrl-C stops it")
    if not loopback:
        echo(f"warning: listening on {host}, so other machines can read these runs' logs and snapshots")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level="warning",
                            timeout_graceful_shutdown=2, access_log=False)
    uvicorn.Server(config).run()
