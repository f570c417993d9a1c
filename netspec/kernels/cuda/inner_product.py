"""InnerProduct kernels on the GPU: ``y = x W^T + b`` and its gradients, one call per direction
(netspec.kernels.cpu.inner_product's twins).

Each product is one cuBLAS GEMM over the whole batch (``_blas.gemm``); the CPU's split of the
rows between thread slots (``nslots``, ``buf``) has no meaning here and is ignored.  The bias
gradient sums each column of ``dy`` in float64 in row order, one thread per column (adjacent
threads read adjacent addresses), as the CPU does.
"""

from __future__ import annotations

from netspec.kernels.cuda._blas import gemm
from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()


@cuda_kernel
def _add_bias(y, bias):
    m, n = y.shape
    for t in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        y[t // n, t % n] += bias[t % n]


def ip_forward(y, x, w, bias, has_bias, transpose, nslots):
    # y: (M, N) = x (M, K) W^T + bias (N,); w: (N, K), or (K, N) when transpose
    gemm(y, x, w if transpose else w.T)
    if has_bias:
        launch(_add_bias, y.size, y, bias)


@cuda_kernel
def _column_sums(dbt, dy):
    m, n = dy.shape
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        acc = 0.0
        for i in range(m):
            acc += dy[i, j]
        dbt[j] = acc


def ip_backward(dx, dwt, dbt, dy, x, w, buf, transpose, nslots, do_dx, do_dw, do_db):
    # dx: (M, K) = dy (M, N) W when do_dx; dwt: (N, K), or (K, N) when transpose, = dy^T x
    # (x^T dy) when do_dw; dbt: (N,) float64 = the sums of dy's columns when do_db
    if do_db:
        launch(_column_sums, dy.shape[1], dbt, dy)
    if do_dw:
        if transpose:
            gemm(dwt, x.T, dy)
        else:
            gemm(dwt, dy.T, x)
    if do_dx:
        gemm(dx, dy, w.T if transpose else w)


@cuda_kernel
def _accumulate(dw, dwt):
    r, c = dw.shape
    for t in range(cuda.grid(1), r * c, cuda.gridsize(1)):
        dw[t // c, t % c] += dwt[t // c, t % c]


def ip_accumulate(dw, dwt):
    # dw: (R, C) += dwt (R, C)
    launch(_accumulate, dw.size, dw, dwt)


@cuda_kernel
def _bias_grad(db, dbt):
    for j in range(cuda.grid(1), db.shape[0], cuda.gridsize(1)):
        db[j] += dbt[j]


def ip_bias_grad(db, dbt):
    # db: (N,) += dbt (N,) (float64 sums)
    launch(_bias_grad, db.shape[0], db, dbt)
