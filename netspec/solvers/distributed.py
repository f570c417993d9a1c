"""Data-parallel training: the communicator the training loop is handed.

``mpiexec -n S netspec train solver.yaml`` starts S processes (ranks).  Each builds the same net
from the same seed, reads its own part of every global batch, runs forward and backward, and
the ranks sum their gradient arenas with one MPI Allreduce; every rank then applies the same
update to the same params, so the params stay identical without ever being sent (synchronous
SGD as in Goyal et al. 2017 and ChainerMN).  A single process gets ``Communicator``, whose
collectives do nothing, so the loop reads the same either way.

``connect()`` looks at the environment the launcher set (``PMI_SIZE``/``PMI_RANK`` from MPICH's
and Intel MPI's hydra, ``OMPI_COMM_WORLD_SIZE`` from Open MPI, ``MV2_COMM_WORLD_SIZE`` from
MVAPICH) and imports mpi4py only when it says several ranks; without mpi4py that is a
one-paragraph error naming ``pip install -e ".[mpi]"``.

Faults.  Every collective is non-blocking (``Iallreduce``/``Ibcast``), polled against a
deadline (``NETSPEC_MPI_TIMEOUT`` seconds, default 120): a rank that stops answering makes the
others print one error and ``MPI_Abort`` instead of hanging.  A rank that raises prints its
error (naming the rank) and aborts the job (``abort``).  A rank killed outright is reported by
the launcher (hydra ends the other ranks at once).  Snapshots are written by rank 0 alone, to a
temporary name and renamed, so a job that dies leaves the last snapshot whole.

Devices.  A rank's arrays may live on a GPU (CuPy arrays): the collectives go through host
copies (``netspec.core.device.to_host``/``copy_in``) unless the array is a NumPy array, which
MPI reads in place.  ``rank_device`` picks GPU ``local_rank mod count`` for ``--device cuda``.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from typing import Any, Callable, NoReturn

import numpy as np

from netspec.errors import NetspecError, SolverError

#: (size variable, rank variable, local size, local rank) of the launchers we know
LAUNCHER_ENV = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS", "MPI_LOCALRANKID"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
)

DEFAULT_TIMEOUT = 120.0

INSTALL_HINT = ('pip install -e ".[mpi]"')


class DistributedError(SolverError):
    """The ranks of a data-parallel run cannot work together."""


class QuietExit(Exception):
    """A rank other than 0 stops because of an error that rank 0 reports (status 1)."""


def launched_ranks(environ=None) -> tuple[int, int, int, int]:
    """(size, rank, local size, local rank) as the MPI launcher's environment says; (1, 0, 1, 0)
    when no launcher started this process."""
    env = os.environ if environ is None else environ
    for size_key, rank_key, lsize_key, lrank_key in LAUNCHER_ENV:
        size = env.get(size_key, "")
        if size.isdigit() and int(size) >= 1:
            rank = int(env.get(rank_key, "0") or 0)
            lsize = env.get(lsize_key, "")
            lrank = env.get(lrank_key, "")
            return (int(size), rank, int(lsize) if lsize.isdigit() else int(size),
                    int(lrank) if lrank.isdigit() else rank)
    return 1, 0, 1, 0


def timeout_from_env(environ=None) -> float:
    env = os.environ if environ is None else environ
    text = env.get("NETSPEC_MPI_TIMEOUT", "")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise DistributedError(f"NETSPEC_MPI_TIMEOUT must be a number of seconds, got '{text}'") from None
    if not value > 0:
        raise DistributedError(f"NETSPEC_MPI_TIMEOUT must be above 0 seconds, got '{text}'")
    return value


def connect(environ=None) -> "Communicator":
    """The communicator for this process: MPI when a launcher started several ranks, else trivial."""
    size, rank, lsize, lrank = launched_ranks(environ)
    if size <= 1:
        return Communicator()
    timeout = timeout_from_env(environ)
    try:
        import mpi4py
    except ImportError:
        raise DistributedError(
            f"this process is rank {rank} of {size} started by an MPI launcher, but mpi4py is not "
            f"installed, so the ranks cannot exchange gradients; install the MPI extra on every machine "
            f"of the job ({INSTALL_HINT}: mpi4py and an MPI library from pip), or run netspec train "
            f"without mpiexec") from None
    return MPICommunicator(mpi4py, timeout, lsize, lrank)


# ---- the single-process communicator ------------------------------------------------------

class Communicator:
    """One process: rank 0 of 1.  Every collective returns at once and leaves its data as it is
    (a sum over one rank is the value itself), so the loop needs no case of its own."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    name = "single process"

    def __init__(self) -> None:
        self.reduce_seconds = 0.0     # time spent in the gradient reductions (incl. waiting)
        self.reduce_calls = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return self.name

    # -- collectives (overridden by MPICommunicator) ------------------------------------------
    def reduce_step(self, grad, scalars: np.ndarray) -> None:
        """The step's reduction: ``grad`` (the flat gradient arena) becomes the mean over the
        ranks and ``scalars`` (float64: loss, flags) the sum, both in place."""

    def allreduce_sum(self, a, what: str = "a sum") -> None:
        """``a`` becomes the sum over the ranks, in place."""

    def broadcast(self, a, root: int = 0, what: str = "a broadcast") -> None:
        """``a`` becomes rank ``root``'s values, in place."""

    def broadcast_object(self, obj: Any, root: int = 0, what: str = "a broadcast") -> Any:
        return obj

    def barrier(self, what: str = "a barrier") -> None:
        pass

    def agreed(self, local: bool, reduced: bool) -> bool:
        """A decision every rank must take at the same iteration (stop, snapshot): in one process
        the flag as it is now; with several ranks the value they summed at the step."""
        return local

    def agree(self, error: BaseException | None) -> None:
        """Called by every rank after setting up: re-raises the error of the first rank that
        failed (on rank 0; the others raise ``QuietExit``), so a mistake all ranks make is
        reported once.  In one process: re-raises ``error``."""
        if error is not None:
            raise error

    def abort(self, message: str, status: int = 1) -> NoReturn:
        """Print one error and end every rank (in one process: exit)."""
        _print_error(message)
        sys.exit(status)

    def close(self) -> None:
        pass


