"""Data-parallel training, the parts that need no MPI: a rank's share of each global batch, the
launcher detection and its error without mpi4py, the solver fields, the per-rank batch sizes and
random streams (the runs under mpiexec are in test_mpi_train.py, marked ``mpi``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from netspec.data.reader import Cursor, Reader
from netspec.data.sources import Options, open_source
from netspec.data.transforms import Transform
from netspec.errors import NetspecError
from netspec.solvers import distributed as D
from netspec.solvers.config import resolve_training
from netspec.solvers.runlog import RunLog
from netspec.solvers.solver import Solver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def npz(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path / "toy.npz"
    np.savez(p, x=rng.integers(0, 256, (37, 1, 6, 6)).astype(np.uint8), y=rng.integers(0, 3, 37))
    return p


def _reader(path: Path, batch: int, part=(0, 1), transform=None, shuffle=True) -> Reader:
    src = open_source(str(path), None, Options(need_labels=True))
    t = Transform(transform, "TRAIN", src.shapes[0], None, True) if transform else None
    return Reader(src, batch, shuffle, 7, 9, t, np.float32, part)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_the_ranks_parts_make_the_global_batch(npz, size):
    """Rank r of S reads records [r*B, (r+1)*B) of each global batch of S*B (random crops and
    mirrors included), the cursor advances by the global batch: over epoch boundaries too."""
    b = 4
    t = {"crop_size": 4, "mirror": True, "scale": 0.5}
    whole = _reader(npz, size * b, transform=t)
    parts = [_reader(npz, b, (r, size), transform=t) for r in range(size)]
    cur = [Cursor()] * (size + 1)
    for _ in range(12):                       # 12 global batches: several epochs of 37 records
        x = np.empty((size * b, 1, 4, 4), np.float32)
        y = np.empty(size * b, np.float32)
        cur[0] = whole.fill([x, y], cur[0])
        for r, rd in enumerate(parts):
            xr = np.empty((b, 1, 4, 4), np.float32)
            yr = np.empty(b, np.float32)
            cur[r + 1] = rd.fill([xr, yr], cur[r + 1])
            np.testing.assert_array_equal(xr, x[r * b:(r + 1) * b])
            np.testing.assert_array_equal(yr, y[r * b:(r + 1) * b])
        assert len(set(cur)) == 1             # one global cursor, whatever the rank
    assert cur[0].epoch >= 2 and cur[0].batch == 12


def test_the_whole_batch_part_is_the_single_process_stream(npz):
    a, b = _reader(npz, 5), _reader(npz, 5, (0, 1))
    ca = cb = Cursor(2, 30, 9)
    for _ in range(9):
        ia, ca = a.indices(ca)
        ib, cb = b.indices(cb)
        np.testing.assert_array_equal(ia, ib)
        assert ca == cb


def test_no_launcher_means_one_process():
    assert D.launched_ranks({}) == (1, 0, 1, 0)
    assert isinstance(D.connect({}), D.Communicator) and D.connect({}).size == 1
    assert D.launched_ranks({"PMI_SIZE": "4", "PMI_RANK": "2", "MPI_LOCALNRANKS": "2", "MPI_LOCALRANKID": "0"}) \
        == (4, 2, 2, 0)
    assert D.launched_ranks({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "1"}) == (3, 1, 3, 1)
    assert D.connect({"PMI_SIZE": "1", "PMI_RANK": "0"}).size == 1    # mpiexec -n 1: no MPI needed


def test_the_timeout_is_read_and_checked():
    assert D.timeout_from_env({}) == D.DEFAULT_TIMEOUT
    assert D.timeout_from_env({"NETSPEC_MPI_TIMEOUT": "7.5"}) == 7.5
    for bad in ("soon", "0", "-3"):
        with pytest.raises(D.DistributedError, match="NETSPEC_MPI_TIMEOUT"):
            D.timeout_from_env({"NETSPEC_MPI_TIMEOUT": bad})


def test_the_device_of_a_rank_is_its_local_rank_mod_the_gpus():
    comm = D.Communicator()
    assert D.rank_device("cuda", comm) == "cuda"          # one process: as asked
    comm.size, comm.local_rank = 4, 3
    assert D.rank_device("cuda", comm, count=lambda: 2) == "cuda:1"
    assert D.rank_device("cuda:0", comm, count=lambda: 2) == "cuda:0"   # an explicit GPU is kept
    assert D.rank_device(None, comm) is None and D.rank_device("cpu", comm) == "cpu"


def test_solver_mode_gpu_gives_each_rank_its_own_gpu(monkeypatch):
    from netspec.solvers.solver import device_name

    monkeypatch.delenv("NETSPEC_DEVICE", raising=False)
    monkeypatch.setattr(D, "_gpu_count", lambda: 2)
    gpu = {"solver_mode": "GPU", "device_id": 1}
    comm = D.Communicator()
    assert device_name(gpu, None, comm) == "cuda:1"             # one process: Caffe's device_id
    assert device_name({}, None, comm) is None                  # the CPU
    comm.size, comm.local_rank = 4, 2
    assert device_name(gpu, None, comm) == "cuda:0"             # several: local rank mod GPUs
    comm.local_rank = 3
    assert device_name(gpu, None, comm) == "cuda:1"
    assert device_name(gpu, "cpu", comm) == "cpu"               # --device wins
    monkeypatch.setenv("NETSPEC_DEVICE", "cuda")
    assert device_name({}, None, comm) == "cuda:1"


def test_each_rank_has_its_own_random_stream_derived_from_rank_0s():
    def gen():
        return np.random.Generator(np.random.PCG64(5))

    g0, g1, g2 = gen(), gen(), gen()
    D.rank_stream(g0, 0)
    D.rank_stream(g1, 1)
    D.rank_stream(g2, 2)
    a, b, c = g0.random(4), g1.random(4), g2.random(4)
    np.testing.assert_array_equal(a, gen().random(4))       # rank 0: the single-process stream
    assert not np.allclose(a, b) and not np.allclose(b, c)
    # rank 1 after n draws == rank 0's state after n draws, jumped (what a resume derives)
    later = gen()
    later.random(4)
    D.rank_stream(later, 1)
    np.testing.assert_array_equal(later.random(3), g1.random(3))


MPI_MISSING = textwrap.dedent("""
    import sys
    sys.modules["mpi4py"] = None          # as if it were not installed
    from netspec.cli.main import cli
    cli(sys.argv[1:], prog_name="netspec")
