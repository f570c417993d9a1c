"""Device functions that kernels share: a flat thread index taken apart into array indices,
and a loaded value widened to at least float32."""

from __future__ import annotations

from numba import float32

from netspec.kernels.jit import cuda_device


@cuda_device
def widen(x):
    # x, at least float32: a float16 element (a half-width activation) becomes float32, float32
    # and float64 are unchanged.  Kernels widen before a math function, which numba-cuda would
    # otherwise evaluate in float16 (hexp), or before two float16 values meet.
    return x + float32(0.0)


@cuda_device
def unravel4(t, d1, d2, d3):
    # t over a C-ordered (d0, d1, d2, d3) array: its (i0, i1, i2, i3)
    i3 = t % d3
    q = t // d3
    i2 = q % d2
    q //= d2
    return q // d1, q % d1, i2, i3


@cuda_device
def unravel3(t, d1, d2):
    # t over a C-ordered (d0, d1, d2) array: its (i0, i1, i2)
    i2 = t % d2
    q = t // d2
    return q // d1, q % d1, i2