# ---- MPI -----------------------------------------------------------------------------------

class MPICommunicator(Communicator):
    """MPI_COMM_WORLD through mpi4py, every collective non-blocking and polled with a deadline."""

    def __init__(self, mpi4py_module, timeout: float, local_size: int, local_rank: int):
        super().__init__()
        mpi4py_module.rc.thread_level = "funneled"    # only the main thread calls MPI
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.local_size = max(1, int(local_size))
        self.local_rank = int(local_rank)
        self.timeout = float(timeout)
        self.name = f"MPI, {self.size} ranks ({MPI.Get_library_version().splitlines()[0].strip()})"
        self._host: dict[int, np.ndarray] = {}

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"

    # -- waiting with a deadline -----------------------------------------------------------
    def _wait(self, reqs: list, what: str) -> None:
        MPI = self.MPI
        t0 = time.perf_counter()
        deadline = t0 + self.timeout
        spin_until = t0 + 0.05     # spin first: steps of ranks are usually a few ms apart
        pause = 0.0
        try:
            while not MPI.Request.Testall(reqs):
                now = time.perf_counter()
                if now > deadline:
                    self.abort(f"rank {self.rank} of {self.size} waited {self.timeout:.0f} s for the other "
                               f"ranks in {what}: one of them died, hangs or was stopped; the job is ended "
                               f"(the last snapshot is kept; resume with --resume latest, with any number of "
                               f"ranks). NETSPEC_MPI_TIMEOUT sets the wait in seconds.")
                if now > spin_until:
                    pause = min(1e-3, pause * 2 or 1e-5)
                    time.sleep(pause)
        except MPI.Exception as e:
            self.abort(f"rank {self.rank} of {self.size}: MPI failed in {what}: {e.Get_error_string()}")

    def _staged(self, a) -> tuple[np.ndarray, bool]:
        """A host buffer MPI may read and write: ``a`` itself when it is a contiguous NumPy array,
        else a reused host copy (device arrays), to be copied back with ``copy_in``."""
        if type(a) is np.ndarray and a.flags.c_contiguous:
            return a, False
        from netspec.core.device import to_host

        host = np.ascontiguousarray(to_host(a))
        return host, True

    @staticmethod
    def _unstage(a, host: np.ndarray) -> None:
        from netspec.core.device import copy_in

        copy_in(a, host.reshape(a.shape))

    # -- collectives ------------------------------------------------------------------------
    def reduce_step(self, grad, scalars: np.ndarray) -> None:
        t0 = time.perf_counter()
        MPI = self.MPI
        g, staged = self._staged(grad)
        reqs = [self.comm.Iallreduce(MPI.IN_PLACE, scalars, op=MPI.SUM)]
        if g.size:
            reqs.append(self.comm.Iallreduce(MPI.IN_PLACE, g, op=MPI.SUM))
        self._wait(reqs, "the gradient Allreduce")
        g *= g.dtype.type(1.0 / self.size)
        if staged:
            self._unstage(grad, g)
        self.reduce_seconds += time.perf_counter() - t0
        self.reduce_calls += 1

    def allreduce_sum(self, a, what: str = "a sum") -> None:
        h, staged = self._staged(a)
        if h.size:
            self._wait([self.comm.Iallreduce(self.MPI.IN_PLACE, h, op=self.MPI.SUM)], what)
        if staged:
            self._unstage(a, h)

    def broadcast(self, a, root: int = 0, what: str = "a broadcast") -> None:
        h, staged = self._staged(a)
        if h.size:
            self._wait([self.comm.Ibcast(h, root=root)], what)
        if staged and self.rank != root:
            self._unstage(a, h)

    def broadcast_object(self, obj: Any, root: int = 0, what: str = "a broadcast") -> Any:
        data = pickle.dumps(obj) if self.rank == root else b""
        n = np.array([len(data)], dtype=np.int64)
        self.broadcast(n, root, what)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self.broadcast(buf, root, what)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def barrier(self, what: str = "a barrier") -> None:
        self._wait([self.comm.Ibarrier()], what)

    def agreed(self, local: bool, reduced: bool) -> bool:
        return reduced

    def agree(self, error: BaseException | None) -> None:
        failed = np.array([self.rank if error is not None else self.size], dtype=np.int64)
        h = failed.copy()
        self._wait([self.comm.Iallreduce(failed, h, op=self.MPI.MIN)], "checking that every rank set up")
        first = int(h[0])
        if first == self.size:
            return
        text = None
        if self.rank == first:
            text = str(error) if isinstance(error, NetspecError) else f"{type(error).__name__}: {error}"
        text = self.broadcast_object(text, root=first, what="reporting a setup error")
        if self.rank != 0:
            raise QuietExit()
        if self.rank == first and error is not None:
            raise error
        raise DistributedError(f"rank {first} of {self.size} failed to set up: {text}")

    def abort(self, message: str, status: int = 1) -> NoReturn:
        _print_error(message)
        # the launcher forwards output through pipes and stops reading them when it tears the
        # job down: give it a moment to pass the message on; then nothing more of this process's
        # output goes out (hydra repeats a process's last output while it aborts the job)
        time.sleep(0.5)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        except OSError:
            pass
        self.comm.Abort(status)
        os._exit(status)   # not reached: MPI_Abort ends the process


