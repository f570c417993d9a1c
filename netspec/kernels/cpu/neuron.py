"""Element-wise activation kernels.  Arrays are flat (``x.reshape(-1)``) and contiguous;
``out`` may be the same array as ``inp`` (in place) and ``dinp`` the same as ``dout``.

Backward kernels that read the output (``out``) work in place; those that read the input
(``inp``) need the layer to keep a copy of it when it runs in place.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.jit import pjit, prange

BNLL_THRESHOLD = 50.0  # Caffe's kBNLL_THRESHOLD: exp(min(x, 50)) in the BNLL gradient


@pjit
def relu_forward(out, inp, negative_slope):
    # out, inp: (n,)
    for i in prange(inp.size):
        x = inp[i]
        out[i] = x if x > 0 else x * negative_slope


@pjit
def relu_backward(dinp, dout, out, negative_slope):
    # dinp, dout, out: (n,); uses the output, so it works in place (sign(y) == sign(x))
    for i in prange(out.size):
        dinp[i] = dout[i] if out[i] > 0 else dout[i] * negative_slope


@pjit
def sigmoid_forward(out, inp):
    # out, inp: (n,); through e = exp(-|x|), which never overflows: 1 / (1 + e) for x >= 0,
    # e / (1 + e) below.  Several times faster than Caffe's 0.5 tanh(x/2) + 0.5 (libm's tanh is
    # slow) and as accurate; exp of a float32 stays in float32.
    for i in prange(inp.size):
        x = inp[i]
        e = np.exp(-abs(x))
        r = 1.0 / (1.0 + e)
        out[i] = r if x >= 0 else e * r


@pjit
def sigmoid_backward(dinp, dout, out):
    # dinp, dout, out: (n,); dy/dx = y (1 - y)
    for i in prange(out.size):
        y = out[i]
        dinp[i] = dout[i] * y * (1.0 - y)


@pjit
def tanh_forward(out, inp):
    # out, inp: (n,)
    for i in prange(inp.size):
        out[i] = np.tanh(inp[i])


@pjit
def tanh_backward(dinp, dout, out):
    # dinp, dout, out: (n,); dy/dx = 1 - y^2
    for i in prange(out.size):
        y = out[i]
        dinp[i] = dout[i] * (1.0 - y * y)


@pjit
def prelu_forward(out, inp, slope, div):
    # out, inp: (outer, C, inner); slope: (C // div,), div = C when one slope is shared, else 1
    outer, c, inner = inp.shape
    for o in prange(outer):
        for k in range(c):
            a = slope[k // div]
            for i in range(inner):
                x = inp[o, k, i]
                out[o, k, i] = x if x > 0 else a * x


@pjit
def prelu_backward(dinp, dslope, dout, inp, slope, div, need_dinp):
    # dinp, dout, inp: (outer, C, inner); dslope: (C,) per-channel sums of dout * x over x <= 0,
    # written (not accumulated): the layer adds them to the param grad (summed when shared).
    # dslope is computed before dinp so that dinp may be dout.
    outer, c, inner = inp.shape
    for k in prange(c):
        a = slope[k // div]
        s = 0.0
        for o in range(outer):
            for i in range(inner):
                x = inp[o, k, i]
                g = dout[o, k, i]
                if x <= 0:
                    s += g * x
                if need_dinp:
                    dinp[o, k, i] = g if x > 0 else a * g
        dslope[k] = s


@pjit
def elu_forward(out, inp, alpha):
    # out, inp: (n,)
    for i in prange(inp.size):
        x = inp[i]
        # Caffe's exp(x) - 1: libm's exp is several times faster than its expm1, and the
        # absolute error near 0 stays at one rounding of exp
        out[i] = x if x > 0 else alpha * (np.exp(x) - 1.0)


@pjit
def elu_backward(dinp, dout, out, inp, alpha):
    # dinp, dout, out, inp: (n,); dy/dx = 1 for x > 0, else y + alpha.  In place inp is out,
    # which has the sign of x (as in Caffe).
    for i in prange(out.size):
        dinp[i] = dout[i] if inp[i] > 0 else dout[i] * (out[i] + alpha)


@pjit
def swish_forward(out, sig, inp, beta):
    # out, sig, inp: (n,); sig keeps sigmoid(beta x) for backward
    for i in prange(inp.size):
        x = inp[i]
        z = beta * x
        e = np.exp(-abs(z))
        r = 1.0 / (1.0 + e)
        s = r if z >= 0 else e * r   # sigmoid(z) as in sigmoid_forward
        sig[i] = s
        out[i] = x * s


@pjit
def swish_backward(dinp, dout, out, sig, beta):
    # dinp, dout, out, sig: (n,); dy/dx = beta y + s (1 - beta y), from the output: in place safe
    for i in prange(out.size):
        by = beta * out[i]
        s = sig[i]
        dinp[i] = dout[i] * (by + s * (1.0 - by))


@pjit
def absval_forward(out, inp):
    # out, inp: (n,)
    for i in prange(inp.size):
        out[i] = abs(inp[i])


@pjit
def absval_backward(dinp, dout, inp):
    # dinp, dout, inp: (n,); dy/dx = sign(x), 0 at 0
    for i in prange(inp.size):
        x = inp[i]
        dinp[i] = dout[i] if x > 0 else (-dout[i] if x < 0 else 0.0)


@pjit
def bnll_forward(out, inp):
    # out, inp: (n,); log(1 + e^x) without overflow: x + log(1 + e^-x) for x > 0
    for i in prange(inp.size):
        x = inp[i]
        out[i] = x + np.log1p(np.exp(-x)) if x > 0 else np.log1p(np.exp(x))


@pjit
def bnll_backward(dinp, dout, inp):
    # dinp, dout, inp: (n,); Caffe's formula: e / (e + 1) with e = exp(min(x, 50))
    for i in prange(inp.size):
        e = np.exp(min(inp[i], BNLL_THRESHOLD))
        dinp[i] = dout[i] * e / (e + 1.0)


@pjit
def bnll_backward_inplace(dinp, dout, out):
    # dinp, dout, out: (n,); in place x is gone, but sigmoid(x) = 1 - exp(-y) for y = softplus(x)
    for i in prange(out.size):
        dinp[i] = dout[i] * -np.expm1(-out[i])


@pjit
def power_forward(out, inp, power, scale, shift):
    # out, inp: (n,); y = (shift + scale x)^power; a zero power * scale gives a constant
    constant = power * scale == 0
    value = 1.0 if power == 0 else shift ** power
    for i in prange(inp.size):
        u = shift + scale * inp[i]
        if constant:
            out[i] = value
        elif power == 1:
            out[i] = u
        elif power == 2:
            out[i] = u * u
        else:
            out[i] = u ** power


@pjit
def power_backward(dinp, dout, inp, power, scale, shift):
    # dinp, dout, inp: (n,); dy/dx = power scale (shift + scale x)^(power - 1).  Caffe writes
    # the general case as power scale y / (shift + scale x), which is 0/0 = NaN where
    # shift + scale x = 0 for power > 1; the direct form gives the true gradient there.
    ds = power * scale
    for i in prange(inp.size):
        if ds == 0:
            dinp[i] = 0.0
        elif power == 1:
            dinp[i] = dout[i] * ds
        elif power == 2:
            dinp[i] = dout[i] * ds * (shift + scale * inp[i])
        else:
            dinp[i] = dout[i] * ds * (shift + scale * inp[i]) ** (power - 1.0)


@pjit
def exp_forward(out, inp, inner_scale, outer_scale):
    # out, inp: (n,); y = base^(shift + scale x) = outer_scale exp(inner_scale x) with
    # inner_scale = ln(base) scale and outer_scale = base^shift
    for i in prange(inp.size):
        out[i] = outer_scale * np.exp(inner_scale * inp[i])


@pjit
def exp_backward(dinp, dout, out, inner_scale):
    # dinp, dout, out: (n,); dy/dx = inner_scale y, from the output: in place safe
    for i in prange(out.size):
        dinp[i] = dout[i] * out[i] * inner_scale


@pjit
def log_forward(out, inp, base_scale, scale, shift):
    # out, inp: (n,); y = log(shift + scale x) / ln(base), base_scale = 1 / ln(base)
    for i in prange(inp.size):
        out[i] = np.log(shift + scale * inp[i]) * base_scale


@pjit
def log_backward(dinp, dout, inp, base_scale, scale, shift):
    # dinp, dout, inp: (n,); dy/dx = scale base_scale / (shift + scale x)
    num = scale * base_scale
    for i in prange(inp.size):
        dinp[i] = dout[i] * num / (shift + scale * inp[i])


@pjit
def threshold_forward(out, inp, threshold):
    # out, inp: (n,); 1 where x > threshold (strictly), else 0
    for i in prange(inp.size):
        out[i] = 1.0 if inp[i] > threshold else 0.0


@pjit
def clip_forward(out, inp, lo, hi):
    # out, inp: (n,)
    for i in prange(inp.size):
        out[i] = min(max(inp[i], lo), hi)


@pjit
def clip_backward(dinp, dout, inp, lo, hi):
    # dinp, dout, inp: (n,); the gradient passes where lo <= x <= hi (bounds included)
    for i in prange(inp.size):
        x = inp[i]
        dinp[i] = dout[i] if (x >= lo and x <= hi) else 0.0
