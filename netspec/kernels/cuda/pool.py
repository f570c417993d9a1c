"""Pooling kernels on the GPU over ``(N, C, H, W)`` blobs (netspec.kernels.cpu.pool's twins).

Windows and results are the CPU module's (Caffe's windows, the first of equal maxima, AVE's
divisor over ``[-pad, size + pad)``, float64 sums in the window's row-major order), one thread
per output element in forward.  AVE's backward gathers: one thread per input element adds the
gradients of the windows that cover it in output order, as the CPU's scatter does.  The index
backward (MAX's argmax, STOCHASTIC's sample) knows no window geometry, so it scatters with
atomic adds: where windows overlap (kernel > stride) an element taken by several outputs gets
their gradients in an unspecified order, which can change the last bits between runs.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.cuda._index import unravel4
from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()

FLT_MAX = 3.4028234663852886e38   # Caffe starts every max at -FLT_MAX, whatever the dtype
FLT_MIN = 1.1754943508222875e-38  # and every stochastic TEST sum at FLT_MIN


def _inner(size, k, stride, pad, out):
    # the outputs whose window lies wholly inside the image: lo <= o < hi (the CPU's _inner)
    lo = min((pad + stride - 1) // stride, out)
    hi = (size + pad - k) // stride + 1 if size + pad >= k else 0
    return lo, max(lo, min(hi, out))


@cuda_kernel
def _max_pool_forward(out, argmax, inp, kh, kw, sh, sw, ph, pw, ylo, yhi, xlo, xhi, small):
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    for t in range(cuda.grid(1), n * c * oh * ow, cuda.gridsize(1)):
        b, ci, oy, ox = unravel4(t, c, oh, ow)
        hs = oy * sh - ph
        he = min(hs + kh, h)
        hs = max(hs, 0)
        ws = ox * sw - pw
        we = min(ws + kw, w)
        ws = max(ws, 0)
        # the CPU writes the 2x2 and 3x3 windows wholly inside the image out, starting from
        # their first element; the others start from -FLT_MAX (they differ for values below it)
        if small and oy >= ylo and oy < yhi and ox >= xlo and ox < xhi:
            best = inp[b, ci, hs, ws]
            idx = hs * w + ws
        else:
            best = -FLT_MAX
            idx = -1
        for y in range(hs, he):
            for x in range(ws, we):
                v = inp[b, ci, y, x]
                if v > best:
                    best = v
                    idx = y * w + x
        # a window wholly past the image (ceil mode, pad 0, stride > kernel): 0 and no element
        if hs < he and ws < we:
            out[b, ci, oy, ox] = best
        else:
            out[b, ci, oy, ox] = 0.0
        argmax[b, ci, oy, ox] = idx


def max_pool_forward(out, argmax, inp, kh, kw, sh, sw, ph, pw):
    # out: (N, C, OH, OW); argmax: (N, C, OH, OW) int32 (-1 when no element beats -FLT_MAX);
    # inp: (N, C, H, W).  Strict '>', so the first of equal maxima wins.
    h, w = inp.shape[2], inp.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    ylo, yhi = _inner(h, kh, sh, ph, oh)
    xlo, xhi = _inner(w, kw, sw, pw, ow)
    small = kh == kw and (kh == 2 or kh == 3)
    launch(_max_pool_forward, out.size, out, argmax, inp, kh, kw, sh, sw, ph, pw, ylo, yhi, xlo, xhi, small)


@cuda_kernel
def _fill_zero(a):
    for t in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[t] = 0.0


@cuda_kernel
def _index_scatter(df, gf, jf, plane_in, plane_out):
    for t in range(cuda.grid(1), gf.size, cuda.gridsize(1)):
        j = jf[t]
        if j >= 0:   # a window with no element (see max_pool_forward) passes nothing
            cuda.atomic.add(df, (t // plane_out) * plane_in + j, gf[t])


def index_pool_backward(dinp, dout, index):
    # dinp: (N, C, H, W) (overwritten); dout, index: (N, C, OH, OW).  Each output's gradient goes
    # to the one element it took; overlapping windows add (atomically).
    # float16 gradients (half-width activations) are summed in a float32 buffer and stored once:
    # there is no float16 atomic add in numba-cuda, and float32 sums are what the CPU makes
    df = dinp.reshape(-1)
    acc = df if df.dtype != np.float16 else np.empty_like(df, dtype=np.float32)   # (on df's device)
    launch(_fill_zero, acc.size, acc)
    launch(_index_scatter, dout.size, acc, dout.reshape(-1), index.reshape(-1), dinp.shape[2] * dinp.shape[3],
           dout.shape[2] * dout.shape[3])
    if acc is not df:
        df[...] = acc


@cuda_kernel
def _ave_pool_forward(out, inp, kh, kw, sh, sw, ph, pw):
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    for t in range(cuda.grid(1), n * c * oh * ow, cuda.gridsize(1)):
        b, ci, oy, ox = unravel4(t, c, oh, ow)
        hs = oy * sh - ph
        he = min(hs + kh, h + ph)
        hsize = he - hs
        hs = max(hs, 0)
        he = min(he, h)
        ws = ox * sw - pw
        we = min(ws + kw, w + pw)
        size = hsize * (we - ws)
        ws = max(ws, 0)
        we = min(we, w)
        s = 0.0
        for y in range(hs, he):
            for x in range(ws, we):
                s += inp[b, ci, y, x]
        # size <= 0 only for a window wholly past the image (see max_pool_forward)
        if size > 0:
            out[b, ci, oy, ox] = s / size
        else:
            out[b, ci, oy, ox] = 0.0


def ave_pool_forward(out, inp, kh, kw, sh, sw, ph, pw):
    # out: (N, C, OH, OW); inp: (N, C, H, W).  The divisor counts padded cells inside
    # [-pad, size + pad) but not a window's overhang past size + pad.
    launch(_ave_pool_forward, out.size, out, inp, kh, kw, sh, sw, ph, pw)


@cuda_kernel
def _ave_pool_backward(dinp, dout, kh, kw, sh, sw, ph, pw):
    n, c, h, w = dinp.shape
    _, _, oh, ow = dout.shape
    for t in range(cuda.grid(1), n * c * h * w, cuda.gridsize(1)):
        b, ci, y, x = unravel4(t, c, h, w)
        # the windows that cover (y, x): oy * sh - ph <= y < oy * sh - ph + kh (likewise x)
        ey = y + ph - kh + 1
        oy0 = (ey + sh - 1) // sh if ey > 0 else 0
        oy1 = min((y + ph) // sh + 1, oh)
        ex = x + pw - kw + 1
        ox0 = (ex + sw - 1) // sw if ex > 0 else 0
        ox1 = min((x + pw) // sw + 1, ow)
        # accumulated in dinp itself: each add rounds to its dtype, as the CPU's do
        dinp[b, ci, y, x] = 0.0
        for oy in range(oy0, oy1):
            hs = oy * sh - ph
            hsize = min(hs + kh, h + ph) - hs
            for ox in range(ox0, ox1):
                ws = ox * sw - pw
                size = hsize * (min(ws + kw, w + pw) - ws)
                if size > 0:
                    dinp[b, ci, y, x] += dout[b, ci, oy, ox] / size


def ave_pool_backward(dinp, dout, kh, kw, sh, sw, ph, pw):
    # dinp: (N, C, H, W) (overwritten); dout: (N, C, OH, OW); the transpose of ave_pool_forward
    launch(_ave_pool_backward, dinp.size, dinp, dout, kh, kw, sh, sw, ph, pw)


@cuda_kernel
def _stochastic_pool_forward_train(out, index, inp, uniform, kh, kw, sh, sw):
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    for t in range(cuda.grid(1), n * c * oh * ow, cuda.gridsize(1)):
        b, ci, oy, ox = unravel4(t, c, oh, ow)
        hs = oy * sh
        he = min(hs + kh, h)
        ws = ox * sw
        we = min(ws + kw, w)
        total = 0.0
        for y in range(hs, he):
            for x in range(ws, we):
                total += inp[b, ci, y, x]
        thres = uniform[b, ci, oy, ox] * total
        # the last element when rounding or negative inputs leave the threshold unmet
        py = he - 1
        px = we - 1
        run = 0.0
        done = False
        for y in range(hs, he):
            if done:
                break
            for x in range(ws, we):
                run += inp[b, ci, y, x]
                if run >= thres:
                    py = y
                    px = x
                    done = True
                    break
        index[b, ci, oy, ox] = py * w + px
        out[b, ci, oy, ox] = inp[b, ci, py, px]


def stochastic_pool_forward_train(out, index, inp, uniform, kh, kw, sh, sw):
    # out, index (int32), uniform (float64 in [0, 1), drawn on the host): (N, C, OH, OW);
    # inp: (N, C, H, W), x >= 0.  Caffe's StoPoolForwardTrain: the first element whose running
    # sum reaches u * sum.
    launch(_stochastic_pool_forward_train, out.size, out, index, inp, uniform, kh, kw, sh, sw)


@cuda_kernel
def _stochastic_pool_forward_test(out, inp, kh, kw, sh, sw):
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    for t in range(cuda.grid(1), n * c * oh * ow, cuda.gridsize(1)):
        b, ci, oy, ox = unravel4(t, c, oh, ow)
        hs = oy * sh
        he = min(hs + kh, h)
        ws = ox * sw
        we = min(ws + kw, w)
        total = FLT_MIN
        sq = 0.0
        for y in range(hs, he):
            for x in range(ws, we):
                v = inp[b, ci, y, x]
                total += v
                sq += v * v
        out[b, ci, oy, ox] = sq / total


def stochastic_pool_forward_test(out, inp, kh, kw, sh, sw):
    # out: (N, C, OH, OW); inp: (N, C, H, W).  Caffe's StoPoolForwardTest: sum(x^2) / sum(x),
    # the sum started at FLT_MIN so that zeros give 0.
    launch(_stochastic_pool_forward_test, out.size, out, inp, kh, kw, sh, sw)
