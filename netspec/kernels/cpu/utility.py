"""Kernels of the blob-plumbing layers: copies, Concat/Slice blocks, Eltwise, Tile, Crop,
Reduction and ArgMax.

Arrays are C-contiguous unless a comment says otherwise; ``out`` may be the same array as an
input wherever an element is read before it is written at the same index (Eltwise in place).
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import pjit, prange


# ---- element-wise ------------------------------------------------------------------------
@pjit
def copy(out, inp):
    # out, inp: (n,)
    for i in prange(inp.size):
        out[i] = inp[i]


@pjit
def fill_zero(out):
    # out: (n,)
    for i in prange(out.size):
        out[i] = 0.0


@pjit
def scale(out, inp, alpha):
    # out, inp: (n,); out = alpha * inp (out may be inp)
    for i in prange(inp.size):
        out[i] = alpha * inp[i]


@pjit
def axpy(out, inp, alpha):
    # out, inp: (n,); out += alpha * inp
    for i in prange(inp.size):
        out[i] += alpha * inp[i]


@pjit
def mul(out, a, b):
    # out, a, b: (n,); out = a * b (out may be a or b)
    for i in prange(a.size):
        out[i] = a[i] * b[i]


# ---- Concat / Slice: a block along the middle axis of (outer, axis, inner) ---------------
@pjit
def concat_forward(out, inp, offset):
    # out: (outer, total, inner); inp: (outer, n, inner) -> out[:, offset:offset+n, :]
    outer, n, inner = inp.shape
    for o in prange(outer):
        for k in range(n):
            for i in range(inner):
                out[o, offset + k, i] = inp[o, k, i]


@pjit
def concat_backward(dinp, dout, offset):
    # dinp: (outer, n, inner); dout: (outer, total, inner) -> dinp = dout[:, offset:offset+n, :]
    outer, n, inner = dinp.shape
    for o in prange(outer):
        for k in range(n):
            for i in range(inner):
                dinp[o, k, i] = dout[o, offset + k, i]


@pjit
def slice_forward(out, inp, offset):
    # out: (outer, n, inner); inp: (outer, total, inner) -> out = inp[:, offset:offset+n, :]
    outer, n, inner = out.shape
    for o in prange(outer):
        for k in range(n):
            for i in range(inner):
                out[o, k, i] = inp[o, offset + k, i]


@pjit
def slice_backward(dinp, dout, offset):
    # dinp: (outer, total, inner); dout: (outer, n, inner) -> dinp[:, offset:offset+n, :] = dout
    outer, n, inner = dout.shape
    for o in prange(outer):
        for k in range(n):
            for i in range(inner):
                dinp[o, offset + k, i] = dout[o, k, i]


# ---- Eltwise -----------------------------------------------------------------------------
@pjit
def eltwise_sum_forward(out, a, b, ca, cb):
    # out, a, b: (n,); bottoms 0 and 1 in one pass: out = ca * a + cb * b (out may be a)
    for i in prange(a.size):
        out[i] = ca * a[i] + cb * b[i]


@pjit
def eltwise_max_forward(out, mask, a, b):
    # out, mask, a, b: (n,); bottoms 0 and 1: a tie goes to b (Caffe's `a > b ? a : b`)
    for i in prange(a.size):
        x, y = a[i], b[i]
        first = x > y
        out[i] = x if first else y  # selects, not branches: the loop vectorizes
        mask[i] = 0 if first else 1


@pjit
def eltwise_max_next(out, mask, inp, index):
    # out, mask, inp: (n,); bottom ``index`` >= 2 wins only when strictly greater
    for i in prange(inp.size):
        x, y = inp[i], out[i]
        wins = x > y
        out[i] = x if wins else y
        mask[i] = index if wins else mask[i]


@pjit
def eltwise_max_backward(dinp, dout, mask, index):
    # dinp, dout, mask: (n,); the gradient goes to the bottom that gave the max
    for i in prange(dout.size):
        dinp[i] = dout[i] if mask[i] == index else 0.0


@pjit
def eltwise_prod_quotient_backward(dinp, dout, out, inp):
    # dinp, dout, out, inp: (n,); dx_i = (y / x_i) * dy (stable_prod_grad: false; inf/nan at x_i == 0)
    for i in prange(dout.size):
        dinp[i] = out[i] / inp[i] * dout[i]


# ---- Tile --------------------------------------------------------------------------------
@pjit
def tile_forward(out, inp):
    # out: (outer, tiles, inner); inp: (outer, inner)
    outer, tiles, inner = out.shape
    for o in prange(outer):
        for t in range(tiles):
            for i in range(inner):
                out[o, t, i] = inp[o, i]


@pjit
def tile_backward(dinp, dout):
    # dinp: (outer, inner); dout: (outer, tiles, inner) -> dinp = sum over tiles
    outer, tiles, inner = dout.shape
    for o in prange(outer):
        for i in range(inner):
            s = dout[o, 0, i]
            for t in range(1, tiles):
                s += dout[o, t, i]
            dinp[o, i] = s


# ---- Crop: a gather through a precomputed flat index -------------------------------------
@pjit
def crop_forward(out, inp, index):
    # out: (m,); inp: (n,); index: (m,) int64, the flat position in inp of each output element
    for i in prange(out.size):
        out[i] = inp[index[i]]


@pjit
def crop_backward(dinp, dout, index):
    # dinp: (n,) zeroed outside the crop; dout: (m,); index as in crop_forward (no repeats)
    for i in prange(dinp.size):
        dinp[i] = 0.0
    for i in prange(dout.size):
        dinp[index[i]] = dout[i]


# ---- Reduction over (num, dim) -----------------------------------------------------------
@pjit
def reduction_forward(out, inp, op, coeff):
    # out: (num,); inp: (num, dim); op: 0 SUM or MEAN (coeff already /dim), 1 ASUM, 2 SUMSQ
    num, dim = inp.shape
    for r in prange(num):
        s = 0.0
        for j in range(dim):
            x = inp[r, j]
            if op == 1:
                s += abs(x)
            elif op == 2:
                s += x * x
            else:
                s += x
        out[r] = s * coeff


@pjit
def reduction_backward(dinp, dout, inp, op, coeff):
    # dinp, inp: (num, dim); dout: (num,); ASUM uses sign(x) with sign(0) = 0, SUMSQ 2x
    num, dim = inp.shape
    for r in prange(num):
        g = dout[r] * coeff
        for j in range(dim):
            if op == 1:
                x = inp[r, j]
                dinp[r, j] = g if x > 0 else (-g if x < 0 else 0.0)
            elif op == 2:
                dinp[r, j] = 2.0 * g * inp[r, j]
            else:
                dinp[r, j] = g


# ---- ArgMax ------------------------------------------------------------------------------
@pjit
def argmax_forward(ind, val, inp, top_k):
    # ind, val: (outer, top_k, inner), any layout; inp: (outer, dim, inner).
    # Order of std::partial_sort with std::greater on (value, index) pairs: larger values
    # first, and among equal values the LARGER index first.
    outer, dim, inner = inp.shape
    for o in prange(outer):
        bv = np.empty(top_k, dtype=np.float64)
        bi = np.empty(top_k, dtype=np.int64)
        for i in range(inner):
            filled = 0
            for j in range(dim):
                v = inp[o, j, i]
                # j exceeds every index held, so (v, j) beats (w, l) exactly when v >= w
                p = filled
                while p > 0 and v >= bv[p - 1]:
                    p -= 1
                if p >= top_k:
                    continue
                last = filled if filled < top_k else top_k - 1
                for q in range(last, p, -1):
                    bv[q] = bv[q - 1]
                    bi[q] = bi[q - 1]
                bv[p] = v
                bi[p] = j
                if filled < top_k:
                    filled += 1
            for q in range(top_k):
                ind[o, q, i] = bi[q]
                val[o, q, i] = bv[q]