def _print_error(message: str) -> None:
    text = message if message.startswith("error") else f"error: {message}"
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# ---- what each rank trains on -----------------------------------------------------------------

def rank_stream(gen: np.random.Generator, rank: int) -> None:
    """Give rank ``rank`` a random stream of its own (Dropout masks, random fillers of DummyData):
    the generator's state jumped ``rank`` times (2^127 draws each).  Rank 0 keeps the stream a
    single process has; the other ranks derive theirs from it, so a snapshot that holds rank
    0's state restores every rank's (each rank draws as many numbers per step)."""
    if rank == 0:
        return
    bg = np.random.PCG64()
    bg.state = gen.bit_generator.state
    gen.bit_generator.state = bg.jumped(rank).state


def rank_device(requested: str | None, comm: Communicator, count: Callable[[], int] | None = None) -> str | None:
    """The device of this rank: ``cuda`` (no index) becomes ``cuda:<local rank mod GPU count>``,
    one rank per GPU; anything else is returned as given."""
    if requested is None or comm.size == 1:
        return requested
    text = str(requested).strip().lower()
    if text not in ("cuda", "gpu"):
        return requested
    n = count() if count is not None else _gpu_count()
    return f"cuda:{comm.local_rank % max(1, n)}"


def _gpu_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no CuPy, or no driver: the device check reports it later
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([v for v in visible.split(",") if v.strip()])
    return 1


def threads_per_rank(comm: Communicator) -> int | None:
    """Kernel threads for each rank when several share a machine: the cores divided between
    them (None: leave the setting alone, one process or the user chose)."""
    if comm.size == 1 or os.environ.get("NUMBA_NUM_THREADS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, comm.local_size))
