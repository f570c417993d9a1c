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

from netspec.kernels.cpu.reduce import row_sum
from netspec.kernels.jit import njit, pjit, prange

# The channels-last patch kernels are the CPU's PatchGemm algorithm: per-thread pipelines that
# keep blocks of columns in a core's L2 cache and call single-threaded BLAS inside a prange
# loop, with per-slot partial sums.  A GPU has no use for that design (its convolution is
# im2col + batched cuBLAS GEMMs), so the layer never offers PatchGemm on CUDA and these have
# no CUDA twins.
CPU_ONLY = ("patch_weights", "patch_weight_grad", "add_slot_sums", "patch_forward", "patch_backward")


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
    for k in prange(m):
        s = 0.0
        for n in range(nb):
            s += row_sum(dout[n, k])
        dbias[k] += s


# ---- channels-last patches: one call per layer, BLAS inside the parallel loop ----------------
#
# ``patch_forward`` / ``patch_backward`` run a whole 2-D convolution (group 1) in one call.  An
# image is first copied into a zero-bordered channels-last buffer ``xp (Hp, Wp, C)``; a patch
# (one row of the column matrix) is then ``kh`` runs of ``kw * C`` contiguous values (``C``
# values per kernel offset when dilated), so building the columns is a few long copies per
# output position instead of one short copy per (row, image, output line) in Caffe's layout.
# Columns are transposed relative to Caffe's: ``col (rows, K)``, one row per output position,
# patch index ``k = (i * kw + j) * C + c``; the weight is reordered to match (``wt (K, M)``,
# ``w2 (M, K)``).
#
# Work is cut into units of ``nb`` whole images, and a unit's ``nb * P`` rows into blocks of at
# most ``rb`` rows (one block per unit when it fits: ``rb = nb * P``; else ``nb = 1`` and an
# image spans several blocks), sized so that a block's columns stay in the L2 cache between
# the copy that makes them and the GEMMs that read them.  ``prange`` runs ``nslots``
# independent pipelines (copy in, GEMM, copy out), one per thread on its own scratch (slot
# ``s``): slot ``s`` takes units ``s, s + nslots, ...``.  The GEMMs (``np.dot``) run inside the
# loop, so the BLAS numba calls must be single-threaded (netspec.core.threads keeps it so):
# one thread pool in the process, no barrier per block.  Backward walks a slot's blocks in
# reverse, so its first block is the one forward left in the slot's columns (``reuse``), and an
# image's gradient is complete when its first block is done.  Per-slot weight and bias
# gradient sums are added in slot order: results depend on the thread count (as BLAS results
# do), never on timing.


@njit
def patch_weights(wt, w2, w):
    # wt: (K, M), w2: (M, K) (written); w: (M, C, kh, kw); k = (i * kw + j) * C + c
    m, c, kh, kw = w.shape
    for o in range(m):
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    k = (i * kw + j) * c + ci
                    v = w[o, ci, i, j]
                    wt[k, o] = v
                    w2[o, k] = v


@njit
def patch_weight_grad(dw, dwt, nslots):
    # dw: (M, C, kh, kw) += the sum over slots of dwt (slots, M, K), in slot order
    m, c, kh, kw = dw.shape
    for o in range(m):
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    k = (i * kw + j) * c + ci
                    s = dwt[0, o, k]
                    for q in range(1, nslots):
                        s += dwt[q, o, k]
                    dw[o, ci, i, j] += s


@njit
def add_slot_sums(out, acc, nslots):
    # out: (M,) += the sum over slots of acc (slots, M), in slot order
    for o in range(out.shape[0]):
        s = acc[0, o]
        for q in range(1, nslots):
            s += acc[q, o]
        out[o] += s


@njit
def _pack_hwc(xpf, xf, c, h, w, wp, ph, pw):
    # xp (Hp, Wp, C) interior <- x (C, H, W), both flat; the border stays as it is (zero).
    # Line by line: one line of xp stays in the L1 cache while every channel fills it.
    uc = np.uint64(c)
    for y in range(h):
        for ci in range(c):
            d0 = np.uint64(((y + ph) * wp + pw) * c + ci)
            s0 = np.uint64((ci * h + y) * w)
            for t in range(np.uint64(w)):
                xpf[d0 + t * uc] = xf[s0 + t]


