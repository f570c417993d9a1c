"""Pooling kernels over ``(N, C, H, W)`` blobs (C-contiguous), one (image, channel) plane per task.

Windows follow Caffe (``src/caffe/layers/pooling_layer.cpp`` and ``.cu``): output ``(oy, ox)``
covers rows ``oy * sh - ph`` to ``+ kh`` and columns likewise, clipped to the image (AVE first
clips to ``[-pad, size + pad)`` for its divisor).  ``argmax``/``index`` hold the flat
``h * W + w`` offset of the chosen element within its plane.  Flat unsigned offsets keep numba
from testing for negative indices in the inner loops.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import pjit, prange

FLT_MAX = 3.4028234663852886e38   # Caffe starts every max at -FLT_MAX, whatever the dtype
FLT_MIN = 1.1754943508222875e-38  # and every stochastic TEST sum at FLT_MIN


@pjit
def max_pool_forward(out, argmax, inp, kh, kw, sh, sw, ph, pw):
    # out: (N, C, OH, OW); argmax: (N, C, OH, OW) int32 (-1 when no element beats -FLT_MAX);
    # inp: (N, C, H, W).  Strict '>', so the first of equal maxima wins.
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    of = out.reshape(-1)
    af = argmax.reshape(-1)
    xf = inp.reshape(-1)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
        for oy in range(oh):
            hs = oy * sh - ph
            he = min(hs + kh, h)
            hs = max(hs, 0)
            for ox in range(ow):
                ws = ox * sw - pw
                we = min(ws + kw, w)
                ws = max(ws, 0)
                best = -FLT_MAX
                idx = -1
                for y in range(hs, he):
                    row = xb + np.uint64(y * w)
                    for x in range(ws, we):
                        v = xf[row + np.uint64(x)]
                        if v > best:
                            best = v
                            idx = y * w + x
                o = ob + np.uint64(oy * ow + ox)
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


@pjit
def ave_pool_forward(out, inp, kh, kw, sh, sw, ph, pw):
    # out: (N, C, OH, OW); inp: (N, C, H, W).  The divisor counts padded cells inside
    # [-pad, size + pad) but not a window's overhang past size + pad.
    n, c, h, w = inp.shape
    _, _, oh, ow = out.shape
    of = out.reshape(-1)
    xf = inp.reshape(-1)
    for q in prange(n * c):
        xb = np.uint64(q * h * w)
        ob = np.uint64(q * oh * ow)
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
