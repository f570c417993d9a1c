"""Convolution kernels on the GPU: im2col / col2im (Caffe's column layout) and the layout moves
around the GEMMs (netspec.kernels.cpu.conv's twins).

The layout is the CPU module's: ``col[r, n, oy, ox]`` with row ``r = (c * kh + i) * kw + j``
holds ``inp[n, c, oy * sh - ph + i * dh, ox * sw - pw + j * dw]`` (0 outside the image); the
N-D forms take the spatial axes flattened (``inp (nb, C, S)``, ``col (R, nb, P)``) and the
geometry as int64 device arrays with one entry per spatial axis.

One thread per output element, the flat index running over the last axis, so neighbouring
threads read and write neighbouring addresses.  col2im gathers instead of scattering: each
input element sums the columns that read it, in the order the CPU kernel adds them (kernel
offsets ascending), so the sums are the CPU's, with no atomics.  The channel-parallel kernels
(the patch pipeline: ``patch_forward`` ...) are the CPU's PatchGemm algorithm and have no twin
here (``CPU_ONLY`` in the CPU module).
"""

from __future__ import annotations

from numba import float64

from netspec.kernels.cuda._index import unravel3, unravel4
from netspec.kernels.cuda._launch import SIM, launch, launch_blocks
from netspec.kernels.jit import cuda_kernel, cuda_module

cuda = cuda_module()

#: threads per block of the block-wide sums (a power of two; the shared array's size)
SUM_THREADS = 256