@njit
def _unpack_hwc(xf, xpf, c, h, w, wp, ph, pw):
    # x (C, H, W) <- xp (Hp, Wp, C) interior, both flat
    uc = np.uint64(c)
    for y in range(h):
        for ci in range(c):
            s0 = np.uint64(((y + ph) * wp + pw) * c + ci)
            d0 = np.uint64((ci * h + y) * w)
            for t in range(np.uint64(w)):
                xf[d0 + t] = xpf[s0 + t * uc]


@njit
def _unpack_hwc_bias(yf, ypf, m, h, w, wp, bias):
    # y (M, H, W) <- yp (Hp, Wp, M) rows 0 .. H - 1, columns 0 .. W - 1, plus bias[m]
    um = np.uint64(m)
    for y in range(h):
        for o in range(m):
            b = bias[o]
            s0 = np.uint64(y * wp * m + o)
            d0 = np.uint64((o * h + y) * w)
            for t in range(np.uint64(w)):
                yf[d0 + t] = ypf[s0 + t * um] + b


@njit
def _patch_rows(colf, row0, xpf, c, wp, ow, p0, p1, kh, kw, sh, sw, dh, dw):
    # col rows row0 ... of the flat (rows, K) matrix <- the patches of output positions
    # p0 .. p1 - 1 (flat oy * OW + ox) of xp (Hp, Wp, C)
    kdim = kh * kw * c
    seg = kw * c if dw == 1 else c        # contiguous run per kernel row (or per offset)
    nrun = 1 if dw == 1 else kw
    useg = np.uint64(seg)
    for pos in range(p0, p1):
        oy = pos // ow
        ox = pos - oy * ow
        d = (row0 + pos - p0) * kdim
        for i in range(kh):
            base = (oy * sh + i * dh) * wp + ox * sw
            for jj in range(nrun):
                s0 = np.uint64((base + jj * dw) * c)
                d0 = np.uint64(d + (i * nrun + jj) * seg)
                for t in range(useg):
                    colf[d0 + t] = xpf[s0 + t]


@njit
def _patch_scatter(xpf, colf, row0, c, wp, ow, p0, p1, kh, kw, sh, sw, dh, dw):
    # xp (Hp, Wp, C) += the patch rows row0 ... of col at their places (the transpose of
    # _patch_rows)
    kdim = kh * kw * c
    seg = kw * c if dw == 1 else c
    nrun = 1 if dw == 1 else kw
    useg = np.uint64(seg)
    for pos in range(p0, p1):
        oy = pos // ow
        ox = pos - oy * ow
        d = (row0 + pos - p0) * kdim
        for i in range(kh):
            base = (oy * sh + i * dh) * wp + ox * sw
            for jj in range(nrun):
                s0 = np.uint64((base + jj * dw) * c)
                d0 = np.uint64(d + (i * nrun + jj) * seg)
                for t in range(useg):
                    xpf[s0 + t] += colf[d0 + t]


#: positions per tile of the transposes between (rows, M) and (M, P): a tile of rows stays in
#: the L1 cache while every channel reads it
TILE = 64


@njit
def _rows_to_map(yf, ytf, row0, m, p, p0, p1, bias):
    # y (M, P) positions p0 .. p1 - 1 <- yt rows row0 ... (of M values each) transposed, plus
    # bias[m] (zeros without a bias term); both flat
    um = np.uint64(m)
    for tb in range(p0, p1, TILE):
        te = min(p1, tb + TILE)
        for o in range(m):
            b = bias[o]
            d0 = np.uint64(o * p + tb)
            s0 = np.uint64((row0 + tb - p0) * m + o)
            for t in range(np.uint64(te - tb)):
                yf[d0 + t] = ytf[s0 + t * um] + b


