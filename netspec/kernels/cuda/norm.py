"""Normalization and broadcast-affine kernels on the GPU: LRN, BatchNorm, MVN, Scale, Bias
(netspec.kernels.cpu.norm's twins, on the same 3-D views).

Element-wise work gets one thread per element.  Sums over a channel (BatchNorm, the gradients
of Scale and Bias) or over a row (MVN) get one block each: the block's threads stride over the
channel's or row's elements (neighbouring threads, neighbouring elements), keep float64 partial
sums, and add them up in shared memory (``reduce.block_sum``); the CPU reassociates its sums
too, so float64 results agree to rounding.  LRN's window sums loop serially per element, in
the CPU's order.  As on the CPU, backward kernels finish every reduction before writing
``dinp``, so ``dinp`` may be ``dout`` (in place); LRN's phases that read what an earlier phase
wrote for other elements are separate launches.
"""

from __future__ import annotations

import math

import numpy as np

from netspec.kernels.cuda._launch import MAX_BLOCKS, launch, launch_blocks
from netspec.kernels.cuda.reduce import BLOCK, BLOCK_THREADS, block_sum, row_dot, row_sqdev, row_sum
from netspec.kernels.jit import cuda_device, cuda_kernel, cuda_module

cuda = cuda_module()


def _blocks(kernel, groups: int, *args) -> None:
    """One block per channel or row (``groups`` of them; past MAX_BLOCKS blocks stride)."""
    launch_blocks(kernel, min(groups, MAX_BLOCKS), BLOCK_THREADS, *args)


# ---- LRN ------------------------------------------------------------------------------------

@cuda_device
def _lrn_out(x, base, beta):
    # x * base^-beta; the usual beta 0.75 by two square roots, as the CPU
    if beta == 0.75:
        r = math.sqrt(base)
        return x / (r * math.sqrt(r))
    return x * base ** -beta


@cuda_device
def _lrn_grad(acc, dy, x, base, beta, coeff):
    # acc: the window sum of dy y / base; dx = dy base^-beta - coeff x acc
    if beta == 0.75:
        r = math.sqrt(base)
        return dy / (r * math.sqrt(r)) - coeff * x * acc
    return dy * base ** -beta - coeff * x * acc


