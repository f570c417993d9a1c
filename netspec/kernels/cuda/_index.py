"""Device functions that kernels share: a flat thread index taken apart into array indices."""

from __future__ import annotations

from netspec.kernels.jit import cuda_device


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
