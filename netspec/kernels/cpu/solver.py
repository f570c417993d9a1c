"""Update-rule kernels over a net's flat param arena: one pass where NumPy needs several.

Each computes exactly what the rule's NumPy form does, operation by operation in the arena's
dtype (the scalars arrive in that dtype too), so the results are bit for bit the same; it only
reads and writes each array once.
"""

from __future__ import annotations

from netspec.kernels.jit import pjit, prange


@pjit
def sgd_update(w, v, g, alpha, decay, momentum, has_decay):
    # w, v, g, alpha, decay: (n,).  g += decay * w (L2, when has_decay); g = alpha * g;
    # v = momentum * v + g; w -= v.  g keeps the conditioned, scaled gradient.
    for i in prange(w.size):
        gi = g[i]
        if has_decay:
            gi += decay[i] * w[i]
        gi = alpha[i] * gi
        g[i] = gi
        vi = v[i] * momentum + gi
        v[i] = vi
        w[i] -= vi
