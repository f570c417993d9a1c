"""Element-wise activation kernels on the GPU (netspec.kernels.cpu.neuron's twins).

Arrays are flat (``x.reshape(-1)``) and contiguous, PReLU's ``(outer, C, inner)``; ``out`` may
be the same array as ``inp`` (in place) and ``dinp`` the same as ``dout``: every kernel reads an
element before it writes that element and no other, so in place is safe as on the CPU.  One
thread per element, with the CPU kernel's formula written the same way (the same operations in
the same types: a float32 input stays float32 where the CPU's does), so results agree with the
CPU to the last bits of the math functions.
"""

from __future__ import annotations

import math

from netspec.kernels.cpu.neuron import BNLL_THRESHOLD
from netspec.kernels.cuda._index import widen
from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()


@cuda_kernel
def _relu_forward(out, inp, negative_slope):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = inp[i]
        out[i] = x if x > 0 else x * negative_slope


def relu_forward(out, inp, negative_slope):
    # out, inp: (n,)
    launch(_relu_forward, inp.size, out, inp, negative_slope)


@cuda_kernel
def _relu_backward(dinp, dout, out, negative_slope):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        dinp[i] = dout[i] if out[i] > 0 else dout[i] * negative_slope


def relu_backward(dinp, dout, out, negative_slope):
    # dinp, dout, out: (n,); uses the output, so it works in place (sign(y) == sign(x))
    launch(_relu_backward, out.size, dinp, dout, out, negative_slope)


