"""InnerProduct kernels: ``y = x W^T + b`` and its gradients, one call per direction.

The batch rows are cut into ``nslots`` contiguous parts, one per thread, each with its own
single-threaded GEMMs (``np.dot`` on the BLAS numba calls, kept at one thread by
netspec.core.threads), so a net runs on one thread pool: no hand-over to BLAS's own threads
between layers.  The weight gradient is a sum over the batch: each slot sums its rows into its
own ``dwacc`` plane and ``ip_weight_grad`` adds the planes in slot order (results depend on the
thread count, as BLAS results do, never on timing).  The bias is added as the rows are
finished and its gradient summed in float64 per slot.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import njit, pjit, prange


@pjit
def ip_forward(y, x, w, bias, has_bias, transpose, nslots):
    # y: (M, N) = x (M, K) W^T + bias (N,); w: (N, K), or (K, N) when transpose
    m = x.shape[0]
    n = y.shape[1]
    step = (m + nslots - 1) // nslots
    for s in prange(nslots):
        m0 = s * step
        m1 = min(m, m0 + step)
        if m1 <= m0:
            continue
        if transpose:
            np.dot(x[m0:m1], w, y[m0:m1])
        else:
            np.dot(x[m0:m1], w.T, y[m0:m1])
        if has_bias:
            for i in range(m0, m1):
                row = y[i]
                for j in range(n):
                    row[j] += bias[j]


@pjit
def ip_backward(dx, dwt, dbt, dy, x, w, buf, transpose, nslots, do_dx, do_dw, do_db):
    # dx: (M, K) = dy (M, N) W when do_dx (rows split between slots); dwt: (N, K), or (K, N)
    # when transpose, = dy^T x (x^T dy) when do_dw, its rows split between slots: each slot
    # copies its columns of dy (x) into buf (slots, M * ceil(rows / nslots)) for a contiguous
    # GEMM operand; dbt: (N,) float64 = the sums of dy's columns when do_db (columns split)
    m, n = dy.shape
    k = x.shape[1]
    step = (m + nslots - 1) // nslots
    rows = k if transpose else n
    rstep = (rows + nslots - 1) // nslots
    cstep = (n + nslots - 1) // nslots
    for s in prange(nslots):
        if do_db:
            for j in range(s * cstep, min(n, (s + 1) * cstep)):
                acc = 0.0
                for i in range(m):
                    acc += dy[i, j]
                dbt[j] = acc
        r0 = s * rstep
        r1 = min(rows, r0 + rstep)
        if do_dw and r1 > r0:
            b = buf[s][:m * (r1 - r0)].reshape(m, r1 - r0)
            src = x if transpose else dy
            for i in range(m):
                for j in range(r0, r1):
                    b[i, j - r0] = src[i, j]
            np.dot(b.T, dy if transpose else x, dwt[r0:r1])
        m0 = s * step
        m1 = min(m, m0 + step)
        if do_dx and m1 > m0:
            if transpose:
                np.dot(dy[m0:m1], w.T, dx[m0:m1])
            else:
                np.dot(dy[m0:m1], w, dx[m0:m1])


@pjit
def ip_accumulate(dw, dwt):
    # dw: (R, C) += dwt (R, C)
    r, c = dw.shape
    for i in prange(r):
        for j in range(c):
            dw[i, j] += dwt[i, j]


@njit
def ip_bias_grad(db, dbt):
    # db: (N,) += dbt (N,) (float64 sums)
    for j in range(db.shape[0]):
        db[j] += dbt[j]