@njit
def _map_to_rows(ytf, yf, row0, m, p, p0, p1, dbias, add_sums):
    # yt rows row0 ... <- y (M, P) positions p0 .. p1 - 1 transposed; with add_sums,
    # dbias[m] += the sum of those values (in float64)
    um = np.uint64(m)
    for tb in range(p0, p1, TILE):
        te = min(p1, tb + TILE)
        for o in range(m):
            s0 = np.uint64(o * p + tb)
            d0 = np.uint64((row0 + tb - p0) * m + o)
            acc = 0.0
            for t in range(np.uint64(te - tb)):
                v = yf[s0 + t]
                ytf[d0 + t * um] = v
                acc += v
            if add_sums:
                dbias[o] += acc


@pjit
def patch_forward(y, dwt, x, wt, bias, dy, xp, col, yt, tmpw, nslots, nb, rb, ph, pw, kh, kw, sh, sw, dh,
                  dw, do_y, do_dw):
    # y: (N, M, OH, OW) = conv(x) + bias (M,) when do_y; dwt: (slots, K, M) = per-slot sums of
    # col^T dy (the weight gradient for output gradient dy (N, M, OH, OW)) when do_dw; y and dy
    # stand for each other when one is unused.  x: (N, C, H, W); wt: (K, M).  Scratch per slot:
    # xp (slots, Hp, Wp, C) with zero borders, col (slots, rb, K), yt (slots, rb, M),
    # tmpw (slots, M, K); dwt: (slots, M, K).
    n, c, h, w = x.shape
    _, m, oh, ow = y.shape
    p = oh * ow
    wp = xp.shape[2]
    nunits = (n + nb - 1) // nb
    for s in prange(nslots):
        xpf = xp[s].reshape(-1)
        cols = col[s]
        colf = cols.reshape(-1)
        yts = yt[s]
        ytf = yts.reshape(-1)
        if do_dw:
            dwt[s][...] = 0.0
        packed = -1
        for u in range(s, nunits, nslots):
            n0 = u * nb
            total = (min(n, n0 + nb) - n0) * p
            for b0 in range(0, total, rb):
                b1 = min(total, b0 + rb)
                r = b0
                while r < b1:
                    t = n0 + r // p
                    p0 = r % p
                    p1 = min(p, p0 + b1 - r)
                    if t != packed:
                        _pack_hwc(xpf, x[t].reshape(-1), c, h, w, wp, ph, pw)
                        packed = t
                    _patch_rows(colf, r - b0, xpf, c, wp, ow, p0, p1, kh, kw, sh, sw, dh, dw)
                    r += p1 - p0
                a = cols[:b1 - b0]
                if do_y:
                    np.dot(a, wt, yts[:b1 - b0])
                    r = b0
                    while r < b1:
                        t = n0 + r // p
                        p0 = r % p
                        p1 = min(p, p0 + b1 - r)
                        _rows_to_map(y[t].reshape(-1), ytf, r - b0, m, p, p0, p1, bias)
                        r += p1 - p0
                if do_dw:
                    r = b0
                    while r < b1:
                        t = n0 + r // p
                        p0 = r % p
                        p1 = min(p, p0 + b1 - r)
                        _map_to_rows(ytf, dy[t].reshape(-1), r - b0, m, p, p0, p1, bias, False)
                        r += p1 - p0
                    np.dot(yts[:b1 - b0].T, a, tmpw[s])
                    dwt[s] += tmpw[s]


