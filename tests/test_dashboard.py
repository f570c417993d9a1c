"""netspec dashboard: reading run folders, the web API (Starlette's TestClient), path confinement,
server-sent events, the command; and, marked slow, a real browser following a real training run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import http.client
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from netspec.cli.main import cli  # noqa: E402
from netspec.dashboard import runs as rf  # noqa: E402
from netspec.dashboard.app import STATIC, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
XOR_SOLVER = """netspec: 1
net: {net}
test_iter: 1
test_interval: 20
base_lr: 1.0
momentum: 0.9
lr_policy: fixed
display: 10
max_iter: 40
snapshot: 20
random_seed: 2
"""


# ---- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real run folder: XOR trained for 40 iterations, displayed every 10, tested and
    snapshotted every 20 (about two seconds)."""
    from netspec.solvers.run import train

    base = tmp_path_factory.mktemp("dash")
    solver = base / "xor_solver.yaml"
    solver.write_text(XOR_SOLVER.format(net=ROOT / "models" / "xor" / "train_val.yaml"))
    runs = base / "runs"
    assert train(solver, run_dir=runs / "xor" / "first", progress=False, echo=None) == 0
    return runs


@pytest.fixture
def runs_root(trained, tmp_path) -> Path:
    """A copy of the trained tree, so a test may add to it, with a secret file beside it."""
    root = tmp_path / "runs"
    shutil.copytree(trained, root, symlinks=True)
    (tmp_path / "secret.txt").write_text("not yours")
    return root


def client(root: Path, **kw) -> TestClient:
    return TestClient(create_app([root], **kw))


def the_run(c: TestClient) -> dict:
    runs = c.get("/api/runs").json()["runs"]
    assert len(runs) == 1
    return runs[0]


def raw_get(app, raw_path: bytes) -> int:
    """The status the app answers to a request whose path arrives exactly as written (an HTTP
    client would remove the dot segments of ``/../..`` before sending)."""
    from urllib.parse import unquote

    messages = []
    asked = []

    async def receive():
        if not asked:
            asked.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        while not any(m["type"] == "http.response.body" and not m.get("more_body") for m in messages):
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(msg):
        messages.append(msg)

    path, _, query = raw_path.partition(b"?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": unquote(path.decode("latin-1")), "raw_path": path,
             "query_string": query, "root_path": "", "headers": [(b"host", b"127.0.0.1")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8750)}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in messages if m["type"] == "http.response.start")


# ---- reading run folders -------------------------------------------------------------------

def test_discover_finds_runs_at_any_depth_newest_first_without_following_links(tmp_path):
    root = tmp_path / "runs"
    for rel, age in (("LeNet/20260101-000000", 100), ("LeNet/20260102-000000", 10), ("xor", 50)):
        d = root / rel
        d.mkdir(parents=True)
        (d / "log.jsonl").write_text("")
        t = time.time() - age
        os.utime(d / "log.jsonl", (t, t))
    (root / "LeNet" / "notes").mkdir()                       # a folder without a log is no run
    (root / ".hidden" / "run").mkdir(parents=True)
    (root / ".hidden" / "run" / "log.jsonl").write_text("")
    outside = tmp_path / "elsewhere" / "run"
    outside.mkdir(parents=True)
    (outside / "log.jsonl").write_text("")
    (root / "linked").symlink_to(outside.parent, target_is_directory=True)
    names = [r.name for r in rf.discover([root])]
    assert names == ["runs/LeNet/20260102-000000", "runs/xor", "runs/LeNet/20260101-000000"]
    # a run folder given itself is one run; the same run reached twice is listed once
    both = rf.discover([root / "xor", root])
    assert [r.name for r in both].count("xor") == 1 and len(both) == 3
    assert rf.discover([root / "xor"])[0].id == rf.run_id((root / "xor").resolve())


