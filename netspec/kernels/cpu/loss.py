"""Kernels of the loss layers (other than SoftmaxWithLoss, in softmax.py) and of Accuracy.

Forward kernels write one partial loss per item or position (``losses``) and, where labels can
be ignored, a matching ``valid`` count; the layer sums them and divides by the normalizer.
Backward kernels take ``scale`` = loss weight / normalizer.  Labels are integer-valued floats,
read with ``int()`` (truncation, as Caffe's ``static_cast<int>``).
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.cpu.softmax import check_labels  # noqa: F401  (shared by every labelled loss)
from netspec.kernels.jit import njit, pjit, prange

LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD: log(max(p, 1e-20))


# ---- SigmoidCrossEntropyLoss ---------------------------------------------------------------
@pjit
def sigmoid_cross_entropy_forward(losses, valid, inp, target, has_ignore, ignore_label):
    # losses, valid: (num,); inp, target: (num, dim)
    # -[x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))]: never exponentiates a positive number
    num, dim = inp.shape
    for n in prange(num):
        s = 0.0
        c = 0.0
        for j in range(dim):
            t = target[n, j]
            if has_ignore and int(t) == ignore_label:
                continue
            x = inp[n, j]
            pos = 1.0 if x >= 0 else 0.0
            s -= x * (t - pos) - np.log1p(np.exp(x - 2.0 * x * pos))
            c += 1.0
        losses[n] = s
        valid[n] = c


@pjit
def sigmoid_cross_entropy_backward(dinp, inp, target, has_ignore, ignore_label, scale):
    # dinp, inp, target: (num, dim); dx = (sigmoid(x) - t) * scale, 0 where t is ignored
    num, dim = inp.shape
    for n in prange(num):
        for j in range(dim):
            t = target[n, j]
            if has_ignore and int(t) == ignore_label:
                dinp[n, j] = 0.0
                continue
            x = inp[n, j]
            if x >= 0:
                sig = 1.0 / (1.0 + np.exp(-x))
            else:
                e = np.exp(x)
                sig = e / (1.0 + e)
            dinp[n, j] = (sig - t) * scale


# ---- EuclideanLoss -----------------------------------------------------------------------
@pjit
def euclidean_forward(diff, losses, a, b):
    # diff, a, b: (num, dim); losses: (num,) = sum over dim of (a - b)^2
    num, dim = a.shape
    for n in prange(num):
        s = 0.0
        for j in range(dim):
            d = a[n, j] - b[n, j]
            diff[n, j] = d
            s += d * d
        losses[n] = s


@pjit
def euclidean_backward(dinp, diff, alpha):
    # dinp, diff: (n,); dinp = alpha * (a - b), alpha = +-lw / N
    for i in prange(diff.size):
        dinp[i] = alpha * diff[i]


# ---- HingeLoss ---------------------------------------------------------------------------
@pjit
def hinge_forward(margins, losses, inp, label, norm):
    # margins, inp: (num, dim); losses: (num,); label: (num,); norm: 1 (L1) or 2 (L2)
    # margins = max(0, 1 - d x) with d = +1 at the label and -1 elsewhere
    num, dim = inp.shape
    for n in prange(num):
        lab = int(label[n])
        s = 0.0
        for j in range(dim):
            x = -inp[n, j] if j == lab else inp[n, j]
            m = 1.0 + x
            if m < 0:
                m = 0.0
            margins[n, j] = m
            s += m if norm == 1 else m * m
        losses[n] = s


@pjit
def hinge_backward(dinp, margins, label, norm, scale):
    # dinp, margins: (num, dim); L1: -d [m > 0] scale; L2: -d 2 m scale
    num, dim = margins.shape
    for n in prange(num):
        lab = int(label[n])
        for j in range(dim):
            m = margins[n, j]
            g = (1.0 if m > 0 else 0.0) if norm == 1 else 2.0 * m
            dinp[n, j] = -g * scale if j == lab else g * scale


# ---- ContrastiveLoss ---------------------------------------------------------------------
@pjit
def contrastive_forward(diff, dist_sq, losses, a, b, sim, margin, legacy):
    # diff, a, b: (num, dim); dist_sq, losses, sim: (num,); sim != 0 (as an int) means similar
    num, dim = a.shape
    for n in prange(num):
        s = 0.0
        for j in range(dim):
            d = a[n, j] - b[n, j]
            diff[n, j] = d
            s += d * d
        dist_sq[n] = s
        if int(sim[n]) != 0:
            losses[n] = s
        elif legacy:
            losses[n] = max(margin - s, 0.0)
        else:
            m = max(margin - np.sqrt(s), 0.0)
            losses[n] = m * m


@pjit
def contrastive_backward(dinp, diff, dist_sq, sim, margin, legacy, alpha):
    # dinp, diff: (num, dim); alpha = +-lw / N (plus for a, minus for b).  Caffe divides by
    # d + 1e-4, not d, in the dissimilar non-legacy gradient (kept: it guards d == 0)
    num, dim = diff.shape
    for n in prange(num):
        if int(sim[n]) != 0:
            beta = alpha
        else:
            if legacy:
                mdist = margin - dist_sq[n]
                beta = -alpha
            else:
                dist = np.sqrt(dist_sq[n])
                mdist = margin - dist
                beta = -alpha * mdist / (dist + 1e-4)
            if mdist <= 0:
                beta = 0.0
        for j in range(dim):
            dinp[n, j] = beta * diff[n, j]


# ---- MultinomialLogisticLoss -------------------------------------------------------------
@pjit
def multinomial_logistic_forward(losses, prob, label):
    # losses, label: (num,); prob: (num, dim)
    num, dim = prob.shape
    for n in prange(num):
        p = prob[n, int(label[n])]
        losses[n] = -np.log(max(p, LOG_THRESHOLD))


@pjit
def multinomial_logistic_backward(dinp, prob, label, scale):
    # dinp, prob: (num, dim); dx[label] = -scale / max(p, 1e-20), 0 elsewhere
    num, dim = prob.shape
    for n in prange(num):
        lab = int(label[n])
        for j in range(dim):
            dinp[n, j] = 0.0
        dinp[n, lab] = -scale / max(prob[n, lab], LOG_THRESHOLD)


# ---- InfogainLoss (on softmax probabilities) ---------------------------------------------
@pjit
def infogain_forward(losses, valid, prob, label, H, has_ignore, ignore_label):
    # losses, valid, label: (outer, inner); prob: (outer, C, inner); H: (C, C)
    outer, c, inner = prob.shape
    for o in prange(outer):
        for i in range(inner):
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                losses[o, i] = 0.0
                valid[o, i] = 0.0
                continue
            s = 0.0
            for k in range(c):
                s -= H[lab, k] * np.log(max(prob[o, k, i], LOG_THRESHOLD))
            losses[o, i] = s
            valid[o, i] = 1.0


@pjit
def infogain_backward(dinp, prob, label, H, has_ignore, ignore_label, scale):
    # dinp, prob: (outer, C, inner); dx_k = (p_k sum_k' H[l, k'] - H[l, k]) * scale
    outer, c, inner = prob.shape
    for o in prange(outer):
        for i in range(inner):
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                for k in range(c):
                    dinp[o, k, i] = 0.0
                continue
            row = 0.0
            for k in range(c):
                row += H[lab, k]
            for k in range(c):
                dinp[o, k, i] = (prob[o, k, i] * row - H[lab, k]) * scale


# ---- Accuracy ----------------------------------------------------------------------------
@njit
def accuracy_forward(hits, nums, pred, label, top_k, has_ignore, ignore_label):
    # hits, nums: (C,) per true class: correct and counted positions; pred: (outer, C, inner);
    # label: (outer, inner).  Correct when fewer than top_k other classes score >= the true
    # class, so a tie counts against the prediction.
    outer, c, inner = pred.shape
    for k in range(c):
        hits[k] = 0.0
        nums[k] = 0.0
    for o in range(outer):
        for i in range(inner):
            lab = int(label[o, i])
            if has_ignore and lab == ignore_label:
                continue
            v = pred[o, lab, i]
            better = 0
            for k in range(c):
                if k != lab and pred[o, k, i] >= v:
                    better += 1
            nums[lab] += 1.0
            if better < top_k:
                hits[lab] += 1.0
