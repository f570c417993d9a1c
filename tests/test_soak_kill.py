"""kill -9 soak: ``netspec train`` with a snapshot every other iteration and ``snapshot_keep: 3``
is killed with SIGKILL 20 times and resumed with ``--resume latest`` each time; the finished
run equals a straight run bit for bit (weights file, solver state, every logged value).

12 kills come at random instants after training (re)started, 3 at random instants while the
process starts (importing, reading the state, sweeping temporary files); 5 are aimed at a snapshot write
(the child pauses inside the fsync of its n-th snapshot file, n random, and is killed there),
so that a kill inside a write is tested on every run, however fast the disk.  After each kill:
the newest state under a final name reads back whole (as does its weights file), it is no
older than the one before, no more than snapshot_keep + 1 snapshots exist (retention removes
the oldest after writing the newest), and the next ``--resume latest`` restores exactly it and
sweeps the temporary files the killed writer left.  The instants come from a seeded RNG; where
each kill lands (inside a snapshot file's write, or elsewhere) depends on the machine's speed,
and is printed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netspec.io import atomic
from netspec.io import snapshot as snap
from netspec.io.weights import read_safetensors

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="the child names its files through /proc")]

ROOT = Path(__file__).resolve().parent.parent
KILLS, AIMED, EARLY, KEEP, MAX_ITER, SEED = 20, 5, 3, 3, 1200, 14

NET = f"""\
name: soak
solver: {{base_lr: 0.01, momentum: 0.9, weight_decay: 0.0005, lr_policy: step, gamma: 0.5, stepsize: 500,
         max_iter: {MAX_ITER}, snapshot: 2, snapshot_keep: {KEEP}, random_seed: 4, display: 1, average_loss: 5}}
layers:
  - {{name: data, type: DummyData, top: [data, label], shape: [[8, 64], [8]],
     data_filler: [{{type: gaussian, std: 1}}, {{type: constant, value: 1}}]}}
  - {{name: ip1, type: InnerProduct, num_output: 256, weight_filler: {{type: xavier}}}}
  - {{name: relu, type: ReLU, top: ip1}}
  - {{name: drop, type: Dropout, top: ip1, dropout_ratio: 0.2}}
  - {{name: ip2, type: InnerProduct, num_output: 3, weight_filler: {{type: xavier}}}}
  - {{name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}}
"""

# The child is `netspec train` itself; with SOAK_STALL_AT=n it announces the n-th fsync of a
# snapshot's temporary file and pauses there (the parent kills it during that pause).
CHILD = r"""
import os, re, sys, time
stall_at = int(os.environ.get("SOAK_STALL_AT", "0"))
if stall_at:
    real_fsync, seen = os.fsync, [0]
    temp = re.compile(r"/\.[^/]+_iter_\d+(\.solverstate)?\.safetensors\.tmp\d+$")
    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if temp.search(name):
            seen[0] += 1
            if seen[0] == stall_at:
                print("STALLED " + name, flush=True)
                time.sleep(60)
        real_fsync(fd)
    os.fsync = fsync
from netspec.cli.main import cli
cli(sys.argv[1:], prog_name="netspec")
"""


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("SOAK_STALL_AT", None)
    e.update(extra)
    return e


class Child:
    """A training process whose output lines are collected by a thread."""

    def __init__(self, cwd: Path, args: list[str], **extra):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, "train", "net.yaml", "--run-dir", "run", "-q",
                                      *args], cwd=cwd, env=env(**extra), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 120.0) -> bool:
        """Until a line starting with ``prefix`` came; False when the process ended first."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                if any(x.startswith(prefix) for x in self.lines):
                    return True
                if self.proc.poll() is not None and not self.reader.is_alive():
                    return False
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no '{prefix}' line in {timeout} s:\n" + self.output())
                self.cond.wait(min(left, 0.5))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)

    def output(self) -> str:
        return "\n".join(self.lines)


def states(run: Path) -> list[Path]:
    return snap.find_states([run])


def check_after_kill(run: Path, before: int) -> tuple[Path, int]:
    """The newest state reads whole, with its weights file; returns it and its iteration."""
    latest = snap.latest_state([run])
    assert latest is not None and not atomic.is_temp(latest)
    tensors, record, _, _ = snap.read_state(latest)
    it = int(record["iter"])
    assert it == snap.iteration_of(latest) and it >= before
    read_safetensors(snap.weights_path(run / "soak", it))     # the state's weights are beside it
    assert len(states(run)) <= KEEP + 1, sorted(p.name for p in states(run))
    return latest, it


def data_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


def logged(run: Path) -> dict:
    out = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue    # a kill cut the last line short
        out.setdefault((r["iter"], r["phase"], r["name"]), set()).add(r["value"])
    return out


