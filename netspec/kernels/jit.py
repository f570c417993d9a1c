"""The only place numba's decorators and flags are built.

Every CPU kernel module imports ``njit``/``pjit``/``prange`` from here, so compile flags,
caching and threading are decided once:
- ``cache=True``: compiled code is stored next to the module (or in ``NUMBA_CACHE_DIR``) and a
  new process loads it in milliseconds instead of compiling again;
- ``fastmath`` stays off: results must match the NumPy references bit for bit where the
  order of operations is the same (the one exception, ``rjit``: reassociated float64 sums,
  used by ``kernels/cpu/reduce.py``);
- ``pjit`` (``parallel=True``) for loops over batch and channels that pay for a thread pool.
  Numba's pool and OpenBLAS's pool must not spin against each other in one region: kernels
  that call BLAS (``np.dot``) inside ``prange`` loops rely on the BLAS numba calls being
  single-threaded (netspec.core.threads keeps it so), the others call it outside.
"""

from __future__ import annotations

import os

# OpenMP first: a parallel kernel launch costs about 1.5 us there against about 100 us with
# numba's own "workqueue" pool (measured on 1 and 2 threads), which added milliseconds to a
# LeNet step of 20 kernel calls.  GNU OpenMP's idle workers spin (GOMP_SPINCOUNT) before they
# sleep: a short spin keeps back-to-back kernels fast and gives the core back within tens of
# microseconds to BLAS's threads and other processes (the default, 300,000, keeps it for
# milliseconds).  libgomp reads it when numba's pool starts, at the first parallel launch.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
from numba import prange  # noqa: E402,F401  (re-exported for kernel modules)

if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]


def njit(fn=None, **kw):
    """Serial compiled kernel (cached)."""
    opts = {"cache": True, "nogil": True, "fastmath": False, **kw}
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def pjit(fn=None, **kw):
    """Parallel compiled kernel (cached): use ``prange`` for the outer loop."""
    opts = {"cache": True, "nogil": True, "fastmath": False, "parallel": True, **kw}
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def rjit(fn=None, **kw):
    """Serial compiled reduction (cached) whose float adds may be reassociated
    (``fastmath={"reassoc"}``, on these loops only): LLVM keeps several partial sums in vector
    registers.  The order is fixed for a build and independent of the thread count; used by
    ``kernels/cpu/reduce.py`` alone."""
    opts = {"cache": True, "nogil": True, "fastmath": {"reassoc"}, **kw}
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def ijit(fn=None, **kw):
    """Serial compiled helper inlined into its callers at the Numba IR level
    (``inline="always"``): small per-element functions called from inside kernel loops."""
    opts = {"cache": True, "nogil": True, "fastmath": False, "inline": "always", **kw}
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def set_num_threads(n: int) -> None:
    """Threads for parallel kernels (and nothing else)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_num_threads() -> int:
    return numba.get_num_threads()


# ---- CUDA ----------------------------------------------------------------------------------
# numba-cuda is imported only by the CUDA kernel modules (``netspec.kernels.cuda.*``), through
# these two functions, so that the CPU path never pays for it.

def cuda_module():
    """``numba.cuda`` (numba-cuda's target, or its simulator under NUMBA_ENABLE_CUDASIM=1)."""
    from numba import cuda

    return cuda


def cuda_kernel(fn=None, **kw):
    """A ``@cuda.jit`` kernel: compiled on first launch for its argument types and cached on
    disk like the CPU kernels (the simulator runs it as Python).  ``fastmath`` stays off, so
    that results match the CPU kernels to rounding where the order of operations is the same."""
    import os

    sim = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    opts = {} if sim else {"cache": True, "fastmath": False}
    opts.update(kw)
    deco = cuda_module().jit(**opts)
    return deco(fn) if fn is not None else deco


def cuda_device(fn):
    """A ``@cuda.jit(device=True)`` function callable from kernels (inlined by the compiler)."""
    return cuda_module().jit(device=True)(fn)
