"""Kernels of the common layers on the GPU: Dropout's masking and Embed's gather and
scatter-add (netspec.kernels.cpu.common's twins)."""

from __future__ import annotations

import math

from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()


@cuda_kernel
def _dropout_forward(out, inp, rand, ratio, scale):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = inp[i] * scale if rand[i] >= ratio else 0.0


def dropout_forward(out, inp, rand, ratio, scale):
    # out, inp, rand: (n,); a unit is kept (and scaled) where rand >= ratio
    launch(_dropout_forward, inp.size, out, inp, rand, ratio, scale)


@cuda_kernel
def _dropout_backward(dinp, dout, rand, ratio, scale):
    for i in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
        dinp[i] = dout[i] * scale if rand[i] >= ratio else 0.0


def dropout_backward(dinp, dout, rand, ratio, scale):
    # dinp, dout, rand: (n,); the same mask and scale as forward
    launch(_dropout_backward, dout.size, dinp, dout, rand, ratio, scale)


@cuda_kernel
def _embed_bad(bad, index, input_dim):
    # bad: (1,) int64, starts at index.size; the smallest bad position wins
    for i in range(cuda.grid(1), index.size, cuda.gridsize(1)):
        v = index[i]
        if v != v or not (v >= 0 and v < input_dim) or v != math.floor(v):   # (NaN first: floor(NaN) raises)
            cuda.atomic.min(bad, 0, i)


def embed_check(index, input_dim):
    # index: (M,) of floats; the first position that is not an integer in [0, input_dim), or -1
    import numpy as np

    from netspec.core.device import to_host

    bad = np.full_like(index, index.size, shape=(1,), dtype=np.int64)   # on index's device
    launch(_embed_bad, index.size, bad, index, input_dim)
    first = int(to_host(bad)[0])
    return -1 if first >= index.size else first


@cuda_kernel
def _embed_forward(out, index, weight):
    m, d = out.shape
    for t in range(cuda.grid(1), m * d, cuda.gridsize(1)):
        j, k = t // d, t % d
        out[j, k] = weight[int(index[j]), k]


def embed_forward(out, index, weight):
    # out: (M, D); index: (M,); weight: (input_dim, D); out[m] = weight[index[m]]
    launch(_embed_forward, out.size, out, index, weight)


@cuda_kernel
def _embed_backward(dweight, dout, index):
    # one thread per column, rows in order: the same sums, in the same order, as the CPU
    m, d = dout.shape
    for k in range(cuda.grid(1), d, cuda.gridsize(1)):
        for j in range(m):
            dweight[int(index[j]), k] += dout[j, k]


def embed_backward(dweight, dout, index):
    # dweight: (input_dim, D) accumulated; dout: (M, D); index: (M,) (indices may repeat)
    launch(_embed_backward, dout.shape[1], dweight, dout, index)