def test_read_records_leaves_a_partial_line_and_skips_bad_ones(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"iter": 0, "name": "loss", "value": 2.0}\nnot json\n[1, 2]\n{"iter": 10, "na')
    recs, off = rf.read_records(log)
    assert recs == [{"iter": 0, "name": "loss", "value": 2.0}]
    with open(log, "a") as f:
        f.write('me": "loss", "value": 1.5}\n')
    recs2, off2 = rf.read_records(log, off)
    assert recs2 == [{"iter": 10, "name": "loss", "value": 1.5}] and off2 == log.stat().st_size
    assert rf.read_records(log, off2) == ([], off2)
    log.write_text('{"iter": 0, "name": "loss", "value": 9.0}\n')      # the folder was reused
    assert rf.read_records(log, off2)[0] == [{"iter": 0, "name": "loss", "value": 9.0}]


def test_tracker_points_and_a_cursor_that_resumes_the_same_series():
    recs = [{"iter": 0, "phase": "TEST", "name": "accuracy", "value": 0.1, "test_net": 0},
            {"iter": 0, "phase": "TRAIN", "name": "smoothed_loss", "value": 2.3, "lr": 0.01, "seconds": 0.0},
            {"iter": 0, "phase": "TRAIN", "name": "loss", "value": 2.3, "lr": 0.01, "seconds": 0.0},
            {"iter": 10, "phase": "TRAIN", "name": "smoothed_loss", "value": 1.5, "lr": 0.01, "seconds": 2.0},
            {"iter": 20, "phase": "TRAIN", "name": "smoothed_loss", "value": 1.2, "lr": 0.005, "seconds": 4.5},
            {"iter": 20, "phase": "TEST", "name": "loss", "value": 1.4, "test_net": 0},
            {"iter": 30, "phase": "TRAIN", "name": "smoothed_loss", "value": None, "lr": 0.005, "seconds": 9.0},
            {"iter": 40, "phase": "TRAIN", "name": "smoothed_loss", "value": 1.0, "lr": 0.005, "seconds": 10.0},
            {"iter": 40, "phase": "TRAIN", "name": "l2_error", "value": 0.3, "lr": 0.005, "seconds": 10.0}]
    pts = rf.Tracker().points(recs)
    assert ["accuracy", "test#0 accuracy", 0, 0.1] in pts
    assert ["loss", "train loss (smoothed)", 10, 1.5] in pts and ["loss", "train loss", 0, 2.3] in pts
    assert ["loss", "test#0 loss", 20, 1.4] in pts and ["other", "train l2_error", 40, 0.3] in pts
    assert [p for p in pts if p[0] == "lr"] == [["lr", "learning rate", i, v] for i, v in
                                                 ((0, 0.01), (10, 0.01), (20, 0.005), (30, 0.005), (40, 0.005))]
    # 10 iterations in 2 s, then 2.5 s; the interval 20 -> 30 held a test and is left out
    assert [p for p in pts if p[0] == "throughput"] == [["throughput", "iterations/s", 10, 5.0],
                                                         ["throughput", "iterations/s", 20, 4.0],
                                                         ["throughput", "iterations/s", 40, 10.0]]
    assert not any(p[2] == 30 and p[0] == "loss" for p in pts)     # a non-finite value is no point
    for cut in range(len(recs) + 1):                                  # any split gives the same points
        t = rf.Tracker()
        first = t.points(recs[:cut])
        offset, t2 = rf.Tracker.from_cursor(t.cursor(123))
        assert offset == 123 and first + t2.points(recs[cut:]) == pts
    assert rf.Tracker.from_cursor("junk")[0] == 0 and rf.Tracker.from_cursor("5_1_0_nan")[0] == 0


def test_log_facts_status_and_snapshots_written_elsewhere(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "log.jsonl").write_text("")
    run = rf.discover([d])[0]
    (d / "train.log").write_text("I1203 07:00:00.0 1 netspec] Solving LeNet\n")
    assert rf.log_facts(run)["status"] == "running"
    with open(d / "train.log", "a") as f:
        f.write("I1203 07:00:01.0 1 netspec] Snapshotting to safetensors file /elsewhere/L_iter_5.safetensors\n")
        f.write("I1203 07:00:02.0 1 netspec] Optimization Done.\n")
    facts = rf.log_facts(run)
    assert facts["status"] == "done" and facts["last_line"] == "Optimization Done."
    assert rf.elsewhere(run) == ["/elsewhere/L_iter_5.safetensors"]
    with open(d / "train.log", "a") as f:
        f.write("I1203 07:00:03.0 1 netspec] Solving LeNet\nI1203 07:00:04.0 1 netspec] error: data: bad label 11\n")
    facts = rf.log_facts(run)
    assert facts["status"] == "failed" and facts["error"] == "data: bad label 11"
    old = time.time() - 2 * rf.LIVE_SECONDS
    (d / "train.log").write_text("I1203 07:00:00.0 1 netspec] Solving LeNet\n")
    for p in (d / "train.log", d / "log.jsonl"):
        os.utime(p, (old, old))
    assert rf.log_facts(run)["status"] == "ended"                     # killed: no last word, silent


# ---- the API on a real run -----------------------------------------------------------------

def test_runs_listing_and_detail_of_a_real_run(runs_root):
    c = client(runs_root)
    listing = c.get("/api/runs")
    assert listing.status_code == 200 and listing.json()["roots"] == [str(runs_root.resolve())]
    run = the_run(c)
    assert run["name"] == "runs/xor/first" and run["status"] == "done" and run["iter"] == 40
    assert set(run["latest"]) >= {"smoothed_loss", "test#0 loss"}
    d = c.get(f"/api/runs/{run['id']}").json()
    assert [(s["iter"], s["kind"]) for s in d["snapshots"]] == [(20, "weights"), (20, "state"),
                                                               (40, "weights"), (40, "state")]
    assert d["state"]["file"] == "XOR_iter_40.solverstate.safetensors" and d["state"]["iter"] == 40
    assert d["solver"]["base_lr"] == 1.0 and d["solver"]["max_iter"] == 40 and d["snapshots_elsewhere"] == []
    assert c.get("/api/runs/0123456789ab").status_code == 404
    assert c.get("/api/runs/..").status_code == 404


def test_points_by_polling_match_the_log(runs_root):
    c = client(runs_root)
    rid = the_run(c)["id"]
    body = c.get(f"/api/runs/{rid}/points").json()
    pts = body["points"]
    train = [p[2] for p in pts if p[:2] == ["loss", "train loss (smoothed)"]]
    assert train == [0, 10, 20, 30]                    # Caffe displays before steps 0..30; 40 is the end
    assert [p[2] for p in pts if p[1] == "test#0 loss"] == [0, 20, 40]
    assert all(p[3] > 0 for p in pts if p[0] == "throughput") and any(p[0] == "throughput" for p in pts)
    assert c.get(f"/api/runs/{rid}/points", params={"cursor": body["cursor"]}).json()["points"] == []
    # a line appended later comes with the next poll, and only it
    with open(runs_root / "xor" / "first" / "log.jsonl", "a") as f:
        f.write(json.dumps({"iter": 50, "phase": "TRAIN", "name": "smoothed_loss", "value": 0.01, "lr": 1.0,
                            "seconds": 99.0}) + "\n")
    later = c.get(f"/api/runs/{rid}/points", params={"cursor": body["cursor"]}).json()
    # the cursor carried the tracker: the test at 40 since the display at 30 leaves out 30 -> 50
    assert later["points"] == [["loss", "train loss (smoothed)", 50, 0.01], ["lr", "learning rate", 50, 1.0]]
    with open(runs_root / "xor" / "first" / "log.jsonl", "a") as f:
        f.write(json.dumps({"iter": 60, "phase": "TRAIN", "name": "smoothed_loss", "value": 0.01, "lr": 1.0,
                            "seconds": 101.0}) + "\n")
    last = c.get(f"/api/runs/{rid}/points", params={"cursor": later["cursor"]}).json()["points"]
    assert last[-1] == ["throughput", "iterations/s", 60, 5.0] and len(last) == 3


def parse_sse(text: str) -> list[tuple[str, str | None, dict]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    return out


def test_events_of_a_finished_run_end_and_resume_from_last_event_id(runs_root):
    c = client(runs_root)
    rid = the_run(c)["id"]
    r = c.get(f"/api/runs/{rid}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert [e[0] for e in events] == ["points", "status", "end"]
    assert events[0][2]["points"] == c.get(f"/api/runs/{rid}/points").json()["points"]
    assert events[1][2] == {"status": "done"}
    again = parse_sse(c.get(f"/api/runs/{rid}/events", headers={"Last-Event-ID": events[0][1]}).text)
    assert [e[0] for e in again] == ["status", "end"]                  # nothing new since that id


def test_events_follow_a_growing_log(runs_root):
    d = runs_root / "xor" / "first"
    (d / "train.log").write_text("I1203 07:00:00.0 1 netspec] Solving XOR\n")     # running again
    c = client(runs_root)
    rid = the_run(c)["id"]
    cursor = c.get(f"/api/runs/{rid}/points").json()["cursor"]

    def grow():
        for k in range(3):
            time.sleep(0.4)
            with open(d / "log.jsonl", "a") as f:
                f.write(json.dumps({"iter": 50 + 10 * k, "phase": "TRAIN", "name": "smoothed_loss",
                                    "value": 0.5 / (k + 1), "lr": 1.0, "seconds": 20.0 + k}) + "\n")

    t = threading.Thread(target=grow)
    t.start()
    text = c.get(f"/api/runs/{rid}/events", params={"cursor": cursor, "seconds": 2.5}).text
    t.join()
    events = parse_sse(text)
    assert events[0] == ("status", None, {"status": "running"})
    got = [p[2] for e in events if e[0] == "points" for p in e[2]["points"] if p[1] == "train loss (smoothed)"]
    assert got == [50, 60, 70]
    assert len([e for e in events if e[0] == "points"]) >= 2                # sent as they came, not at the end


def test_net_drawing_from_the_stored_state(runs_root):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    c = client(runs_root)
    rid = the_run(c)["id"]
    r = c.get(f"/api/runs/{rid}/net.svg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in r.content and b"XOR (TRAIN)" in r.content
    test = c.get(f"/api/runs/{rid}/net.svg", params={"phase": "TEST"})
    assert test.status_code == 200 and b"XOR (TEST)" in test.content
    assert c.get(f"/api/runs/{rid}/net.svg", params={"phase": "DEPLOY"}).status_code == 400


def test_a_run_without_snapshots_says_why_there_is_no_drawing(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "log.jsonl").write_text('{"iter": 0, "phase": "TRAIN", "name": "loss", "value": 1.0}\n')
    c = client(tmp_path)
    rid = the_run(c)["id"]
    r = c.get(f"/api/runs/{rid}/net.svg")
    assert r.status_code == 404 and "first snapshot" in r.text
    detail = c.get(f"/api/runs/{rid}").json()
    assert detail["solver"] is None and detail["snapshots"] == [] and detail["status"] == "running"


def test_files_inside_a_run_are_served_and_nothing_outside(runs_root):
    app = create_app([runs_root])
    c = TestClient(app)
    rid = the_run(c)["id"]
    run_dir = runs_root / "xor" / "first"
    log = c.get(f"/runs/{rid}/files/train.log")
    assert log.status_code == 200 and "Optimization Done." in log.text
    assert log.headers["x-content-type-options"] == "nosniff"
    snap = c.get(f"/runs/{rid}/files/XOR_iter_40.safetensors")
    assert snap.status_code == 200 and snap.content == (run_dir / "XOR_iter_40.safetensors").read_bytes()
    assert "attachment" in snap.headers["content-disposition"]
    (run_dir / "leak.txt").symlink_to(runs_root.parent / "secret.txt")          # a link that leads out
    (run_dir / "up").symlink_to(runs_root.parent, target_is_directory=True)
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "inner.txt").symlink_to(run_dir / "notes.txt")                   # a link that stays in
    assert c.get(f"/runs/{rid}/files/inner.txt").text == "mine"
    bad = ["../../secret.txt", "..%2f..%2fsecret.txt", "%2e%2e/%2e%2e/secret.txt", "%2e%2e%2f%2e%2e%2fsecret.txt",
           "..%252f..%252fsecret.txt", "%2Fetc%2Fpasswd", "/etc/passwd", "%2F%2Fetc%2Fpasswd", "leak.txt",
           "up/secret.txt", "..\\..\\secret.txt", "..%5c..%5csecret.txt", "train.log%00.png", "", "."]
    for path in bad:
        r = c.get(f"/runs/{rid}/files/{path}")
        assert r.status_code == 404, path
        assert "not yours" not in r.text and "root:" not in r.text
    # and as raw request lines, dot segments unnormalized, anywhere in the URL
    raw = [b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/static/../../../etc/passwd",
           b"/static/..%2f..%2f..%2fetc%2fpasswd", b"/static/%2e%2e%2fapp.py", b"/runs/" + rid.encode() +
           b"/files/../../../secret.txt", b"/runs/" + rid.encode() + b"/files/%2e%2e/%2e%2e/secret.txt",
           b"/runs/" + rid.encode() + b"/files//etc/passwd", b"/runs/../../files/etc/passwd",
           b"/runs/" + rid.encode() + b"/files/up/secret.txt", b"//etc/passwd", b"/etc/passwd"]
    for path in raw:
        assert raw_get(app, path) == 404, path
    assert raw_get(app, b"/runs/" + rid.encode() + b"/files/train.log") == 200    # the helper does reach files


def test_the_page_and_everything_it_loads_come_from_the_package(runs_root):
    import re

    c = client(runs_root)
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "/static/uPlot.iife.min.js" in refs and "/static/app.js" in refs
    for ref in refs:
        assert ref.startswith("/static/"), ref                              # nothing from a CDN
        assert c.get(ref).status_code == 200, ref
    assert (STATIC / "uPlot.LICENSE").read_text().startswith("The MIT License")
    assert c.get("/static/runs.py").status_code == 404 and c.get("/static/").status_code == 404
    assert "fetch(\"http" not in (STATIC / "app.js").read_text()


def test_a_loopback_server_answers_only_loopback_host_names(runs_root):
    from netspec.dashboard.server import LOOPBACK_NAMES

    c = client(runs_root, allowed_hosts=LOOPBACK_NAMES)
    assert c.get("http://127.0.0.1:8750/api/runs").status_code == 200
    assert c.get("http://localhost:8750/api/runs").status_code == 200
    assert c.get("http://rebound.example:8750/api/runs").status_code == 400


# ---- the command -----------------------------------------------------------------------------

def test_dashboard_help_imports_no_server_or_numba():
    code = ("import sys; from click.testing import CliRunner; from netspec.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['dashboard', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--port' in r.output and '127.0.0.1' in r.output; "
            "bad = [m for m in ('numba', 'starlette', 'uvicorn') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_dashboard_errors_are_one_paragraph(tmp_path, monkeypatch):
    r = CliRunner().invoke(cli, ["dashboard", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no such run folder" in r.output and "Traceback" not in r.output
    f = tmp_path / "file.txt"
    f.write_text("")
    r = CliRunner().invoke(cli, ["dashboard", str(f)])
    assert r.exit_code == 1 and "is not a folder" in r.output
    with socket.socket() as s:                                   # the port is taken
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(cli, ["dashboard", str(tmp_path), "--port", str(port)])
    assert r.exit_code == 1 and f"127.0.0.1:{port} is in use" in r.output and "--port" in r.output
    monkeypatch.setitem(sys.modules, "uvicorn", None)              # the extra is not installed
    r = CliRunner().invoke(cli, ["dashboard", str(tmp_path)])
    assert r.exit_code == 1 and 'pip install -e ".[dashboard]"' in r.output


# ---- a real browser, a real training run ------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def http_status(port: int, raw_path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", raw_path, skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


LENET_SOLVER = """netspec: 1
net: {net}
test_iter: 5
test_interval: 200
base_lr: 0.01
momentum: 0.9
lr_policy: inv
gamma: 0.0001
power: 0.75
display: 10
max_iter: 500
snapshot: 250
random_seed: 1
"""


@pytest.mark.slow
def test_browser_sees_the_loss_curve_grow_while_lenet_trains(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    root = tmp_path / "runs"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("not yours")
    solver = tmp_path / "lenet_solver.yaml"
    solver.write_text(LENET_SOLVER.format(net=ROOT / "models" / "lenet" / "train_val.yaml"))
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "netspec", "dashboard", str(root), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    trainer = None
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = chromium
    browser = None
    try:
        wait_for(lambda: _up(port), 30, "the dashboard to listen")
        browser = webdriver.Chrome(service=Service(driver), options=opts)
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: not browser.find_element(By.ID, "no-runs").get_attribute("hidden"), 15,
                 "the page to say there are no runs yet")
        trainer = subprocess.Popen([sys.executable, "-m", "netspec", "train", str(solver), "--run-dir",
                                    str(root / "lenet")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                   env=env, cwd=tmp_path)

        def loss_points() -> int:
            return int(browser.find_element(By.ID, "chart-loss").get_attribute("data-points") or 0)

        first = wait_for(loss_points, 120, "the first loss points")
        assert trainer.poll() is None, "the run finished before the page showed it: no live check"
        wait_for(lambda: loss_points() > first, 60, "the loss curve to gain points")
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-loss canvas"), "uPlot drew no canvas"
        assert "lenet" in browser.find_element(By.ID, "runs").text
        assert trainer.wait(timeout=180) == 0
        wait_for(lambda: "done" in browser.find_element(By.ID, "runs").text, 30, "the run to show as done")
        final = wait_for(lambda: loss_points() >= 51 and loss_points(), 30, "all 51 displays")
        assert final >= 51
        wait_for(lambda: browser.execute_script(
            "const i = document.getElementById('net-img'); return !i.hidden && i.complete && i.naturalWidth > 0;"),
            30, "the net's drawing")
        assert int(browser.find_element(By.ID, "chart-accuracy").get_attribute("data-points")) == 3
        wait_for(lambda: "LeNet_iter_500.safetensors" in browser.find_element(By.ID, "snapshots").text, 15,
                 "the last snapshot in the list")
        assert "base_lr" in browser.find_element(By.ID, "solver").text
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        # the live server, asked with raw request lines, gives nothing outside the run folder
        rid = rf.run_id((root / "lenet").resolve())
        (root / "lenet" / "leak.txt").symlink_to(tmp_path / "secret.txt")
        for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/../../../../etc/passwd",
                     f"/runs/{rid}/files/../../secret.txt", f"/runs/{rid}/files/%2e%2e%2f%2e%2e%2fsecret.txt",
                     f"/runs/{rid}/files/..%2F..%2Fsecret.txt", f"/runs/{rid}/files//etc/passwd",
                     f"/runs/{rid}/files/%2Fetc%2Fpasswd", f"/runs/{rid}/files/leak.txt"):
            assert http_status(port, path) == 404, path
        assert http_status(port, f"/runs/{rid}/files/train.log") == 200
    finally:
        if browser is not None:
            browser.quit()
        for p in (trainer, server):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def _up(port: int) -> bool:
    try:
        return http_status(port, "/api/runs") == 200
    except OSError:
        return False
