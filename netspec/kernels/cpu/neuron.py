"""Element-wise activation kernels.  Arrays are flat (``x.reshape(-1)``) and contiguous;
``out`` may be the same array as ``inp`` (in place)."""

from __future__ import annotations

from netspec.kernels.jit import pjit, prange


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
