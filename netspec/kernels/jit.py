"""The only place numba's decorators and flags are built.

Every CPU kernel module imports ``njit``/``pjit``/``prange`` from here, so compile flags,
caching and threading are decided once:
- ``cache=True``: compiled code is stored next to the module (or in ``NUMBA_CACHE_DIR``) and a
  new process loads it in milliseconds instead of compiling again;
- ``fastmath`` stays off: results must match the NumPy references bit for bit where the
  order of operations is the same;
- ``pjit`` (``parallel=True``) for loops over batch and channels that pay for a thread pool.
  Numba's pool and OpenBLAS's pool must not spin against each other in one region: kernels
  call BLAS (``np.dot``) only outside ``prange`` loops.
"""

from __future__ import annotations

import numba
from numba import prange  # noqa: F401  (re-exported for kernel modules)

numba.config.THREADING_LAYER = "workqueue" if numba.config.THREADING_LAYER == "default" else numba.config.THREADING_LAYER


def njit(fn=None, **kw):
    """Serial compiled kernel (cached)."""
    opts = {"cache": True, "nogil": True, "fastmath": False, **kw}
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def pjit(fn=None, **kw):
    """Parallel compiled kernel (cached): use ``prange`` for the outer loop."""
    opts = {"cache": True, "nogil": True, "fastmath": False, "parallel": True, **kw}
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def set_num_threads(n: int) -> None:
    """Threads for parallel kernels (and nothing else)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_num_threads() -> int:
    return numba.get_num_threads()
