"""The dashboard's web app (Starlette): a page, its static files, and a JSON API over run folders.

Routes (everything else is 404):

    GET /                               the page (static/index.html)
    GET /static/<name>                  a file of the page (uPlot, app.js, the style sheet)
    GET /api/runs                       every run under the folders given, newest first
    GET /api/runs/<id>                  one run: status, solver, snapshots, the state record
    GET /api/runs/<id>/points?cursor=C  chart points logged after cursor C (polling)
    GET /api/runs/<id>/events           the same as server-sent events, as the log grows
    GET /api/runs/<id>/net.svg?phase=P  the net of phase TRAIN or TEST, drawn by Graphviz
    GET /runs/<id>/files/<path>         a file inside the run folder (train.log, a snapshot)

A run ``<id>`` is a hash of the folder's real path; a file path is resolved and must stay inside
its run folder (``..``, absolute paths, encoded slashes and symbolic links that lead out all come
to 404).  The app only reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from netspec.dashboard import runs as rf

STATIC = Path(__file__).resolve().parent / "static"
POLL_SECONDS = 0.5           # how often an event stream looks at the log
STREAM_SECONDS = 300.0       # a stream ends after this; EventSource reconnects from its last id
TEXT_TYPES = {".log": "text/plain; charset=utf-8", ".jsonl": "text/plain; charset=utf-8",
              ".json": "application/json", ".yaml": "text/plain; charset=utf-8",
              ".txt": "text/plain; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".LICENSE": "text/plain; charset=utf-8"}
SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'"}


class Dashboard:
    """The run folders the app may read, and the drawings made so far."""

    def __init__(self, roots: list[Path]):
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self._drawings: dict[tuple, tuple[int, bytes | str]] = {}
        self._lock = threading.Lock()

    def runs(self) -> list[rf.Run]:
        return rf.discover(self.roots)

    def run(self, rid: str) -> rf.Run | None:
        if len(rid) != 12 or not all(c in "0123456789abcdef" for c in rid):
            return None
        return next((r for r in self.runs() if r.id == rid), None)

    def drawing(self, run: rf.Run, phase: str) -> tuple[int, bytes | str]:
        """(200, SVG bytes) or (status, message); drawn once per state file and phase."""
        state = rf.latest_state(run)
        if state is None:
            return 404, ("no solver state in this run folder yet: the net is drawn from the first "
                         "snapshot's stored net")
        key = (str(state), state.stat().st_mtime_ns, phase)
        with self._lock:
            if key in self._drawings:
                return self._drawings[key]
        result = _draw(state, phase)
        with self._lock:
            if len(self._drawings) > 64:
                self._drawings.clear()
            self._drawings[key] = result
        return result


def _draw(state: Path, phase: str) -> tuple[int, bytes | str]:
    exe = shutil.which("dot")
    if exe is None:
        return 503, "drawing the net needs Graphviz's 'dot' program: apt-get install graphviz"
    try:
        info = rf.state_info(state)
    except (OSError, ValueError) as e:
        return 404, f"cannot read the net stored in {state.name}: {e}"
    nets = info["nets"]
    try:
        if phase == "TRAIN":
            spec, st = nets["train"], nets.get("train_state", {})
        else:
            tests = nets.get("test") or []
            if not tests:
                return 404, "this run has no test net"
            spec = nets["train"] if tests[0] == "train" else tests[0]
            st = (nets.get("test_state") or [{}])[0]
    except (KeyError, TypeError):
        return 404, f"{state.name} holds no net"
    # importing the compiler is the one heavy step; it happens on the first drawing only
    from netspec import api
    from netspec.errors import NetspecError
    from netspec.graph.draw import to_dot

    # relative data sources in the stored net are relative to the net file's folder, as in training;
    # planning reads their headers for the shapes (the dashboard never serves those files)
    net_file = info["solver"].get("net") if isinstance(info["solver"], dict) else None
    base = Path(net_file).parent if isinstance(net_file, str) and os.path.isabs(net_file) else state.parent
    try:
        net = api.load_net_text(json.dumps(spec), file=f"{state.name} (stored net)", base_dir=base)
        plan = api.compile_net(net, phase, st.get("level"), st.get("stage") or None)
        dot = to_dot(plan)
    except NetspecError as e:
        return 404, f"cannot plan the stored net: {e}"
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 503, f"Graphviz failed: {e}"
    if proc.returncode != 0:
        return 503, f"Graphviz failed: {proc.stderr.decode(errors='replace').strip()}"
    return 200, proc.stdout


def _not_found(what: str = "not found") -> Response:
    return PlainTextResponse(what, status_code=404, headers=SECURITY)


def _json(data, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={**SECURITY, "Cache-Control": "no-store"})


def create_app(roots: list[Path], allowed_hosts: list[str] | None = None) -> Starlette:
    """The app over these run folders; ``allowed_hosts`` (Host header names) guards a loopback
    server from pages on other sites that resolve their name to 127.0.0.1 (DNS rebinding)."""
    dash = Dashboard(roots)
    static_names = {p.name for p in STATIC.iterdir() if p.is_file()}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type=MEDIA[".html"], headers=SECURITY)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static_names:
            return _not_found()
        media = MEDIA.get(Path(name).suffix, "application/octet-stream")
        return FileResponse(STATIC / name, media_type=media, headers=SECURITY)

    async def list_runs(request: Request) -> Response:
        found = await asyncio.to_thread(lambda: [rf.summary(r) for r in dash.runs()])
        return _json({"roots": [str(r) for r in dash.roots], "runs": found})

    async def run_detail(request: Request) -> Response:
        run = dash.run(request.path_params["rid"])
        if run is None:
            return _not_found("no such run")
        return _json(await asyncio.to_thread(_detail, run))

    async def points(request: Request) -> Response:
        run = dash.run(request.path_params["rid"])
        if run is None:
            return _not_found("no such run")
        offset, tracker = rf.Tracker.from_cursor(request.query_params.get("cursor"))
        records, offset = await asyncio.to_thread(rf.read_records, run.path / rf.LOG_JSONL, offset)
        return _json({"points": tracker.points(records), "cursor": tracker.cursor(offset)})

    async def events(request: Request) -> Response:
        run = dash.run(request.path_params["rid"])
        if run is None:
            return _not_found("no such run")
        cursor = request.headers.get("last-event-id") or request.query_params.get("cursor")
        try:
            limit = min(STREAM_SECONDS, max(0.5, float(request.query_params.get("seconds", STREAM_SECONDS))))
        except ValueError:
            limit = STREAM_SECONDS
        return StreamingResponse(_stream(request, run, cursor, limit), media_type="text/event-stream",
                                 headers={**SECURITY, "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def net_svg(request: Request) -> Response:
        run = dash.run(request.path_params["rid"])
        if run is None:
            return _not_found("no such run")
        phase = request.query_params.get("phase", "TRAIN").upper()
        if phase not in ("TRAIN", "TEST"):
            return PlainTextResponse("phase is TRAIN or TEST", status_code=400, headers=SECURITY)
        status, body = await asyncio.to_thread(dash.drawing, run, phase)
        if status != 200:
            return PlainTextResponse(body, status_code=status, headers=SECURITY)
        return Response(body, media_type="image/svg+xml", headers=SECURITY)

    async def run_file(request: Request) -> Response:
        run = dash.run(request.path_params["rid"])
        if run is None:
            return _not_found()
        target = rf.inside(run, request.path_params["path"])
        if target is None:
            return _not_found()
        media = TEXT_TYPES.get(target.suffix.lower(), "application/octet-stream")
        headers = dict(SECURITY)
        if media == "application/octet-stream":
            headers["Content-Disposition"] = f'attachment; filename="{target.name}"'
        return FileResponse(target, media_type=media, headers=headers)

    routes = [Route("/", index), Route("/static/{name}", static),
              Route("/api/runs", list_runs), Route("/api/runs/{rid}", run_detail),
              Route("/api/runs/{rid}/points", points), Route("/api/runs/{rid}/events", events),
              Route("/api/runs/{rid}/net.svg", net_svg), Route("/runs/{rid}/files/{path:path}", run_file)]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.dashboard = dash
    return app


def _detail(run: rf.Run) -> dict:
    out = rf.summary(run)
    facts = rf.log_facts(run)
    out.update(last_line=facts["last_line"], error=facts["error"], snapshots=rf.snapshots(run),
               snapshots_elsewhere=rf.elsewhere(run), solver=None, state=None, state_error=None)
    state = rf.latest_state(run)
    if state is not None:
        try:
            info = rf.state_info(state)
            rec = info["record"]
            out["solver"] = info["solver"]
            out["state"] = {"file": str(state.relative_to(run.path)), "iter": rec.get("iter"),
                            "net_name": rec.get("net_name"), "global_batch": rec.get("global_batch"),
                            "ranks": rec.get("ranks"), "elapsed": rec.get("elapsed"),
                            "loss_scale": rec.get("loss_scale"),
                            "dtype": info["nets"].get("dtype") if isinstance(info["nets"], dict) else None}
        except (OSError, ValueError) as e:
            out["state_error"] = f"{state.name}: {e}"
    return out


async def _stream(request: Request, run: rf.Run, cursor: str | None, limit: float):
    """Server-sent events: ``points`` (with the cursor as the event id, so a reconnecting
    EventSource resumes where it stopped), ``status`` when it changes, and ``end`` once a
    finished run has nothing more to send."""
    offset, tracker = rf.Tracker.from_cursor(cursor)
    log = run.path / rf.LOG_JSONL
    loop = asyncio.get_running_loop()
    start = loop.time()
    status = None
    last_sent = start
    yield "retry: 1000\n\n"
    while True:
        records, offset = await asyncio.to_thread(rf.read_records, log, offset)
        pts = tracker.points(records)
        if pts or records:
            data = json.dumps({"points": pts, "cursor": tracker.cursor(offset)})
            yield f"id: {tracker.cursor(offset)}\nevent: points\ndata: {data}\n\n"
            last_sent = loop.time()
        facts = await asyncio.to_thread(rf.log_facts, run)
        if facts["status"] != status:
            status = facts["status"]
            yield f"event: status\ndata: {json.dumps({'status': status})}\n\n"
        if status in ("done", "stopped", "failed", "ended") and not records:
            yield "event: end\ndata: {}\n\n"
            return
        now = loop.time()
        if now - start >= limit:
            return
        if now - last_sent > 15:
            yield ": keep-alive\n\n"      # proxies and browsers drop silent connections
            last_sent = now
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)
