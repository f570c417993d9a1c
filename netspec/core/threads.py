"""One knob for every thread pool in the process: numba's and the BLAS library's.

Two pools spinning against each other on two cores collapse throughput (PERFORMANCE-NOTES),
so ``set_threads(n)`` sets both; threadpoolctl reaches OpenBLAS/MKL at run time.
"""

from __future__ import annotations


def set_threads(n: int | None) -> None:
    if not n:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(n), user_api="blas")
    from netspec.kernels.jit import set_num_threads

    set_num_threads(int(n))
