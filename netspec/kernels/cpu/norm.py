"""Normalization and broadcast-affine kernels: LRN, BatchNorm, MVN, Scale, Bias.

Blobs come as 3-D views: ``(N, C, S)`` with ``S`` the product of the spatial axes for LRN
across channels and BatchNorm, ``(planes, H, W)`` for LRN within a channel, ``(rows, D)`` for
MVN, ``(outer, D, inner)`` for Scale and Bias.  Sums are taken in float64 whatever the blob
dtype.  Backward kernels compute every reduction they need before writing ``dinp``, so
``dinp`` may be the same array as ``dout`` (in place).
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.cpu.reduce import row_dot, row_sqdev, row_sum, row_sum_dot
from netspec.kernels.jit import ijit, njit, pjit, prange


# ---- LRN ------------------------------------------------------------------------------------

@ijit
def _lrn_out(out, x, base, beta):
    # out, x, base: (S,); out = x * base^-beta.  pow is most of LRN's time: the usual beta 0.75
    # takes two square roots (single instructions).  The branch stays outside the loops so that
    # they vectorize, and the row helpers are inlined: called, their loops did not (4x slower).
    if beta == 0.75:
        for i in range(x.size):
            r = np.sqrt(base[i])
            out[i] = x[i] / (r * np.sqrt(r))
    else:
        for i in range(x.size):
            out[i] = x[i] * base[i] ** -beta


@ijit
def _lrn_grad(dx, dy, x, base, beta, coeff):
    # dx, dy, x, base: (S,); dx holds the window sum of dy y / base on entry:
    # dx = dy base^-beta - coeff x dx
    if beta == 0.75:
        for i in range(x.size):
            r = np.sqrt(base[i])
            dx[i] = dy[i] / (r * np.sqrt(r)) - coeff * x[i] * dx[i]
    else:
        for i in range(x.size):
            dx[i] = dy[i] * base[i] ** -beta - coeff * x[i] * dx[i]


@pjit
def lrn_across_forward(out, scale, inp, size, alpha_over_n, beta, k):
    # out, scale, inp: (N, C, S); scale = k + alpha/n * sum of x^2 over the `size` channels
    # centred on c (zero padded); y = x * scale^-beta.  Whole rows of S at a time: the inner
    # loops run over contiguous memory and vectorize (over 10x faster than a window loop per
    # element with pow)
    n, c, s = inp.shape
    half = (size - 1) // 2
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        srow = scale[b, ch]
        for i in range(s):
            srow[i] = 0.0
        for cc in range(max(ch - half, 0), min(ch + half + 1, c)):
            xr = inp[b, cc]
            for i in range(s):
                srow[i] += xr[i] * xr[i]
        for i in range(s):
            srow[i] = k + alpha_over_n * srow[i]
        _lrn_out(out[b, ch], inp[b, ch], srow, beta)


@pjit
def lrn_across_backward(dinp, ratio, dout, out, scale, inp, size, alpha_over_n, beta):
    # dinp, ratio (scratch), dout, out, scale, inp: (N, C, S);
    # dx_c = dy_c scale_c^-beta - (2 alpha beta / n) x_c sum_{c' near c} dy_c' y_c' / scale_c'
    n, c, s = inp.shape
    half = (size - 1) // 2
    coeff = 2.0 * alpha_over_n * beta
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        rrow, grow, orow, srow = ratio[b, ch], dout[b, ch], out[b, ch], scale[b, ch]
        for i in range(s):
            rrow[i] = grow[i] * orow[i] / srow[i]
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        drow = dinp[b, ch]
        for i in range(s):
            drow[i] = 0.0
        for cc in range(max(ch - half, 0), min(ch + half + 1, c)):
            rr = ratio[b, cc]
            for i in range(s):
                drow[i] += rr[i]
        _lrn_grad(drow, dout[b, ch], inp[b, ch], scale[b, ch], beta, coeff)


@ijit
def _box_rows(dst, src, half, square):
    # dst, src: (W,); dst[x] = sum of src (squared if `square`) over [x - half, x + half]
    w = src.size
    for x in range(w):
        dst[x] = 0.0
    for d in range(-half, half + 1):
        if square:
            for x in range(max(0, -d), min(w, w - d)):
                dst[x] += src[x + d] * src[x + d]
        else:
            for x in range(max(0, -d), min(w, w - d)):
                dst[x] += src[x + d]


@pjit
def lrn_within_forward(out, scale, tmp, inp, size, alpha_over_n2, beta):
    # out, scale, tmp (scratch), inp: (P, H, W), one plane per (n, c); scale = 1 + alpha/n^2 *
    # sum of x^2 over the size x size window centred on (h, w), zero padded (Caffe's AVE pool
    # divisor is always n^2 here).  The box sum is separable: rows into tmp, then columns.
    p, h, w = inp.shape
    half = (size - 1) // 2
    for q in prange(p):
        for y in range(h):
            _box_rows(tmp[q, y], inp[q, y], half, True)
        for y in range(h):
            srow = scale[q, y]
            for x in range(w):
                srow[x] = 0.0
            for yy in range(max(0, y - half), min(h, y + half + 1)):
                tr = tmp[q, yy]
                for x in range(w):
                    srow[x] += tr[x]
            for x in range(w):
                srow[x] = 1.0 + alpha_over_n2 * srow[x]
            _lrn_out(out[q, y], inp[q, y], srow, beta)


@pjit
def lrn_within_backward(dinp, tmp, dout, out, scale, inp, size, alpha_over_n2, beta):
    # dinp, tmp (scratch), dout, out, scale, inp: (P, H, W); the windows are symmetric, so the
    # outputs that read x at (h, w) are those of the window centred on (h, w):
    # dx = dy scale^-beta - (2 alpha beta / n^2) x * box sum of dy y / scale
    p, h, w = inp.shape
    half = (size - 1) // 2
    coeff = 2.0 * alpha_over_n2 * beta
    for q in prange(p):
        for y in range(h):
            drow, grow, orow, srow = dinp[q, y], dout[q, y], out[q, y], scale[q, y]
            for x in range(w):   # this plane's rows of dinp hold the ratios until overwritten
                drow[x] = grow[x] * orow[x] / srow[x]
            _box_rows(tmp[q, y], drow, half, False)
        for y in range(h):
            drow = dinp[q, y]
            for x in range(w):
                drow[x] = 0.0
            for yy in range(max(0, y - half), min(h, y + half + 1)):
                tr = tmp[q, yy]
                for x in range(w):
                    drow[x] += tr[x]
            _lrn_grad(drow, dout[q, y], inp[q, y], scale[q, y], beta, coeff)


# ---- BatchNorm ----------------------------------------------------------------------------

@pjit
def batchnorm_stats(mean, var, inp):
    # mean, var: (C,); inp: (N, C, S); per channel over N and S, biased variance, two passes
    n, c, s = inp.shape
    m = n * s
    for ch in prange(c):
        acc = 0.0
        for b in range(n):
            acc += row_sum(inp[b, ch])
        mu = acc / m
        acc = 0.0
        for b in range(n):
            acc += row_sqdev(inp[b, ch], mu)
        mean[ch] = mu
        var[ch] = acc / m


@pjit
def batchnorm_forward(out, xnorm, inp, mean, inv_std):
    # out, xnorm, inp: (N, C, S); mean, inv_std: (C,); y = (x - mean) * inv_std, also kept in
    # xnorm because a later in-place layer may overwrite out (xnorm may be out)
    n, c, s = inp.shape
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        mu = mean[ch]
        r = inv_std[ch]
        xr, zr, yr = inp[b, ch], xnorm[b, ch], out[b, ch]
        for i in range(s):
            v = (xr[i] - mu) * r
            zr[i] = v
            yr[i] = v


@pjit
def batchnorm_normalize(xnorm, inp, mean, inv_std):
    # xnorm, inp: (N, C, S); mean, inv_std: (C,); xnorm = (x - mean) * inv_std only (fused
    # with a Scale, which writes the top from xnorm)
    n, c, s = inp.shape
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        mu = mean[ch]
        r = inv_std[ch]
        xr, zr = inp[b, ch], xnorm[b, ch]
        for i in range(s):
            zr[i] = (xr[i] - mu) * r


@pjit
def batchnorm_backward(dinp, dscale, dbias, dout, xnorm, scale, inv_std, need_dinp):
    # The batch-statistics gradient of y = xnorm * scale + bias: BatchNorm alone (scale 1), or
    # fused with the Scale after it.  dscale = sum dy * xnorm and dbias = sum dy are written
    # (the Scale's param gradients) and dx = scale * inv_std * (dy - mean(dy) - mean(dy *
    # xnorm) * xnorm), means over N and S, from one pass for both sums.  dinp may be dout.
    n, c, s = dout.shape
    m = n * s
    for ch in prange(c):
        s1 = 0.0
        s2 = 0.0
        for b in range(n):
            a, d = row_sum_dot(dout[b, ch], xnorm[b, ch])
            s1 += a
            s2 += d
        dbias[ch] = s1
        dscale[ch] = s2
        if need_dinp:
            m1 = s1 / m
            m2 = s2 / m
            r = scale[ch] * inv_std[ch]
            for b in range(n):
                dr, gr, zr = dinp[b, ch], dout[b, ch], xnorm[b, ch]
                for i in range(s):
                    dr[i] = (gr[i] - m1 - m2 * zr[i]) * r


# ---- MVN ----------------------------------------------------------------------------------

@pjit
def mvn_forward(out, mean, std, inp, normalize_variance, eps):
    # out, inp: (R, D); mean, std: (R,); y = (x - mean) / (std + eps) (eps after the sqrt, as
    # Caffe), or x - mean; the variance in two passes (Caffe's E[x^2] - E[x]^2 can go negative)
    r, d = inp.shape
    for j in prange(r):
        xr, yr = inp[j], out[j]
        mu = row_sum(xr) / d
        sd = np.sqrt(row_sqdev(xr, mu) / d) if normalize_variance else 0.0
        mean[j] = mu
        std[j] = sd
        if normalize_variance:
            den = sd + eps
            for i in range(d):
                yr[i] = (xr[i] - mu) / den
        else:
            for i in range(d):
                yr[i] = xr[i] - mu


@pjit
def mvn_backward(dinp, dout, out, std, normalize_variance, eps):
    # dinp, dout, out: (R, D); std: (R,).  The exact gradient of (x - mean) / (std + eps):
    # dx = (dy - mean(dy) - mean(dy * y) * y * (std + eps) / std) / (std + eps).  Caffe drops
    # the factor (std + eps) / std, a relative error of eps / std.
    r, d = dout.shape
    for j in prange(r):
        gr, yr, dr = dout[j], out[j], dinp[j]
        m1 = row_sum(gr) / d
        if normalize_variance:
            sd = std[j]
            den = sd + eps
            coef = (row_dot(gr, yr) / d) * den / sd if sd > 0 else 0.0
            for i in range(d):
                dr[i] = (gr[i] - m1 - coef * yr[i]) / den
        else:
            for i in range(d):
                dr[i] = gr[i] - m1


# ---- Scale and Bias -------------------------------------------------------------------------

@pjit
def scale_forward(out, inp, scale):
    # out, inp: (outer, D, inner); scale: (D,); y = x * scale[d]
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        g = scale[k]
        xr, yr = inp[o, k], out[o, k]
        for i in range(inner):
            yr[i] = xr[i] * g


@pjit
def scale_bias_forward(out, inp, scale, bias):
    # out, inp: (outer, D, inner); scale, bias: (D,); y = x * scale[d] + bias[d]
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        g = scale[k]
        c = bias[k]
        xr, yr = inp[o, k], out[o, k]
        for i in range(inner):
            yr[i] = xr[i] * g + c


@pjit
def scale_keep_forward(out, keep, inp, scale, bias, with_bias):
    # out, keep, inp: (outer, D, inner); scale, bias: (D,).  y = x * scale[d] (+ bias[d]) with
    # a copy of x kept for the gradient of gamma, in one parallel pass (in place: out is inp)
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        g = scale[k]
        xr, kr, yr = inp[o, k], keep[o, k], out[o, k]
        if with_bias:
            c = bias[k]
            for i in range(inner):
                v = xr[i]
                kr[i] = v
                yr[i] = v * g + c
        else:
            for i in range(inner):
                v = xr[i]
                kr[i] = v
                yr[i] = v * g


@pjit
def bias_forward(out, inp, bias):
    # out, inp: (outer, D, inner); bias: (D,); y = x + bias[d]
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        c = bias[k]
        xr, yr = inp[o, k], out[o, k]
        for i in range(inner):
            yr[i] = xr[i] + c


@pjit
def scale_backward(dinp, dscale, dbias, dout, inp, scale, need_dinp, need_dscale, need_dbias):
    # dinp, dout, inp: (outer, D, inner); dscale, dbias, scale: (D,).  dscale[d] = sum dy * x
    # and dbias[d] = sum dy are written (the layer adds them to param grads or copies dscale
    # to bottom 1), both from one pass over dy; dx = dy * scale[d].  The sums come first:
    # dinp may be dout.
    outer, d, inner = dout.shape
    for k in prange(d):
        if need_dscale or need_dbias:
            a = 0.0
            b = 0.0
            for o in range(outer):
                if need_dscale:
                    sa, sb = row_sum_dot(dout[o, k], inp[o, k])
                    a += sa
                    b += sb
                else:
                    a += row_sum(dout[o, k])
            dbias[k] = a
            dscale[k] = b
        if need_dinp:
            g = scale[k]
            for o in range(outer):
                gr, dr = dout[o, k], dinp[o, k]
                for i in range(inner):
                    dr[i] = gr[i] * g


@pjit
def bias_backward(dbias, dout):
    # dbias: (D,) written; dout: (outer, D, inner); dbias[d] = sum of dy over outer and inner
    outer, d, inner = dout.shape
    for k in prange(d):
        acc = 0.0
        for o in range(outer):
            acc += row_sum(dout[o, k])
        dbias[k] = acc