""")


def test_several_ranks_without_mpi4py_is_one_clear_error():
    env = dict(os.environ, PMI_SIZE="2", PMI_RANK="0")
    proc = subprocess.run([sys.executable, "-c", MPI_MISSING, "train", "models/xor/train_val.yaml", "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "rank 0 of 2" in lines[0] and 'pip install -e ".[mpi]"' in lines[0]


def test_help_and_a_single_process_train_never_import_mpi4py(tmp_path):
    probe = ("import sys\nfrom netspec.cli.main import cli\n"
             "try:\n    cli(sys.argv[1:], prog_name='netspec')\nexcept SystemExit:\n    pass\n"
             "print('MPI' if 'mpi4py' in sys.modules else 'NO-MPI', 'numba' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    r = subprocess.run([sys.executable, "-c", probe, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.split()[-2:] == ["NO-MPI", "False"], r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", probe, "train", "models/xor/train_val.yaml", "-q", "--run-dir",
                        str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.split()[-2] == "NO-MPI", r.stdout + r.stderr


# ---- solver fields --------------------------------------------------------------------------

NET = """\
name: toy
layers:
  - {name: data, type: Data, top: [data, label], include: {phase: TRAIN}, source: "SRC", batch_size: 8,
     transform: {scale: 0.0039}}
  - {name: data, type: Data, top: [data, label], include: {phase: TEST}, source: "SRC", batch_size: 10,
     transform: {scale: 0.0039}}
  - {name: ip1, type: InnerProduct, num_output: 5, weight_filler: {type: xavier}}
  - {name: relu1, type: ReLU, top: ip1}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""