def test_twenty_kills_then_the_same_result_as_a_straight_run(tmp_path):
    straight, soak = tmp_path / "straight", tmp_path / "soak"
    for d in (straight, soak):
        d.mkdir()
        (d / "net.yaml").write_text(NET)
    t0 = time.monotonic()
    whole = Child(straight, [])
    assert whole.wait_for("Solving "), whole.output()
    t1 = time.monotonic()
    assert whole.wait_for("Iteration "), whole.output()
    t2 = time.monotonic()
    whole.proc.wait(timeout=600)
    whole.reader.join(timeout=10)
    assert whole.proc.returncode == 0, whole.output()
    # the instants are drawn in units of this machine's times, so that the kills land in the
    # run (about 20 iterations apart on average) however fast or loaded the machine is
    startup, per_iter = t1 - t0, (time.monotonic() - t2) / MAX_ITER

    rng = random.Random(SEED)
    order = rng.sample(range(KILLS), AIMED + EARLY)
    aimed, early = set(order[:AIMED]), set(order[AIMED:])
    run = soak / "run"
    latest_it, latest, in_write, in_snapshot, restores, starting = -1, None, 0, 0, 0, 0
    landed: list[str] = []
    for k in range(KILLS):
        args = ["--resume", "latest"] if latest is not None else []
        extra = {"SOAK_STALL_AT": str(rng.randint(1, 60))} if k in aimed else {}
        delay = rng.uniform(0.0, startup if k in early else 40 * per_iter)
        child = Child(soak, args, **extra)
        try:
            if k in early:      # an instant while it starts (or just after, on a faster start)
                time.sleep(delay)
            else:
                if not child.wait_for("Solving "):
                    raise AssertionError("the run ended before training started:\n" + child.output())
                if k in aimed:
                    assert child.wait_for("STALLED "), child.output()
                else:
                    assert child.wait_for("Iteration "), child.output()
                    time.sleep(delay)
            alive = child.proc.poll() is None
        finally:
            child.kill()
        assert alive, "the run finished before kill %d; raise MAX_ITER\n%s" % (k, child.output())
        assert child.proc.returncode == -signal.SIGKILL
        out = child.output()
        if latest is not None and "Solving " in out:
            # --resume latest took the newest state the last kill left
            assert f"Restoring previous solver status from run/{latest.name}" in out, out
            restores += 1
        starting += "Solving " not in out
        temps = [p for p in run.iterdir() if (atomic.temp_target(p) or ("", 0))[1] == child.proc.pid] \
            if run.is_dir() else []
        log_lines = (run / "train.log").read_text().splitlines() if (run / "train.log").exists() else [""]
        in_write += bool(temps)
        in_snapshot += f" {child.proc.pid} netspec] Snapshotting" in log_lines[-1]   # its own last line
        landed.append("aimed" if k in aimed else ("start" if "Solving " not in out else
                                                   ("write" if temps else "train")))
        if k in aimed:
            assert temps, "the aimed kill left no temporary file"
        if latest is None and (not run.is_dir() or snap.latest_state([run]) is None):
            continue        # killed before the first snapshot: the next run starts afresh
        latest, latest_it = check_after_kill(run, latest_it)
    assert latest_it > 0

    final = Child(soak, ["--resume", "latest"])
    final.proc.wait(timeout=600)
    final.reader.join(timeout=10)
    assert final.proc.returncode == 0, final.output()
    out = final.output()
    assert f"Restoring previous solver status from run/{latest.name}" in out and "Optimization Done." in out
    # every temporary file a killed writer left was swept; retention left the newest KEEP
    assert not [p for p in run.iterdir() if atomic.is_temp(p)]
    assert sorted(snap.iteration_of(p) for p in states(run)) == [MAX_ITER - 4, MAX_ITER - 2, MAX_ITER]
    assert sorted(p.name for p in run.glob("soak_iter_*.safetensors") if not p.name.endswith(snap.STATE_SUFFIX)) \
        == sorted(f"soak_iter_{i}.safetensors" for i in (MAX_ITER - 4, MAX_ITER - 2, MAX_ITER))
    assert "Snapshot retention (snapshot_keep: 3): removed soak_iter_" in (run / "train.log").read_text()

    # bit for bit: the weights file, the solver state, and every value either run logged
    name_w = f"soak_iter_{MAX_ITER}.safetensors"
    ours_w, theirs_w = read_safetensors(run / name_w), read_safetensors(straight / "run" / name_w)
    assert ours_w[1] == theirs_w[1] and ours_w[0].keys() == theirs_w[0].keys()
    assert all(np.array_equal(ours_w[0][k], theirs_w[0][k]) for k in ours_w[0])
    # the tensor bytes themselves (the header's metadata order varies with the process: the
    # safetensors writer keeps metadata in a hash map)
    assert data_bytes(run / name_w) == data_bytes(straight / "run" / name_w)
    a_t, a_rec, a_net, a_solver = snap.read_state(run / f"soak_iter_{MAX_ITER}{snap.STATE_SUFFIX}")
    b_t, b_rec, b_net, b_solver = snap.read_state(straight / "run" / f"soak_iter_{MAX_ITER}{snap.STATE_SUFFIX}")
    assert a_t.keys() == b_t.keys() and all(np.array_equal(a_t[k], b_t[k]) and a_t[k].dtype == b_t[k].dtype
                                            for k in a_t)
    for rec in (a_rec, b_rec):
        rec.pop("elapsed")
        rec.pop("run_dir")
    assert a_rec == b_rec and a_net == b_net and a_solver == b_solver
    ours, theirs = logged(run), logged(straight / "run")
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] and len(ours[k]) == 1 for k in ours), \
        [k for k in ours if ours[k] != theirs[k]][:5]
    print(f"\nsoak: {KILLS} SIGKILLs survived ({AIMED} aimed at a snapshot write, {EARLY} drawn in the start-up "
          f"time, {starting} of them before training began); "
          f"{in_write} landed inside a "
          f"snapshot file's write (a temporary file left), {in_snapshot} during a snapshot (its last log "
          f"line a Snapshotting one); {restores} --resume latest restores checked; landed: {' '.join(landed)}; the final "
          f"state is iteration {MAX_ITER}, bit for bit the straight run's; startup {startup:.2f} s, "
          f"{1000 * per_iter:.1f} ms per iteration (with its snapshot every other one)")
