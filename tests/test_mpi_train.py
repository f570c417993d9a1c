"""Data-parallel training under mpiexec (marked ``mpi``: ``pip install -e ".[mpi]"`` and
``python -m pytest -m mpi``; CI runs them on its 2 cores).

- 2 ranks x batch 32 trains the same weights as 1 process x batch 64 on the same data, to float32
  summation tolerance, after 50 iterations (the test outputs agree too);
- two 2-rank runs are bit-identical; a snapshot taken with 2 ranks resumes with 2 ranks bit for
  bit, and with 1 rank to the same tolerance;
- a rank killed mid-run ends the job within 60 s and the last snapshot loads and resumes; a
  rank that raises, or hangs, ends every rank with one clear error; a setup error that every
  rank makes is printed once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parent.parent


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason='needs the MPI extra: pip install -e ".[mpi]"')
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip('no mpiexec on PATH: pip install -e ".[mpi]" brings MPICH\'s')
    return found


NET = """\
name: toy
layers:
  - {name: data, type: Data, top: [data, label], include: {phase: TRAIN}, source: "SRC", batch_size: 64,
     transform: {scale: 0.00390625, mirror: true}}
  - {name: data, type: Data, top: [data, label], include: {phase: TEST}, source: "SRC", batch_size: 20,
     transform: {scale: 0.00390625}}
  - {name: conv1, type: Convolution, num_output: 4, kernel_size: 3, weight_filler: {type: xavier}}
  - {name: relu1, type: ReLU, top: conv1}
  - {name: pool1, type: Pooling, pool: MAX, kernel_size: 2, stride: 2}
  - {name: ip1, type: InnerProduct, num_output: 16, weight_filler: {type: xavier}}
  - {name: relu2, type: ReLU, top: ip1}
  EXTRA
  - {name: ip2, type: InnerProduct, num_output: 5, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""

SOLVER = {"base_lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "lr_policy": "fixed", "max_iter": 50,
          "global_batch": 64, "test_iter": 4, "test_interval": 25, "display": 10, "snapshot": 25,
          "random_seed": 7, "test_initialization": False}

BOOM = '''
import os, time
import netspec
from netspec.errors import DataError


@netspec.register("Boom")
class Boom(netspec.Layer):
    """Passes its input on; on rank @RANK@'s forward number @AT@ it raises (or, hang: sleeps).

    Example::

        {name: b, type: Boom}
    """

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def setup(self, bottom, top):
        self.calls = 0

    def forward(self, bottom, top):
        self.calls += 1
        if os.environ.get("PMI_RANK") == "@RANK@" and self.calls == @AT@:
            if "@MODE@" == "hang":
                time.sleep(600)
            raise DataError("simulated failure of a data read")
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].grad[...] = top[0].grad
'''


def write_data(folder: Path, n: int = 640) -> Path:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, n)
    x = rng.integers(0, 256, (n, 1, 8, 8)).astype(np.uint8)
    x[np.arange(n), 0, y, :] = 255          # a learnable pattern: the label's row is bright
    p = folder / "toy.npz"
    np.savez(p, x=x, y=y)
    return p


def write_job(folder: Path, data: Path, extra: str = "", **solver) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.yaml").write_text(NET.replace("SRC", str(data)).replace("  EXTRA\n", extra))
    cfg = dict(SOLVER, net="net.yaml", **solver)
    (folder / "solver.yaml").write_text(json.dumps(cfg))
    return folder / "solver.yaml"


def run(ranks: int, solver: Path, run_dir: Path, *args: str, timeout: float = 300, env: dict | None = None):
    cmd = [sys.executable, "-m", "netspec.cli.main", "train", str(solver), "-q", "--run-dir", str(run_dir), *args]
    if ranks:
        cmd = [_mpiexec(), "-n", str(ranks)] + cmd
    e = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


def weights(run_dir: Path, it: int) -> dict[str, np.ndarray]:
    from netspec.io.weights import load_weights

    return load_weights(run_dir / f"toy_iter_{it}.safetensors")


