"""Reductions shared by CUDA kernel modules (netspec.kernels.cpu.reduce's twins): float64 sums
over float32 or float64 vectors, as device functions that kernels call, plus the block-wide sum
that block-cooperative kernels (one block per channel or row) finish their partial sums with.

The row helpers run serially in one thread, in index order; a block-cooperative kernel hands
each thread a strided slice of a row (``x[t::threads]``: neighbouring threads read neighbouring
elements) and adds the partial sums up with ``block_sum``.  The CPU's sums are reassociated
for speed, so the two agree to rounding, not bit for bit.
Values are read with ``float()``: a compiled kernel would promote them to float64 anyway, and
under the simulator a float32 element would otherwise pull the running sum down to float32.
"""

from __future__ import annotations

from netspec.kernels.cuda._launch import SIM
from netspec.kernels.jit import cuda_device, cuda_module

cuda = cuda_module()

#: threads per block of the block-cooperative kernels (a power of two: the tree below halves
#: it), and the size of their shared buffers; under the simulator, where each thread is a
#: Python thread, 4 of them
BLOCK = 256
BLOCK_THREADS = 4 if SIM else BLOCK


@cuda_device
def row_sum(x):
    # x: (S,) -> sum of x
    a = 0.0
    for i in range(x.size):
        a += float(x[i])
    return a


@cuda_device
def row_dot(x, y):
    # x, y: (S,) -> sum of x * y (products in float64)
    a = 0.0
    for i in range(x.size):
        a += float(x[i]) * float(y[i])
    return a


@cuda_device
def row_sum_dot(x, y):
    # x, y: (S,) -> (sum of x, sum of x * y) in one pass
    a = 0.0
    b = 0.0
    for i in range(x.size):
        v = float(x[i])
        a += v
        b += v * float(y[i])
    return a, b


@cuda_device
def row_sqdev(x, mu):
    # x: (S,) -> sum of (x - mu)^2
    a = 0.0
    for i in range(x.size):
        d = float(x[i]) - mu
        a += d * d
    return a


@cuda_device
def block_sum(buf, v):
    # buf: shared (BLOCK,) float64; v: this thread's partial sum.  Returns the block's total to
    # every thread; blockDim.x must be a power of two.  Every thread of the block must call it
    # (it synchronizes), and buf is free again when it returns.
    t = cuda.threadIdx.x
    buf[t] = v
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if t < step:
            buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    total = buf[0]
    cuda.syncthreads()
    return total
