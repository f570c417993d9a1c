"""One knob for every thread pool in the process: numba's and the BLAS library's.

Two pools spinning against each other on two cores collapse throughput (PERFORMANCE-NOTES),
so ``set_threads(n)`` sets both; threadpoolctl reaches OpenBLAS/MKL at run time.

Compiled kernels that call ``np.dot`` go through SciPy's BLAS (numba binds to it), which in a
wheel install is a library of its own, apart from NumPy's.  Kernels call it from inside their
parallel loops (one GEMM per thread), so it is kept at one thread: ``kernel_blas_serial()``
says whether it could be (a BLAS shared with NumPy is left alone, and kernels then run their
GEMMs from one thread).
"""

from __future__ import annotations

import os

_KERNEL_BLAS_SERIAL: bool | None = None


def set_threads(n: int | None) -> None:
    """``n`` threads for netspec's kernels.  When kernels run their GEMMs themselves (one per
    thread, on a BLAS of their own: ``kernel_blas_serial``), BLAS called from Python gets one
    thread: its idle workers would otherwise spin against numba's pool (OpenBLAS spins for
    about 0.1 s after each call unless OPENBLAS_THREAD_TIMEOUT was set before NumPy loaded it,
    and each 2-thread kernel then waited for the scheduler: a LeNet step took twice as long on
    2 threads as on 1).  Otherwise BLAS gets ``n`` threads too."""
    if not n:
        return
    from threadpoolctl import threadpool_limits

    from netspec.kernels.jit import set_num_threads

    set_num_threads(int(n))
    serial = kernel_blas_serial()
    threadpool_limits(limits=1 if serial else int(n), user_api="blas")
    if serial:
        _pin_kernel_blas()   # the limit above reached it too


def kernel_blas_serial() -> bool:
    """Whether the BLAS that compiled kernels call is single-threaded and not NumPy's (pins it
    on the first call)."""
    global _KERNEL_BLAS_SERIAL
    if _KERNEL_BLAS_SERIAL is None:
        _KERNEL_BLAS_SERIAL = _pin_kernel_blas()
    return _KERNEL_BLAS_SERIAL


def _pin_kernel_blas() -> bool:
    try:
        import numpy
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba's np.dot calls)
    except ImportError:
        return False
    from threadpoolctl import ThreadpoolController

    def root(module) -> str:
        return os.path.dirname(os.path.realpath(module.__file__))

    # a wheel keeps its libraries next to the package: site-packages/scipy.libs, numpy.libs
    scipy_root, numpy_root = root(scipy), root(numpy)
    own = [lib for lib in ThreadpoolController().lib_controllers
           if lib.user_api == "blas" and os.path.realpath(lib.filepath).startswith(scipy_root)
           and not os.path.realpath(lib.filepath).startswith(numpy_root)]
    for lib in own:
        lib.set_num_threads(1)
    return bool(own)
