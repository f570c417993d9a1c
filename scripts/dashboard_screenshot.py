"""Remake docs/img/dashboard.png: two LeNet runs on Fashion-MNIST (base_lr 0.01, then 0.002),
the second photographed while it trains, overlaid in `netspec dashboard`.

    pip install -e ".[dashboard]" selenium && apt-get install -y chromium chromium-driver
    python scripts/dashboard_screenshot.py [-o docs/img/dashboard.png] [--at 900]

Takes about two minutes on two cores."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLVER = """netspec: 1
net: {net}
test_iter: 20
test_interval: 200
base_lr: {lr}
momentum: 0.9
lr_policy: step
stepsize: 800
gamma: 0.1
display: 20
max_iter: 1200
snapshot: 600
random_seed: 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = cond()
        except Exception:  # noqa: BLE001 - the page or server is still starting
            v = None
        if v:
            return v
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def last_iteration(log: Path) -> int:
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("iter"), int):
            return rec["iter"]
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "img" / "dashboard.png"))
    ap.add_argument("--at", type=int, default=900, help="iteration of the second run to photograph at")
    args = ap.parse_args()
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise SystemExit("chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    work = Path(tempfile.mkdtemp(prefix="netspec-shot-"))
    runs = work / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    net = ROOT / "models" / "lenet" / "train_val.yaml"
    procs: list[subprocess.Popen] = []
    browser = None
    try:
        def train(lr: str) -> subprocess.Popen:
            solver = work / f"solver_{lr}.yaml"
            solver.write_text(SOLVER.format(net=net, lr=lr))
            return subprocess.Popen([sys.executable, "-m", "netspec", "train", str(solver), "-q",
                                     "--run-dir", str(runs / "LeNet" / f"lr{lr}")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=work)

        first = train("0.01")
        procs.append(first)
        if first.wait() != 0:
            raise SystemExit("the first training run failed")
        second = train("0.002")
        procs.append(second)
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "netspec", "dashboard", str(runs), "--port", str(port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=work))
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: urllib.request.urlopen(url + "api/runs", timeout=5).status == 200, 30, "the dashboard")
        log = runs / "LeNet" / "lr0.002" / "log.jsonl"
        wait_for(lambda: last_iteration(log) >= args.at, 600, f"iteration {args.at} of the second run")
        opts = Options()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1037",
                  "--hide-scrollbars"):
            opts.add_argument(a)
        opts.binary_location = chromium
        browser = webdriver.Chrome(service=Service(driver), options=opts)
        browser.get(url)
        # both runs ticked for the overlay
        wait_for(lambda: len(browser.find_elements("css selector", "#runs input[type=checkbox]")) == 2, 30,
                 "both runs listed")
        for box in browser.find_elements("css selector", "#runs input[type=checkbox]"):
            if not box.is_selected():
                box.click()
        time.sleep(3)
        browser.save_screenshot(args.output)
        print(f"wrote {args.output}")
        return 0
    finally:
        if browser is not None:
            browser.quit()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
