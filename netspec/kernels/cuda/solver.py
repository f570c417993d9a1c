"""Update-rule kernels over a net's flat param arena on the GPU (netspec.kernels.cpu.solver's
twins): one pass where the rule's NumPy form needs several.

The CPU kernel gives bit for bit the NumPy form's result, and so does this one: NVVM fuses a
multiply followed by an add into one FMA (one rounding instead of two) whatever ``fastmath``
says, and numba-cuda has no switch to stop it, so every product here goes through libdevice's
``fmul_rn``/``dmul_rn``, which are never fused.  Their precision is fixed, so there is one
kernel per arena dtype.  The simulator runs kernels as Python, where each operation rounds on
its own: there they are plain products.
"""

from __future__ import annotations

import numpy as np

from netspec.kernels.cuda import simulated
from netspec.kernels.cuda._launch import launch
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()

if simulated():
    def _fmul(a, b):
        return a * b

    _dmul = _fmul
else:
    from numba.cuda.libdevice import dmul_rn as _dmul, fmul_rn as _fmul


@cuda_kernel
def _sgd_update_f32(w, v, g, alpha, decay, momentum, has_decay):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        gi = g[i]
        if has_decay:
            gi += _fmul(decay[i], w[i])
        gi = _fmul(alpha[i], gi)
        g[i] = gi
        vi = _fmul(v[i], momentum) + gi
        v[i] = vi
        w[i] -= vi


@cuda_kernel
def _sgd_update_f64(w, v, g, alpha, decay, momentum, has_decay):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        gi = g[i]
        if has_decay:
            gi += _dmul(decay[i], w[i])
        gi = _dmul(alpha[i], gi)
        g[i] = gi
        vi = _dmul(v[i], momentum) + gi
        v[i] = vi
        w[i] -= vi


def sgd_update(w, v, g, alpha, decay, momentum, has_decay):
    # w, v, g, alpha, decay: (n,).  g += decay * w (L2, when has_decay); g = alpha * g;
    # v = momentum * v + g; w -= v.  g keeps the conditioned, scaled gradient.  momentum is a
    # scalar of the arena's dtype.
    kernel = _sgd_update_f32 if w.dtype == np.float32 else _sgd_update_f64
    launch(kernel, w.size, w, v, g, alpha, decay, momentum, has_decay)
