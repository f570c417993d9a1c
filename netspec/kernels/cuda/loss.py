"""Kernels of the loss layers (other than SoftmaxWithLoss, in softmax.py) and of Accuracy on the
GPU (netspec.kernels.cpu.loss's twins).

Forward kernels give one thread to each item or position, which loops over its values in the
CPU kernel's order (float64 results match the CPU to rounding); backward kernels give one
thread to each element.  Sums are float64 (``float()`` reads: see kernels/cuda/reduce.py).
"""

from __future__ import annotations

import math

from netspec.kernels.cuda._launch import launch
from netspec.kernels.cuda.softmax import check_labels  # noqa: F401  (shared by every labelled loss)
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()

LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD: log(max(p, 1e-20))


# ---- SigmoidCrossEntropyLoss ---------------------------------------------------------------
@cuda_kernel
def _sigmoid_cross_entropy_forward(losses, valid, inp, target, has_ignore, ignore_label):
    num, dim = inp.shape
    for n in range(cuda.grid(1), num, cuda.gridsize(1)):
        s = 0.0
        c = 0.0
        for j in range(dim):
            t = float(target[n, j])
            if has_ignore and int(t) == ignore_label:
                continue
            x = float(inp[n, j])
            pos = 1.0 if x >= 0 else 0.0
            s -= x * (t - pos) - math.log1p(math.exp(x - 2.0 * x * pos))
            c += 1.0
        losses[n] = s
        valid[n] = c


def sigmoid_cross_entropy_forward(losses, valid, inp, target, has_ignore, ignore_label):
    # losses, valid: (num,); inp, target: (num, dim)
    # -[x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))]: never exponentiates a positive number
    launch(_sigmoid_cross_entropy_forward, inp.shape[0], losses, valid, inp, target, has_ignore, ignore_label)


@cuda_kernel
def _sigmoid_cross_entropy_backward(dinp, inp, target, has_ignore, ignore_label, scale):
    num, dim = inp.shape
    for e in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        n = e // dim
        j = e % dim
        t = float(target[n, j])
        if has_ignore and int(t) == ignore_label:
            dinp[n, j] = 0.0
            continue
        x = float(inp[n, j])
        if x >= 0:
            sig = 1.0 / (1.0 + math.exp(-x))
        else:
            ex = math.exp(x)
            sig = ex / (1.0 + ex)
        dinp[n, j] = (sig - t) * scale


def sigmoid_cross_entropy_backward(dinp, inp, target, has_ignore, ignore_label, scale):
    # dinp, inp, target: (num, dim); dx = (sigmoid(x) - t) * scale, 0 where t is ignored
    launch(_sigmoid_cross_entropy_backward, inp.size, dinp, inp, target, has_ignore, ignore_label, scale)


# ---- EuclideanLoss -----------------------------------------------------------------------
@cuda_kernel
def _euclidean_forward(diff, losses, a, b):
    num, dim = a.shape
    for n in range(cuda.grid(1), num, cuda.gridsize(1)):
        s = 0.0
        for j in range(dim):
            diff[n, j] = a[n, j] - b[n, j]
            d = float(diff[n, j])
            s += d * d
        losses[n] = s


def euclidean_forward(diff, losses, a, b):
    # diff, a, b: (num, dim); losses: (num,) = sum over dim of (a - b)^2
    launch(_euclidean_forward, a.shape[0], diff, losses, a, b)


@cuda_kernel
def _euclidean_backward(dinp, diff, alpha):
    for i in range(cuda.grid(1), diff.size, cuda.gridsize(1)):
        dinp[i] = alpha * float(diff[i])


def euclidean_backward(dinp, diff, alpha):
    # dinp, diff: (n,); dinp = alpha * (a - b), alpha = +-lw / N
    launch(_euclidean_backward, diff.size, dinp, diff, alpha)


