"""Pooling kernels over ``(N, C, H, W)`` blobs (C-contiguous), one (image, channel) plane per task.

Windows follow Caffe (``src/caffe/layers/pooling_layer.cpp`` and ``.cu``): output ``(oy, ox)``
covers rows ``oy * sh - ph`` to ``+ kh`` and columns likewise, clipped to the image (AVE first
clips to ``[-pad, size + pad)`` for its divisor).  ``argmax``/``index`` hold the flat
``h * W + w`` offset of the chosen element within its plane.  Flat unsigned offsets keep numba
from testing for negative indices in the inner loops.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import njit, pjit, prange

FLT_MAX = 3.4028234663852886e38   # Caffe starts every max at -FLT_MAX, whatever the dtype
FLT_MIN = 1.1754943508222875e-38  # and every stochastic TEST sum at FLT_MIN


@njit
def _inner(size, k, stride, pad, out):
    # the outputs whose window lies wholly inside the image: lo <= o < hi
    lo = min((pad + stride - 1) // stride, out)
    hi = (size + pad - k) // stride + 1 if size + pad >= k else 0
    return lo, max(lo, min(hi, out))


@njit
def _max_window(xf, xb, w, hs, he, ws, we):
    # the first maximum of a window clipped to the image, and its h * W + w index
    best = -FLT_MAX
    idx = -1
    for y in range(hs, he):
        row = xb + np.uint64(y * w)
        for x in range(ws, we):
            v = xf[row + np.uint64(x)]
            if v > best:
                best = v
                idx = y * w + x
    return best, idx


@njit
def _max_row3(of, af, ob, xf, s0, i0, w, sw, n):
    # n outputs from of[ob], windows 3x3 from xf[s0] (index i0) stepping by sw: the nine
    # elements in row-major order, each a select (no unpredictable branch).  Signed offsets:
    # unsigned ones plus an int constant become floats in numba.
    w2 = 2 * w
    for t in range(n):
        s = s0 + t * sw
        i = i0 + t * sw
        best, idx = xf[s], i
        v = xf[s + 1]
        best, idx = (v, i + 1) if v > best else (best, idx)
        v = xf[s + 2]
        best, idx = (v, i + 2) if v > best else (best, idx)
        v = xf[s + w]
        best, idx = (v, i + w) if v > best else (best, idx)
        v = xf[s + w + 1]
        best, idx = (v, i + w + 1) if v > best else (best, idx)
        v = xf[s + w + 2]
        best, idx = (v, i + w + 2) if v > best else (best, idx)
        v = xf[s + w2]
        best, idx = (v, i + w2) if v > best else (best, idx)
        v = xf[s + w2 + 1]
        best, idx = (v, i + w2 + 1) if v > best else (best, idx)
        v = xf[s + w2 + 2]
        best, idx = (v, i + w2 + 2) if v > best else (best, idx)
        of[ob + t] = best
        af[ob + t] = idx


@njit
def _max_row2(of, af, ob, xf, s0, i0, w, sw, n):
    # as _max_row3 for 2x2 windows
    for t in range(n):
        s = s0 + t * sw
        i = i0 + t * sw
        best, idx = xf[s], i
        v = xf[s + 1]
        best, idx = (v, i + 1) if v > best else (best, idx)
        v = xf[s + w]
        best, idx = (v, i + w) if v > best else (best, idx)
        v = xf[s + w + 1]
        best, idx = (v, i + w + 1) if v > best else (best, idx)
        of[ob + t] = best
        af[ob + t] = idx


@pjit
def max_pool_forward(out, argmax, inp, kh, kw, sh, sw, ph, pw):
    # out: (N, C, OH, OW); argmax: (N, C, OH, OW) int32 (-1 when no element beats -FLT_MAX);
    # inp: (N, C, H, W).  Strict '>', so the first of equal maxima wins.  Windows wholly inside
    # the image of the usual 2x2 and 3x3 kernels are written out element by element in the
    # window's row-major order (selects instead of unpredictable branches: about 2x faster);
    # the others, and the windows at the borders, loop.
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    of = out.reshape(-1)
    af = argmax.reshape(-1)
    xf = inp.reshape(-1)
    ylo, yhi = _inner(h, kh, sh, ph, oh)
    xlo, xhi = _inner(w, kw, sw, pw, ow)
    small = kh == kw and (kh == 2 or kh == 3)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for oy in range(oh):
            hs = oy * sh - ph
            he = min(hs + kh, h)
            hs = max(hs, 0)
            fast = small and ylo <= oy < yhi
            if fast and xhi > xlo:
                i0 = hs * w + xlo * sw - pw
                o0 = q * oh * ow + oy * ow + xlo
                if kh == 3:
                    _max_row3(of, af, o0, xf, q * h * w + i0, i0, w, sw, xhi - xlo)
                else:
                    _max_row2(of, af, o0, xf, q * h * w + i0, i0, w, sw, xhi - xlo)
            # the rest: windows clipped by the border (all of them in border lines)
            skip = xhi - xlo if fast else 0
            for k in range(ow - skip):
                ox = k if k < xlo or not fast else k + skip
                o = ob + np.uint64(oy * ow + ox)
                ws = ox * sw - pw
                we = min(ws + kw, w)
                ws = max(ws, 0)
                best, idx = _max_window(xf, xb, w, hs, he, ws, we)
                # a window wholly past the image (Caffe's ceil rule keeps one when pad is 0
                # and stride > kernel): 0, where Caffe leaves -FLT_MAX
                of[o] = best if hs < he and ws < we else 0.0
                af[o] = idx


@pjit
def index_pool_backward(dinp, dout, index):
    # dinp: (N, C, H, W) (overwritten); dout, index: (N, C, OH, OW).  Each output's gradient goes
    # to the one element it took (MAX's argmax, STOCHASTIC's sample); overlapping windows add.
    n, c, h, w = dinp.shape
    _, _, oh, ow = dout.shape
    df = dinp.reshape(-1)
    gf = dout.reshape(-1)
    jf = index.reshape(-1)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for t in range(np.uint64(h * w)):
            df[xb + t] = 0.0
        for t in range(np.uint64(oh * ow)):
            j = jf[ob + t]
            if j >= 0:   # Caffe would write out of bounds here; such a window has no element
                df[xb + np.uint64(j)] += gf[ob + t]


@njit
def _ave_row(of, ob, xf, s0, w, sw, n, k):
    # n outputs from of[ob]: the mean of k x k windows (k = 2 or 3) from xf[s0] stepping by
    # sw, summed in float64 in the window's row-major order and divided by k * k, as the
    # general loop does
    size = k * k
    for t in range(n):
        s = s0 + t * sw
        a = 0.0
        if k == 3:
            a = a + xf[s] + xf[s + 1] + xf[s + 2]
            a = a + xf[s + w] + xf[s + w + 1] + xf[s + w + 2]
            a = a + xf[s + 2 * w] + xf[s + 2 * w + 1] + xf[s + 2 * w + 2]
        else:
            a = a + xf[s] + xf[s + 1] + xf[s + w] + xf[s + w + 1]
        of[ob + t] = a / size


@pjit
def ave_pool_forward(out, inp, kh, kw, sh, sw, ph, pw):
    # out: (N, C, OH, OW); inp: (N, C, H, W).  The divisor counts padded cells inside
    # [-pad, size + pad) but not a window's overhang past size + pad.  Windows of the usual 2x2
    # and 3x3 kernels wholly inside the image are written out (no inner loops); the rest loop.
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    of = out.reshape(-1)
    xf = inp.reshape(-1)
    ylo, yhi = _inner(h, kh, sh, ph, oh)
    xlo, xhi = _inner(w, kw, sw, pw, ow)
    small = kh == kw and (kh == 2 or kh == 3)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for oy in range(oh):
            hs = oy * sh - ph
            he = min(hs + kh, h + ph)
            hsize = he - hs
            hs = max(hs, 0)
            he = min(he, h)
            fast = small and ylo <= oy < yhi
            if fast and xhi > xlo:
                # the same sum in the same order as below; divided by the same size
                _ave_row(of, q * oh * ow + oy * ow + xlo, xf, q * h * w + hs * w + xlo * sw - pw, w, sw,
                         xhi - xlo, kh)
            skip = xhi - xlo if fast else 0
            for k in range(ow - skip):
                ox = k if k < xlo or not fast else k + skip
                ws = ox * sw - pw
                we = min(ws + kw, w + pw)
                size = hsize * (we - ws)
                ws = max(ws, 0)
                we = min(we, w)
                s = 0.0
                for y in range(hs, he):
                    row = xb + np.uint64(y * w)
                    for x in range(ws, we):
                        s += xf[row + np.uint64(x)]
                # size <= 0 only for a window wholly past the image (see max_pool_forward)
                of[ob + np.uint64(oy * ow + ox)] = s / size if size > 0 else 0.0


@pjit
def ave_pool_backward(dinp, dout, kh, kw, sh, sw, ph, pw):
    # dinp: (N, C, H, W) (overwritten); dout: (N, C, OH, OW); the transpose of ave_pool_forward
    n, c, h, w = dinp.shape
    _, _, oh, ow = dout.shape
    df = dinp.reshape(-1)
    gf = dout.reshape(-1)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for t in range(np.uint64(h * w)):
            df[xb + t] = 0.0
        for oy in range(oh):
            hs = oy * sh - ph
            he = min(hs + kh, h + ph)
            hsize = he - hs
            hs = max(hs, 0)
            he = min(he, h)
            for ox in range(ow):
                ws = ox * sw - pw
                we = min(ws + kw, w + pw)
                size = hsize * (we - ws)
                ws = max(ws, 0)
                we = min(we, w)
                if size <= 0:
                    continue
                g = gf[ob + np.uint64(oy * ow + ox)] / size
                for y in range(hs, he):
                    row = xb + np.uint64(y * w)
                    for x in range(ws, we):
                        df[row + np.uint64(x)] += g


@pjit
def stochastic_pool_forward_train(out, index, inp, uniform, kh, kw, sh, sw):
    # out, index (int32), uniform (float64 in [0, 1)): (N, C, OH, OW); inp: (N, C, H, W), x >= 0.
    # Caffe's StoPoolForwardTrain: the first element whose running sum reaches u * sum.
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    of = out.reshape(-1)
    jf = index.reshape(-1)
    uf = uniform.reshape(-1)
    xf = inp.reshape(-1)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for oy in range(oh):
            hs = oy * sh
            he = min(hs + kh, h)
            for ox in range(ow):
                ws = ox * sw
                we = min(ws + kw, w)
                total = 0.0
                for y in range(hs, he):
                    row = xb + np.uint64(y * w)
                    for x in range(ws, we):
                        total += xf[row + np.uint64(x)]
                o = ob + np.uint64(oy * ow + ox)
                thres = uf[o] * total
                # the last element when rounding or negative inputs leave the threshold unmet
                # (Caffe would leave the output unset)
                pick = (he - 1) * w + we - 1
                run = 0.0
                done = False
                for y in range(hs, he):
                    if done:
                        break
                    row = xb + np.uint64(y * w)
                    for x in range(ws, we):
                        run += xf[row + np.uint64(x)]
                        if run >= thres:
                            pick = y * w + x
                            done = True
                            break
                jf[o] = pick
                of[o] = xf[xb + np.uint64(pick)]


@pjit
def stochastic_pool_forward_test(out, inp, kh, kw, sh, sw):
    # out: (N, C, OH, OW); inp: (N, C, H, W).  Caffe's StoPoolForwardTest: the probability-
    # weighted average sum(x^2) / sum(x), the sum started at FLT_MIN so that zeros give 0.
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    of = out.reshape(-1)
    xf = inp.reshape(-1)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for oy in range(oh):
            hs = oy * sh
            he = min(hs + kh, h)
            for ox in range(ow):
                ws = ox * sw
                we = min(ws + kw, w)
                total = FLT_MIN
                sq = 0.0
                for y in range(hs, he):
                    row = xb + np.uint64(y * w)
                    for x in range(ws, we):
                        v = xf[row + np.uint64(x)]
                        total += v
                        sq += v * v
                of[ob + np.uint64(oy * ow + ox)] = sq / total
