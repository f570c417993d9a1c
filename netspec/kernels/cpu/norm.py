"""Normalization and broadcast-affine kernels: LRN, BatchNorm, MVN, Scale, Bias.

Blobs come as 3-D views: ``(N, C, S)`` with ``S`` the product of the spatial axes for LRN
across channels and BatchNorm, ``(planes, H, W)`` for LRN within a channel, ``(rows, D)`` for
MVN, ``(outer, D, inner)`` for Scale and Bias.  Sums are taken in float64 whatever the blob
dtype.  Backward kernels compute every reduction they need before writing ``dinp``, so
``dinp`` may be the same array as ``dout`` (in place).
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import njit, pjit, prange


# ---- LRN ------------------------------------------------------------------------------------

@njit
def neg_pow(base, beta):
    # base^-beta.  pow is most of LRN's time; the usual beta 0.75 takes two square roots,
    # which are single instructions, and agrees with pow to a few ulps
    if beta == 0.75:
        r = np.sqrt(base)
        return 1.0 / (r * np.sqrt(r))
    return base ** -beta


@pjit
def lrn_across_forward(out, scale, inp, size, alpha_over_n, beta, k):
    # out, scale, inp: (N, C, S); scale = k + alpha/n * sum of x^2 over the `size` channels
    # centred on c (zero padded); y = x * scale^-beta
    n, c, s = inp.shape
    half = (size - 1) // 2
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        lo = max(ch - half, 0)
        hi = min(ch + half + 1, c)
        for i in range(s):
            acc = 0.0
            for cc in range(lo, hi):
                v = inp[b, cc, i]
                acc += v * v
            sc = k + alpha_over_n * acc
            scale[b, ch, i] = sc
            out[b, ch, i] = inp[b, ch, i] * neg_pow(sc, beta)


@pjit
def lrn_across_backward(dinp, dout, out, scale, inp, size, alpha_over_n, beta):
    # dinp, dout, out, scale, inp: (N, C, S);
    # dx_c = dy_c scale_c^-beta - (2 alpha beta / n) x_c sum_{c' near c} dy_c' y_c' / scale_c'
    n, c, s = inp.shape
    half = (size - 1) // 2
    coeff = 2.0 * alpha_over_n * beta
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        lo = max(ch - half, 0)
        hi = min(ch + half + 1, c)
        for i in range(s):
            acc = 0.0
            for cc in range(lo, hi):
                acc += dout[b, cc, i] * out[b, cc, i] / scale[b, cc, i]
            dinp[b, ch, i] = dout[b, ch, i] * neg_pow(scale[b, ch, i], beta) - coeff * inp[b, ch, i] * acc


@pjit
def lrn_within_forward(out, scale, inp, size, alpha_over_n2, beta):
    # out, scale, inp: (P, H, W), one plane per (n, c); scale = 1 + alpha/n^2 * sum of x^2 over
    # the size x size window centred on (h, w), zero padded (Caffe's AVE pool divisor is n^2)
    p, h, w = inp.shape
    half = (size - 1) // 2
    for q in prange(p):
        for y in range(h):
            y0 = max(y - half, 0)
            y1 = min(y + half + 1, h)
            for x in range(w):
                x0 = max(x - half, 0)
                x1 = min(x + half + 1, w)
                acc = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        v = inp[q, yy, xx]
                        acc += v * v
                sc = 1.0 + alpha_over_n2 * acc
                scale[q, y, x] = sc
                out[q, y, x] = inp[q, y, x] * neg_pow(sc, beta)


@pjit
def lrn_within_backward(dinp, dout, out, scale, inp, size, alpha_over_n2, beta):
    # dinp, dout, out, scale, inp: (P, H, W); the windows are symmetric, so the outputs that
    # read x at (h, w) are those in the window centred on (h, w)
    p, h, w = inp.shape
    half = (size - 1) // 2
    coeff = 2.0 * alpha_over_n2 * beta
    for q in prange(p):
        for y in range(h):
            y0 = max(y - half, 0)
            y1 = min(y + half + 1, h)
            for x in range(w):
                x0 = max(x - half, 0)
                x1 = min(x + half + 1, w)
                acc = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        acc += dout[q, yy, xx] * out[q, yy, xx] / scale[q, yy, xx]
                dinp[q, y, x] = dout[q, y, x] * neg_pow(scale[q, y, x], beta) - coeff * inp[q, y, x] * acc


# ---- BatchNorm ----------------------------------------------------------------------------

@pjit
def batchnorm_stats(mean, var, inp):
    # mean, var: (C,); inp: (N, C, S); per channel over N and S, biased variance, two passes
    n, c, s = inp.shape
    m = n * s
    for ch in prange(c):
        acc = 0.0
        for b in range(n):
            for i in range(s):
                acc += inp[b, ch, i]
        mu = acc / m
        acc = 0.0
        for b in range(n):
            for i in range(s):
                d = inp[b, ch, i] - mu
                acc += d * d
        mean[ch] = mu
        var[ch] = acc / m


@pjit
def batchnorm_forward(out, xnorm, inp, mean, inv_std):
    # out, xnorm, inp: (N, C, S); mean, inv_std: (C,); y = (x - mean) * inv_std, also kept in
    # xnorm because a later in-place layer may overwrite out
    n, c, s = inp.shape
    for nc in prange(n * c):
        b = nc // c
        ch = nc % c
        mu = mean[ch]
        r = inv_std[ch]
        for i in range(s):
            v = (inp[b, ch, i] - mu) * r
            xnorm[b, ch, i] = v
            out[b, ch, i] = v


@pjit
def batchnorm_backward(dinp, dout, xnorm, inv_std):
    # dinp, dout, xnorm: (N, C, S); inv_std: (C,); batch-statistics gradient
    # dx = (dy - mean(dy) - mean(dy * y) * y) * inv_std, means over N and S
    n, c, s = dout.shape
    m = n * s
    for ch in prange(c):
        s1 = 0.0
        s2 = 0.0
        for b in range(n):
            for i in range(s):
                g = dout[b, ch, i]
                s1 += g
                s2 += g * xnorm[b, ch, i]
        m1 = s1 / m
        m2 = s2 / m
        r = inv_std[ch]
        for b in range(n):
            for i in range(s):
                dinp[b, ch, i] = (dout[b, ch, i] - m1 - m2 * xnorm[b, ch, i]) * r


# ---- MVN ----------------------------------------------------------------------------------

@pjit
def mvn_forward(out, mean, std, inp, normalize_variance, eps):
    # out, inp: (R, D); mean, std: (R,); y = (x - mean) / (std + eps) (eps after the sqrt, as
    # Caffe), or x - mean; the variance in two passes (Caffe's E[x^2] - E[x]^2 can go negative)
    r, d = inp.shape
    for j in prange(r):
        acc = 0.0
        for i in range(d):
            acc += inp[j, i]
        mu = acc / d
        sd = 0.0
        if normalize_variance:
            acc = 0.0
            for i in range(d):
                v = inp[j, i] - mu
                acc += v * v
            sd = np.sqrt(acc / d)
        mean[j] = mu
        std[j] = sd
        if normalize_variance:
            den = sd + eps
            for i in range(d):
                out[j, i] = (inp[j, i] - mu) / den
        else:
            for i in range(d):
                out[j, i] = inp[j, i] - mu


@pjit
def mvn_backward(dinp, dout, out, std, normalize_variance, eps):
    # dinp, dout, out: (R, D); std: (R,).  The exact gradient of (x - mean) / (std + eps):
    # dx = (dy - mean(dy) - mean(dy * y) * y * (std + eps) / std) / (std + eps).  Caffe drops
    # the factor (std + eps) / std, a relative error of eps / std.
    r, d = dout.shape
    for j in prange(r):
        s1 = 0.0
        s2 = 0.0
        for i in range(d):
            g = dout[j, i]
            s1 += g
            s2 += g * out[j, i]
        m1 = s1 / d
        if normalize_variance:
            sd = std[j]
            den = sd + eps
            coef = (s2 / d) * den / sd if sd > 0 else 0.0
            for i in range(d):
                dinp[j, i] = (dout[j, i] - m1 - coef * out[j, i]) / den
        else:
            for i in range(d):
                dinp[j, i] = dout[j, i] - m1


# ---- Scale and Bias -------------------------------------------------------------------------

@pjit
def scale_forward(out, inp, scale):
    # out, inp: (outer, D, inner); scale: (D,); y = x * scale[d]
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        g = scale[k]
        for i in range(inner):
            out[o, k, i] = inp[o, k, i] * g


@pjit
def scale_bias_forward(out, inp, scale, bias):
    # out, inp: (outer, D, inner); scale, bias: (D,); y = x * scale[d] + bias[d]
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        g = scale[k]
        c = bias[k]
        for i in range(inner):
            out[o, k, i] = inp[o, k, i] * g + c


@pjit
def bias_forward(out, inp, bias):
    # out, inp: (outer, D, inner); bias: (D,); y = x + bias[d]
    outer, d, inner = inp.shape
    for od in prange(outer * d):
        o = od // d
        k = od % d
        c = bias[k]
        for i in range(inner):
            out[o, k, i] = inp[o, k, i] + c


@pjit
def scale_backward(dinp, dscale, dout, inp, scale, need_dinp, need_dscale):
    # dinp, dout, inp: (outer, D, inner); dscale, scale: (D,).  dscale[d] = sum dy * x is
    # written (the layer adds it to a param grad or copies it to bottom 1); dx = dy * scale[d]
    outer, d, inner = dout.shape
    for k in prange(d):
        g = scale[k]
        acc = 0.0
        for o in range(outer):
            for i in range(inner):
                dy = dout[o, k, i]
                if need_dscale:
                    acc += dy * inp[o, k, i]
                if need_dinp:
                    dinp[o, k, i] = dy * g
        dscale[k] = acc


@pjit
def bias_backward(dbias, dout):
    # dbias: (D,) written; dout: (outer, D, inner); dbias[d] = sum of dy over outer and inner
    outer, d, inner = dout.shape
    for k in prange(d):
        acc = 0.0
        for o in range(outer):
            for i in range(inner):
                acc += dout[o, k, i]
        dbias[k] = acc
