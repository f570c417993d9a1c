"""Kernels of the blob-plumbing layers on the GPU: copies, Concat/Slice blocks, Eltwise, Tile,
Crop, Reduction and ArgMax (netspec.kernels.cpu.utility's twins).

One thread per output element, grid-stride, so any grid covers any size.  Where the CPU
kernel reduces serially (Tile's backward, Reduction, ArgMax), one thread per output element
runs the same loop in the same order, so float64 results match the CPU's to rounding and the
float32 ones accumulate in the same precision.  ``out`` may be the same array as an input
wherever an element is read before it is written at the same index (Eltwise in place), as on
the CPU: each thread reads and writes only its own elements.
"""

from __future__ import annotations

from numba import float64

from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()


# ---- element-wise ------------------------------------------------------------------------
@cuda_kernel
def _copy_k(out, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = inp[i]


def copy(out, inp):
    # out, inp: (n,)
    launch(_copy_k, inp.size, out, inp)


@cuda_kernel
def _fill_zero_k(out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = 0.0


def fill_zero(out):
    # out: (n,)
    launch(_fill_zero_k, out.size, out)


@cuda_kernel
def _scale_k(out, inp, alpha):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = alpha * inp[i]


def scale(out, inp, alpha):
    # out, inp: (n,); out = alpha * inp (out may be inp)
    launch(_scale_k, inp.size, out, inp, alpha)


@cuda_kernel
def _axpy_k(out, inp, alpha):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] += alpha * inp[i]


def axpy(out, inp, alpha):
    # out, inp: (n,); out += alpha * inp
    launch(_axpy_k, inp.size, out, inp, alpha)


@cuda_kernel
def _mul_k(out, a, b):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i]


def mul(out, a, b):
    # out, a, b: (n,); out = a * b (out may be a or b)
    launch(_mul_k, a.size, out, a, b)


# ---- Concat / Slice: a block along the middle axis of (outer, axis, inner) ---------------
# One thread per element of the block (the smaller array); ``part`` is that array's shape.
@cuda_kernel
def _concat_forward_k(out, inp, offset):
    outer, n, inner = inp.shape
    for t in range(cuda.grid(1), outer * n * inner, cuda.gridsize(1)):
        o, k, i = t // (n * inner), (t // inner) % n, t % inner
        out[o, offset + k, i] = inp[o, k, i]


def concat_forward(out, inp, offset):
    # out: (outer, total, inner); inp: (outer, n, inner) -> out[:, offset:offset+n, :]
    launch(_concat_forward_k, inp.size, out, inp, offset)


@cuda_kernel
def _concat_backward_k(dinp, dout, offset):
    outer, n, inner = dinp.shape
    for t in range(cuda.grid(1), outer * n * inner, cuda.gridsize(1)):
        o, k, i = t // (n * inner), (t // inner) % n, t % inner
        dinp[o, k, i] = dout[o, offset + k, i]


def concat_backward(dinp, dout, offset):
    # dinp: (outer, n, inner); dout: (outer, total, inner) -> dinp = dout[:, offset:offset+n, :]
    launch(_concat_backward_k, dinp.size, dinp, dout, offset)


def slice_forward(out, inp, offset):
    # out: (outer, n, inner); inp: (outer, total, inner) -> out = inp[:, offset:offset+n, :]
    # (Concat's backward: the same gather)
    launch(_concat_backward_k, out.size, out, inp, offset)


def slice_backward(dinp, dout, offset):
    # dinp: (outer, total, inner); dout: (outer, n, inner) -> dinp[:, offset:offset+n, :] = dout
    # (Concat's forward: the same scatter)
    launch(_concat_forward_k, dout.size, dinp, dout, offset)


# ---- Eltwise -----------------------------------------------------------------------------
@cuda_kernel
def _eltwise_sum_forward_k(out, a, b, ca, cb):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = ca * a[i] + cb * b[i]


def eltwise_sum_forward(out, a, b, ca, cb):
    # out, a, b: (n,); bottoms 0 and 1 in one pass: out = ca * a + cb * b (out may be a)
    launch(_eltwise_sum_forward_k, a.size, out, a, b, ca, cb)


@cuda_kernel
def _eltwise_max_forward_k(out, mask, a, b):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        x, y = a[i], b[i]
        first = x > y
        out[i] = x if first else y
        mask[i] = 0 if first else 1


def eltwise_max_forward(out, mask, a, b):
    # out, mask, a, b: (n,); bottoms 0 and 1: a tie goes to b (Caffe's `a > b ? a : b`)
    launch(_eltwise_max_forward_k, a.size, out, mask, a, b)


@cuda_kernel
def _eltwise_max_next_k(out, mask, inp, index):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x, y = inp[i], out[i]
        if x > y:
            out[i] = x
            mask[i] = index


def eltwise_max_next(out, mask, inp, index):
    # out, mask, inp: (n,); bottom ``index`` >= 2 wins only when strictly greater
    launch(_eltwise_max_next_k, inp.size, out, mask, inp, index)


@cuda_kernel
def _eltwise_max_backward_k(dinp, dout, mask, index):
    for i in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
        dinp[i] = dout[i] if mask[i] == index else 0.0


def eltwise_max_backward(dinp, dout, mask, index):
    # dinp, dout, mask: (n,); the gradient goes to the bottom that gave the max
    launch(_eltwise_max_backward_k, dout.size, dinp, dout, mask, index)


@cuda_kernel
def _eltwise_prod_quotient_backward_k(dinp, dout, out, inp):
    for i in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
        dinp[i] = out[i] / inp[i] * dout[i]