def logged_tests(run_dir: Path) -> dict[tuple[int, str], float]:
    from netspec.solvers.runlog import read_jsonl

    return {(r["iter"], r["name"]): r["value"] for r in read_jsonl(run_dir / "log.jsonl") if r["phase"] == "TEST"}


def close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The straight runs: 1 process x 64, 2 ranks x 32 (twice), and resumes of the 2-rank run's
    iteration-25 snapshot with 1 and with 2 ranks."""
    _mpiexec()
    base = tmp_path_factory.mktemp("mpi")
    solver = write_job(base / "job", write_data(base))
    out = {}
    for name, ranks in (("one", 0), ("two", 2), ("two_again", 2)):
        r = run(ranks, solver, base / name)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = (base / name, r)
    for name, ranks in (("resume1", 0), ("resume2", 2)):
        d = base / name
        d.mkdir()
        for suffix in (".safetensors", ".solverstate.safetensors"):
            shutil.copy(base / "two" / f"toy_iter_25{suffix}", d / f"toy_iter_25{suffix}")
        r = run(ranks, solver, d, "--resume", str(d / "toy_iter_25.solverstate.safetensors"))
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = (d, r)
    return out


def test_two_ranks_of_32_train_what_one_process_of_64_does(runs):
    one, two = runs["one"][0], runs["two"][0]
    close(weights(one, 50), weights(two, 50))
    t1, t2 = logged_tests(one), logged_tests(two)
    assert t1.keys() == t2.keys() and (50, "accuracy") in t1
    for k in t1:
        assert t2[k] == pytest.approx(t1[k], rel=1e-3, abs=1e-4), k
    assert max(t1[(50, "accuracy")], t2[(50, "accuracy")]) > 0.5      # it learned something


def test_only_rank_0_logs_and_says_how_the_batch_was_made(runs):
    out = runs["two"][1].stdout
    assert out.count("Iteration 50, loss") == 1 and out.count("Optimization Done.") == 1
    assert "Data parallel: MPI, 2 ranks" in out
    assert "Global batch: 64 = 2 ranks x batch 32 x iter_size 1 (stated: global_batch)" in out
    assert "Test net #0: 2 ranks x batch 10 x 4 batches (= 4 batches of 20)" in out
    assert runs["two"][1].stderr.strip() == ""


def test_two_rank_runs_are_bit_identical(runs):
    same(weights(runs["two"][0], 50), weights(runs["two_again"][0], 50))
    assert logged_tests(runs["two"][0]) == logged_tests(runs["two_again"][0])


def test_a_two_rank_snapshot_resumes_with_two_and_with_one_rank(runs):
    straight = weights(runs["two"][0], 50)
    same(weights(runs["resume2"][0], 50), straight)
    close(weights(runs["resume1"][0], 50), straight)


def _rank_pids(job: str) -> dict[int, int]:
    """{rank: pid} of the processes whose environment carries this job's marker."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in kv)
        except OSError:
            continue
        if env.get("NETSPEC_TEST_JOB") == job and "PMI_RANK" in env:
            found[int(env["PMI_RANK"])] = int(d.name)
    return found


