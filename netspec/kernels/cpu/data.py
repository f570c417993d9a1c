"""Data-augmentation kernels: per-sample affine resampling (rotation, random resized crop).

Serial on purpose: they run in the data layer's prefetch thread (``nogil``) beside the
training step, and a second thread pool there would fight the step's BLAS threads.
"""

from __future__ import annotations

import math

from netspec.kernels.jit import njit

# Host-side preprocessing: netspec.data.transforms calls this kernel in the data layer's
# prefetch thread on host batches, before the batch is copied into the net's blobs, whatever
# device runs the net; so it has no CUDA twin (and nothing calls it on device arrays).
CPU_ONLY = ("warp_affine_forward",)


@njit
def warp_affine_forward(out, inp, mats, fill):
    """Bilinear resampling of each image through its own affine map.

    out:  (B, C, Ho, Wo) written
    inp:  (B, C, H, W)
    mats: (B, 2, 3) float64; output pixel (i, j) samples input position
          y = m[0,0]*i + m[0,1]*j + m[0,2],  x = m[1,0]*i + m[1,1]*j + m[1,2]
          (pixel centres at integer coordinates)
    fill: the value of positions outside the input
    """
    B, C, Ho, Wo = out.shape
    H = inp.shape[2]
    W = inp.shape[3]
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                y = mats[b, 0, 0] * i + mats[b, 0, 1] * j + mats[b, 0, 2]
                x = mats[b, 1, 0] * i + mats[b, 1, 1] * j + mats[b, 1, 2]
                fy = math.floor(y)
                fx = math.floor(x)
                dy = y - fy
                dx = x - fx
                y0 = int(fy)
                x0 = int(fx)
                for c in range(C):
                    acc = 0.0
                    for k in range(4):
                        yy = y0 + k // 2
                        xx = x0 + k % 2
                        w = (dy if k // 2 else 1.0 - dy) * (dx if k % 2 else 1.0 - dx)
                        if w == 0.0:
                            continue
                        if 0 <= yy < H and 0 <= xx < W:
                            acc += w * inp[b, c, yy, xx]
                        else:
                            acc += w * fill
                    out[b, c, i, j] = acc