def eltwise_prod_quotient_backward(dinp, dout, out, inp):
    # dinp, dout, out, inp: (n,); dx_i = (y / x_i) * dy (stable_prod_grad: false; inf/nan at x_i == 0)
    launch(_eltwise_prod_quotient_backward_k, dout.size, dinp, dout, out, inp)


# ---- Tile --------------------------------------------------------------------------------
@cuda_kernel
def _tile_forward_k(out, inp):
    outer, tiles, inner = out.shape
    for t in range(cuda.grid(1), outer * tiles * inner, cuda.gridsize(1)):
        o, i = t // (tiles * inner), t % inner
        out[o, (t // inner) % tiles, i] = inp[o, i]


def tile_forward(out, inp):
    # out: (outer, tiles, inner); inp: (outer, inner)
    launch(_tile_forward_k, out.size, out, inp)


@cuda_kernel
def _tile_backward_k(dinp, dout):
    # one thread per (o, i), the tiles summed in order in the gradient's dtype, as on the CPU
    outer, tiles, inner = dout.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o, i = t // inner, t % inner
        s = dout[o, 0, i]
        for k in range(1, tiles):
            s += dout[o, k, i]
        dinp[o, i] = s


def tile_backward(dinp, dout):
    # dinp: (outer, inner); dout: (outer, tiles, inner) -> dinp = sum over tiles
    launch(_tile_backward_k, dinp.size, dinp, dout)


# ---- Crop: a gather through a precomputed flat index -------------------------------------
@cuda_kernel
def _crop_forward_k(out, inp, index):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = inp[index[i]]


def crop_forward(out, inp, index):
    # out: (m,); inp: (n,); index: (m,) int64 (a device array), the flat position in inp of
    # each output element
    launch(_crop_forward_k, out.size, out, inp, index)


@cuda_kernel
def _crop_scatter_k(dinp, dout, index):
    for i in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
        dinp[index[i]] = dout[i]


def crop_backward(dinp, dout, index):
    # dinp: (n,) zeroed outside the crop; dout: (m,); index as in crop_forward (no repeats).
    # Two launches: a thread's scatter may land where another thread zeroes, and only the
    # launch boundary orders the two across the grid.
    launch(_fill_zero_k, dinp.size, dinp)
    launch(_crop_scatter_k, dout.size, dinp, dout, index)


# ---- Reduction over (num, dim) -----------------------------------------------------------
@cuda_kernel
def _reduction_forward_k(out, inp, op, coeff):
    num, dim = inp.shape
    for r in range(cuda.grid(1), num, cuda.gridsize(1)):
        s = float64(0.0)   # float64 whatever the dtype, as the CPU kernel's ``s = 0.0``
        for j in range(dim):
            x = inp[r, j]
            if op == 1:
                s += abs(x)
            elif op == 2:
                s += x * x
            else:
                s += x
        out[r] = s * coeff


def reduction_forward(out, inp, op, coeff):
    # out: (num,); inp: (num, dim); op: 0 SUM or MEAN (coeff already /dim), 1 ASUM, 2 SUMSQ.
    # One thread per row, the row summed in order in float64 (as the CPU).
    launch(_reduction_forward_k, out.size, out, inp, op, float64(coeff))


@cuda_kernel
def _reduction_backward_k(dinp, dout, inp, op, coeff):
    num, dim = inp.shape
    for t in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        r, j = t // dim, t % dim
        g = float64(dout[r]) * coeff
        if op == 1:
            x = inp[r, j]
            dinp[r, j] = g if x > 0 else (-g if x < 0 else 0.0)
        elif op == 2:
            dinp[r, j] = 2.0 * g * inp[r, j]
        else:
            dinp[r, j] = g


def reduction_backward(dinp, dout, inp, op, coeff):
    # dinp, inp: (num, dim); dout: (num,); ASUM uses sign(x) with sign(0) = 0, SUMSQ 2x
    launch(_reduction_backward_k, dinp.size, dinp, dout, inp, op, float64(coeff))


# ---- ArgMax ------------------------------------------------------------------------------
@cuda_kernel
def _argmax_forward_k(ind, val, inp, top_k):
    # The CPU's insertion into a sorted top_k list, with ``ind[o, :, i]`` and ``val[o, :, i]``
    # themselves as the list (a thread's local arrays need a size known when compiling).  They
    # hold the values exactly: ``val`` has the input's dtype, indices are small integers.
    outer, dim, inner = inp.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o, i = t // inner, t % inner
        filled = 0
        for j in range(dim):
            v = inp[o, j, i]
            # j exceeds every index held, so (v, j) beats (w, l) exactly when v >= w
            p = filled
            while p > 0 and v >= val[o, p - 1, i]:
                p -= 1
            if p >= top_k:
                continue
            last = filled if filled < top_k else top_k - 1
            for q in range(last, p, -1):
                val[o, q, i] = val[o, q - 1, i]
                ind[o, q, i] = ind[o, q - 1, i]
            val[o, p, i] = v
            ind[o, p, i] = j
            if filled < top_k:
                filled += 1


def argmax_forward(ind, val, inp, top_k):
    # ind, val: (outer, top_k, inner), any layout, distinct arrays; inp: (outer, dim, inner).
    # Order of std::partial_sort with std::greater on (value, index) pairs: larger values
    # first, and among equal values the LARGER index first.
    launch(_argmax_forward_k, inp.shape[0] * inp.shape[2], ind, val, inp, top_k)