@cuda_kernel
def _sigmoid_forward(out, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = widen(inp[i])
        e = math.exp(-abs(x))
        r = 1.0 / (1.0 + e)
        out[i] = r if x >= 0 else e * r


def sigmoid_forward(out, inp):
    # out, inp: (n,); through e = exp(-|x|), which never overflows (as on the CPU)
    launch(_sigmoid_forward, inp.size, out, inp)


@cuda_kernel
def _sigmoid_backward(dinp, dout, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        y = out[i]
        dinp[i] = dout[i] * y * (1.0 - y)


def sigmoid_backward(dinp, dout, out):
    # dinp, dout, out: (n,); dy/dx = y (1 - y)
    launch(_sigmoid_backward, out.size, dinp, dout, out)


@cuda_kernel
def _tanh_forward(out, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = math.tanh(widen(inp[i]))


def tanh_forward(out, inp):
    # out, inp: (n,)
    launch(_tanh_forward, inp.size, out, inp)


@cuda_kernel
def _tanh_backward(dinp, dout, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        y = out[i]
        dinp[i] = dout[i] * (1.0 - y * y)


def tanh_backward(dinp, dout, out):
    # dinp, dout, out: (n,); dy/dx = 1 - y^2
    launch(_tanh_backward, out.size, dinp, dout, out)


@cuda_kernel
def _prelu_forward(out, inp, slope, div):
    outer, c, inner = inp.shape
    for t in range(cuda.grid(1), outer * c * inner, cuda.gridsize(1)):
        o, r = t // (c * inner), t % (c * inner)
        k, i = r // inner, r % inner
        x = inp[o, k, i]
        out[o, k, i] = x if x > 0 else slope[k // div] * x


def prelu_forward(out, inp, slope, div):
    # out, inp: (outer, C, inner); slope: (C // div,), div = C when one slope is shared, else 1
    launch(_prelu_forward, inp.size, out, inp, slope, div)


@cuda_kernel
def _prelu_dslope(dslope, dout, inp):
    # one thread per channel summing in the CPU's order (outer, then inner) in float64
    outer, c, inner = inp.shape
    for k in range(cuda.grid(1), c, cuda.gridsize(1)):
        s = 0.0
        for o in range(outer):
            for i in range(inner):
                x = inp[o, k, i]
                if x <= 0:
                    s += dout[o, k, i] * x
        dslope[k] = s


@cuda_kernel
def _prelu_dinp(dinp, dout, inp, slope, div):
    outer, c, inner = inp.shape
    for t in range(cuda.grid(1), outer * c * inner, cuda.gridsize(1)):
        o, r = t // (c * inner), t % (c * inner)
        k, i = r // inner, r % inner
        g = dout[o, k, i]
        dinp[o, k, i] = g if inp[o, k, i] > 0 else slope[k // div] * g


def prelu_backward(dinp, dslope, dout, inp, slope, div, need_dinp):
    # dinp, dout, inp: (outer, C, inner); dslope: (C,) per-channel sums of dout * x over x <= 0,
    # written (not accumulated): the layer adds them to the param grad (summed when shared).
    # dslope is launched before dinp (kernels on one stream run in order), so dinp may be dout.
    launch(_prelu_dslope, dslope.size, dslope, dout, inp)
    if need_dinp:
        launch(_prelu_dinp, inp.size, dinp, dout, inp, slope, div)


@cuda_kernel
def _elu_forward(out, inp, alpha):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = widen(inp[i])
        out[i] = x if x > 0 else alpha * (math.exp(x) - 1.0)


def elu_forward(out, inp, alpha):
    # out, inp: (n,); Caffe's exp(x) - 1, as on the CPU
    launch(_elu_forward, inp.size, out, inp, alpha)


@cuda_kernel
def _elu_backward(dinp, dout, out, inp, alpha):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        dinp[i] = dout[i] if inp[i] > 0 else dout[i] * (out[i] + alpha)


def elu_backward(dinp, dout, out, inp, alpha):
    # dinp, dout, out, inp: (n,); dy/dx = 1 for x > 0, else y + alpha.  In place inp is out,
    # which has the sign of x (as in Caffe).
    launch(_elu_backward, out.size, dinp, dout, out, inp, alpha)


@cuda_kernel
def _swish_forward(out, sig, inp, beta):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = widen(inp[i])
        z = beta * x
        e = math.exp(-abs(z))
        r = 1.0 / (1.0 + e)
        s = r if z >= 0 else e * r
        sig[i] = s
        out[i] = x * s


def swish_forward(out, sig, inp, beta):
    # out, sig, inp: (n,); sig keeps sigmoid(beta x) for backward
    launch(_swish_forward, inp.size, out, sig, inp, beta)


@cuda_kernel
def _swish_backward(dinp, dout, out, sig, beta):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        by = beta * out[i]
        s = sig[i]
        dinp[i] = dout[i] * (by + s * (1.0 - by))


def swish_backward(dinp, dout, out, sig, beta):
    # dinp, dout, out, sig: (n,); dy/dx = beta y + s (1 - beta y), from the output: in place safe
    launch(_swish_backward, out.size, dinp, dout, out, sig, beta)


@cuda_kernel
def _absval_forward(out, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = abs(inp[i])


def absval_forward(out, inp):
    # out, inp: (n,)
    launch(_absval_forward, inp.size, out, inp)


@cuda_kernel
def _absval_backward(dinp, dout, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = inp[i]
        dinp[i] = dout[i] if x > 0 else (-dout[i] if x < 0 else 0.0)


def absval_backward(dinp, dout, inp):
    # dinp, dout, inp: (n,); dy/dx = sign(x), 0 at 0
    launch(_absval_backward, inp.size, dinp, dout, inp)


@cuda_kernel
def _bnll_forward(out, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = widen(inp[i])
        out[i] = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def bnll_forward(out, inp):
    # out, inp: (n,); log(1 + e^x) without overflow: x + log(1 + e^-x) for x > 0
    launch(_bnll_forward, inp.size, out, inp)


@cuda_kernel
def _bnll_backward(dinp, dout, inp):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        e = math.exp(min(inp[i], BNLL_THRESHOLD))
        dinp[i] = dout[i] * e / (e + 1.0)


def bnll_backward(dinp, dout, inp):
    # dinp, dout, inp: (n,); Caffe's formula: e / (e + 1) with e = exp(min(x, 50))
    launch(_bnll_backward, inp.size, dinp, dout, inp)


@cuda_kernel
def _bnll_backward_inplace(dinp, dout, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        dinp[i] = dout[i] * -math.expm1(-widen(out[i]))


def bnll_backward_inplace(dinp, dout, out):
    # dinp, dout, out: (n,); in place x is gone, but sigmoid(x) = 1 - exp(-y) for y = softplus(x)
    launch(_bnll_backward_inplace, out.size, dinp, dout, out)


@cuda_kernel
def _power_forward(out, inp, power, scale, shift):
    constant = power * scale == 0
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        u = shift + scale * inp[i]
        if constant:
            # computed only where used: under the simulator 0.0 ** -0.75 raises where the GPU
            # (and the CPU kernel, which computes it once) gives an unused inf
            out[i] = 1.0 if power == 0 else shift ** power
        elif power == 1:
            out[i] = u
        elif power == 2:
            out[i] = u * u
        else:
            out[i] = u ** power


def power_forward(out, inp, power, scale, shift):
    # out, inp: (n,); y = (shift + scale x)^power; a zero power * scale gives a constant
    launch(_power_forward, inp.size, out, inp, power, scale, shift)


@cuda_kernel
def _power_backward(dinp, dout, inp, power, scale, shift):
    ds = power * scale
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        if ds == 0:
            dinp[i] = 0.0
        elif power == 1:
            dinp[i] = dout[i] * ds
        elif power == 2:
            dinp[i] = dout[i] * ds * (shift + scale * inp[i])
        else:
            dinp[i] = dout[i] * ds * (shift + scale * inp[i]) ** (power - 1.0)


def power_backward(dinp, dout, inp, power, scale, shift):
    # dinp, dout, inp: (n,); dy/dx = power scale (shift + scale x)^(power - 1), the direct form
    # (Caffe's power scale y / (shift + scale x) is 0/0 where shift + scale x = 0)
    launch(_power_backward, inp.size, dinp, dout, inp, power, scale, shift)


@cuda_kernel
def _exp_forward(out, inp, inner_scale, outer_scale):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = outer_scale * math.exp(inner_scale * inp[i])


def exp_forward(out, inp, inner_scale, outer_scale):
    # out, inp: (n,); y = outer_scale exp(inner_scale x) (base, scale and shift folded in)
    launch(_exp_forward, inp.size, out, inp, inner_scale, outer_scale)


@cuda_kernel
def _exp_backward(dinp, dout, out, inner_scale):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        dinp[i] = dout[i] * out[i] * inner_scale


def exp_backward(dinp, dout, out, inner_scale):
    # dinp, dout, out: (n,); dy/dx = inner_scale y, from the output: in place safe
    launch(_exp_backward, out.size, dinp, dout, out, inner_scale)


@cuda_kernel
def _log_forward(out, inp, base_scale, scale, shift):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = math.log(shift + scale * inp[i]) * base_scale


def log_forward(out, inp, base_scale, scale, shift):
    # out, inp: (n,); y = log(shift + scale x) / ln(base), base_scale = 1 / ln(base)
    launch(_log_forward, inp.size, out, inp, base_scale, scale, shift)


@cuda_kernel
def _log_backward(dinp, dout, inp, base_scale, scale, shift):
    num = scale * base_scale
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        dinp[i] = dout[i] * num / (shift + scale * inp[i])


def log_backward(dinp, dout, inp, base_scale, scale, shift):
    # dinp, dout, inp: (n,); dy/dx = scale base_scale / (shift + scale x)
    launch(_log_backward, inp.size, dinp, dout, inp, base_scale, scale, shift)


@cuda_kernel
def _threshold_forward(out, inp, threshold):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = 1.0 if inp[i] > threshold else 0.0


def threshold_forward(out, inp, threshold):
    # out, inp: (n,); 1 where x > threshold (strictly), else 0
    launch(_threshold_forward, inp.size, out, inp, threshold)


@cuda_kernel
def _clip_forward(out, inp, lo, hi):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        out[i] = min(max(inp[i], lo), hi)


def clip_forward(out, inp, lo, hi):
    # out, inp: (n,)
    launch(_clip_forward, inp.size, out, inp, lo, hi)


@cuda_kernel
def _clip_backward(dinp, dout, inp, lo, hi):
    for i in range(cuda.grid(1), inp.size, cuda.gridsize(1)):
        x = inp[i]
        dinp[i] = dout[i] if (x >= lo and x <= hi) else 0.0


def clip_backward(dinp, dout, inp, lo, hi):
    # dinp, dout, inp: (n,); the gradient passes where lo <= x <= hi (bounds included)
    launch(_clip_backward, inp.size, dinp, dout, inp, lo, hi)
