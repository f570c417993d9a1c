"""Kernels of the common layers: Dropout's masking and Embed's gather and scatter-add."""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import njit, pjit, prange


@pjit
def dropout_forward(out, inp, rand, ratio, scale):
    # out, inp, rand: (n,); rand uniform in [0, 1) from the layer's Generator: a unit is kept
    # (and scaled by 1 / (1 - ratio)) where rand >= ratio, which has probability 1 - ratio
    for i in prange(inp.size):
        out[i] = inp[i] * scale if rand[i] >= ratio else 0.0


@pjit
def dropout_backward(dinp, dout, rand, ratio, scale):
    # dinp, dout, rand: (n,); the same mask and scale as forward
    for i in prange(dout.size):
        dinp[i] = dout[i] * scale if rand[i] >= ratio else 0.0


@njit
def embed_check(index, input_dim):
    # index: (M,) of floats; the first position that is not an integer in [0, input_dim), or -1
    for i in range(index.size):
        v = index[i]
        if not (v >= 0 and v < input_dim) or v != np.floor(v):
            return i
    return -1


@pjit
def embed_forward(out, index, weight):
    # out: (M, D); index: (M,); weight: (input_dim, D); out[m] = weight[index[m]]
    m, d = out.shape
    for j in prange(m):
        r = int(index[j])
        for k in range(d):
            out[j, k] = weight[r, k]


@pjit
def embed_backward(dweight, dout, index):
    # dweight: (input_dim, D) accumulated; dout: (M, D); index: (M,).  An index may repeat,
    # so threads split the columns, never the rows.
    m, d = dout.shape
    for k in prange(d):
        for j in range(m):
            dweight[int(index[j]), k] += dout[j, k]