def _training(tmp_path, npz, **solver):
    cfg = {"base_lr": 0.1, "lr_policy": "fixed", "max_iter": 4, "test_iter": 3, "test_interval": 2,
           "random_seed": 3, **solver}
    f = tmp_path / "net.yaml"
    f.write_text(NET.replace("SRC", str(npz)) + "solver: " + json.dumps(cfg) + "\n")
    return resolve_training(f)


class FakeRanks(D.Communicator):
    """A communicator that says S ranks without any MPI (its collectives do nothing): enough to
    check how a Solver shares batches out."""

    def __init__(self, size: int, rank: int = 0):
        super().__init__()
        self.size, self.rank, self.name = size, rank, f"fake, {size} ranks"


def test_a_stated_global_batch_sets_each_ranks_batch(tmp_path, npz):
    tr = _training(tmp_path, npz, global_batch=16, lr_scaling="linear", lr_base_batch=8)
    one = Solver(tr, None, RunLog(None, None))
    two = Solver(tr, None, RunLog(None, None), comm=FakeRanks(2))
    assert one.net.blobs["data"].data.shape[0] == 16 and two.net.blobs["data"].data.shape[0] == 8
    assert one.global_batch == two.global_batch == 16
    assert one.lr(0) == two.lr(0) == pytest.approx(0.2)           # 0.1 x 16 / 8
    # the test batch of 10 is split between 2 ranks: 5 each, test_iter batches
    assert two.test_nets[0].blobs["data"].data.shape[0] == 5 and two.test_iters == [3]
    lines = "\n".join(two.describe_parallel())
    assert "Global batch: 16 = 2 ranks x batch 8 x iter_size 1 (stated: global_batch)" in lines
    assert "base_lr 0.1 x 16 / lr_base_batch 8 = 0.2" in lines
    assert "Test net #0: 2 ranks x batch 5 x 3 batches (= 3 batches of 10)" in lines


def test_a_derived_global_batch_and_dealt_out_test_batches(tmp_path, npz):
    three = Solver(_training(tmp_path, npz, iter_size=2), None, RunLog(None, None), comm=FakeRanks(3))
    assert three.global_batch == 3 * 8 * 2 and three.net.blobs["data"].data.shape[0] == 8
    # 10 is not a multiple of 3: whole batches are dealt out, one more each (3 x 1 >= 3)
    assert three.test_nets[0].blobs["data"].data.shape[0] == 10 and three.test_iters == [1]
    assert "(derived: ranks x batch_size x iter_size)" in "\n".join(three.describe_parallel())


def test_a_global_batch_the_ranks_do_not_divide_is_a_located_error(tmp_path, npz):
    tr = _training(tmp_path, npz, global_batch=10)
    with pytest.raises(NetspecError) as e:
        Solver(tr, None, RunLog(None, None), comm=FakeRanks(4))
    text = str(e.value)
    assert "net.yaml" in text and "global_batch" in text and "4 x 1 = 4" in text


def test_linear_scaling_needs_a_base_batch(tmp_path, npz):
    with pytest.raises(NetspecError, match="lr_scaling 'linear' needs lr_base_batch"):
        _training(tmp_path, npz, lr_scaling="linear")
    tr = _training(tmp_path, npz, lr_base_batch=64)
    assert any("lr_base_batch has no effect" in str(w) for w in tr.warnings)


def test_a_state_refuses_another_global_batch(tmp_path, npz):
    s = Solver(_training(tmp_path, npz), tmp_path / "run", RunLog(None, None))
    s.solve(handle_signals=False)
    state = s.last_snapshot
    two = Solver(_training(tmp_path, npz), tmp_path / "run", RunLog(None, None), comm=FakeRanks(2))
    with pytest.raises(NetspecError, match="global batch of 8 .* this run's is 16"):
        two.restore(state)