# ---- HingeLoss ---------------------------------------------------------------------------
@cuda_kernel
def _hinge_forward(margins, losses, inp, label, norm):
    num, dim = inp.shape
    for n in range(cuda.grid(1), num, cuda.gridsize(1)):
        lab = int(label[n])
        s = 0.0
        for j in range(dim):
            x = -float(inp[n, j]) if j == lab else float(inp[n, j])
            m = 1.0 + x
            if m < 0:
                m = 0.0
            margins[n, j] = m
            s += m if norm == 1 else m * m
        losses[n] = s


def hinge_forward(margins, losses, inp, label, norm):
    # margins, inp: (num, dim); losses: (num,); label: (num,); norm: 1 (L1) or 2 (L2)
    # margins = max(0, 1 - d x) with d = +1 at the label and -1 elsewhere
    launch(_hinge_forward, inp.shape[0], margins, losses, inp, label, norm)


@cuda_kernel
def _hinge_backward(dinp, margins, label, norm, scale):
    num, dim = margins.shape
    for e in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        n = e // dim
        j = e % dim
        m = float(margins[n, j])
        g = (1.0 if m > 0 else 0.0) if norm == 1 else 2.0 * m
        dinp[n, j] = -g * scale if j == int(label[n]) else g * scale


def hinge_backward(dinp, margins, label, norm, scale):
    # dinp, margins: (num, dim); L1: -d [m > 0] scale; L2: -d 2 m scale
    launch(_hinge_backward, margins.size, dinp, margins, label, norm, scale)


# ---- ContrastiveLoss ---------------------------------------------------------------------
@cuda_kernel
def _contrastive_forward(diff, dist_sq, losses, a, b, sim, margin, legacy):
    num, dim = a.shape
    for n in range(cuda.grid(1), num, cuda.gridsize(1)):
        s = 0.0
        for j in range(dim):
            diff[n, j] = a[n, j] - b[n, j]
            d = float(diff[n, j])
            s += d * d
        dist_sq[n] = s
        if int(sim[n]) != 0:
            losses[n] = s
        elif legacy:
            losses[n] = max(margin - s, 0.0)
        else:
            m = max(margin - math.sqrt(s), 0.0)
            losses[n] = m * m


def contrastive_forward(diff, dist_sq, losses, a, b, sim, margin, legacy):
    # diff, a, b: (num, dim); dist_sq, losses, sim: (num,); sim != 0 (as an int) means similar
    launch(_contrastive_forward, a.shape[0], diff, dist_sq, losses, a, b, sim, margin, legacy)


@cuda_kernel
def _contrastive_backward(dinp, diff, dist_sq, sim, margin, legacy, alpha):
    num, dim = diff.shape
    for e in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        n = e // dim
        j = e % dim
        if int(sim[n]) != 0:
            beta = alpha
        else:
            if legacy:
                mdist = margin - float(dist_sq[n])
                beta = -alpha
            else:
                dist = math.sqrt(float(dist_sq[n]))
                mdist = margin - dist
                beta = -alpha * mdist / (dist + 1e-4)
            if mdist <= 0:
                beta = 0.0
        dinp[n, j] = beta * float(diff[n, j])


def contrastive_backward(dinp, diff, dist_sq, sim, margin, legacy, alpha):
    # dinp, diff: (num, dim); alpha = +-lw / N (plus for a, minus for b).  Caffe divides by
    # d + 1e-4, not d, in the dissimilar non-legacy gradient (kept: it guards d == 0)
    launch(_contrastive_backward, diff.size, dinp, diff, dist_sq, sim, margin, legacy, alpha)


# ---- MultinomialLogisticLoss -------------------------------------------------------------
@cuda_kernel
def _multinomial_logistic_forward(losses, prob, label):
    for n in range(cuda.grid(1), prob.shape[0], cuda.gridsize(1)):
        p = float(prob[n, int(label[n])])
        losses[n] = -math.log(max(p, LOG_THRESHOLD))


def multinomial_logistic_forward(losses, prob, label):
    # losses, label: (num,); prob: (num, dim)
    launch(_multinomial_logistic_forward, prob.shape[0], losses, prob, label)