@cuda_kernel
def _im2col_2d(col, inp, kh, kw, ph, pw, sh, sw, dh, dw):
    nb, c, h, w = inp.shape
    rows, _, oh, ow = col.shape
    kk = kh * kw
    for t in range(cuda.grid(1), rows * nb * oh * ow, cuda.gridsize(1)):
        r, n, oy, ox = unravel4(t, nb, oh, ow)
        ci = r // kk
        i = (r // kw) % kh
        j = r % kw
        iy = oy * sh - ph + i * dh
        ix = ox * sw - pw + j * dw
        if iy >= 0 and iy < h and ix >= 0 and ix < w:
            col[r, n, oy, ox] = inp[n, ci, iy, ix]
        else:
            col[r, n, oy, ox] = 0.0


def im2col_2d(col, inp, kh, kw, ph, pw, sh, sw, dh, dw):
    # col: (C*kh*kw, nb, OH, OW) (written); inp: (nb, C, H, W)
    launch(_im2col_2d, col.size, col, inp, kh, kw, ph, pw, sh, sw, dh, dw)


@cuda_kernel
def _col2im_2d(dinp, col, kh, kw, ph, pw, sh, sw, dh, dw, zero):
    # zero: 0 of dinp's dtype, so that float32 sums round at each add as the CPU's do
    nb, c, h, w = dinp.shape
    _, _, oh, ow = col.shape
    for t in range(cuda.grid(1), nb * c * h * w, cuda.gridsize(1)):
        n, ci, y, x = unravel4(t, c, h, w)
        acc = zero
        for i in range(kh):
            ey = y + ph - i * dh          # oy * sh for the output row that reads y at offset i
            if ey < 0 or ey % sh != 0 or ey // sh >= oh:
                continue
            oy = ey // sh
            for j in range(kw):
                ex = x + pw - j * dw
                if ex < 0 or ex % sw != 0 or ex // sw >= ow:
                    continue
                acc += col[(ci * kh + i) * kw + j, n, oy, ex // sw]
        dinp[n, ci, y, x] = acc


def col2im_2d(dinp, col, kh, kw, ph, pw, sh, sw, dh, dw):
    # dinp: (nb, C, H, W) (overwritten with the sum of overlapping columns);
    # col: (C*kh*kw, nb, OH, OW)
    launch(_col2im_2d, dinp.size, dinp, col, kh, kw, ph, pw, sh, sw, dh, dw, dinp.dtype.type(0))


@cuda_kernel
def _im2col_nd(col, inp, in_shape, out_shape, kshape, pad, stride, dil):
    nb = inp.shape[0]
    rows, _, p_total = col.shape
    d = in_shape.shape[0]
    kk = 1
    for a in range(d):
        kk *= kshape[a]
    for t in range(cuda.grid(1), rows * nb * p_total, cuda.gridsize(1)):
        r, n, p = unravel3(t, nb, p_total)
        ci = r // kk
        remk = r % kk
        remp = p
        idx = 0
        mult = 1
        inside = True
        for a in range(d - 1, -1, -1):
            pos = (remp % out_shape[a]) * stride[a] + (remk % kshape[a]) * dil[a] - pad[a]
            remp //= out_shape[a]
            remk //= kshape[a]
            if pos < 0 or pos >= in_shape[a]:
                inside = False
                break
            idx += pos * mult
            mult *= in_shape[a]
        if inside:
            col[r, n, p] = inp[n, ci, idx]
        else:
            col[r, n, p] = 0.0


def im2col_nd(col, inp, in_shape, out_shape, kshape, pad, stride, dil):
    # col: (C*prod(kshape), nb, P) (written); inp: (nb, C, S); geometry: int64 (d,) device arrays
    launch(_im2col_nd, col.size, col, inp, in_shape, out_shape, kshape, pad, stride, dil)


@cuda_kernel
def _col2im_nd(dinp, col, in_shape, out_shape, kshape, pad, stride, dil, zero):
    nb, c, s_total = dinp.shape
    d = in_shape.shape[0]
    kk = 1
    for a in range(d):
        kk *= kshape[a]
    for t in range(cuda.grid(1), nb * c * s_total, cuda.gridsize(1)):
        n, ci, s = unravel3(t, c, s_total)
        acc = zero
        for k in range(kk):
            # the output position whose kernel offset k reads element s, if there is one
            remk = k
            rems = s
            p = 0
            mult = 1
            hit = True
            for a in range(d - 1, -1, -1):
                e = rems % in_shape[a] + pad[a] - (remk % kshape[a]) * dil[a]
                rems //= in_shape[a]
                remk //= kshape[a]
                if e < 0 or e % stride[a] != 0 or e // stride[a] >= out_shape[a]:
                    hit = False
                    break
                p += (e // stride[a]) * mult
                mult *= out_shape[a]
            if hit:
                acc += col[ci * kk + k, n, p]
        dinp[n, ci, s] = acc


def col2im_nd(dinp, col, in_shape, out_shape, kshape, pad, stride, dil):
    # dinp: (nb, C, S) (overwritten); col: (C*prod(kshape), nb, P)
    launch(_col2im_nd, dinp.size, dinp, col, in_shape, out_shape, kshape, pad, stride, dil, dinp.dtype.type(0))


@cuda_kernel
def _to_channel_major(out, inp):
    m, nb, p = out.shape
    for t in range(cuda.grid(1), m * nb * p, cuda.gridsize(1)):
        s = t % p
        q = t // p
        out[q // nb, q % nb, s] = inp[q % nb, q // nb, s]


def to_channel_major(out, inp):
    # out: (M, nb, P) (written); inp: (nb, M, P): a batch of feature maps into the GEMM layout
    launch(_to_channel_major, out.size, out, inp)


@cuda_kernel
def _from_channel_major(out, inp):
    nb, m, p = out.shape
    for t in range(cuda.grid(1), nb * m * p, cuda.gridsize(1)):
        s = t % p
        q = t // p
        out[q // m, q % m, s] = inp[q % m, q // m, s]


def from_channel_major(out, inp):
    # out: (nb, M, P) (written); inp: (M, nb, P): the GEMM layout back to a batch of feature maps
    launch(_from_channel_major, out.size, out, inp)


@cuda_kernel
def _bias_forward(out, bias):
    nb, m, p = out.shape
    for t in range(cuda.grid(1), nb * m * p, cuda.gridsize(1)):
        q = t // p
        out[q // m, q % m, t % p] += bias[q % m]


def bias_forward(out, bias):
    # out: (nb, M, P) += bias[m]
    launch(_bias_forward, out.size, out, bias)


@cuda_kernel
def _bias_backward(dbias, dout):
    # one block per channel (block-stride over channels): each thread sums a strided share of
    # the channel's nb * P values in float64, then the block adds the partial sums in a tree
    nb, m, p = dout.shape
    part = cuda.shared.array(SUM_THREADS, float64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, m, cuda.gridDim.x):
        s = 0.0
        for t in range(tid, nb * p, nt):
            s += dout[t // p, k, t % p]
        part[tid] = s
        cuda.syncthreads()
        step = nt // 2
        while step > 0:
            if tid < step:
                part[tid] += part[tid + step]
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            dbias[k] += part[0]
        cuda.syncthreads()   # part is reused by the block's next channel


def bias_backward(dbias, dout):
    # dbias: (M,) += the sum of dout (nb, M, P) over n and p (accumulated in float64)
    launch_blocks(_bias_backward, dout.shape[1], 8 if SIM else SUM_THREADS, dbias, dout)