@cuda_kernel
def _lrn_across_forward(out, scale, inp, size, alpha_over_n, beta, k):
    n, c, s = inp.shape
    half = (size - 1) // 2
    for t in range(cuda.grid(1), n * c * s, cuda.gridsize(1)):
        b = t // (c * s)
        ch = (t // s) % c
        i = t % s
        acc = 0.0
        for cc in range(max(ch - half, 0), min(ch + half + 1, c)):
            v = float(inp[b, cc, i])
            acc += v * v
        scale[b, ch, i] = k + alpha_over_n * acc
        out[b, ch, i] = _lrn_out(float(inp[b, ch, i]), float(scale[b, ch, i]), beta)


def lrn_across_forward(out, scale, inp, size, alpha_over_n, beta, k):
    # out, scale, inp: (N, C, S); scale = k + alpha/n * sum of x^2 over the `size` channels
    # centred on c (zero padded); y = x * scale^-beta
    launch(_lrn_across_forward, inp.size, out, scale, inp, size, alpha_over_n, beta, k)


@cuda_kernel
def _lrn_ratio(ratio, dout, out, scale):
    # every array (A, B, C): ratio = dy y / scale, in the blob dtype as the CPU
    a, b, c = ratio.shape
    for t in range(cuda.grid(1), a * b * c, cuda.gridsize(1)):
        p = t // (b * c)
        q = (t // c) % b
        r = t % c
        ratio[p, q, r] = dout[p, q, r] * out[p, q, r] / scale[p, q, r]


@cuda_kernel
def _lrn_across_grad(dinp, ratio, dout, scale, inp, size, beta, coeff):
    n, c, s = inp.shape
    half = (size - 1) // 2
    for t in range(cuda.grid(1), n * c * s, cuda.gridsize(1)):
        b = t // (c * s)
        ch = (t // s) % c
        i = t % s
        acc = 0.0
        for cc in range(max(ch - half, 0), min(ch + half + 1, c)):
            acc += float(ratio[b, cc, i])
        dinp[b, ch, i] = _lrn_grad(acc, float(dout[b, ch, i]), float(inp[b, ch, i]), float(scale[b, ch, i]),
                                   beta, coeff)


def lrn_across_backward(dinp, ratio, dout, out, scale, inp, size, alpha_over_n, beta):
    # dinp, ratio (scratch), dout, out, scale, inp: (N, C, S);
    # dx_c = dy_c scale_c^-beta - (2 alpha beta / n) x_c sum_{c' near c} dy_c' y_c' / scale_c'
    # (two launches: every ratio is written before a window reads it)
    launch(_lrn_ratio, ratio.size, ratio, dout, out, scale)
    launch(_lrn_across_grad, inp.size, dinp, ratio, dout, scale, inp, size, beta, 2.0 * alpha_over_n * beta)


@cuda_kernel
def _lrn_box_rows(dst, src, half, square):
    # dst, src: (P, H, W); dst[q, y, x] = sum of src[q, y] (squared if `square`) over
    # [x - half, x + half], in the CPU's order
    p, h, w = src.shape
    for t in range(cuda.grid(1), p * h * w, cuda.gridsize(1)):
        q = t // (h * w)
        y = (t // w) % h
        x = t % w
        acc = 0.0
        for d in range(-half, half + 1):
            if 0 <= x + d < w:
                v = float(src[q, y, x + d])
                acc += v * v if square else v
        dst[q, y, x] = acc


@cuda_kernel
def _lrn_within_out(out, scale, tmp, inp, half, alpha_over_n2, beta):
    # scale = 1 + alpha/n^2 * the column sums of tmp's row sums; y = x * scale^-beta
    p, h, w = inp.shape
    for t in range(cuda.grid(1), p * h * w, cuda.gridsize(1)):
        q = t // (h * w)
        y = (t // w) % h
        x = t % w
        acc = 0.0
        for yy in range(max(0, y - half), min(h, y + half + 1)):
            acc += float(tmp[q, yy, x])
        scale[q, y, x] = 1.0 + alpha_over_n2 * acc
        out[q, y, x] = _lrn_out(float(inp[q, y, x]), float(scale[q, y, x]), beta)


def lrn_within_forward(out, scale, tmp, inp, size, alpha_over_n2, beta):
    # out, scale, tmp (scratch), inp: (P, H, W), one plane per (n, c); scale = 1 + alpha/n^2 *
    # sum of x^2 over the size x size window centred on (h, w), zero padded.  The box sum is
    # separable: rows into tmp, then columns (two launches).
    half = (size - 1) // 2
    launch(_lrn_box_rows, inp.size, tmp, inp, half, True)
    launch(_lrn_within_out, inp.size, out, scale, tmp, inp, half, alpha_over_n2, beta)


@cuda_kernel
def _lrn_within_grad(dinp, tmp, dout, scale, inp, half, beta, coeff):
    p, h, w = inp.shape
    for t in range(cuda.grid(1), p * h * w, cuda.gridsize(1)):
        q = t // (h * w)
        y = (t // w) % h
        x = t % w
        acc = 0.0
        for yy in range(max(0, y - half), min(h, y + half + 1)):
            acc += float(tmp[q, yy, x])
        dinp[q, y, x] = _lrn_grad(acc, float(dout[q, y, x]), float(inp[q, y, x]), float(scale[q, y, x]),
                                  beta, coeff)


def lrn_within_backward(dinp, tmp, dout, out, scale, inp, size, alpha_over_n2, beta):
    # dinp, tmp (scratch), dout, out, scale, inp: (P, H, W); the windows are symmetric, so the
    # outputs that read x at (h, w) are those of the window centred on (h, w):
    # dx = dy scale^-beta - (2 alpha beta / n^2) x * box sum of dy y / scale.  dinp holds the
    # ratios until the last of three launches overwrites it.
    half = (size - 1) // 2
    launch(_lrn_ratio, dinp.size, dinp, dout, out, scale)
    launch(_lrn_box_rows, dinp.size, tmp, dinp, half, False)
    launch(_lrn_within_grad, dinp.size, dinp, tmp, dout, scale, inp, half, beta, 2.0 * alpha_over_n2 * beta)


# ---- BatchNorm ----------------------------------------------------------------------------

@cuda_kernel
def _batchnorm_stats(mean, var, inp):
    buf = cuda.shared.array(BLOCK, np.float64)
    n, c, s = inp.shape
    m = n * s
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for ch in range(cuda.blockIdx.x, c, cuda.gridDim.x):
        acc = 0.0
        for j in range(t, m, nt):
            acc += float(inp[j // s, ch, j % s])
        mu = block_sum(buf, acc) / m
        acc = 0.0
        for j in range(t, m, nt):
            d = float(inp[j // s, ch, j % s]) - mu
            acc += d * d
        v = block_sum(buf, acc) / m
        if t == 0:
            mean[ch] = mu
            var[ch] = v


def batchnorm_stats(mean, var, inp):
    # mean, var: (C,); inp: (N, C, S); per channel over N and S, biased variance, two passes
    _blocks(_batchnorm_stats, inp.shape[1], mean, var, inp)


@cuda_kernel
def _batchnorm_forward(out, xnorm, inp, mean, inv_std):
    n, c, s = inp.shape
    for t in range(cuda.grid(1), n * c * s, cuda.gridsize(1)):
        b = t // (c * s)
        ch = (t // s) % c
        i = t % s
        v = (float(inp[b, ch, i]) - mean[ch]) * inv_std[ch]
        xnorm[b, ch, i] = v
        out[b, ch, i] = v


def batchnorm_forward(out, xnorm, inp, mean, inv_std):
    # out, xnorm, inp: (N, C, S); mean, inv_std: (C,); y = (x - mean) * inv_std, also kept in
    # xnorm (xnorm may be out)
    launch(_batchnorm_forward, inp.size, out, xnorm, inp, mean, inv_std)


@cuda_kernel
def _batchnorm_normalize(xnorm, inp, mean, inv_std):
    n, c, s = inp.shape
    for t in range(cuda.grid(1), n * c * s, cuda.gridsize(1)):
        b = t // (c * s)
        ch = (t // s) % c
        i = t % s
        xnorm[b, ch, i] = (float(inp[b, ch, i]) - mean[ch]) * inv_std[ch]


def batchnorm_normalize(xnorm, inp, mean, inv_std):
    # xnorm, inp: (N, C, S); mean, inv_std: (C,); xnorm = (x - mean) * inv_std only (fused
    # with a Scale, which writes the top from xnorm)
    launch(_batchnorm_normalize, inp.size, xnorm, inp, mean, inv_std)


@cuda_kernel
def _batchnorm_backward(dinp, dscale, dbias, dout, xnorm, scale, inv_std, need_dinp):
    buf = cuda.shared.array(BLOCK, np.float64)
    n, c, s = dout.shape
    m = n * s
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for ch in range(cuda.blockIdx.x, c, cuda.gridDim.x):
        a = 0.0
        d = 0.0
        for j in range(t, m, nt):
            g = float(dout[j // s, ch, j % s])
            a += g
            d += g * float(xnorm[j // s, ch, j % s])
        s1 = block_sum(buf, a)
        s2 = block_sum(buf, d)
        if t == 0:
            dbias[ch] = s1
            dscale[ch] = s2
        if need_dinp:
            m1 = s1 / m
            m2 = s2 / m
            r = float(scale[ch]) * inv_std[ch]
            for j in range(t, m, nt):
                b = j // s
                i = j % s
                dinp[b, ch, i] = (float(dout[b, ch, i]) - m1 - m2 * float(xnorm[b, ch, i])) * r


def batchnorm_backward(dinp, dscale, dbias, dout, xnorm, scale, inv_std, need_dinp):
    # The batch-statistics gradient of y = xnorm * scale + bias: BatchNorm alone (scale 1), or
    # fused with the Scale after it.  dscale = sum dy * xnorm and dbias = sum dy are written
    # and dx = scale * inv_std * (dy - mean(dy) - mean(dy * xnorm) * xnorm), means over N and
    # S.  dinp may be dout: the block's sums are complete before any thread writes.
    _blocks(_batchnorm_backward, dout.shape[1], dinp, dscale, dbias, dout, xnorm, scale, inv_std, need_dinp)


# ---- MVN ----------------------------------------------------------------------------------

@cuda_kernel
def _mvn_forward(out, mean, std, inp, normalize_variance, eps):
    buf = cuda.shared.array(BLOCK, np.float64)
    r, d = inp.shape
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for j in range(cuda.blockIdx.x, r, cuda.gridDim.x):
        xr = inp[j, t::nt]           # this thread's elements of the row
        yr = out[j, t::nt]
        mu = block_sum(buf, row_sum(xr)) / d
        sd = 0.0
        if normalize_variance:
            sd = math.sqrt(block_sum(buf, row_sqdev(xr, mu)) / d)
        if t == 0:
            mean[j] = mu
            std[j] = sd
        if normalize_variance:
            den = sd + eps
            for i in range(xr.size):
                yr[i] = (float(xr[i]) - mu) / den
        else:
            for i in range(xr.size):
                yr[i] = float(xr[i]) - mu


def mvn_forward(out, mean, std, inp, normalize_variance, eps):
    # out, inp: (R, D); mean, std: (R,); y = (x - mean) / (std + eps) (eps after the sqrt, as
    # Caffe), or x - mean; the variance in two passes
    _blocks(_mvn_forward, inp.shape[0], out, mean, std, inp, normalize_variance, eps)


@cuda_kernel
def _mvn_backward(dinp, dout, out, std, normalize_variance, eps):
    buf = cuda.shared.array(BLOCK, np.float64)
    r, d = dout.shape
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for j in range(cuda.blockIdx.x, r, cuda.gridDim.x):
        gr = dout[j, t::nt]
        yr = out[j, t::nt]
        dr = dinp[j, t::nt]
        m1 = block_sum(buf, row_sum(gr)) / d
        if normalize_variance:
            dot = block_sum(buf, row_dot(gr, yr)) / d
            sd = std[j]
            den = sd + eps
            coef = dot * den / sd if sd > 0 else 0.0
            for i in range(gr.size):
                dr[i] = (float(gr[i]) - m1 - coef * float(yr[i])) / den
        else:
            for i in range(gr.size):
                dr[i] = float(gr[i]) - m1


def mvn_backward(dinp, dout, out, std, normalize_variance, eps):
    # dinp, dout, out: (R, D); std: (R,).  The exact gradient of (x - mean) / (std + eps):
    # dx = (dy - mean(dy) - mean(dy * y) * y * (std + eps) / std) / (std + eps)
    _blocks(_mvn_backward, dout.shape[0], dinp, dout, out, std, normalize_variance, eps)


# ---- Scale and Bias -------------------------------------------------------------------------
# y = x * scale[d] (+ bias[d]) in the blob dtype, as the CPU computes it

@cuda_kernel
def _scale_forward(out, inp, scale):
    outer, d, inner = inp.shape
    for t in range(cuda.grid(1), outer * d * inner, cuda.gridsize(1)):
        o = t // (d * inner)
        k = (t // inner) % d
        i = t % inner
        out[o, k, i] = inp[o, k, i] * scale[k]


def scale_forward(out, inp, scale):
    # out, inp: (outer, D, inner); scale: (D,); y = x * scale[d]
    launch(_scale_forward, inp.size, out, inp, scale)


@cuda_kernel
def _scale_bias_forward(out, inp, scale, bias):
    outer, d, inner = inp.shape
    for t in range(cuda.grid(1), outer * d * inner, cuda.gridsize(1)):
        o = t // (d * inner)
        k = (t // inner) % d
        i = t % inner
        out[o, k, i] = inp[o, k, i] * scale[k] + bias[k]


def scale_bias_forward(out, inp, scale, bias):
    # out, inp: (outer, D, inner); scale, bias: (D,); y = x * scale[d] + bias[d]
    launch(_scale_bias_forward, inp.size, out, inp, scale, bias)


@cuda_kernel
def _scale_keep_forward(out, keep, inp, scale, bias, with_bias):
    outer, d, inner = inp.shape
    for t in range(cuda.grid(1), outer * d * inner, cuda.gridsize(1)):
        o = t // (d * inner)
        k = (t // inner) % d
        i = t % inner
        v = inp[o, k, i]
        keep[o, k, i] = v
        if with_bias:
            out[o, k, i] = v * scale[k] + bias[k]
        else:
            out[o, k, i] = v * scale[k]


def scale_keep_forward(out, keep, inp, scale, bias, with_bias):
    # out, keep, inp: (outer, D, inner); scale, bias: (D,).  y = x * scale[d] (+ bias[d]) with
    # a copy of x kept for the gradient of gamma (in place: out is inp)
    launch(_scale_keep_forward, inp.size, out, keep, inp, scale, bias, with_bias)


@cuda_kernel
def _bias_forward(out, inp, bias):
    outer, d, inner = inp.shape
    for t in range(cuda.grid(1), outer * d * inner, cuda.gridsize(1)):
        o = t // (d * inner)
        k = (t // inner) % d
        i = t % inner
        out[o, k, i] = inp[o, k, i] + bias[k]


def bias_forward(out, inp, bias):
    # out, inp: (outer, D, inner); bias: (D,); y = x + bias[d]
    launch(_bias_forward, inp.size, out, inp, bias)


@cuda_kernel
def _scale_backward(dinp, dscale, dbias, dout, inp, scale, need_dinp, need_dscale, need_dbias):
    buf = cuda.shared.array(BLOCK, np.float64)
    outer, d, inner = dout.shape
    m = outer * inner
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, d, cuda.gridDim.x):
        if need_dscale or need_dbias:
            a = 0.0
            b = 0.0
            for j in range(t, m, nt):
                g = float(dout[j // inner, k, j % inner])
                a += g
                if need_dscale:
                    b += g * float(inp[j // inner, k, j % inner])
            sa = block_sum(buf, a)
            sb = block_sum(buf, b)
            if t == 0:
                dbias[k] = sa
                dscale[k] = sb
        if need_dinp:
            gam = scale[k]
            for j in range(t, m, nt):
                o = j // inner
                i = j % inner
                dinp[o, k, i] = dout[o, k, i] * gam


def scale_backward(dinp, dscale, dbias, dout, inp, scale, need_dinp, need_dscale, need_dbias):
    # dinp, dout, inp: (outer, D, inner); dscale, dbias, scale: (D,).  dscale[d] = sum dy * x
    # and dbias[d] = sum dy are written, both from one pass over dy; dx = dy * scale[d].  The
    # sums come first: dinp may be dout.
    _blocks(_scale_backward, dout.shape[1], dinp, dscale, dbias, dout, inp, scale, need_dinp, need_dscale,
            need_dbias)


@cuda_kernel
def _bias_backward(dbias, dout):
    buf = cuda.shared.array(BLOCK, np.float64)
    outer, d, inner = dout.shape
    m = outer * inner
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, d, cuda.gridDim.x):
        a = 0.0
        for j in range(t, m, nt):
            a += float(dout[j // inner, k, j % inner])
        total = block_sum(buf, a)
        if t == 0:
            dbias[k] = total


def bias_backward(dbias, dout):
    # dbias: (D,) written; dout: (outer, D, inner); dbias[d] = sum of dy over outer and inner
    _blocks(_bias_backward, dout.shape[1], dbias, dout)