@cuda_kernel
def _multinomial_logistic_backward(dinp, prob, label, scale):
    num, dim = prob.shape
    for e in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        n = e // dim
        j = e % dim
        if j == int(label[n]):
            dinp[n, j] = -scale / max(float(prob[n, j]), LOG_THRESHOLD)
        else:
            dinp[n, j] = 0.0


def multinomial_logistic_backward(dinp, prob, label, scale):
    # dinp, prob: (num, dim); dx[label] = -scale / max(p, 1e-20), 0 elsewhere
    launch(_multinomial_logistic_backward, prob.size, dinp, prob, label, scale)


# ---- InfogainLoss (on softmax probabilities) ---------------------------------------------
@cuda_kernel
def _infogain_forward(losses, valid, prob, label, H, has_ignore, ignore_label):
    outer, c, inner = prob.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        i = t % inner
        lab = int(label[o, i])
        if has_ignore and lab == ignore_label:
            losses[o, i] = 0.0
            valid[o, i] = 0.0
            continue
        s = 0.0
        for k in range(c):
            s -= float(H[lab, k]) * math.log(max(float(prob[o, k, i]), LOG_THRESHOLD))
        losses[o, i] = s
        valid[o, i] = 1.0


def infogain_forward(losses, valid, prob, label, H, has_ignore, ignore_label):
    # losses, valid, label: (outer, inner); prob: (outer, C, inner); H: (C, C)
    outer, c, inner = prob.shape
    launch(_infogain_forward, outer * inner, losses, valid, prob, label, H, has_ignore, ignore_label)


@cuda_kernel
def _infogain_backward(dinp, prob, label, H, has_ignore, ignore_label, scale):
    # one thread per element; each sums its label's row of H (C values, from cache)
    outer, c, inner = prob.shape
    for t in range(cuda.grid(1), outer * c * inner, cuda.gridsize(1)):
        o = t // (c * inner)
        k = (t // inner) % c
        i = t % inner
        lab = int(label[o, i])
        if has_ignore and lab == ignore_label:
            dinp[o, k, i] = 0.0
            continue
        row = 0.0
        for kk in range(c):
            row += float(H[lab, kk])
        dinp[o, k, i] = (float(prob[o, k, i]) * row - float(H[lab, k])) * scale


def infogain_backward(dinp, prob, label, H, has_ignore, ignore_label, scale):
    # dinp, prob: (outer, C, inner); dx_k = (p_k sum_k' H[l, k'] - H[l, k]) * scale
    launch(_infogain_backward, prob.size, dinp, prob, label, H, has_ignore, ignore_label, scale)


# ---- Accuracy ----------------------------------------------------------------------------
@cuda_kernel
def _fill_zero2(a, b):
    for k in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[k] = 0.0
        b[k] = 0.0


@cuda_kernel
def _accuracy_count(hits, nums, pred, label, top_k, has_ignore, ignore_label):
    # one thread per position; the counts are whole numbers, so the atomic adds give the
    # CPU's values in any order
    outer, c, inner = pred.shape
    for t in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = t // inner
        i = t % inner
        lab = int(label[o, i])
        if has_ignore and lab == ignore_label:
            continue
        v = pred[o, lab, i]
        better = 0
        for k in range(c):
            if k != lab and pred[o, k, i] >= v:
                better += 1
        cuda.atomic.add(nums, lab, 1.0)
        if better < top_k:
            cuda.atomic.add(hits, lab, 1.0)


def accuracy_forward(hits, nums, pred, label, top_k, has_ignore, ignore_label):
    # hits, nums: (C,) per true class: correct and counted positions; pred: (outer, C, inner);
    # label: (outer, inner).  Correct when fewer than top_k other classes score >= the true
    # class, so a tie counts against the prediction.
    outer, c, inner = pred.shape
    launch(_fill_zero2, c, hits, nums)
    launch(_accuracy_count, outer * inner, hits, nums, pred, label, top_k, has_ignore, ignore_label)