@pjit
def patch_backward(dx, dwt, dbias, dy, x, w2, xp, dxp, col, yt, tmpw, nslots, nb, rb, ph, pw, kh, kw, sh,
                   sw, dh, dw, do_dx, do_dw, do_db, reuse):
    # dx: (N, C, H, W) = conv^T(dy) when do_dx; dwt: (slots, M, K) per-slot weight-gradient sums
    # when do_dw; dbias: (slots, M) float64 per-slot sums of dy when do_db; dx and x stand for
    # each other when one is unused.  dy: (N, M, OH, OW); x: (N, C, H, W) (read when do_dw);
    # w2: (M, K); dxp (slots, Hp, Wp, C): the padded gradient of one image.  reuse: each
    # slot's col still holds its last block of x's columns (from patch_forward).
    # With whole images per block the GEMMs read each image's dy (M, P) as it is (BLAS takes
    # the transpose for the input gradient); blocks within an image copy theirs to rows first.
    n, c, h, w = dx.shape
    _, m, oh, ow = dy.shape
    p = oh * ow
    wp = xp.shape[2]
    nunits = (n + nb - 1) // nb
    whole = rb % p == 0 and p >= 256   # per-image GEMMs of fewer rows lose to one per block
    for s in prange(nslots):
        xpf = xp[s].reshape(-1)
        dxpf = dxp[s].reshape(-1)
        cols = col[s]
        colf = cols.reshape(-1)
        yts = yt[s]
        ytf = yts.reshape(-1)
        dbs = dbias[s]
        dbs[:] = 0.0
        if do_dw:
            dwt[s][...] = 0.0
        packed = -1
        acc = -1
        first = True
        last = s + ((nunits - 1 - s) // nslots) * nslots   # this slot's last unit
        for u in range(last, -1, -nslots):
            n0 = u * nb
            total = (min(n, n0 + nb) - n0) * p
            for bi in range((total - 1) // rb, -1, -1):
                b0 = bi * rb
                b1 = min(total, b0 + rb)
                if whole:
                    if do_db:
                        for t in range(n0 + b0 // p, n0 + b1 // p):
                            _add_sums(dbs, dy[t].reshape(-1), m, p)
                else:
                    r = b0
                    while r < b1:
                        t = n0 + r // p
                        p0 = r % p
                        p1 = min(p, p0 + b1 - r)
                        _map_to_rows(ytf, dy[t].reshape(-1), r - b0, m, p, p0, p1, dbs, do_db)
                        r += p1 - p0
                if do_dw:
                    if not (first and reuse):
                        r = b0
                        while r < b1:
                            t = n0 + r // p
                            p0 = r % p
                            p1 = min(p, p0 + b1 - r)
                            if t != packed:
                                _pack_hwc(xpf, x[t].reshape(-1), c, h, w, wp, ph, pw)
                                packed = t
                            _patch_rows(colf, r - b0, xpf, c, wp, ow, p0, p1, kh, kw, sh, sw, dh, dw)
                            r += p1 - p0
                    if whole:
                        for t in range(n0 + b0 // p, n0 + b1 // p):
                            r = (t - n0) * p - b0
                            np.dot(dy[t].reshape(m, p), cols[r:r + p], tmpw[s])
                            dwt[s] += tmpw[s]
                    else:
                        np.dot(yts[:b1 - b0].T, cols[:b1 - b0], tmpw[s])
                        dwt[s] += tmpw[s]
                first = False
                if do_dx:
                    if whole:
                        for t in range(n0 + b0 // p, n0 + b1 // p):
                            r = (t - n0) * p - b0
                            np.dot(dy[t].reshape(m, p).T, w2, cols[r:r + p])
                    else:
                        np.dot(yts[:b1 - b0], w2, cols[:b1 - b0])
                    r = b0
                    while r < b1:
                        t = n0 + r // p
                        p0 = r % p
                        p1 = min(p, p0 + b1 - r)
                        if t != acc:   # blocks run backwards: this is the image's last block
                            dxpf[:] = 0.0
                            acc = t
                        _patch_scatter(dxpf, colf, r - b0, c, wp, ow, p0, p1, kh, kw, sh, sw, dh, dw)
                        if p0 == 0:    # and this its first: the image's gradient is complete
                            _unpack_hwc(dx[t].reshape(-1), dxpf, c, h, w, wp, ph, pw)
                        r += p1 - p0


@njit
def _add_sums(dbias, yf, m, p):
    # dbias[m] += the sum of map m of y (M, P), flat (in float64)
    for k in range(m):
        acc = 0.0
        s0 = np.uint64(k * p)
        for t in range(np.uint64(p)):
            acc += yf[s0 + t]
        dbias[k] += acc
