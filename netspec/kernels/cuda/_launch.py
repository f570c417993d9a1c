"""How kernels are launched: grid sizes, and the simulator's check that every array is a
device array.

Kernels loop with a grid stride (``for i in range(start, n, step)``), so any grid covers any
size: on a GPU ``config(n)`` gives 256-thread blocks enough for every element (capped at 16
blocks per multiprocessor's worth, past which the stride loop does the rest); under the
simulator, where each thread is a Python thread, it gives 2 blocks of 4 threads (2 blocks of
one thread over more than ``SIM_MANY`` items).
"""

from __future__ import annotations

from netspec.kernels.cuda import simulated

THREADS = 256
MAX_BLOCKS = 132 * 16          # an H100/H200 has 132 multiprocessors
SIM = simulated()
#: under the simulator, launches over more items than this get one thread per block: its threads
#: take a lock on every device-function call, and with several threads per block that lock and
#: the GIL can hand over once per switch interval (5 ms), which made a LeNet step take minutes
SIM_MANY = 4096


def config(n: int, threads: int = THREADS) -> tuple[int, int]:
    """(blocks, threads per block) for ``n`` independent items."""
    if SIM:
        if n > SIM_MANY:
            return 2, 1
        return (2, 4) if n > 4 else (1, max(1, n))
    return max(1, min(MAX_BLOCKS, -(-n // threads))), threads


def launch(kernel, n: int, *args) -> None:
    """Run ``kernel(*args)`` over ``n`` items (nothing for ``n == 0``)."""
    if n <= 0:
        return
    if SIM:
        check_device_args(kernel, args)
        args = shared_args(args)
    blocks, threads = config(n)
    kernel[blocks, threads](*args)


def launch_blocks(kernel, blocks: int, threads: int, *args) -> None:
    """Run ``kernel`` with an explicit grid (kernels that cooperate within a block)."""
    if blocks <= 0:
        return
    if SIM:
        check_device_args(kernel, args)
        args = shared_args(args)
        blocks = min(blocks, 2)
    kernel[blocks, threads](*args)


def check_device_args(kernel, args) -> None:
    """Under the simulator, refuse host arrays: on a GPU each would be copied over and back at
    every launch (or, written by the kernel, lose its results)."""
    from netspec.kernels.cuda._sim import is_host

    for k, a in enumerate(args):
        if is_host(a):
            name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "py_func", None), "__name__", "kernel")
            raise TypeError(f"{name}: argument {k} is a host array {a.shape} {a.dtype}; kernels take "
                            f"device arrays (netspec.core.device.empty/asarray)")


def shared_args(args) -> tuple:
    """Under the simulator, hand kernels the arrays' own memory.  Given NumPy arrays, numba's
    simulator runs a kernel on a copy of each and copies them all back in argument order, so an
    in-place call (``out`` the same memory as ``inp``) ends with ``inp``'s untouched copy written
    over the results; on a GPU both are one buffer, as they are here.  A float16 array reads as
    float32 values (see ``_half_array``)."""
    import numpy as np
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    def share(a):
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            return a
        a = a.view(np.ndarray)
        return _half_array()(a) if a.dtype == np.float16 else FakeCUDAArray(a)

    return tuple(share(a) for a in args)


_HALF_ARRAY = None


def _half_array():
    """The simulator's view of a float16 device array: an element reads as float32, and a store
    rounds to float16 (NumPy's assignment, round to nearest even).  A GPU kernel compiled for a
    float16 array widens each load too as soon as it meets a float32 or float64 operand (a
    sum started from ``0.0``, a scale argument), where NumPy's float16 scalars would do the
    arithmetic, and keep the sums, in float16."""
    global _HALF_ARRAY
    if _HALF_ARRAY is None:
        import numpy as np
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        class HalfArray(FakeCUDAArray):
            def __getitem__(self, idx):
                ret = self._ary[idx]
                if isinstance(ret, np.ndarray):
                    return HalfArray(ret, stream=self.stream)
                return np.float32(ret)

        _HALF_ARRAY = HalfArray
    return _HALF_ARRAY
