"""Matrix products on the GPU: cuBLAS through CuPy; NumPy under the simulator, where CuPy is
absent (and only there).

``gemm(out, a, b, alpha, beta)``: ``out = alpha * a @ b + beta * out`` for 2-D arrays, any of
them transposed views.  ``out`` must be C-contiguous (as NumPy's ``dot(..., out=)`` requires).
"""

from __future__ import annotations

from netspec.kernels.cuda import simulated


def gemm(out, a, b, alpha: float = 1.0, beta: float = 0.0) -> None:
    if simulated():
        import numpy as np

        prod = np.matmul(a, b)
        if alpha != 1.0:
            prod *= out.dtype.type(alpha)
        if beta == 0.0:
            out[...] = prod
        else:
            if beta != 1.0:
                out *= out.dtype.type(beta)
            out += prod
        return
    import cupy

    if beta == 0.0 and alpha == 1.0:
        cupy.matmul(a, b, out=out)       # cuBLAS, straight into out
        return
    prod = cupy.matmul(a, b)             # a pooled temporary: CuPy's allocator reuses it
    if alpha != 1.0:
        prod *= alpha
    if beta == 0.0:
        out[...] = prod
    else:
        if beta != 1.0:
            out *= beta
        out += prod
