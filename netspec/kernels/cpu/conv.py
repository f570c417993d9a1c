"""Convolution kernels: im2col / col2im (Caffe's column layout) and the layout moves around GEMM.

The GEMMs themselves run in the layer through ``np.dot`` (BLAS), outside any ``prange`` region,
so numba's thread pool and OpenBLAS's never spin at the same time.

Column layout (Caffe, ``src/caffe/util/im2col.cpp``), batched: ``col[r, n, oy, ox]`` with row
``r = (c * kh + i) * kw + j`` holds ``inp[n, c, oy * sh - ph + i * dh, ox * sw - pw + j * dw]``
(0 outside the image).  A C-contiguous ``col`` of shape ``(R, nb, OH, OW)`` is the GEMM operand
``(R, nb * OH * OW)``: one GEMM covers a whole chunk of images; with ``nb = 1`` it is also one
image's slice of the ``Im2col`` layer's top.  Every array is C-contiguous (the kernels index
them flat).

The N-D forms take the spatial axes flattened (``inp (nb, C, S)``, ``col (R, nb, P)``) and the
geometry as int64 arrays with one entry per spatial axis; rows keep Caffe's order (channel,
then kernel offsets in axis order).
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import pjit, prange


@pjit
def im2col_2d(col, inp, kh, kw, ph, pw, sh, sw, dh, dw):
    # col: (C*kh*kw, nb, OH, OW) (written); inp: (nb, C, H, W); both C-contiguous.
    # Flat unsigned offsets: numba then skips its negative-index wraparound test, which lets the
    # row copies vectorize (about 3x faster than 4-D signed indexing).
    nb, c, h, w = inp.shape
    rows, _, oh, ow = col.shape
    kk = kh * kw
    cf = col.reshape(-1)
    xf = inp.reshape(-1)
    usw = np.uint64(sw)
    for r in prange(rows):
        ci = r // kk
        i = (r // kw) % kh
        j = r % kw
        xoff = j * dw - pw
        # output columns whose input column lies inside the image: x_lo <= ox < x_hi
        x_lo = 0
        while x_lo < ow and x_lo * sw + xoff < 0:
            x_lo += 1
        x_hi = ow
        while x_hi > x_lo and (x_hi - 1) * sw + xoff >= w:
            x_hi -= 1
        left = np.uint64(x_lo)
        mid = np.uint64(x_hi - x_lo)
        right = np.uint64(ow - x_hi)
        for n in range(nb):
            for oy in range(oh):
                d0 = np.uint64(((r * nb + n) * oh + oy) * ow)
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    for t in range(np.uint64(ow)):
                        cf[d0 + t] = 0.0
                    continue
                for t in range(left):
                    cf[d0 + t] = 0.0
                s0 = np.uint64(((n * c + ci) * h + iy) * w + x_lo * sw + xoff)
                d1 = d0 + left
                for t in range(mid):
                    cf[d1 + t] = xf[s0 + t * usw]
                d2 = d1 + mid
                for t in range(right):
                    cf[d2 + t] = 0.0


@pjit
def col2im_2d(dinp, col, kh, kw, ph, pw, sh, sw, dh, dw):
    # dinp: (nb, C, H, W) (overwritten with the sum of overlapping columns);
    # col: (C*kh*kw, nb, OH, OW); both C-contiguous.  One (image, channel) plane per task, so
    # the sums never race.
    nb, c, h, w = dinp.shape
    _, _, oh, ow = col.shape
    cf = col.reshape(-1)
    xf = dinp.reshape(-1)
    usw = np.uint64(sw)
    for q in prange(nb * c):
        n = q // c
        ci = q % c
        plane = np.uint64(q * h * w)
        for t in range(np.uint64(h * w)):
            xf[plane + t] = 0.0
        for i in range(kh):
            for j in range(kw):
                r = (ci * kh + i) * kw + j
                xoff = j * dw - pw
                x_lo = 0
                while x_lo < ow and x_lo * sw + xoff < 0:
                    x_lo += 1
                x_hi = ow
                while x_hi > x_lo and (x_hi - 1) * sw + xoff >= w:
                    x_hi -= 1
                mid = np.uint64(x_hi - x_lo)
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    d0 = np.uint64(((r * nb + n) * oh + oy) * ow + x_lo)
                    s0 = plane + np.uint64(iy * w + x_lo * sw + xoff)
                    for t in range(mid):
                        xf[s0 + t * usw] += cf[d0 + t]


@pjit
def im2col_nd(col, inp, in_shape, out_shape, kshape, pad, stride, dil):
    # col: (C*prod(kshape), nb, P) (written); inp: (nb, C, S); geometry: int64 (d,)
    nb = inp.shape[0]
    rows, _, p_total = col.shape
    d = in_shape.shape[0]
    kk = 1
    for a in range(d):
        kk *= kshape[a]
    for r in prange(rows):
        ci = r // kk
        koff = np.empty(d, np.int64)
        rem = r % kk
        for a in range(d - 1, -1, -1):
            koff[a] = (rem % kshape[a]) * dil[a] - pad[a]
            rem //= kshape[a]
        src = np.empty(p_total, np.int64)   # flat input index of each output position, -1 outside
        for p in range(p_total):
            rem = p
            idx = 0
            mult = 1
            for a in range(d - 1, -1, -1):
                pos = (rem % out_shape[a]) * stride[a] + koff[a]
                rem //= out_shape[a]
                if pos < 0 or pos >= in_shape[a]:
                    idx = -1
                    break
                idx += pos * mult
                mult *= in_shape[a]
            src[p] = idx
        for n in range(nb):
            for p in range(p_total):
                s = src[p]
                col[r, n, p] = inp[n, ci, s] if s >= 0 else 0.0


@pjit
def col2im_nd(dinp, col, in_shape, out_shape, kshape, pad, stride, dil):
    # dinp: (nb, C, S) (overwritten); col: (C*prod(kshape), nb, P)
    nb, c, s_total = dinp.shape
    p_total = col.shape[2]
    d = in_shape.shape[0]
    kk = 1
    for a in range(d):
        kk *= kshape[a]
    for q in prange(nb * c):
        n = q // c
        ci = q % c
        for s in range(s_total):
            dinp[n, ci, s] = 0.0
        koff = np.empty(d, np.int64)
        for k in range(kk):
            rem = k
            for a in range(d - 1, -1, -1):
                koff[a] = (rem % kshape[a]) * dil[a] - pad[a]
                rem //= kshape[a]
            r = ci * kk + k
            for p in range(p_total):
                rem = p
                idx = 0
                mult = 1
                for a in range(d - 1, -1, -1):
                    pos = (rem % out_shape[a]) * stride[a] + koff[a]
                    rem //= out_shape[a]
                    if pos < 0 or pos >= in_shape[a]:
                        idx = -1
                        break
                    idx += pos * mult
                    mult *= in_shape[a]
                if idx >= 0:
                    dinp[n, ci, idx] += col[r, n, p]


@pjit
def to_channel_major(out, inp):
    # out: (M, nb, P) (written); inp: (nb, M, P): a batch of feature maps into the GEMM layout
    nb, m, p = inp.shape
    of = out.reshape(-1)
    xf = inp.reshape(-1)
    up = np.uint64(p)
    for q in prange(m * nb):
        k = q // nb
        n = q % nb
        d0 = np.uint64(q * p)
        s0 = np.uint64((n * m + k) * p)
        for t in range(up):
            of[d0 + t] = xf[s0 + t]


@pjit
def from_channel_major(out, inp):
    # out: (nb, M, P) (written); inp: (M, nb, P): the GEMM layout back to a batch of feature maps
    nb, m, p = out.shape
    of = out.reshape(-1)
    xf = inp.reshape(-1)
    up = np.uint64(p)
    for q in prange(nb * m):
        n = q // m
        k = q % m
        d0 = np.uint64(q * p)
        s0 = np.uint64((k * nb + n) * p)
        for t in range(up):
            of[d0 + t] = xf[s0 + t]


@pjit
def bias_forward(out, bias):
    # out: (nb, M, P) += bias[m], C-contiguous
    nb, m, p = out.shape
    of = out.reshape(-1)
    up = np.uint64(p)
    for q in prange(nb * m):
        b = bias[q % m]
        d0 = np.uint64(q * p)
        for t in range(up):
            of[d0 + t] += b


@pjit
def bias_backward(dbias, dout):
    # dbias: (M,) += the sum of dout (nb, M, P) over n and p (accumulated in float64)
    nb, m, p = dout.shape
    df = dout.reshape(-1)
    up = np.uint64(p)
    for k in prange(m):
        s = 0.0
        for n in range(nb):
            d0 = np.uint64((n * m + k) * p)
            for t in range(up):
                s += df[d0 + t]
        dbias[k] += s
