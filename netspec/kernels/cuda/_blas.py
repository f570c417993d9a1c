"""Matrix products on the GPU: cuBLAS through CuPy; NumPy under the simulator, where CuPy is
absent (and only there).

``gemm(out, a, b, alpha, beta)``: ``out = alpha * a @ b + beta * out`` for 2-D arrays, any of
them transposed views.  ``out`` must be C-contiguous (as NumPy's ``dot(..., out=)`` requires).

Operands may be float16 (half-width activations, ``precision: float16``) beside float32
weights; the products are always summed in float32 and rounded once, where they are stored:

- float16 @ float16 into float16 (alpha 1, beta 0): cuBLAS's half GEMM (``cublasGemmEx`` with
  ``CUBLAS_COMPUTE_32F`` on tensor cores, which is what CuPy's ``matmul`` calls for float16);
- any other mix: the float16 operands are widened to float32 (exactly) and the product is an
  SGEMM, cast to ``out``'s type where it is stored.  A float16 product summed into a float32
  gradient (``dW = x^T dy`` under a loss scale) would overflow float16's 65,504 before the
  unscale, so it never goes through a float16 result.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.cuda import simulated

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


def _all_half(out, a, b) -> bool:
    return out.dtype == _F16 and a.dtype == _F16 and b.dtype == _F16


def gemm(out, a, b, alpha: float = 1.0, beta: float = 0.0) -> None:
    mixed = not (a.dtype == b.dtype == out.dtype)
    if simulated():
        if mixed or a.dtype == _F16:   # cuBLAS sums half operands in float32 (CUBLAS_COMPUTE_32F)
            a, b = a.astype(_F32) if a.dtype == _F16 else a, b.astype(_F32) if b.dtype == _F16 else b
        prod = np.matmul(a, b)
        _finish(out, prod, alpha, beta)
        return
    import cupy

    if alpha == 1.0 and beta == 0.0 and (not mixed or _all_half(out, a, b)):
        cupy.matmul(a, b, out=out)       # cuBLAS, straight into out (half: tensor cores)
        return
    if mixed:
        a = a.astype(_F32, copy=False) if a.dtype == _F16 else a    # pooled temporaries
        b = b.astype(_F32, copy=False) if b.dtype == _F16 else b
    _finish(out, cupy.matmul(a, b), alpha, beta)   # a pooled temporary: CuPy's allocator reuses it


def _finish(out, prod, alpha: float, beta: float) -> None:
    """``out = alpha * prod + beta * out``, in ``prod``'s (the wider) precision, stored once."""
    if alpha != 1.0:
        prod *= prod.dtype.type(alpha)
    if beta == 0.0:
        out[...] = prod
    elif out.dtype == prod.dtype:
        if beta != 1.0:
            out *= out.dtype.type(beta)
        out += prod
    else:
        if beta != 1.0:
            prod += out.astype(prod.dtype) * prod.dtype.type(beta)
        else:
            prod += out
        out[...] = prod
