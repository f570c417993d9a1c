"""Softmax and softmax-loss kernels on the GPU over a (outer, channels, inner) view of a blob
(netspec.kernels.cpu.softmax's twins).

One thread per (outer, inner) position loops over the channels in the CPU kernel's order, so
float64 results match the CPU to rounding.  Sums are float64 (``float()`` reads: see
kernels/cuda/reduce.py).
"""

from __future__ import annotations

import math

import numpy as np

from netspec.kernels.cuda._index import widen
from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()

FLT_MIN = float(np.float32(1.1754944e-38))  # the CPU kernel's floor under a probability


@cuda_kernel
def _softmax_forward(out, inp):
    outer, c, inner = inp.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        i = t % inner
        m = widen(inp[o, 0, i])
        for k in range(1, c):
            if inp[o, k, i] > m:
                m = widen(inp[o, k, i])
        s = 0.0
        for k in range(c):
            e = math.exp(widen(inp[o, k, i]) - m)
            out[o, k, i] = e
            s += float(out[o, k, i])
        for k in range(c):
            out[o, k, i] = float(out[o, k, i]) / s


def softmax_forward(out, inp):
    # out, inp: (outer, C, inner); softmax along C, max-subtracted for stability (out may be inp)
    outer, c, inner = inp.shape
    launch(_softmax_forward, outer * inner, out, inp)


@cuda_kernel
def _softmax_backward(dinp, dout, out):
    outer, c, inner = out.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        i = t % inner
        dot = 0.0
        for k in range(c):
            dot += float(dout[o, k, i]) * float(out[o, k, i])
        for k in range(c):
            dinp[o, k, i] = float(out[o, k, i]) * (float(dout[o, k, i]) - dot)


def softmax_backward(dinp, dout, out):
    # dinp, dout, out: (outer, C, inner); dx = y * (dy - sum_k dy_k y_k) along C (dinp may be dout)
    outer, c, inner = out.shape
    launch(_softmax_backward, outer * inner, dinp, dout, out)


@cuda_kernel
def _softmax_loss_forward(losses, valid, prob, label, has_ignore, ignore_label):
    outer, c, inner = prob.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        i = t % inner
        lab = int(label[o, i])
        if has_ignore and lab == ignore_label:
            losses[o, i] = 0.0
            valid[o, i] = 0.0
        else:
            losses[o, i] = -math.log(max(float(prob[o, lab, i]), FLT_MIN))
            valid[o, i] = 1.0


def softmax_loss_forward(losses, valid, prob, label, has_ignore, ignore_label):
    # losses, valid: (outer, inner); prob: (outer, C, inner); label: (outer, inner) as float
    outer, c, inner = prob.shape
    launch(_softmax_loss_forward, outer * inner, losses, valid, prob, label, has_ignore, ignore_label)


@cuda_kernel
def _softmax_loss_backward(dinp, prob, label, has_ignore, ignore_label, scale):
    # one thread per element: each writes its own (p - [k == label]) * scale
    outer, c, inner = prob.shape
    for t in range(cuda.grid(1), outer * c * inner, cuda.gridsize(1)):
        o = t // (c * inner)
        k = (t // inner) % c
        i = t % inner
        lab = int(label[o, i])
        if has_ignore and lab == ignore_label:
            dinp[o, k, i] = 0.0
        elif k == lab:
            dinp[o, k, i] = float(prob[o, k, i]) * scale - scale
        else:
            dinp[o, k, i] = float(prob[o, k, i]) * scale


def softmax_loss_backward(dinp, prob, label, has_ignore, ignore_label, scale):
    # dinp, prob: (outer, C, inner); dinp = (prob - onehot(label)) * scale, zero where ignored
    launch(_softmax_loss_backward, prob.size, dinp, prob, label, has_ignore, ignore_label, scale)


@cuda_kernel
def _label_bad(bad, label, num_classes, has_ignore, ignore_label):
    # bad: (1,) int64, starts at label.size; the smallest bad position wins
    for i in range(cuda.grid(1), label.size, cuda.gridsize(1)):
        lab = label[i]
        if has_ignore and lab == ignore_label:
            continue
        # NaN first, and floor only of a value in range: math.floor gives an integer (NaN
        # has none; the simulator raises)
        if math.isnan(lab) or lab < 0 or lab >= num_classes or lab != math.floor(lab):
            cuda.atomic.min(bad, 0, i)


def check_labels(label, num_classes, has_ignore, ignore_label):
    # label: (n,); the first index holding a label outside [0, num_classes) or not an integer,
    # or -1.  Computed on the device; one int comes back.
    from netspec.core.device import to_host

    # on label's device whatever device is current (a Net does not make its own current
    # while it runs)
    bad = np.full_like(label, label.size, dtype=np.int64, shape=(1,))
    launch(_label_bad, label.size, bad, label, num_classes, has_ignore, ignore_label)
    first = int(to_host(bad)[0])
    return -1 if first >= label.size else first