def test_killing_a_rank_ends_the_job_and_the_last_snapshot_resumes(tmp_path):
    from netspec.io import snapshot as snap

    solver = write_job(tmp_path / "job", write_data(tmp_path), max_iter=10 ** 6, snapshot=20, test_interval=0,
                       test_iter=[], display=0)
    job = uuid.uuid4().hex
    rd = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "netspec.cli.main", "train", str(solver), "-q",
           "--run-dir", str(rd)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, NETSPEC_TEST_JOB=job), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 120
        while not list(rd.glob("*_iter_60.solverstate.safetensors")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < t_end, "no snapshot within 120 s"
            time.sleep(0.1)
        pids = _rank_pids(job)
        assert sorted(pids) == [0, 1]
        t0 = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and took < 60
    said = out + err
    assert "Killed" in said or "signal 9" in said.lower(), said     # the launcher names the dead rank
    assert not _rank_pids(job)                                     # no rank is left behind
    latest = snap.latest_state([rd])
    it = snap.iteration_of(latest)
    tensors, record, _, _ = snap.read_state(latest)                # whole: its sha256 checks pass
    assert record["iter"] == it >= 60 and weights(rd, it).keys()
    cfg = json.loads(solver.read_text())
    cfg["max_iter"] = it + 10
    solver.write_text(json.dumps(cfg))
    r = run(2, solver, rd, "--resume", "latest")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Restoring previous solver status from {latest}" in r.stdout and weights(rd, it + 10)


def _boom(folder: Path, rank: int, at: int, mode: str) -> str:
    (folder / "job").mkdir(parents=True, exist_ok=True)
    (folder / "job" / "boom.py").write_text(BOOM.replace("@RANK@", str(rank)).replace("@AT@", str(at))
                                            .replace("@MODE@", mode))
    return "  - {name: boom, type: Boom}\n"


def _with_plugin(solver: Path) -> None:
    net = solver.parent / "net.yaml"
    net.write_text("plugins: [boom.py]\n" + net.read_text())


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_that_raises_ends_every_rank_with_one_error(tmp_path, rank):
    solver = write_job(tmp_path / "job", write_data(tmp_path), extra=_boom(tmp_path, rank, 30, "raise"),
                       max_iter=10 ** 6, test_interval=0, test_iter=[], snapshot=10)
    _with_plugin(solver)
    t0 = time.monotonic()
    r = run(2, solver, tmp_path / "run", timeout=120)
    assert r.returncode == 1 and time.monotonic() - t0 < 60
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, r.stderr
    assert errors[0] == f"error (rank {rank} of 2): simulated failure of a data read"
    from netspec.io import snapshot as snap

    snap.read_state(snap.latest_state([tmp_path / "run"]))        # the snapshot before it is whole


def test_a_rank_that_hangs_is_found_by_the_others_deadline(tmp_path):
    solver = write_job(tmp_path / "job", write_data(tmp_path), extra=_boom(tmp_path, 1, 30, "hang"),
                       max_iter=10 ** 6, test_interval=0, test_iter=[], snapshot=0)
    _with_plugin(solver)
    t0 = time.monotonic()
    r = run(2, solver, tmp_path / "run", timeout=120, env={"NETSPEC_MPI_TIMEOUT": "4"})
    took = time.monotonic() - t0
    assert r.returncode != 0 and took < 60
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith("error: rank 0 of 2 waited 4 s for the other ranks in the gradient Allreduce")


def test_a_setup_error_of_every_rank_is_reported_once(tmp_path):
    solver = write_job(tmp_path / "job", tmp_path / "missing.npz")
    r = run(2, solver, tmp_path / "run", timeout=120)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "missing.npz" in errors[0], r.stderr


def test_ctrl_c_stops_every_rank_at_one_iteration_with_a_snapshot(tmp_path):
    from netspec.io import snapshot as snap

    solver = write_job(tmp_path / "job", write_data(tmp_path), max_iter=10 ** 6, snapshot=20, test_interval=0,
                       test_iter=[], display=0)
    rd = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "netspec.cli.main", "train", str(solver), "-q",
           "--run-dir", str(rd)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 120
        while not list(rd.glob("*_iter_40.solverstate.safetensors")):
            assert proc.poll() is None and time.monotonic() < t_end, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)          # mpiexec passes Ctrl-C on to every rank
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert out.count("SIGINT received") == 1 and out.count("Optimization stopped early.") == 1
    latest = snap.latest_state([rd])
    it = snap.iteration_of(latest)
    assert out.count(f"toy_iter_{it}.solverstate.safetensors") == 1     # the stop snapshot, written once
    snap.read_state(latest)
