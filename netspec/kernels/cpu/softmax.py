"""Softmax and softmax-loss kernels over a (outer, channels, inner) view of a blob."""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import njit, pjit, prange


@pjit
def softmax_forward(out, inp):
    # out, inp: (outer, C, inner); softmax along C, max-subtracted for stability
    outer, c, inner = inp.shape
    for o in prange(outer):
        for i in range(inner):
            m = inp[o, 0, i]
            for k in range(1, c):
                if inp[o, k, i] > m:
                    m = inp[o, k, i]
            s = 0.0
            for k in range(c):
                e = np.exp(inp[o, k, i] - m)
                out[o, k, i] = e
                s += e
            for k in range(c):
                out[o, k, i] /= s


@pjit
def softmax_backward(dinp, dout, out):
    # dx = y * (dy - sum_k dy_k y_k), along C
    outer, c, inner = out.shape
    for o in prange(outer):
        for i in range(inner):
            dot = 0.0
            for k in range(c):
                dot += dout[o, k, i] * out[o, k, i]
            for k in range(c):
                dinp[o, k, i] = out[o, k, i] * (dout[o, k, i] - dot)


@pjit
def softmax_loss_forward(losses, valid, prob, label, has_ignore, ignore_label):
    # losses, valid: (outer, inner); prob: (outer, C, inner); label: (outer, inner) as float
    outer, c, inner = prob.shape
    flt_min = np.float32(1.1754944e-38)
    for o in prange(outer):
        for i in range(inner):
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                losses[o, i] = 0.0
                valid[o, i] = 0.0
                continue
            p = prob[o, lab, i]
            losses[o, i] = -np.log(max(p, flt_min))
            valid[o, i] = 1.0


@pjit
def softmax_loss_backward(dinp, prob, label, has_ignore, ignore_label, scale):
    # dinp = (prob - onehot(label)) * scale; zero at ignored positions
    outer, c, inner = prob.shape
    for o in prange(outer):
        for i in range(inner):
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                for k in range(c):
                    dinp[o, k, i] = 0.0
                continue
            for k in range(c):
                dinp[o, k, i] = prob[o, k, i] * scale
            dinp[o, lab, i] -= scale


@njit
def check_labels(label, num_classes, has_ignore, ignore_label):
    # label: (n,); the first index holding a label outside [0, num_classes) or not an integer, or -1
    for i in range(label.size):
        lab = label[i]
        if has_ignore and lab == ignore_label:
            continue
        if lab < 0 or lab >= num_classes or lab != np.floor(lab):
            return i
    return -1
