"""A training process killed (SIGKILL) while it writes a snapshot leaves the previous snapshot
intact and no half-written file under a snapshot name; ``--resume latest`` then continues, and
ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli.main import cli
from netspec.io import snapshot as snap
from netspec.io.atomic import is_temp
from netspec.io.weights import read_safetensors

ROOT = Path(__file__).resolve().parent.parent

NET = """\
name: tiny
solver: {base_lr: 0.1, momentum: 0.9, lr_policy: fixed, max_iter: MAX, snapshot: 1, random_seed: 4,
         display: 1}
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[8, 5], [8]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: ip1, type: InnerProduct, num_output: 6, weight_filler: {type: xavier}}
  - {name: drop, type: Dropout, top: ip1, dropout_ratio: 0.2}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""

# The child trains through the real CLI; its fsync is wrapped so that it announces when it is
# about to make a given snapshot file durable, then waits there to be killed.
CHILD = r"""
import os, sys, time
target = os.environ["STALL_ON"]
real_fsync = os.fsync
def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if target and os.path.basename(name).startswith(target):
        print("STALLED " + name, flush=True)
        time.sleep(120)
    real_fsync(fd)
os.fsync = fsync
from netspec.cli.main import cli
cli(sys.argv[1:], prog_name="netspec")
"""


def start(tmp_path: Path, stall_on: str, max_iter: int) -> subprocess.Popen:
    (tmp_path / "net.yaml").write_text(NET.replace("MAX", str(max_iter)))
    env = dict(os.environ, STALL_ON=stall_on, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", CHILD, "train", "net.yaml", "--run-dir", "run", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(proc: subprocess.Popen, marker: str) -> list[str]:
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith(marker):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen


def uninterrupted(tmp_path: Path, max_iter: int) -> dict:
    d = tmp_path / "whole"
    d.mkdir()
    (d / "net.yaml").write_text(NET.replace("MAX", str(max_iter)))
    r = CliRunner().invoke(cli, ["train", str(d / "net.yaml"), "--run-dir", str(d / "run"), "-q"])
    assert r.exit_code == 0, r.output
    return read_safetensors(d / "run" / f"tiny_iter_{max_iter}.safetensors")[0]


@pytest.mark.parametrize("stall_on", [".tiny_iter_3.safetensors", ".tiny_iter_3.solverstate.safetensors"],
                         ids=["in-weights-write", "in-state-write"])
def test_kill_during_a_snapshot_then_resume(tmp_path, stall_on):
    proc = start(tmp_path, stall_on, max_iter=6)
    out = kill_when(proc, "STALLED ")
    assert out and out[-1].startswith("STALLED "), "\n".join(out)
    assert proc.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    temps = [n for n in names if is_temp(n)]
    assert len(temps) == 1 and temps[0].startswith(stall_on)
    # no snapshot file of iteration 3 exists in a half-written state; the older ones are whole
    assert "tiny_iter_3.solverstate.safetensors" not in names
    for it in (1, 2):
        snap.read_state(run / f"tiny_iter_{it}.solverstate.safetensors")
        read_safetensors(run / f"tiny_iter_{it}.safetensors")
    assert snap.latest_state([run]).name == "tiny_iter_2.solverstate.safetensors"

    r = CliRunner().invoke(cli, ["train", str(tmp_path / "net.yaml"), "--run-dir", str(run), "--resume", "latest",
                                 "-q"])
    assert r.exit_code == 0, r.output
    assert "Restoring previous solver status from" in r.output and "tiny_iter_2.solverstate" in r.output
    resumed = read_safetensors(run / "tiny_iter_6.safetensors")[0]
    whole = uninterrupted(tmp_path, 6)
    assert all(np.array_equal(resumed[k], whole[k]) for k in whole)
    # the log goes on in the same run folder
    iters = [json.loads(x)["iter"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert iters[0] == 0 and iters[-1] == 5


def test_kill_at_a_random_moment_of_a_snapshot_leaves_readable_files(tmp_path):
    """No stall: the kill lands wherever the process is after it logs a snapshot line."""
    proc = start(tmp_path, "", max_iter=50)
    kill_when(proc, "Snapshotting solver state to safetensors file run/tiny_iter_40.")
    run = tmp_path / "run"
    states = snap.find_states([run])
    assert states
    for p in states:
        snap.read_state(p)          # every state under its final name is complete
    for p in run.glob("tiny_iter_*.safetensors"):
        if not p.name.endswith(snap.STATE_SUFFIX):
            read_safetensors(p)
    r = CliRunner().invoke(cli, ["train", str(tmp_path / "net.yaml"), "--run-dir", str(run), "--resume", "latest",
                                 "-q"])
    assert r.exit_code == 0, r.output
    assert (run / "tiny_iter_50.solverstate.safetensors").exists()
