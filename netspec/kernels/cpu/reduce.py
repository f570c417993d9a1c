"""Row reductions shared by kernel modules: float64 sums over float32 or float64 rows.

Each is a separate compiled function whose adds may be reassociated (``rjit`` from
``kernels/jit.py``: ``fastmath={"reassoc"}`` on these loops only): LLVM then keeps several partial sums in vector registers, 4x faster
than one running sum and 3x faster than four scalar ones.  The order differs from a plain
loop only in rounding, is fixed for a given build and does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import rjit


@rjit
def row_sum(x):
    # x: (S,) -> sum of x
    a = 0.0
    for i in range(x.size):
        a += x[i]
    return a


@rjit
def row_dot(x, y):
    # x, y: (S,) -> sum of x * y (products in float64)
    a = 0.0
    for i in range(x.size):
        a += np.float64(x[i]) * np.float64(y[i])
    return a


@rjit
def row_sum_dot(x, y):
    # x, y: (S,) -> (sum of x, sum of x * y) in one pass
    a = 0.0
    b = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        a += v
        b += v * np.float64(y[i])
    return a, b


@rjit
def row_sqdev(x, mu):
    # x: (S,) -> sum of (x - mu)^2
    a = 0.0
    for i in range(x.size):
        d = x[i] - mu
        a += d * d
    return a
