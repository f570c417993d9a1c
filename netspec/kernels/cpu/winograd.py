"""Winograd F(2x2, 3x3) convolution (Lavin & Gray, 2015): 3x3 kernels, stride 1, group 1.

Each 2x2 block of outputs ("tile") is ``A^T [(G g G^T) . (B^T d B)] A`` for its 4x4 input
window ``d`` and the 3x3 kernel ``g``: per tile and channel pair 16 multiplications instead of
36, and summed over input channels the products become 16 GEMMs (one per point ``xi`` of the
4x4 transform), with 2.25x fewer flops than the direct convolution::

    B^T = [1  0 -1  0]    G = [1    0    0  ]    A^T = [1  1  1  0]
          [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
          [0 -1  1  0]        [1/2 -1/2  1/2]
          [0  1  0 -1]        [0    0    1  ]

The gradients are the exact adjoints of the same linear maps: with ``dM = A dy A^T`` per tile,
``dd = B [(G g G^T) . dM] B^T`` (scattered back onto the overlapping 4x4 windows) and
``dg = G^T [sum over tiles of dM . (B^T d B)] G``.  Every product above is exact in binary
(the factors are 0, +-1 and 1/2), so the results differ from the direct sum only by the order
of the float additions.

Layout and threading follow the channels-last patch kernels in ``conv``: an image is copied
into a zero-bordered ``xp (Hp, Wp, C)`` so that the transforms run over contiguous channels;
transformed tiles are ``v (16, tb, C)`` (point, tile, channel), products ``mt (16, tb, M)``;
units of ``nb`` images are cut into blocks of at most ``tb`` tiles, and ``nslots`` pipelines run
in parallel, one per thread, calling single-threaded BLAS.  Outputs go through a channels-last
``yp (2 TH, 2 TW, M)`` and are transposed to ``(M, OH, OW)`` with the bias added.  Tiles are
numbered row by row: tile ``q`` of an image covers outputs ``(2 (q // TW), 2 (q % TW))``.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import njit, pjit, prange

# Winograd is a CPU algorithm: its tile transforms are written for vectorized loops over
# contiguous channels and its GEMMs run single-threaded per slot inside a prange loop.  On a GPU
# the convolution is im2col + cuBLAS GEMM, so the layer never offers Winograd on CUDA and none
# of these kernels has a CUDA twin.
CPU_ONLY = ("winograd_weights", "winograd_weight_grad", "winograd_forward", "winograd_backward",
            "wino_weights", "wino_weight_grad")


@njit
def winograd_weights(ut, u2, w):
    # ut: (16, C, M) and u2: (16, M, C) (written) = G w[m, c] G^T at each of the 16 points;
    # w: (M, C, 3, 3)
    m, c = w.shape[0], w.shape[1]
    t = np.empty((4, 3), np.float64)
    u = np.empty(4, np.float64)
    for o in range(m):
        for ci in range(c):
            for j in range(3):   # t = G g (4 x 3)
                g0, g1, g2 = w[o, ci, 0, j], w[o, ci, 1, j], w[o, ci, 2, j]
                t[0, j] = g0
                t[1, j] = 0.5 * (g0 + g1 + g2)
                t[2, j] = 0.5 * (g0 - g1 + g2)
                t[3, j] = g2
            for i in range(4):   # u = t G^T (4 x 4)
                g0, g1, g2 = t[i, 0], t[i, 1], t[i, 2]
                u[0] = g0
                u[1] = 0.5 * (g0 + g1 + g2)
                u[2] = 0.5 * (g0 - g1 + g2)
                u[3] = g2
                for k in range(4):
                    ut[4 * i + k, ci, o] = u[k]
                    u2[4 * i + k, o, ci] = u[k]


@njit
def winograd_weight_grad(dw, dut, nslots):
    # dw: (M, C, 3, 3) += G^T dU G with dU (4 x 4) the sum over slots of dut (slots, 16, C, M)
    m, c = dw.shape[0], dw.shape[1]
    du = np.empty((4, 4), np.float64)
    t = np.empty((3, 4), np.float64)
    for o in range(m):
        for ci in range(c):
            for xi in range(16):
                s = dut[0, xi, ci, o]
                for q in range(1, nslots):
                    s += dut[q, xi, ci, o]
                du[xi // 4, xi % 4] = s
            for j in range(4):   # t = G^T du (3 x 4)
                t[0, j] = du[0, j] + 0.5 * (du[1, j] + du[2, j])
                t[1, j] = 0.5 * (du[1, j] - du[2, j])
                t[2, j] = 0.5 * (du[1, j] + du[2, j]) + du[3, j]
            for i in range(3):   # dg = t G (3 x 3)
                dw[o, ci, i, 0] += t[i, 0] + 0.5 * (t[i, 1] + t[i, 2])
                dw[o, ci, i, 1] += 0.5 * (t[i, 1] - t[i, 2])
                dw[o, ci, i, 2] += 0.5 * (t[i, 1] + t[i, 2]) + t[i, 3]


# The tile kernels work on one-dimensional views of channel rows, with at most four rows
# written per loop and an unsigned loop counter: numba then checks no index for being negative
# and LLVM vectorizes the loops over channels (with 16 rows written in one loop it could not
# rule out overlaps and ran about 10x slower).

# Tile kernels.  The padded image, the outputs and their gradients are stored with their
# columns split by parity: ``xp (Hp, 2, TW + 1, C)`` holds padded column ``2 k + e`` at
# ``[:, e, k]``, ``yp`` and ``dyp (2 TH, 2, TW, M)`` output column ``2 k + e`` likewise.  Column
# ``j`` of tile ``tx``'s window is then ``xp[y, j % 2, tx + j // 2]``: across a line of tiles
# every window column is one contiguous run of ``(tiles) * C`` values, so each loop below runs
# over a whole line of tiles and all their channels (long loops that LLVM vectorizes; one
# loop per tile and a few channels spent its time in overlap checks).  Offsets are unsigned so
# that numba tests no index for being negative.

@njit
def _bt_line(v0, v1, v2, v3, vo, ae, ao, be, bo, xo, c, n, sub):
    # one row of B^T d B for a line of tiles: e_j = a_j - b_j (sub) or a_j + b_j, window
    # column j at (ae, ao, ae + c, ao + c)[j] + xo; v_k[vo ...] = (e0 - e2, e1 + e2, e2 - e1,
    # e1 - e3)[k]
    x2 = xo + c
    for t in range(n):
        if sub:
            e0, e1 = ae[xo + t] - be[xo + t], ao[xo + t] - bo[xo + t]
            e2, e3 = ae[x2 + t] - be[x2 + t], ao[x2 + t] - bo[x2 + t]
        else:
            e0, e1 = ae[xo + t] + be[xo + t], ao[xo + t] + bo[xo + t]
            e2, e3 = ae[x2 + t] + be[x2 + t], ao[x2 + t] + bo[x2 + t]
        v0[vo + t] = e0 - e2
        v1[vo + t] = e1 + e2
        v2[vo + t] = e2 - e1
        v3[vo + t] = e1 - e3


@njit
def _input_tiles(v, o, xp, ty, tx0, tx1):
    # v (16, tb * C) flat rows, tiles o ... <- B^T d B for tiles tx0 .. tx1 - 1 of tile line ty
    # of the image in xp (Hp, 2, TW + 1, C); the rows of B^T d are d0 - d2, d1 + d2, d2 - d1,
    # d1 - d3
    c = xp.shape[3]
    uc = np.uint64(c)
    vo = np.uint64(o * c)
    xo = np.uint64(tx0 * c)
    n = np.uint64((tx1 - tx0) * c)
    y = 2 * ty
    d0e, d0o = xp[y, 0].reshape(-1), xp[y, 1].reshape(-1)
    d1e, d1o = xp[y + 1, 0].reshape(-1), xp[y + 1, 1].reshape(-1)
    d2e, d2o = xp[y + 2, 0].reshape(-1), xp[y + 2, 1].reshape(-1)
    d3e, d3o = xp[y + 3, 0].reshape(-1), xp[y + 3, 1].reshape(-1)
    _bt_line(v[0], v[1], v[2], v[3], vo, d0e, d0o, d2e, d2o, xo, uc, n, True)
    _bt_line(v[4], v[5], v[6], v[7], vo, d1e, d1o, d2e, d2o, xo, uc, n, False)
    _bt_line(v[8], v[9], v[10], v[11], vo, d2e, d2o, d1e, d1o, xo, uc, n, True)
    _bt_line(v[12], v[13], v[14], v[15], vo, d1e, d1o, d3e, d3o, xo, uc, n, True)


@njit
def _at_line(oute, outo, yo, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, mo, n, first):
    # one output line of A^T M A for a line of tiles: s_j = a_j + b_j + c_j (first) or
    # a_j - b_j - c_j; output columns 0 and 1 of each tile get s0 + s1 + s2 and s1 - s2 - s3
    for t in range(n):
        i = mo + t
        if first:
            s0, s1 = a0[i] + b0[i] + c0[i], a1[i] + b1[i] + c1[i]
            s2, s3 = a2[i] + b2[i] + c2[i], a3[i] + b3[i] + c3[i]
        else:
            s0, s1 = a0[i] - b0[i] - c0[i], a1[i] - b1[i] - c1[i]
            s2, s3 = a2[i] - b2[i] - c2[i], a3[i] - b3[i] - c3[i]
        oute[yo + t] = s0 + s1 + s2
        outo[yo + t] = s1 - s2 - s3


@njit
def _output_tiles(yp, mt, o, ty, tx0, tx1):
    # yp (2 TH, 2, TW, M) outputs of tiles tx0 .. tx1 - 1 of tile line ty <- A^T mt A, mt
    # (16, tb * M) flat rows from tile o; the lines of A^T M are M0 + M1 + M2 and M1 - M2 - M3
    m = yp.shape[3]
    mo = np.uint64(o * m)
    yo = np.uint64(tx0 * m)
    n = np.uint64((tx1 - tx0) * m)
    y = 2 * ty
    _at_line(yp[y, 0].reshape(-1), yp[y, 1].reshape(-1), yo, mt[0], mt[1], mt[2], mt[3], mt[4], mt[5], mt[6],
             mt[7], mt[8], mt[9], mt[10], mt[11], mo, n, True)
    _at_line(yp[y + 1, 0].reshape(-1), yp[y + 1, 1].reshape(-1), yo, mt[4], mt[5], mt[6], mt[7], mt[8], mt[9],
             mt[10], mt[11], mt[12], mt[13], mt[14], mt[15], mo, n, False)


@njit
def _a_row(m0, m1, m2, m3, mo, ge, go, he, ho, yo, n, mode):
    # one row of A dy A^T for a line of tiles: (a0, a1) = g (mode 0), g + h (1), g - h (2) or
    # -h (3), with g and h the two output lines (columns e, o); m_k[mo ...] = (a0, a0 + a1,
    # a0 - a1, -a1)[k]
    for t in range(n):
        i = yo + t
        if mode == 0:
            a0, a1 = ge[i], go[i]
        elif mode == 1:
            a0, a1 = ge[i] + he[i], go[i] + ho[i]
        elif mode == 2:
            a0, a1 = ge[i] - he[i], go[i] - ho[i]
        else:
            a0, a1 = -he[i], -ho[i]
        m0[mo + t] = a0
        m1[mo + t] = a0 + a1
        m2[mo + t] = a0 - a1
        m3[mo + t] = -a1


@njit
def _grad_tiles(mt, o, dyp, ty, tx0, tx1):
    # mt (16, tb * M) flat rows from tile o <- A dy A^T for tiles tx0 .. tx1 - 1 of tile line
    # ty, dy in dyp (2 TH, 2, TW, M) (zero past the output)
    m = dyp.shape[3]
    mo = np.uint64(o * m)
    yo = np.uint64(tx0 * m)
    n = np.uint64((tx1 - tx0) * m)
    y = 2 * ty
    ge, go = dyp[y, 0].reshape(-1), dyp[y, 1].reshape(-1)
    he, ho = dyp[y + 1, 0].reshape(-1), dyp[y + 1, 1].reshape(-1)
    for xi in range(4):
        _a_row(mt[4 * xi], mt[4 * xi + 1], mt[4 * xi + 2], mt[4 * xi + 3], mo, ge, go, he, ho, yo, n, xi)


@njit
def _b_cols(xe, xo_, xo, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, vo, n, mode, right):
    # one window line of B dv B^T for a line of tiles, added to the window columns 0 and 1
    # (right false) or 2 and 3 (right true, at xo = the offset of column 0 plus C): e = a (mode
    # 0), a - b + c (1), a + b - c (2) or -a (3); the columns get (e0, e1 - e2 + e3, e1 + e2 -
    # e0, -e3).  Columns 2, 3 of one tile are columns 0, 1 of the next, so the two halves are
    # separate loops (no loop writes one place twice).
    for t in range(n):
        i = vo + t
        if mode == 0:
            e0, e1, e2, e3 = a0[i], a1[i], a2[i], a3[i]
        elif mode == 1:
            e0, e1 = a0[i] - b0[i] + c0[i], a1[i] - b1[i] + c1[i]
            e2, e3 = a2[i] - b2[i] + c2[i], a3[i] - b3[i] + c3[i]
        elif mode == 2:
            e0, e1 = a0[i] + b0[i] - c0[i], a1[i] + b1[i] - c1[i]
            e2, e3 = a2[i] + b2[i] - c2[i], a3[i] + b3[i] - c3[i]
        else:
            e0, e1, e2, e3 = -a0[i], -a1[i], -a2[i], -a3[i]
        if right:
            xe[xo + t] += e1 + e2 - e0
            xo_[xo + t] -= e3
        else:
            xe[xo + t] += e0
            xo_[xo + t] += e1 - e2 + e3


@njit
def _scatter_tiles(dxp, v, o, ty, tx0, tx1):
    # dxp (Hp, 2, TW + 1, C) += B dv B^T on the 4x4 windows of tiles tx0 .. tx1 - 1 of tile line
    # ty (the adjoint of _input_tiles; windows overlap by two lines and columns), dv in v
    # (16, tb * C) flat rows from tile o; the lines of B dv are dv0, dv1 - dv2 + dv3,
    # dv1 + dv2 - dv0 and -dv3
    c = dxp.shape[3]
    vo = np.uint64(o * c)
    xo = np.uint64(tx0 * c)
    n = np.uint64((tx1 - tx0) * c)
    y = 2 * ty
    for line in range(4):
        xe, xod = dxp[y + line, 0].reshape(-1), dxp[y + line, 1].reshape(-1)
        if line == 0:
            r, s, u = 0, 0, 0
        elif line == 1:
            r, s, u = 4, 8, 12
        elif line == 2:
            r, s, u = 4, 8, 0
        else:
            r, s, u = 12, 12, 12
        for right in (False, True):
            _b_cols(xe, xod, xo + (np.uint64(c) if right else np.uint64(0)), v[r], v[r + 1], v[r + 2], v[r + 3],
                    v[s], v[s + 1], v[s + 2], v[s + 3], v[u], v[u + 1], v[u + 2], v[u + 3], vo, n, line, right)


@njit
def _pack_split(xpf, xf, c, h, w, wh, pad):
    # xp (Hp, 2, Wh, C) <- x (C, H, W) at (pad, pad), columns split by parity (both flat); the
    # rest of xp stays as it is (zero)
    uc = np.uint64(c)
    for y in range(h):
        for ci in range(c):
            s0 = np.uint64((ci * h + y) * w)
            for par in range(2):
                x0 = (par - pad) & 1        # the first image column whose padded column has parity par
                d0 = np.uint64((((y + pad) * 2 + par) * wh + (x0 + pad) // 2) * c + ci)
                for t in range(np.uint64((w - x0 + 1) // 2)):
                    xpf[d0 + t * uc] = xf[s0 + np.uint64(x0) + 2 * t]


@njit
def _unpack_split(xf, xpf, c, h, w, wh, pad, bias):
    # x (C, H, W) <- xp (Hp, 2, Wh, C) at (pad, pad), columns split by parity, plus bias[c]
    # (zeros for none; both flat)
    uc = np.uint64(c)
    for y in range(h):
        for ci in range(c):
            b = bias[ci]
            d0 = np.uint64((ci * h + y) * w)
            for par in range(2):
                x0 = (par - pad) & 1
                s0 = np.uint64((((y + pad) * 2 + par) * wh + (x0 + pad) // 2) * c + ci)
                for t in range(np.uint64((w - x0 + 1) // 2)):
                    xf[d0 + np.uint64(x0) + 2 * t] = xpf[s0 + t * uc] + b


@njit
def _add_map_sums(dbias, yf, m, p):
    # dbias[m] += the sum of map m of y (M, P), flat (in float64)
    for k in range(m):
        acc = 0.0
        s0 = np.uint64(k * p)
        for t in range(np.uint64(p)):
            acc += yf[s0 + t]
        dbias[k] += acc


# ---- the drivers: one call per layer and direction -------------------------------------------
#
# ``mats`` = (bt, b, at, att): B^T, B, A^T, A of F(2 x 2, r x r) in the data's dtype (``a``
# points); ``hand``: 3 or 5 for the written-out F(2 x 2, 3 x 3) and F(2 x 2, 5 x 5) tile
# kernels, 0 for the general ones (the same transforms; the written-out ones are faster).
# ``e`` (slots, rows, TW * max(C, M)) (36 rows for F(2 x 2, 5 x 5), ``a`` for the general
# kernels), ``rows`` (slots, a) int64 and ``offs`` (slots, a) uint64 are their scratch.


@njit
def _tiles_in(vf, o, xps, ty, tx0, tx1, hand, mats, e, rows, offs):
    if hand == 3:
        _input_tiles(vf, o, xps, ty, tx0, tx1)
    elif hand == 5:
        _input5(vf, o, xps, ty, tx0, tx1, e)
    else:
        _wino_input(vf, o, xps, ty, tx0, tx1, mats[0], e, rows, offs)


@njit
def _tiles_out(yps, mtf, o, ty, tx0, tx1, hand, mats, e, rows, offs):
    if hand == 3:
        _output_tiles(yps, mtf, o, ty, tx0, tx1)
    elif hand == 5:
        _output5(yps, mtf, o, ty, tx0, tx1, e)
    else:
        _wino_output(yps, mtf, o, ty, tx0, tx1, mats[2], e, rows, offs)


@njit
def _tiles_grad(mtf, o, dyps, ty, tx0, tx1, hand, mats, e, rows, offs):
    if hand == 3:
        _grad_tiles(mtf, o, dyps, ty, tx0, tx1)
    elif hand == 5:
        _grad5(mtf, o, dyps, ty, tx0, tx1, e)
    else:
        _wino_grad(mtf, o, dyps, ty, tx0, tx1, mats[3], e, rows, offs)


@njit
def _tiles_scatter(dxps, vf, o, ty, tx0, tx1, hand, mats, e, rows, offs):
    if hand == 3:
        _scatter_tiles(dxps, vf, o, ty, tx0, tx1)
    elif hand == 5:
        _scatter5(dxps, vf, o, ty, tx0, tx1, e)
    else:
        _wino_scatter(dxps, vf, o, ty, tx0, tx1, mats[0], mats[1], e, rows, offs)


@pjit
def winograd_forward(y, dut, x, ut, bias, dy, xp, yp, dyp, v, mt, tmpu, nslots, nb, tb, pad, do_y, do_dw,
                     hand, mats, e, rows, offs):
    # y: (N, M, OH, OW) = conv(x) + bias (M,) when do_y; dut: (slots, a*a, C, M) per-slot sums
    # of v^T (A dy A^T), the transformed weight gradient for output gradient dy (N, M, OH, OW),
    # when do_dw; y and dy stand for each other when one is unused.  x: (N, C, H, W);
    # ut: (a*a, C, M).  Scratch per slot: xp (slots, Hp, 2, TW + h, C) zero-bordered, yp and
    # dyp (slots, 2 TH, 2, TW, M) (dyp zero past the output), v (slots, a*a, tb, C),
    # mt (slots, a*a, tb, M), tmpu (slots, C, M).
    n, c, h, w = x.shape
    _, m, oh, ow = y.shape
    th, tw = yp.shape[1] // 2, yp.shape[3]
    tiles = th * tw
    wh = xp.shape[3]
    npt = v.shape[1]
    nunits = (n + nb - 1) // nb
    for s in prange(nslots):
        xps = xp[s]
        xpf = xps.reshape(-1)
        yps = yp[s]
        ypf = yps.reshape(-1)
        dyps = dyp[s]
        dypf = dyps.reshape(-1)
        vs = v[s]
        vf = vs.reshape(npt, -1)
        mts = mt[s]
        mtf = mts.reshape(npt, -1)
        es, rs, os_ = e[s], rows[s], offs[s]
        if do_dw:
            dut[s][...] = 0.0
        packed = -1
        dpacked = -1
        for u in range(s, nunits, nslots):
            n0 = u * nb
            total = (min(n, n0 + nb) - n0) * tiles
            for b0 in range(0, total, tb):
                b1 = min(total, b0 + tb)
                count = b1 - b0
                r = b0
                while r < b1:
                    t = n0 + r // tiles
                    q0 = r % tiles
                    q1 = min(tiles, q0 + b1 - r)
                    if t != packed:
                        _pack_split(xpf, x[t].reshape(-1), c, h, w, wh, pad)
                        packed = t
                    ty = q0 // tw
                    while ty * tw < q1:
                        tx0, tx1 = max(q0 - ty * tw, 0), min(q1 - ty * tw, tw)
                        _tiles_in(vf, r - b0 + ty * tw + tx0 - q0, xps, ty, tx0, tx1, hand, mats, es, rs, os_)
                        ty += 1
                    r += q1 - q0
                if do_y:
                    for xi in range(npt):
                        np.dot(vs[xi, :count], ut[xi], mts[xi, :count])
                    r = b0
                    while r < b1:
                        t = n0 + r // tiles
                        q0 = r % tiles
                        q1 = min(tiles, q0 + b1 - r)
                        ty = q0 // tw
                        while ty * tw < q1:
                            tx0, tx1 = max(q0 - ty * tw, 0), min(q1 - ty * tw, tw)
                            _tiles_out(yps, mtf, r - b0 + ty * tw + tx0 - q0, ty, tx0, tx1, hand, mats, es, rs,
                                       os_)
                            ty += 1
                        if q1 == tiles:   # blocks run forwards: the image's outputs are complete
                            _unpack_split(y[t].reshape(-1), ypf, m, oh, ow, tw, 0, bias)
                        r += q1 - q0
                if do_dw:
                    r = b0
                    while r < b1:
                        t = n0 + r // tiles
                        q0 = r % tiles
                        q1 = min(tiles, q0 + b1 - r)
                        if t != dpacked:
                            _pack_split(dypf, dy[t].reshape(-1), m, oh, ow, tw, 0)
                            dpacked = t
                        ty = q0 // tw
                        while ty * tw < q1:
                            tx0, tx1 = max(q0 - ty * tw, 0), min(q1 - ty * tw, tw)
                            _tiles_grad(mtf, r - b0 + ty * tw + tx0 - q0, dyps, ty, tx0, tx1, hand, mats, es, rs,
                                        os_)
                            ty += 1
                        r += q1 - q0
                    for xi in range(npt):
                        np.dot(vs[xi, :count].T, mts[xi, :count], tmpu[s])
                        dut[s, xi] += tmpu[s]


@pjit
def winograd_backward(dx, dut, dbias, dy, x, u2, zero_c, xp, dxp, dyp, v, mt, tmpu, nslots, nb, tb, pad,
                      do_dx, do_dw, do_db, reuse, hand, mats, e, rows, offs):
    # dx: (N, C, H, W) = conv^T(dy) when do_dx; dut: (slots, a*a, C, M) per-slot transformed
    # weight-gradient sums when do_dw; dbias: (slots, M) float64 per-slot sums of dy when do_db;
    # dx and x stand for each other when one is unused.  dy: (N, M, OH, OW); u2: (a*a, M, C);
    # zero_c: (C,) zeros; dxp (slots, Hp, 2, TW + h, C).  reuse: each slot's v still holds its
    # last block of x's tiles (from winograd_forward).
    n, c, h, w = dx.shape
    _, m, oh, ow = dy.shape
    th, tw = dyp.shape[1] // 2, dyp.shape[3]
    tiles = th * tw
    wh = xp.shape[3]
    npt = v.shape[1]
    nunits = (n + nb - 1) // nb
    for s in prange(nslots):
        xps = xp[s]
        xpf = xps.reshape(-1)
        dxps = dxp[s]
        dxpf = dxps.reshape(-1)
        dyps = dyp[s]
        dypf = dyps.reshape(-1)
        vs = v[s]
        vf = vs.reshape(npt, -1)
        mts = mt[s]
        mtf = mts.reshape(npt, -1)
        es, rs, os_ = e[s], rows[s], offs[s]
        dbs = dbias[s]
        dbs[:] = 0.0
        if do_dw:
            dut[s][...] = 0.0
        packed = -1
        dpacked = -1
        acc = -1
        first = True
        last = s + ((nunits - 1 - s) // nslots) * nslots   # this slot's last unit
        for u in range(last, -1, -nslots):
            n0 = u * nb
            total = (min(n, n0 + nb) - n0) * tiles
            for bi in range((total - 1) // tb, -1, -1):
                b0 = bi * tb
                b1 = min(total, b0 + tb)
                count = b1 - b0
                r = b0
                while r < b1:
                    t = n0 + r // tiles
                    q0 = r % tiles
                    q1 = min(tiles, q0 + b1 - r)
                    if t != dpacked:
                        _pack_split(dypf, dy[t].reshape(-1), m, oh, ow, tw, 0)
                        if do_db:
                            _add_map_sums(dbs, dy[t].reshape(-1), m, oh * ow)
                        dpacked = t
                    ty = q0 // tw
                    while ty * tw < q1:
                        tx0, tx1 = max(q0 - ty * tw, 0), min(q1 - ty * tw, tw)
                        _tiles_grad(mtf, r - b0 + ty * tw + tx0 - q0, dyps, ty, tx0, tx1, hand, mats, es, rs, os_)
                        ty += 1
                    r += q1 - q0
                if do_dw:
                    if not (first and reuse):
                        r = b0
                        while r < b1:
                            t = n0 + r // tiles
                            q0 = r % tiles
                            q1 = min(tiles, q0 + b1 - r)
                            if t != packed:
                                _pack_split(xpf, x[t].reshape(-1), c, h, w, wh, pad)
                                packed = t
                            ty = q0 // tw
                            while ty * tw < q1:
                                tx0, tx1 = max(q0 - ty * tw, 0), min(q1 - ty * tw, tw)
                                _tiles_in(vf, r - b0 + ty * tw + tx0 - q0, xps, ty, tx0, tx1, hand, mats, es, rs,
                                          os_)
                                ty += 1
                            r += q1 - q0
                    for xi in range(npt):
                        np.dot(vs[xi, :count].T, mts[xi, :count], tmpu[s])
                        dut[s, xi] += tmpu[s]
                first = False
                if do_dx:
                    for xi in range(npt):
                        np.dot(mts[xi, :count], u2[xi], vs[xi, :count])
                    r = b0
                    while r < b1:
                        t = n0 + r // tiles
                        q0 = r % tiles
                        q1 = min(tiles, q0 + b1 - r)
                        if t != acc:   # blocks run backwards: the image's last block starts it
                            dxpf[:] = 0.0
                            acc = t
                        ty = q0 // tw
                        while ty * tw < q1:
                            tx0, tx1 = max(q0 - ty * tw, 0), min(q1 - ty * tw, tw)
                            _tiles_scatter(dxps, vf, r - b0 + ty * tw + tx0 - q0, ty, tx0, tx1, hand, mats, es,
                                           rs, os_)
                            ty += 1
                        if q0 == 0:    # and its first completes it
                            _unpack_split(dx[t].reshape(-1), dxpf, c, h, w, wh, pad, zero_c)
                        r += q1 - q0


# ---- F(2 x 2, r x r) for any odd r, from its transform matrices --------------------------------
#
# The same scheme with the matrices as arguments (``bt (a, a)``, ``at (2, a)``, ``g (a, r)``,
# ``a = r + 1`` points, built by the layer from Toom-Cook interpolation points): used for 5x5
# kernels (points 0, 1, -1, 2, -2 and infinity: 36 products per 2x2 outputs instead of 100).
# The transforms are sums of scaled rows, each one loop over a line of tiles and all their
# channels (the layout above); zero coefficients are skipped.  ``e`` (a, n) is per-slot scratch
# for the intermediate rows.


@njit
def _lincomb(dst, do, coefs, rows, src, offs, nterms, n):
    # dst[do ...] = sum over k < nterms of coefs[k] * src[rows[k]][offs[k] ...] (n values
    # each), terms with a zero coefficient skipped (dst = 0 when all are zero)
    first = True
    for k in range(nterms):
        cf = coefs[k]
        if cf == 0:
            continue
        row = src[rows[k]]
        o = offs[k]
        if first:
            for t in range(n):
                dst[do + t] = cf * row[o + t]
            first = False
        else:
            for t in range(n):
                dst[do + t] += cf * row[o + t]
    if first:
        for t in range(n):
            dst[do + t] = 0.0


@njit
def _axpy(dst, do, cf, src, n):
    # dst[do ...] += cf * src[0 ...] (n values)
    for t in range(n):
        dst[do + t] += cf * src[t]


@njit
def wino_weights(ut, u2, w, g):
    # ut: (a*a, C, M) and u2: (a*a, M, C) (written) = G w[m, c] G^T; w: (M, C, r, r); g: (a, r)
    m, c, r = w.shape[0], w.shape[1], w.shape[2]
    a = g.shape[0]
    t = np.empty((a, r), np.float64)
    for o in range(m):
        for ci in range(c):
            for i in range(a):
                for j in range(r):
                    s = 0.0
                    for k in range(r):
                        s += g[i, k] * w[o, ci, k, j]
                    t[i, j] = s
            for i in range(a):
                for j in range(a):
                    s = 0.0
                    for k in range(r):
                        s += t[i, k] * g[j, k]
                    ut[i * a + j, ci, o] = s
                    u2[i * a + j, o, ci] = s


@njit
def wino_weight_grad(dw, dut, nslots, g):
    # dw: (M, C, r, r) += G^T dU G, dU (a, a) the sum over slots of dut (slots, a*a, C, M)
    m, c, r = dw.shape[0], dw.shape[1], dw.shape[2]
    a = g.shape[0]
    du = np.empty((a, a), np.float64)
    t = np.empty((r, a), np.float64)
    for o in range(m):
        for ci in range(c):
            for xi in range(a * a):
                s = dut[0, xi, ci, o]
                for q in range(1, nslots):
                    s += dut[q, xi, ci, o]
                du[xi // a, xi % a] = s
            for i in range(r):
                for j in range(a):
                    s = 0.0
                    for k in range(a):
                        s += g[k, i] * du[k, j]
                    t[i, j] = s
            for i in range(r):
                for j in range(r):
                    s = 0.0
                    for k in range(a):
                        s += t[i, k] * g[k, j]
                    dw[o, ci, i, j] += s


@njit
def _wino_input(v, o, xp, ty, tx0, tx1, bt, e, rows, offs):
    # v (a*a, tb * C) flat rows from tile o <- B^T d B for tiles tx0 .. tx1 - 1 of tile line ty
    # of xp (Hp, 2, TW + h, C) (h = a // 2); e (a, >= n), rows (a,) int64, offs (a,) uint64:
    # scratch
    a = bt.shape[0]
    c = xp.shape[3]
    n = np.uint64((tx1 - tx0) * c)
    vo = np.uint64(o * c)
    lines = xp.reshape(xp.shape[0] * 2, -1)     # line y, parity p -> row 2 y + p
    for xi in range(a):
        # e[j] = sum_i bt[xi, i] d[i][j]; window column j has parity j % 2, shifted j // 2 tiles
        for j in range(a):
            for i in range(a):
                rows[i] = 2 * (2 * ty + i) + j % 2
                offs[i] = (tx0 + j // 2) * c
            _lincomb(e[j], np.uint64(0), bt[xi], rows, lines, offs, a, n)
        # v[xi a + nu] = sum_j bt[nu, j] e[j]
        for j in range(a):
            rows[j] = j
            offs[j] = 0
        for nu in range(a):
            _lincomb(v[xi * a + nu], vo, bt[nu], rows, e, offs, a, n)


@njit
def _wino_output(yp, mt, o, ty, tx0, tx1, at, e, rows, offs):
    # yp (2 TH, 2, TW, M) outputs of tiles tx0 .. tx1 - 1 of tile line ty <- A^T mt A, mt
    # (a*a, tb * M) flat rows from tile o; e (a, >= n), rows, offs: scratch
    a = at.shape[1]
    m = yp.shape[3]
    n = np.uint64((tx1 - tx0) * m)
    yo = np.uint64(tx0 * m)
    for ya in range(2):
        # e[nu] = sum_xi at[ya, xi] mt[xi a + nu]
        for nu in range(a):
            for xi in range(a):
                rows[xi] = xi * a + nu
                offs[xi] = o * m
            _lincomb(e[nu], np.uint64(0), at[ya], rows, mt, offs, a, n)
        # output column b = sum_nu at[b, nu] e[nu]
        for nu in range(a):
            rows[nu] = nu
            offs[nu] = 0
        for b in range(2):
            _lincomb(yp[2 * ty + ya, b].reshape(-1), yo, at[b], rows, e, offs, a, n)


@njit
def _wino_grad(mt, o, dyp, ty, tx0, tx1, att, e, rows, offs):
    # mt (a*a, tb * M) flat rows from tile o <- A dy A^T for tiles tx0 .. tx1 - 1 of tile line
    # ty, dy in dyp (2 TH, 2, TW, M) (zero past the output); att = A (a, 2); e (2, >= n), rows,
    # offs: scratch
    a = att.shape[0]
    m = dyp.shape[3]
    n = np.uint64((tx1 - tx0) * m)
    mo = np.uint64(o * m)
    lines = dyp.reshape(dyp.shape[0] * 2, -1)
    for xi in range(a):
        # e[b] = sum_ya A[xi, ya] dy[ya][b]
        for b in range(2):
            for ya in range(2):
                rows[ya] = 2 * (2 * ty + ya) + b
                offs[ya] = tx0 * m
            _lincomb(e[b], np.uint64(0), att[xi], rows, lines, offs, 2, n)
        # mt[xi a + nu] = sum_b A[nu, b] e[b]
        for b in range(2):
            rows[b] = b
            offs[b] = 0
        for nu in range(a):
            _lincomb(mt[xi * a + nu], mo, att[nu], rows, e, offs, 2, n)


@njit
def _wino_scatter(dxp, v, o, ty, tx0, tx1, bt, b, e, rows, offs):
    # dxp (Hp, 2, TW + h, C) += B dv B^T on the windows of tiles tx0 .. tx1 - 1 of tile line ty
    # (the adjoint of _wino_input), dv in v (a*a, tb * C) flat rows from tile o; b = B (the
    # transpose of bt); e (a, >= n), rows, offs: scratch
    a = bt.shape[0]
    c = dxp.shape[3]
    n = np.uint64((tx1 - tx0) * c)
    for i in range(a):
        # e[nu] = sum_xi B[i, xi] dv[xi a + nu]
        for nu in range(a):
            for xi in range(a):
                rows[xi] = xi * a + nu
                offs[xi] = o * c
            _lincomb(e[nu], np.uint64(0), b[i], rows, v, offs, a, n)
        # window column j += sum_nu B[j, nu] e[nu], one pass per term: columns j and j + 2 of
        # neighbouring tiles are one place, so no pass may cover both
        for j in range(a):
            dst = dxp[2 * ty + i, j % 2].reshape(-1)
            do = np.uint64((tx0 + j // 2) * c)
            for nu in range(a):
                cf = b[j, nu]
                if cf != 0:
                    _axpy(dst, do, cf, e[nu], n)


# ---- F(2 x 2, 5 x 5) written out ------------------------------------------------------------
#
# The same transforms as the general kernels with the matrices of ``winograd_matrices(5)``
# (points 0, 1, -1, 2, -2, infinity), each 1-D transform split into passes that share their
# subexpressions and write at most two rows (loops writing more rows did not vectorize), so a
# line of tiles costs about 40 passes where the general kernels need about 260:
#
#   B^T d:  r0 = 4 d0 - 5 d2 + d4            r5 = 4 d1 - 5 d3 + d5
#           r1, r2 = (d4 - 4 d2) +- (d3 - 4 d1)
#           r3, r4 = (d4 - d2) +- 2 (d3 - d1)
#   A^T m:  o0 = m0 + m1 + m2 + m3 + m4      o1 = (m1 - m2) + 2 (m3 - m4) + m5
#   A g:    (g0, g0 + g1, g0 - g1, g0 + 2 g1, g0 - 2 g1, g1)
#   B v:    s0 = 4 v0                         s5 = v5
#           s4 = v0 + (v1 + v2) + (v3 + v4)  s2 = -5 v0 - 4 (v1 + v2) - (v3 + v4)
#           s1 = -4 (v1 - v2) - 2 (v3 - v4) + 4 v5
#           s3 = (v1 - v2) + 2 (v3 - v4) - 5 v5
#
# Rows are 1-D arrays with an unsigned offset each; n values per pass.  The constants are
# float32 (exact), so float32 data is computed in float32 and float64 data in float64.

F2 = np.float32(2.0)
F4 = np.float32(4.0)
F5 = np.float32(5.0)


@njit
def _bt6(o0, o1, o2, o3, o4, o5, oo, d0, d1, d2, d3, d4, d5, do0, do1, do2, do3, do4, do5, n):
    # o_k[oo ...] = (B^T d)_k for d_k = d_k[do_k ...]
    for t in range(n):
        a0, a2, a4 = d0[do0 + t], d2[do2 + t], d4[do4 + t]
        a1, a3, a5 = d1[do1 + t], d3[do3 + t], d5[do5 + t]
        o0[oo + t] = F4 * a0 - F5 * a2 + a4
        o5[oo + t] = F4 * a1 - F5 * a3 + a5
    for t in range(n):
        a1, a2, a3, a4 = d1[do1 + t], d2[do2 + t], d3[do3 + t], d4[do4 + t]
        p = a4 - F4 * a2
        q = a3 - F4 * a1
        o1[oo + t] = p + q
        o2[oo + t] = p - q
    for t in range(n):
        a1, a2, a3, a4 = d1[do1 + t], d2[do2 + t], d3[do3 + t], d4[do4 + t]
        p = a4 - a2
        q = F2 * (a3 - a1)
        o3[oo + t] = p + q
        o4[oo + t] = p - q


@njit
def _at6(o0, o1, oo0, oo1, m0, m1, m2, m3, m4, m5, mo, n):
    # o0[oo0 ...], o1[oo1 ...] = A^T m for m_k = m_k[mo ...]
    for t in range(n):
        i = mo + t
        a0, a1, a2, a3, a4, a5 = m0[i], m1[i], m2[i], m3[i], m4[i], m5[i]
        o0[oo0 + t] = a0 + a1 + a2 + a3 + a4
        o1[oo1 + t] = (a1 - a2) + F2 * (a3 - a4) + a5


@njit
def _a6(o0, o1, o2, o3, o4, o5, oo, g0, g1, go0, go1, n):
    # o_k[oo ...] = (A g)_k for g0[go0 ...], g1[go1 ...]
    for t in range(n):
        a, b = g0[go0 + t], g1[go1 + t]
        o0[oo + t] = a
        o1[oo + t] = a + b
        o2[oo + t] = a - b
    for t in range(n):
        a, b = g0[go0 + t], g1[go1 + t]
        o3[oo + t] = a + F2 * b
        o4[oo + t] = a - F2 * b
        o5[oo + t] = b


@njit
def _b6(o0, o1, o2, o3, o4, o5, oo, v0, v1, v2, v3, v4, v5, vo, n):
    # o_k[oo ...] = (B v)_k for v_k = v_k[vo ...]
    for t in range(n):
        i = vo + t
        o0[oo + t] = F4 * v0[i]
        o5[oo + t] = v5[i]
    for t in range(n):
        i = vo + t
        a0 = v0[i]
        p = v1[i] + v2[i]
        q = v3[i] + v4[i]
        o4[oo + t] = a0 + p + q
        o2[oo + t] = -F5 * a0 - F4 * p - q
    for t in range(n):
        i = vo + t
        p = v1[i] - v2[i]
        q = v3[i] - v4[i]
        a5 = v5[i]
        o1[oo + t] = -F4 * p - F2 * q + F4 * a5
        o3[oo + t] = p + F2 * q - F5 * a5


@njit
def _input5(v, o, xp, ty, tx0, tx1, f):
    # v (36, tb * C) flat rows from tile o <- B^T d B for tiles tx0 .. tx1 - 1 of tile line ty
    # of xp (Hp, 2, TW + 2, C); f: (36, >= n) scratch.  Columns first (d B within each window
    # line, into f[6 i + nu]), then lines.
    c = xp.shape[3]
    n = np.uint64((tx1 - tx0) * c)
    z = np.uint64(0)
    vo = np.uint64(o * c)
    x0 = np.uint64(tx0 * c)
    x1 = x0 + np.uint64(c)
    x2 = x1 + np.uint64(c)
    for i in range(6):
        e, od = xp[2 * ty + i, 0].reshape(-1), xp[2 * ty + i, 1].reshape(-1)
        # window column j: parity j % 2, shifted by j // 2 tiles; (d B)_nu = (B^T d^T)_nu
        _bt6(f[6 * i], f[6 * i + 1], f[6 * i + 2], f[6 * i + 3], f[6 * i + 4], f[6 * i + 5], z,
             e, od, e, od, e, od, x0, x0, x1, x1, x2, x2, n)
    for nu in range(6):
        _bt6(v[nu], v[6 + nu], v[12 + nu], v[18 + nu], v[24 + nu], v[30 + nu], vo,
             f[nu], f[6 + nu], f[12 + nu], f[18 + nu], f[24 + nu], f[30 + nu], z, z, z, z, z, z, n)


@njit
def _output5(yp, mt, o, ty, tx0, tx1, f):
    # yp (2 TH, 2, TW, M) outputs of tiles tx0 .. tx1 - 1 of tile line ty <- A^T mt A, mt
    # (36, tb * M) flat rows from tile o; f: (>= 12, >= n) scratch
    m = yp.shape[3]
    n = np.uint64((tx1 - tx0) * m)
    z = np.uint64(0)
    mo = np.uint64(o * m)
    yo = np.uint64(tx0 * m)
    for xi in range(6):   # within each row xi of mt: the two output columns
        _at6(f[2 * xi], f[2 * xi + 1], z, z, mt[6 * xi], mt[6 * xi + 1], mt[6 * xi + 2], mt[6 * xi + 3],
             mt[6 * xi + 4], mt[6 * xi + 5], mo, n)
    for b in range(2):    # then across the rows: the two output lines of column b
        _at6(yp[2 * ty, b].reshape(-1), yp[2 * ty + 1, b].reshape(-1), yo, yo, f[b], f[2 + b], f[4 + b],
             f[6 + b], f[8 + b], f[10 + b], z, n)


@njit
def _grad5(mt, o, dyp, ty, tx0, tx1, f):
    # mt (36, tb * M) flat rows from tile o <- A dy A^T for tiles tx0 .. tx1 - 1 of tile line
    # ty, dy in dyp (2 TH, 2, TW, M) (zero past the output); f: (>= 12, >= n) scratch
    m = dyp.shape[3]
    n = np.uint64((tx1 - tx0) * m)
    z = np.uint64(0)
    mo = np.uint64(o * m)
    yo = np.uint64(tx0 * m)
    for a in range(2):    # within each output line: its two columns -> six
        g0, g1 = dyp[2 * ty + a, 0].reshape(-1), dyp[2 * ty + a, 1].reshape(-1)
        _a6(f[6 * a], f[6 * a + 1], f[6 * a + 2], f[6 * a + 3], f[6 * a + 4], f[6 * a + 5], z, g0, g1, yo, yo, n)
    for nu in range(6):   # then across the two lines -> six
        _a6(mt[nu], mt[6 + nu], mt[12 + nu], mt[18 + nu], mt[24 + nu], mt[30 + nu], mo, f[nu], f[6 + nu], z, z,
            n)


@njit
def _scatter5(dxp, v, o, ty, tx0, tx1, f):
    # dxp (Hp, 2, TW + 2, C) += B dv B^T on the 6x6 windows of tiles tx0 .. tx1 - 1 of tile line
    # ty (the adjoint of _input5), dv in v (36, tb * C) flat rows from tile o; f: (36, >= n)
    # scratch (then a (6, n) part reused per line)
    c = dxp.shape[3]
    n = np.uint64((tx1 - tx0) * c)
    z = np.uint64(0)
    vo = np.uint64(o * c)
    for nu in range(6):   # across the rows: f[6 i + nu] = (B dv)_(i, nu)
        _b6(f[nu], f[6 + nu], f[12 + nu], f[18 + nu], f[24 + nu], f[30 + nu], z,
            v[nu], v[6 + nu], v[12 + nu], v[18 + nu], v[24 + nu], v[30 + nu], vo, n)
    for i in range(6):    # within each window line: the six columns, added where they lie
        e, od = dxp[2 * ty + i, 0].reshape(-1), dxp[2 * ty + i, 1].reshape(-1)
        r = 6 * i
        _b6_add(e, od, np.uint64(tx0 * c), np.uint64(c), f[r], f[r + 1], f[r + 2], f[r + 3], f[r + 4], f[r + 5], n)


@njit
def _b6_add(e, od, x0, c, v0, v1, v2, v3, v4, v5, n):
    # window columns j = 0..5 of a line of tiles += (B v)_j, column j at parity j % 2 shifted
    # by j // 2 tiles; one pass per column (columns j and j + 2 of neighbouring tiles are one
    # place, so no pass may hold both)
    x1 = x0 + c
    x2 = x1 + c
    for t in range(n):
        e[x0 + t] += F4 * v0[t]
    for t in range(n):
        p = v1[t] - v2[t]
        q = v3[t] - v4[t]
        od[x0 + t] += -F4 * p - F2 * q + F4 * v5[t]
    for t in range(n):
        e[x1 + t] += -F5 * v0[t] - F4 * (v1[t] + v2[t]) - (v3[t] + v4[t])
    for t in range(n):
        p = v1[t] - v2[t]
        q = v3[t] - v4[t]
        od[x1 + t] += p + F2 * q - F5 * v5[t]
    for t in range(n):
        e[x2 + t] += v0[t] + (v1[t] + v2[t]) + (v3[t] + v4[t])
    for t in range(n):
        od[x2 + t] += v5[t]
