"""Vision layers: Convolution, Deconvolution, Pooling and Im2col.

Output sizes follow Caffe exactly: convolution floors, pooling ceils by default
(``round_mode``) and drops a last window that would start in the padding.

Convolution runs through a small registry of algorithms with one contract (``CONV_ALGOS``):
each computes ``y = conv(x)``, ``dx = conv^T(dy)`` and ``dW += dy (x) x`` for one geometry, and
the layer picks one per shape in ``setup`` (``self.algo`` names it).  Deconvolution is the same
machinery run the other way round: its forward is convolution's backward-data.

Each algorithm states the devices it runs on (``ConvAlgo.devices``).  On a GPU only im2col +
GEMM (cuBLAS, batched over a chunk of images) and the 1x1 GEMMs straight on the blobs are
offered; Winograd and the channels-last patches are CPU designs (per-thread pipelines sized for
a core's cache), so a net that asks for one of them by name runs the GPU's own choice there,
with a warning, and the same file trains on either device.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from netspec.core import device as D
from netspec.core.device import kernels
from netspec.core.layer import SAME, Layer, count, register, wide_dtype
from netspec.errors import GraphError, SpecError
from netspec.layers._spatial import HW_RULES, hw_props, normalize_hw, spatial
from netspec.spec import types as T

CONV_PROPS = {
    "num_output": T.integer(1, desc="number of output channels"),
    "bias_term": T.boolean(True, "learn a bias per output channel"),
    **hw_props(default_pad=0, default_stride=1),
    "dilation": T.ints(1, default=1, desc="kernel dilation: one value, or one per spatial axis"),
    "group": T.integer(1, default=1, desc="channel groups (input and output channels must divide by it)"),
    "weight_filler": T.filler(desc="initial weights (default constant 0: give one)"),
    "bias_filler": T.filler(desc="initial biases (default constant 0)"),
    "axis": T.integer(default=1, desc="the channel axis; the axes after it are spatial"),
    "force_nd_im2col": T.boolean(desc="accepted for Caffe compatibility; no effect"),
    "algorithm": T.enum(("auto", "gemm_1x1", "winograd", "patch_gemm", "im2col_gemm"),
                        desc="how to compute it; auto (the default) measures the ones that suit the shape "
                             "once and keeps the fastest (NETSPEC_ALGO=<name> forces one for every layer it "
                             "suits)"),
}


# ---- convolution algorithms ------------------------------------------------------------------

#: bytes of im2col columns per GEMM: the batch is cut into chunks of images whose columns fit
#: (measured on the LeNet and CIFAR-10 layers: chunks near the L2 size beat one whole-batch GEMM
#: by 10-30%, and bound the memory of large layers).  A fixed size, not a timing, so results are
#: the same in every run (resume is bit for bit).
COL_CHUNK_BYTES = 2 << 20

#: the same bound on a GPU, where there is no cache to fit and larger GEMMs run faster: a bound
#: on each layer's scratch memory (2 x 32 MB at most, columns and outputs), and still GEMMs of
#: millions of values, enough to fill the device
GPU_COL_CHUNK_BYTES = 32 << 20

#: bytes of channels-last columns per block of PatchGemm: a block's columns stay in the L2
#: cache between the copy that makes them and the GEMMs that read them (GEMMs of 128+ rows
#: run at full speed; one whole-image block of CIFAR-10's conv2, 800 KB, ran them 2x slower)
PATCH_BLOCK_BYTES = 512 << 10

#: bytes of transformed tiles (16 points x tiles x channels) per block of Winograd
WINOGRAD_BLOCK_BYTES = 512 << 10


@dataclass(frozen=True)
class ConvShape:
    """One convolution seen from its image side: ``x (n, c, *img)`` -> ``y (n, m, *out)``.

    Weight ``(m, c / group, *kernel)``.  Convolution's image side is its bottom; Deconvolution's
    is its top (its weight ``(C_in, num_output / group, k...)`` is exactly this layout).
    """

    n: int
    c: int
    m: int
    group: int
    img: tuple[int, ...]
    out: tuple[int, ...]
    kernel: tuple[int, ...]
    pad: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def rows(self) -> int:
        """Rows of the column matrix: ``c * prod(kernel)``."""
        return self.c * count(self.kernel)

    @property
    def out_size(self) -> int:
        return count(self.out)


class ConvAlgo:
    """One way to compute a convolution, for a fixed ``ConvShape``.

    Arrays are C-contiguous with the spatial axes flattened: ``x (n, c, S)``, ``y (n, m, P)``,
    ``w (m, c / group, *kernel)``.  The two methods cover every direction both layers need:

    - ``forward(x, w, y, dy, dw)``: ``y = conv(x)`` when ``y`` is given, and ``dw += grad`` of
      the weight for output gradient ``dy`` when ``dw`` is given;
    - ``backward(dy, w, dx, x, dw)``: ``dx = conv^T(dy)`` when ``dx`` is given, and the weight
      gradient as above when ``dw`` is given (``x`` is then needed).

    ``backward`` may reuse what the last ``forward`` computed from the same ``x`` array: the
    Net runs backward on the unchanged bottoms of the last forward.
    """

    name: ClassVar[str] = ""
    #: forward takes ``bias`` (added to y) and backward ``dbias`` (+= the sum of dy)
    fuses_bias: ClassVar[bool] = False
    #: the device kinds it runs on (its kernels have twins there)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @staticmethod
    def suits(g: ConvShape) -> bool:
        return True

    def __init__(self, g: ConvShape, dtype, K):
        self.g = g
        self.K = K
        self.dtype = np.dtype(dtype)     # of the weights, the scratch buffers and the sums

    @staticmethod
    def dot(a, b, out) -> None:
        """``out = a @ b``.  Float16 blobs (half-width activations on a GPU) beside float32
        weights go through the GPU's GEMM, which sums them in float32 and rounds once."""
        if a.dtype == b.dtype == out.dtype:
            np.dot(a, b, out=out)
        else:
            from netspec.kernels.cuda._blas import gemm

            gemm(out, a, b)


class PointwiseGemm(ConvAlgo):
    """1x1 kernel, stride 1, no pad: the image is already the column matrix, so each image is
    one GEMM per group straight on the blobs (Caffe's ``is_1x1_`` shortcut; no copies).

    Per-image GEMMs need enough columns to run at BLAS speed: below ``MIN_COLUMNS`` output
    positions the batched im2col path (for a 1x1 kernel its im2col is a plain layout copy)
    measured up to 2x faster in backward, above it this one is 10-40% faster."""

    name = "gemm_1x1"
    MIN_COLUMNS = 100

    @staticmethod
    def suits(g: ConvShape) -> bool:
        return (all(k == 1 for k in g.kernel) and all(s == 1 for s in g.stride) and not any(g.pad)
                and g.out_size >= PointwiseGemm.MIN_COLUMNS)

    def __init__(self, g, dtype, K):
        super().__init__(g, dtype, K)
        self.dwt = D.empty((g.c // g.group, g.m // g.group), self.dtype)    # one image's dW_g^T

    def _groups(self):
        g = self.g
        mg, cg = g.m // g.group, g.c // g.group
        return [(slice(i * mg, (i + 1) * mg), slice(i * cg, (i + 1) * cg)) for i in range(g.group)]

    def forward(self, x, w, y=None, dy=None, dw=None):
        g = self.g
        w2 = w.reshape(g.m, -1)
        dw2 = dw.reshape(g.m, -1) if dw is not None else None
        for n in range(g.n):
            for gm, gc in self._groups():
                if y is not None:
                    self.dot(w2[gm], x[n, gc], y[n, gm])          # (mg, cg) (cg, P) -> (mg, P)
                if dw2 is not None:
                    self.dot(x[n, gc], dy[n, gm].T, self.dwt)     # (cg, P) (P, mg) -> (cg, mg)
                    dw2[gm] += self.dwt.T

    def backward(self, dy, w, dx=None, x=None, dw=None):
        g = self.g
        if dw is not None:
            self.forward(x, w, None, dy, dw)
        if dx is not None:
            w2 = w.reshape(g.m, -1)
            for n in range(g.n):
                for gm, gc in self._groups():
                    self.dot(w2[gm].T, dy[n, gm], dx[n, gc])      # (cg, mg) (mg, P) -> (cg, P)


class Im2colGemm(ConvAlgo):
    """Caffe's im2col + GEMM (CAFFE-REFERENCE 3.20), batched: the columns of a chunk of images
    sit side by side in one ``(rows, nb * P)`` matrix, so each group is one large GEMM per
    chunk instead of one small GEMM per image.  2-D (and 1-D, as 2-D with height 1) uses the
    fast 2-D kernels, other ranks the N-D ones."""

    name = "im2col_gemm"

    def __init__(self, g, dtype, K):
        super().__init__(g, dtype, K)
        chunk = GPU_COL_CHUNK_BYTES if D.current().is_cuda else COL_CHUNK_BYTES
        self.nb = max(1, min(g.n, chunk // (g.rows * g.out_size * self.dtype.itemsize)))
        self.col = D.empty(g.rows * self.nb * g.out_size, self.dtype)    # flat: views per chunk
        self.buf = D.empty(g.m * self.nb * g.out_size, self.dtype)       # outputs, channel-major
        self.dwt = D.empty((g.rows // g.group, g.m // g.group), self.dtype)
        self.held: tuple[int, int] | None = None   # (address of x, chunk start) that col holds
        if len(g.img) <= 2:
            pad2 = lambda v, one: ((one,) + tuple(v)) if len(v) == 1 else tuple(v)  # noqa: E731
            self.img2 = pad2(g.img, 1)
            self.out2 = pad2(g.out, 1)
            k, p, s, d = pad2(g.kernel, 1), pad2(g.pad, 0), pad2(g.stride, 1), pad2(g.dilation, 1)
            self.args2 = (k[0], k[1], p[0], p[1], s[0], s[1], d[0], d[1])
        else:
            self.img2 = None
            as64 = lambda v: D.asarray(np.array(v, dtype=np.int64))  # noqa: E731  (kernel arguments)
            self.argsn = (as64(g.img), as64(g.out), as64(g.kernel), as64(g.pad), as64(g.stride),
                          as64(g.dilation))

    def _chunks(self):
        return [(s, min(self.g.n, s + self.nb)) for s in range(0, self.g.n, self.nb)]

    def _views(self, q: int):
        g = self.g
        col = self.col[:g.rows * q * g.out_size].reshape(g.rows, q * g.out_size)
        buf = self.buf[:g.m * q * g.out_size].reshape(g.m, q * g.out_size)
        return col, buf

    def _groups(self):
        g = self.g
        mg, rg = g.m // g.group, g.rows // g.group
        return [(slice(i * mg, (i + 1) * mg), slice(i * rg, (i + 1) * rg)) for i in range(g.group)]

    def _im2col(self, col, x, s: int, e: int, reuse: bool) -> None:
        key = (D.address(x), s)
        if reuse and self.held == key:
            return
        q = e - s
        if self.img2 is not None:
            self.K.im2col_2d(col.reshape(self.g.rows, q, *self.out2),
                             x[s:e].reshape(q, self.g.c, *self.img2), *self.args2)
        else:
            self.K.im2col_nd(col.reshape(self.g.rows, q, -1), x[s:e], *self.argsn)
        self.held = key

    def _col2im(self, dx, col, s: int, e: int) -> None:
        q = e - s
        self.held = None
        if self.img2 is not None:
            self.K.col2im_2d(dx[s:e].reshape(q, self.g.c, *self.img2),
                             col.reshape(self.g.rows, q, *self.out2), *self.args2)
        else:
            self.K.col2im_nd(dx[s:e], col.reshape(self.g.rows, q, -1), *self.argsn)

    def _weight_grad(self, dw2, col, buf) -> None:
        # dW_g^T (rg, mg) = col_g (rg, nb P) buf_g^T (nb P, mg): this orientation runs ~1.5x
        # faster in OpenBLAS than dY col^T for these long-and-thin shapes
        for gm, gr in self._groups():
            np.dot(col[gr], buf[gm].T, out=self.dwt)
            dw2[gm] += self.dwt.T

    def forward(self, x, w, y=None, dy=None, dw=None):
        g = self.g
        w2 = w.reshape(g.m, -1)
        for s, e in self._chunks():
            q = e - s
            col, buf = self._views(q)
            self._im2col(col, x, s, e, reuse=False)
            if y is not None:
                for gm, gr in self._groups():
                    np.dot(w2[gm], col[gr], out=buf[gm])
                self.K.from_channel_major(y[s:e], buf.reshape(g.m, q, g.out_size))
            if dw is not None:
                self.K.to_channel_major(buf.reshape(g.m, q, g.out_size), dy[s:e])
                self._weight_grad(dw.reshape(g.m, -1), col, buf)

    def backward(self, dy, w, dx=None, x=None, dw=None):
        g = self.g
        w2 = w.reshape(g.m, -1)
        # last chunk first: its columns may still be there from forward
        for s, e in reversed(self._chunks()):
            q = e - s
            col, buf = self._views(q)
            self.K.to_channel_major(buf.reshape(g.m, q, g.out_size), dy[s:e])
            if dw is not None:
                self._im2col(col, x, s, e, reuse=True)
                self._weight_grad(dw.reshape(g.m, -1), col, buf)
            if dx is not None:
                for gm, gr in self._groups():
                    np.dot(w2[gm].T, buf[gm], out=col[gr])
                self._col2im(dx, col, s, e)


class PatchGemm(ConvAlgo):
    """Channels-last patches + GEMM, the whole layer in one compiled call (2-D, group 1).

    Each image is copied into a zero-bordered ``(H + 2 pad, W + 2 pad, C)`` buffer, so a patch
    (one row of the column matrix) is ``kh`` contiguous runs of ``kw * C`` values: building the
    columns costs a few long copies per output position, where Caffe's layout needs one short
    copy per row and output line (about as long as the GEMM itself at CIFAR-10's shapes).
    Blocks of rows small enough to stay in the L2 cache run as independent pipelines, one per
    thread, with single-threaded GEMMs inside (``patch_forward``/``patch_backward`` in the conv
    kernels).  The bias is added while the output is copied out, and its gradient summed while
    the output gradient is copied in."""

    name = "patch_gemm"
    fuses_bias = True
    devices = ("cpu",)

    @staticmethod
    def suits(g: ConvShape) -> bool:
        return len(g.img) <= 2 and g.group == 1

    def __init__(self, g, dtype, K):
        super().__init__(g, dtype, K)
        pad2 = lambda v, one: ((one,) + tuple(v)) if len(v) == 1 else tuple(v)  # noqa: E731
        self.img2, self.out2 = pad2(g.img, 1), pad2(g.out, 1)
        k, p, s, d = pad2(g.kernel, 1), pad2(g.pad, 0), pad2(g.stride, 1), pad2(g.dilation, 1)
        self.k2 = k
        self.args = (p[0], p[1], k[0], k[1], s[0], s[1], d[0], d[1])
        self.hp, self.wp = self.img2[0] + 2 * p[0], self.img2[1] + 2 * p[1]
        kdim, positions = g.rows, g.out_size
        rows = max(1, PATCH_BLOCK_BYTES // (kdim * self.dtype.itemsize))
        if rows >= positions:     # whole images per block
            self.nb = min(g.n, rows // positions)
            self.rb = self.nb * positions
        else:                     # one image in several blocks of about equal size
            self.nb = 1
            self.rb = -(-positions // -(-positions // rows))
        self.nunits = -(-g.n // self.nb)
        self.wt = np.empty((kdim, g.m), self.dtype)
        self.w2 = np.empty((g.m, kdim), self.dtype)
        self.zero_bias = np.zeros(g.m, self.dtype)
        self.slots = 0
        self.held: tuple | None = None   # (address of x, slots) whose columns forward left behind
        self._ensure_slots(1)

    def _ensure_slots(self, n: int) -> None:
        """Scratch for ``n`` parallel pipelines (grown when threads are added, not per call)."""
        if n <= self.slots:
            return
        g, dt = self.g, self.dtype
        self.xp = np.zeros((n, self.hp, self.wp, g.c), dt)
        self.dxp = np.zeros((n, self.hp, self.wp, g.c), dt)
        self.col = np.empty((n, self.rb, g.rows), dt)
        self.yt = np.empty((n, self.rb, g.m), dt)
        self.tmpw = np.empty((n, g.m, g.rows), dt)
        self.dwt = np.empty((n, g.m, g.rows), dt)
        self.dbias = np.empty((n, g.m), np.float64)
        self.slots = n
        self.held = None

    def _nslots(self) -> int:
        from netspec.core.threads import kernel_blas_serial
        from netspec.kernels.jit import get_num_threads

        # one pipeline per thread, when the GEMMs inside can run single-threaded
        n = min(get_num_threads(), self.nunits) if kernel_blas_serial() else 1
        self._ensure_slots(n)
        return n

    def forward(self, x, w, y=None, dy=None, dw=None, bias=None):
        g = self.g
        ns = self._nslots()
        self.K.patch_weights(self.wt, self.w2, w.reshape(g.m, g.c, *self.k2))
        x4 = x.reshape(g.n, g.c, *self.img2)
        y4 = y.reshape(g.n, g.m, *self.out2) if y is not None else None
        dy4 = dy.reshape(g.n, g.m, *self.out2) if dy is not None else None
        self.K.patch_forward(y4 if y4 is not None else dy4, self.dwt, x4, self.wt,
                             self.zero_bias if bias is None else bias, dy4 if dy4 is not None else y4,
                             self.xp, self.col, self.yt, self.tmpw, ns, self.nb, self.rb, *self.args,
                             y is not None, dw is not None)
        self.held = (x.ctypes.data, ns)
        if dw is not None:
            self.K.patch_weight_grad(dw.reshape(g.m, g.c, *self.k2), self.dwt, ns)

    def backward(self, dy, w, dx=None, x=None, dw=None, dbias=None):
        g = self.g
        ns = self._nslots()
        self.K.patch_weights(self.wt, self.w2, w.reshape(g.m, g.c, *self.k2))
        reuse = dw is not None and self.held == (x.ctypes.data, ns)
        dy4 = dy.reshape(g.n, g.m, *self.out2)
        x4 = x.reshape(g.n, g.c, *self.img2) if x is not None else None
        dx4 = dx.reshape(g.n, g.c, *self.img2) if dx is not None else None
        self.K.patch_backward(dx4 if dx4 is not None else x4, self.dwt, self.dbias, dy4,
                              x4 if x4 is not None else dx4, self.w2, self.xp, self.dxp, self.col, self.yt,
                              self.tmpw, ns, self.nb, self.rb, *self.args, dx is not None, dw is not None,
                              dbias is not None, reuse)
        self.held = None   # the columns are now dx's (or x's first block): nothing to reuse
        if dw is not None:
            self.K.patch_weight_grad(dw.reshape(g.m, g.c, *self.k2), self.dwt, ns)
        if dbias is not None:
            self.K.add_slot_sums(dbias, self.dbias, ns)


def winograd_matrices(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T (2, a), G (a, r), B^T (a, a))`` of Winograd's F(2, r), ``a = r + 1``, as float64.

    Toom-Cook with the points 0, 1, -1, 2, -2, ... and infinity: ``A^T`` evaluates the two
    outputs' polynomial at the points, ``G`` the kernel's (scaled by ``1 / prod(p_j - p_l)``),
    and ``B^T`` is the one matrix that makes ``y_i = sum_k g_k d_(i+k)`` hold, found by solving
    those linear conditions and checked exactly in rationals.  F(2, 3): 0, +-1, 1/2; F(2, 5):
    entries up to 5 in ``B^T`` and sixths in ``G``.
    """
    from fractions import Fraction

    pts = [0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)][:r]
    a = r + 1
    at = [[Fraction(p) ** i for p in pts] + [Fraction(int(i == 1))] for i in range(2)]
    g = []
    for j, p in enumerate(pts):
        f = Fraction(1)
        for q in pts[:j] + pts[j + 1:]:
            f *= p - q
        g.append([Fraction(p) ** k / f for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    # sum_j at[i][j] g[j][k] bt[j][l] = [l == i + k] for every output i, tap k, input l
    eqs, rhs = [], []
    for i in range(2):
        for k in range(r):
            for l in range(a):
                row = np.zeros(a * a)
                for j in range(a):
                    row[j * a + l] = float(at[i][j] * g[j][k])
                eqs.append(row)
                rhs.append(float(l == i + k))
    sol = np.linalg.lstsq(np.array(eqs), np.array(rhs), rcond=None)[0]
    bt = [[Fraction(float(sol[j * a + l])).limit_denominator(1000) for l in range(a)] for j in range(a)]
    for i in range(2):
        for k in range(r):
            for l in range(a):
                assert sum(at[i][j] * g[j][k] * bt[j][l] for j in range(a)) == (l == i + k)
    as_array = lambda m: np.array([[float(v) for v in row] for row in m])  # noqa: E731
    return as_array(at), as_array(g), as_array(bt)


class Winograd(ConvAlgo):
    """Winograd F(2x2, 3x3) and F(2x2, 5x5) for square 3x3 and 5x5 kernels with stride 1, no
    dilation and group 1: ``a * a`` GEMMs (``a = r + 1``) over transformed tiles replace the
    direct sum, with 2.25x (3x3) and 2.8x (5x5) fewer flops, in all three directions (forward,
    input gradient, weight gradient; kernels in ``netspec.kernels.cpu.winograd``).  The 3x3
    transforms multiply by 0, +-1 and 1/2 only, so results differ from the direct sum by the
    order of float additions; the 5x5 ones scale by up to 5 and by sixths, a few float32 ulps
    more (within float32 tolerance of the direct sum, as the reference tests check)."""

    name = "winograd"
    fuses_bias = True
    devices = ("cpu",)

    @staticmethod
    def suits(g: ConvShape) -> bool:
        return (len(g.img) == 2 and g.group == 1 and g.kernel[0] == g.kernel[1] and g.kernel[0] in (3, 5)
                and all(s == 1 for s in g.stride) and all(d == 1 for d in g.dilation)
                and g.pad[0] == g.pad[1] and g.pad[0] < g.kernel[0])

    def __init__(self, g, dtype, K):
        super().__init__(g, dtype, K)
        from netspec.core.device import kernels as _kernels

        self.W = _kernels("winograd")
        r = g.kernel[0]
        a = r + 1
        self.a, self.r = a, r
        # the written-out tile kernels of F(2x2, 3x3) and F(2x2, 5x5); 0: the general ones
        self.hand = r if r in (3, 5) else 0
        at, gm, bt = winograd_matrices(r)
        cast = lambda m: np.ascontiguousarray(m, dtype=self.dtype)  # noqa: E731
        self.mats = (cast(bt), cast(bt.T), cast(at), cast(at.T))
        self.gm = gm
        self.pad = g.pad[0]
        th, tw = -(-g.out[0] // 2), -(-g.out[1] // 2)
        self.tiles = th * tw
        # columns split by parity (see the kernels): (lines, parity, columns / 2, channels)
        self.yshape = (2 * th, 2, tw, g.m)
        self.xshape = (2 * th + a - 2, 2, tw + (a - 1) // 2, g.c)
        self.width = tw * max(g.c, g.m)   # values in one line of tiles
        per_tile = a * a * max(g.c, g.m) * self.dtype.itemsize
        rows = max(16, WINOGRAD_BLOCK_BYTES // per_tile)
        if rows >= self.tiles:
            self.nb = min(g.n, rows // self.tiles)
            self.tb = self.nb * self.tiles
        else:
            self.nb = 1
            self.tb = -(-self.tiles // -(-self.tiles // rows))
        self.nunits = -(-g.n // self.nb)
        self.ut = np.empty((a * a, g.c, g.m), self.dtype)
        self.u2 = np.empty((a * a, g.m, g.c), self.dtype)
        self.zero_bias = np.zeros(g.m, self.dtype)
        self.zero_c = np.zeros(g.c, self.dtype)
        self.slots = 0
        self.held: tuple | None = None
        self._ensure_slots(1)

    def _ensure_slots(self, n: int) -> None:
        if n <= self.slots:
            return
        g, dt, a = self.g, self.dtype, self.a
        self.xp = np.zeros((n, *self.xshape), dt)
        self.dxp = np.zeros((n, *self.xshape), dt)
        self.yp = np.zeros((n, *self.yshape), dt)
        self.dyp = np.zeros((n, *self.yshape), dt)
        self.v = np.empty((n, a * a, self.tb, g.c), dt)
        self.mt = np.empty((n, a * a, self.tb, g.m), dt)
        self.tmpu = np.empty((n, g.c, g.m), dt)
        self.dut = np.empty((n, a * a, g.c, g.m), dt)
        self.dbias = np.empty((n, g.m), np.float64)
        rows = {3: 1, 5: 36}.get(self.hand, a)
        self.e = np.empty((n, rows, 1 if self.hand == 3 else self.width), dt)
        self.rows = np.zeros((n, a), np.int64)
        self.offs = np.zeros((n, a), np.uint64)
        self.slots = n
        self.held = None

    _nslots = PatchGemm._nslots

    def _weights(self, w):
        if self.hand == 3:
            self.W.winograd_weights(self.ut, self.u2, w)
        else:
            self.W.wino_weights(self.ut, self.u2, w, self.gm)

    def _weight_grad(self, dw, ns):
        if self.hand == 3:
            self.W.winograd_weight_grad(dw, self.dut, ns)
        else:
            self.W.wino_weight_grad(dw, self.dut, ns, self.gm)

    def forward(self, x, w, y=None, dy=None, dw=None, bias=None):
        g = self.g
        ns = self._nslots()
        w4 = w.reshape(g.m, g.c, self.r, self.r)
        self._weights(w4)
        x4 = x.reshape(g.n, g.c, *g.img)
        y4 = y.reshape(g.n, g.m, *g.out) if y is not None else None
        dy4 = dy.reshape(g.n, g.m, *g.out) if dy is not None else None
        self.W.winograd_forward(y4 if y4 is not None else dy4, self.dut, x4, self.ut,
                                self.zero_bias if bias is None else bias, dy4 if dy4 is not None else y4,
                                self.xp, self.yp, self.dyp, self.v, self.mt, self.tmpu, ns, self.nb, self.tb,
                                self.pad, y is not None, dw is not None, self.hand, self.mats, self.e, self.rows,
                                self.offs)
        self.held = (x.ctypes.data, ns)
        if dw is not None:
            self._weight_grad(dw.reshape(w4.shape), ns)

    def backward(self, dy, w, dx=None, x=None, dw=None, dbias=None):
        g = self.g
        ns = self._nslots()
        w4 = w.reshape(g.m, g.c, self.r, self.r)
        self._weights(w4)
        reuse = dw is not None and self.held == (x.ctypes.data, ns)
        dy4 = dy.reshape(g.n, g.m, *g.out)
        x4 = x.reshape(g.n, g.c, *g.img) if x is not None else None
        dx4 = dx.reshape(g.n, g.c, *g.img) if dx is not None else None
        self.W.winograd_backward(dx4 if dx4 is not None else x4, self.dut, self.dbias, dy4,
                                 x4 if x4 is not None else dx4, self.u2, self.zero_c, self.xp, self.dxp, self.dyp,
                                 self.v, self.mt, self.tmpu, ns, self.nb, self.tb, self.pad, dx is not None,
                                 dw is not None, dbias is not None, reuse, self.hand, self.mats, self.e, self.rows,
                                 self.offs)
        self.held = None
        if dw is not None:
            self._weight_grad(dw.reshape(w4.shape), ns)
        if dbias is not None:
            self.K.add_slot_sums(dbias, self.dbias, ns)


#: the algorithms, in order of preference: the first that suits a shape is used
CONV_ALGOS: dict[str, type[ConvAlgo]] = {a.name: a for a in (PointwiseGemm, Winograd, PatchGemm, Im2colGemm)}


def conv_algo_names(g: ConvShape, kind: str = "cpu") -> list[str]:
    """The algorithms that suit this shape and run on device ``kind``, in order of preference."""
    return [name for name, a in CONV_ALGOS.items() if kind in a.devices and a.suits(g)]


def choose_conv_algo(g: ConvShape, kind: str = "cpu") -> str:
    """The algorithm used for this shape without a measurement (see ``default_conv_algo``)."""
    return default_conv_algo(g, conv_algo_names(g, kind))


def default_conv_algo(g: ConvShape, names: list[str]) -> str:
    """The usual winner among ``names`` (those that suit ``g``), from measurements on the
    shipped nets: 1x1 straight GEMMs, then Winograd, then channels-last patches when a kernel
    row of the patch is long enough (``C * kw >= 32``: with LeNet's and CIFAR-10's first
    layers, 1 and 3 channels, Caffe's layout copies longer runs and wins), else im2col."""
    kw = g.kernel[-1]
    for name in names:
        if name == "winograd" and g.c < 8:
            continue
        if name == "patch_gemm" and g.c * kw < 32:
            continue
        return name
    return names[-1]


class _ConvBase(Layer):
    num_bottom = (1, None)
    num_top = SAME
    param_names = ("weight", "bias")
    filler_fields = {"weight": "weight_filler", "bias": "bias_filler"}
    schema = {"properties": CONV_PROPS, "required": ["num_output"], **HW_RULES}
    inplace = False

    @classmethod
    def normalize(cls, fields: dict) -> dict:
        fields = normalize_hw(fields)
        if fields.get("algorithm") == "auto":   # the default: a net reads the same with or without it
            fields = {k: v for k, v in fields.items() if k != "algorithm"}
        return fields

    def geometry(self, shape):
        """(channel axis, spatial input dims, kernel, pad, stride, dilation) for a bottom shape."""
        axis = self.axis(self.p.get("axis", 1), len(shape))
        nsp = len(shape) - axis - 1
        if nsp < 1:
            raise self.error(f"needs at least one spatial axis after the channel axis {axis}; "
                             f"the input is {list(shape)}", "bottom")
        if "kernel_size" not in self.p:
            raise self.error("missing required field 'kernel_size' (or kernel_h and kernel_w)",
                             "kernel_size", cls=SpecError)
        k = spatial(self, "kernel_size", nsp, None)
        pad = spatial(self, "pad", nsp, 0)
        stride = spatial(self, "stride", nsp, 1)
        dil = spatial(self, "dilation", nsp, 1)
        return axis, list(shape[axis + 1:]), k, pad, stride, dil

    def _check_bottoms(self, bottom_shapes):
        for j, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != tuple(bottom_shapes[0]):
                raise self.error(f"all bottoms must have the same shape: bottom {j} is {list(s)}, "
                                 f"bottom 0 is {list(bottom_shapes[0])}", "bottom")

    def _check_groups(self, channels: int):
        g = self.p.get("group", 1)
        if channels % g:
            raise self.error(f"the input has {channels} channels, which do not divide into {g} groups", "group")
        if self.p["num_output"] % g:
            raise self.error(f"num_output {self.p['num_output']} does not divide into {g} groups", "group")

    # ---- execution ---------------------------------------------------------------------
    def setup(self, bottom, top):
        self.K = kernels("conv")
        shape = bottom[0].shape
        g = self.conv_shape(shape, top[0].shape)   # each subclass states its direction
        self.has_bias = "bias" in self.params
        axis = self.axis(self.p.get("axis", 1), len(shape))
        n = count(shape, 0, axis)
        # every blob as (n, channels, flat spatial)
        self.bshape = (n, shape[axis], count(shape, axis + 1))
        tshape = top[0].shape
        self.tshape = (n, tshape[axis], count(tshape, axis + 1))
        # the weights' precision: float16 blobs (precision: float16 on a GPU) are summed in float32
        dtype = wide_dtype(bottom[0].data)
        kind = D.current().kind
        names = conv_algo_names(g, kind)
        want = self.p.get("algorithm", "auto")
        if want in CONV_ALGOS and want not in names and CONV_ALGOS[want].suits(g):
            # it suits the shape but has no kernels on this device: the field says how, not
            # what, so the net runs as written with this device's choice (no second net file)
            use = names[0] if len(names) == 1 else f"the fastest of {', '.join(names)}"
            warnings.warn(str(self.error(f"algorithm {want} runs on the CPU only; on {kind} this layer uses "
                                         f"{use}", "algorithm")), stacklevel=2)
            want = "auto"
        if want != "auto":
            if want not in names:
                raise self.error(f"algorithm {want} does not suit this layer (kernel {list(g.kernel)}, stride "
                                 f"{list(g.stride)}, dilation {list(g.dilation)}, group {g.group}); the ones that "
                                 f"do: {', '.join(names)}", "algorithm")
            self.algo = want
        else:
            self.algo = self._choose(g, dtype, names, bottom, top)
        self.engine = CONV_ALGOS[self.algo](g, dtype, self.K)

    def _choose(self, g: ConvShape, dtype, names: list[str], bottom, top) -> str:
        """Measure the algorithms on this layer's own blobs (once per shape: netspec.core.algo)."""
        from netspec.core import algo

        need_backward = getattr(self, "need_backward", True)
        down = tuple(getattr(self, "propagate_down", None) or [True] * len(bottom))
        key = algo.make_key(self.type, n=g.n, c=g.c, m=g.m, group=g.group, img=g.img, out=g.out,
                            kernel=g.kernel, pad=g.pad, stride=g.stride, dilation=g.dilation,
                            dtype=str(np.dtype(dtype)), bottoms=len(bottom),
                            backward=down if need_backward else False)
        saved = {k: p.grad.copy() for k, p in self.params.items()}
        dev = D.current()

        def trial(name: str):
            engine = CONV_ALGOS[name](g, dtype, self.K)

            def run():
                self.engine = engine
                self.forward(bottom, top)
                if need_backward:
                    self.backward(top, list(down), bottom)
                dev.synchronize()   # a GPU runs kernels asynchronously: time the work, not the launches
            return run

        flops = 2.0 * g.n * g.m * count(g.out) * (g.c // g.group) * count(g.kernel) * len(bottom)
        try:
            return algo.choose(key, names, default_conv_algo(g, names), trial, flops=flops)
        finally:
            for k, p in self.params.items():
                p.grad[...] = saved[k]


@register("Convolution")
class Convolution(_ConvBase):
    """Cross-correlation of each bottom with learned kernels, plus a bias.

    Bottom ``(N, C, H, W)`` (or any number of spatial axes) -> top ``(N, num_output, H', W')`` with
    ``H' = floor((H + 2 pad - (dilation (k - 1) + 1)) / stride) + 1``.  Weight
    ``(num_output, C / group, k...)``, bias ``(num_output,)``.

    Example::

        {name: conv1, type: Convolution, bottom: data, num_output: 20, kernel_size: 5,
         weight_filler: {type: xavier}, param: {weight: {lr_mult: 1}, bias: {lr_mult: 2}}}
    """

    def reshape(self, bottom_shapes):
        self._check_bottoms(bottom_shapes)
        shape = bottom_shapes[0]
        axis, dims, k, pad, stride, dil = self.geometry(shape)
        self._check_groups(shape[axis])
        out = []
        for i, (d, kk, p, s, dl) in enumerate(zip(dims, k, pad, stride, dil)):
            ext = dl * (kk - 1) + 1
            if d + 2 * p < ext:
                what = f"kernel {kk}" + (f" (dilated to {ext})" if dl > 1 else "")
                raise self.error(f"{what} is larger than the padded input {d + 2 * p} (size {d} + 2 x pad {p}) "
                                 f"on spatial axis {i} of input {list(shape)}", "kernel_size")
            out.append((d + 2 * p - ext) // s + 1)
        top = tuple(shape[:axis]) + (self.p["num_output"],) + tuple(out)
        return [top] * len(bottom_shapes)

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis, _, k, *_ = self.geometry(shape)
        w = (self.p["num_output"], shape[axis] // self.p.get("group", 1), *k)
        return {"weight": w, "bias": (self.p["num_output"],)} if self.p.get("bias_term", True) else {"weight": w}

    def flops(self, bottom_shapes, top_shapes):
        shape = bottom_shapes[0]
        axis, _, k, *_ = self.geometry(shape)
        per_out = shape[axis] // self.p.get("group", 1) * count(k)
        return 2 * per_out * count(top_shapes[0]) * len(bottom_shapes)

    def conv_shape(self, bottom_shape, top_shape):
        axis, dims, k, pad, stride, dil = self.geometry(bottom_shape)
        return ConvShape(count(bottom_shape, 0, axis), bottom_shape[axis], self.p["num_output"],
                         self.p.get("group", 1), tuple(dims), tuple(top_shape[axis + 1:]), tuple(k),
                         tuple(pad), tuple(stride), tuple(dil))

    def forward(self, bottom, top):
        w = self.params["weight"].data
        fused = self.has_bias and self.engine.fuses_bias
        for b, t in zip(bottom, top):
            y = t.data.reshape(self.tshape)
            if fused:
                self.engine.forward(b.data.reshape(self.bshape), w, y, bias=self.params["bias"].data)
                continue
            self.engine.forward(b.data.reshape(self.bshape), w, y)
            if self.has_bias:
                self.K.bias_forward(y, self.params["bias"].data)

    def backward(self, top, propagate_down, bottom):
        w = self.params["weight"]
        fused = self.has_bias and self.engine.fuses_bias
        # the last bottom first: the algorithm may still hold its columns from forward
        for j in reversed(range(len(bottom))):
            dy = top[j].grad.reshape(self.tshape)
            dx = bottom[j].grad.reshape(self.bshape) if propagate_down[j] else None
            x = bottom[j].data.reshape(self.bshape)
            if fused:
                self.engine.backward(dy, w.data, dx, x, w.grad, dbias=self.params["bias"].grad)
                continue
            if self.has_bias:
                self.K.bias_backward(self.params["bias"].grad, dy)
            self.engine.backward(dy, w.data, dx, x, w.grad)


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Transposed convolution (the gradient of Convolution), e.g. for learned upsampling.

    Top spatial size ``stride (H - 1) + dilation (k - 1) + 1 - 2 pad``.  Weight
    ``(C, num_output / group, k...)`` (the first two axes swapped relative to Convolution).

    Example::

        {name: up, type: Deconvolution, bottom: score, num_output: 21, kernel_size: 4, stride: 2,
         pad: 1, bias_term: false, weight_filler: {type: bilinear}}
    """

    def reshape(self, bottom_shapes):
        self._check_bottoms(bottom_shapes)
        shape = bottom_shapes[0]
        axis, dims, k, pad, stride, dil = self.geometry(shape)
        self._check_groups(shape[axis])
        out = []
        for i, (d, kk, p, s, dl) in enumerate(zip(dims, k, pad, stride, dil)):
            o = s * (d - 1) + dl * (kk - 1) + 1 - 2 * p
            if o < 1:
                raise self.error(f"the output would have size {o} on spatial axis {i}: pad {p} is too large "
                                 f"for input size {d}", "pad")
            out.append(o)
        top = tuple(shape[:axis]) + (self.p["num_output"],) + tuple(out)
        return [top] * len(bottom_shapes)

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis, _, k, *_ = self.geometry(shape)
        w = (shape[axis], self.p["num_output"] // self.p.get("group", 1), *k)
        return {"weight": w, "bias": (self.p["num_output"],)} if self.p.get("bias_term", True) else {"weight": w}

    def flops(self, bottom_shapes, top_shapes):
        shape = bottom_shapes[0]
        axis, _, k, *_ = self.geometry(shape)
        return 2 * count(shape) * (self.p["num_output"] // self.p.get("group", 1)) * count(k) * len(bottom_shapes)

    def conv_shape(self, bottom_shape, top_shape):
        # the convolution whose backward-data this is: from the top (num_output channels) to
        # the bottom (C_in channels), with weight (C_in, num_output / group, k...)
        axis, dims, k, pad, stride, dil = self.geometry(bottom_shape)
        return ConvShape(count(bottom_shape, 0, axis), self.p["num_output"], bottom_shape[axis],
                         self.p.get("group", 1), tuple(top_shape[axis + 1:]), tuple(dims), tuple(k),
                         tuple(pad), tuple(stride), tuple(dil))

    def forward(self, bottom, top):
        w = self.params["weight"].data
        for b, t in zip(bottom, top):
            y = t.data.reshape(self.tshape)
            self.engine.backward(b.data.reshape(self.bshape), w, dx=y)
            if self.has_bias:
                self.K.bias_forward(y, self.params["bias"].data)

    def backward(self, top, propagate_down, bottom):
        w = self.params["weight"]
        for j in range(len(bottom)):
            dtop = top[j].grad.reshape(self.tshape)
            if self.has_bias:
                self.K.bias_backward(self.params["bias"].grad, dtop)
            dx = bottom[j].grad.reshape(self.bshape) if propagate_down[j] else None
            # dx = conv(dtop); dW from the image dtop and the output "gradient" bottom
            self.engine.forward(dtop, w.data, dx, bottom[j].data.reshape(self.bshape), w.grad)


def pooled_size(size: int, k: int, pad: int, stride: int, ceil_mode: bool) -> int:
    """Caffe's pooled output size, including the rule that the last window starts inside."""
    if ceil_mode:
        out = int(math.ceil((size + 2 * pad - k) / stride)) + 1
    else:
        out = (size + 2 * pad - k) // stride + 1
    # Caffe applies this rule only with padding, so with pad 0 and stride > kernel a ceil-mode
    # last window can start past the image (size 5, kernel 1, stride 3: starts 0, 3, 6).  The
    # size is kept for weight compatibility; the kernels give such a window 0 and no gradient,
    # where Caffe outputs -FLT_MAX (MAX) or -0 (AVE) and writes out of bounds in backward.
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(Layer):
    """Max, average or stochastic pooling over 2-D windows.

    Bottom ``(N, C, H, W)`` -> top ``(N, C, H', W')``, ``H' = ceil((H + 2 pad - k) / stride) + 1``
    (``round_mode: FLOOR`` floors), minus one when the last window would start in the padding.
    MAX takes the first of equal maxima (strict ``>``) and may give a second top: the argmax
    index ``h * W + w`` of each output, as a float.  AVE divides by the window clipped to
    ``[-pad, H + pad)``, so padded cells count as zeros.  STOCHASTIC (inputs >= 0, e.g. after a
    ReLU; Caffe runs it on GPUs only) samples one element per window with probability
    proportional to its value in TRAIN (from the net's seeded generator) and passes the gradient
    to it; TEST gives ``sum(x^2) / sum(x)`` and has no backward (Caffe defines none), so a TEST
    layer asked for gradients raises an error.

    Example::

        {name: pool1, type: Pooling, bottom: conv1, pool: MAX, kernel_size: 2, stride: 2}
    """

    num_top = (1, 2)
    inplace = False
    schema = {
        "properties": {
            "pool": T.enum(("MAX", "AVE", "STOCHASTIC"), default="MAX", desc="pooling method"),
            **hw_props(default_pad=0, default_stride=1),
            "global_pooling": T.boolean(False, "pool over the whole H x W"),
            "round_mode": T.enum(("CEIL", "FLOOR"), default="CEIL", desc="how the output size rounds"),
        },
        **HW_RULES,
    }

    @classmethod
    def normalize(cls, fields: dict) -> dict:
        return normalize_hw(fields)

    def geometry(self, shape):
        """(kernel, pad, stride) as [h, w] lists for a 4-D bottom shape."""
        if len(shape) != 4:
            raise self.error(f"needs a 4-D input (N, C, H, W), got {len(shape)}-D {list(shape)}", "bottom")
        if self.p.get("global_pooling"):
            if "kernel_size" in self.p:
                raise self.error("give kernel_size or global_pooling, not both", "global_pooling", cls=SpecError)
            k = [shape[2], shape[3]]
            pad, stride = spatial(self, "pad", 2, 0), spatial(self, "stride", 2, 1)
            if any(pad) or any(s != 1 for s in stride):
                raise self.error("global pooling needs pad 0 and stride 1", "global_pooling")
            return k, pad, stride
        if "kernel_size" not in self.p:
            raise self.error("missing required field 'kernel_size' (or kernel_h and kernel_w, or "
                             "global_pooling: true)", "kernel_size", cls=SpecError)
        k = spatial(self, "kernel_size", 2, None)
        pad, stride = spatial(self, "pad", 2, 0), spatial(self, "stride", 2, 1)
        if any(pad):
            if self.p.get("pool", "MAX") not in ("MAX", "AVE"):
                raise self.error("padding works only with MAX and AVE pooling", "pad")
            for p, kk in zip(pad, k):
                if p >= kk:
                    raise self.error(f"pad {p} must be smaller than the kernel {kk}", "pad")
        return k, pad, stride

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        k, pad, stride = self.geometry(shape)
        ceil_mode = self.p.get("round_mode", "CEIL") == "CEIL"
        out = []
        for i, (d, kk, p, s) in enumerate(zip(shape[2:], k, pad, stride)):
            if d + 2 * p < kk:
                raise self.error(f"kernel {kk} is larger than the padded input {d + 2 * p} (size {d} + 2 x pad {p}) "
                                 f"on axis {'HW'[i]} of input {list(shape)}", "kernel_size")
            out.append(pooled_size(d, kk, p, s, ceil_mode))
        top = (shape[0], shape[1], *out)
        if len(self.p.get("top", [])) == 2 and self.p.get("pool", "MAX") != "MAX":
            raise self.error("only MAX pooling gives a second (argmax) top", "top")
        return [top] * len(self.p.get("top", [None]))

    def flops(self, bottom_shapes, top_shapes):
        k, _, _ = self.geometry(bottom_shapes[0])
        return count(top_shapes[0]) * k[0] * k[1]

    def setup(self, bottom, top):
        self.K = kernels("pool")
        (self.kh, self.kw), (self.ph, self.pw), (self.sh, self.sw) = self.geometry(bottom[0].shape)
        self.method = self.p.get("pool", "MAX")
        # the element each output took, for backward (and MAX's second top)
        self.index = D.zeros(top[0].shape, np.int32) if self.method != "AVE" else None
        # float64 whatever the blob dtype, so float32 and float64 nets sample alike; drawn on
        # the host from the layer's Generator, so that a GPU net samples the elements a CPU net
        # with that seed does, and copied over (on the CPU the device copy is the array itself)
        self.uniform = np.zeros(top[0].shape, np.float64) if self.method == "STOCHASTIC" else None
        self._uniform_d = D.asarray(self.uniform) if self.uniform is not None else None

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        K = self.K
        if self.method == "MAX":
            K.max_pool_forward(y, self.index, x, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
            if len(top) > 1:
                np.copyto(top[1].data, self.index, casting="unsafe")
        elif self.method == "AVE":
            K.ave_pool_forward(y, x, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
        elif self.phase == "TRAIN":
            self.rng.random(out=self.uniform)
            if self._uniform_d is not self.uniform:
                D.copy_in(self._uniform_d, self.uniform)
            K.stochastic_pool_forward_train(y, self.index, x, self._uniform_d, self.kh, self.kw, self.sh, self.sw)
        else:
            K.stochastic_pool_forward_test(y, x, self.kh, self.kw, self.sh, self.sw)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx, dy = bottom[0].grad, top[0].grad
        if self.method == "AVE":
            self.K.ave_pool_backward(dx, dy, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
        elif self.method == "STOCHASTIC" and self.phase != "TRAIN":
            raise self.error("STOCHASTIC pooling has no backward in the TEST phase (Caffe defines none: "
                             "TEST outputs the deterministic sum(x^2)/sum(x)); run this layer in TRAIN "
                             "to get gradients", "pool", cls=GraphError)
        else:
            self.K.index_pool_backward(dx, dy, self.index)


@register("Im2col")
class Im2col(Layer):
    """The column matrix of a convolution (Caffe's relic layer, kept for inspection and custom ops).

    Bottom ``(N, C, H, W)`` (or any number of spatial axes) -> top ``(N, C kh kw, H', W')`` with
    Convolution's output size; channel ``(c kh + i) kw + j`` of the top at ``(y, x)`` holds
    ``x[c, y stride - pad + i dilation, x stride - pad + j dilation]`` (0 in the padding).
    Backward sums the columns back into the image (col2im).

    Example::

        {name: cols, type: Im2col, bottom: data, kernel_size: 3, pad: 1, stride: 2}
    """

    inplace = False
    schema = {
        "properties": {
            **hw_props(default_pad=0, default_stride=1),
            "dilation": CONV_PROPS["dilation"],
        },
        **HW_RULES,
    }

    @classmethod
    def normalize(cls, fields: dict) -> dict:
        return normalize_hw(fields)

    def geometry(self, shape):
        """(spatial dims, kernel, pad, stride, dilation) for a bottom shape (channel axis 1)."""
        nsp = len(shape) - 2
        if nsp < 1:
            raise self.error(f"needs (N, C) and at least one spatial axis, got {list(shape)}", "bottom")
        if "kernel_size" not in self.p:
            raise self.error("missing required field 'kernel_size' (or kernel_h and kernel_w)",
                             "kernel_size", cls=SpecError)
        return (list(shape[2:]), spatial(self, "kernel_size", nsp, None), spatial(self, "pad", nsp, 0),
                spatial(self, "stride", nsp, 1), spatial(self, "dilation", nsp, 1))

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        dims, k, pad, stride, dil = self.geometry(shape)
        out = []
        for i, (d, kk, p, s, dl) in enumerate(zip(dims, k, pad, stride, dil)):
            ext = dl * (kk - 1) + 1
            if d + 2 * p < ext:
                raise self.error(f"kernel {kk} (extent {ext}) is larger than the padded input {d + 2 * p} "
                                 f"on spatial axis {i} of input {list(shape)}", "kernel_size")
            out.append((d + 2 * p - ext) // s + 1)
        return [(shape[0], shape[1] * count(k), *out)]

    def setup(self, bottom, top):
        self.K = kernels("conv")
        shape = bottom[0].shape
        dims, k, pad, stride, dil = self.geometry(shape)
        out = top[0].shape[2:]
        rows = top[0].shape[1]
        if len(dims) <= 2:
            one = lambda v, fill: ([fill] + list(v)) if len(v) == 1 else list(v)  # noqa: E731
            self.x4 = (shape[0], shape[1], *one(dims, 1))
            self.col4 = (rows, 1, *one(out, 1))
            kk, pp, ss, dd = one(k, 1), one(pad, 0), one(stride, 1), one(dil, 1)
            self.args = (kk[0], kk[1], pp[0], pp[1], ss[0], ss[1], dd[0], dd[1])
            self.fwd, self.bwd = self.K.im2col_2d, self.K.col2im_2d
        else:
            as64 = lambda v: D.asarray(np.array(v, dtype=np.int64))  # noqa: E731  (kernel arguments)
            self.x4 = (shape[0], shape[1], count(dims))
            self.col4 = (rows, 1, count(out))
            self.args = (as64(dims), as64(out), as64(k), as64(pad), as64(stride), as64(dil))
            self.fwd, self.bwd = self.K.im2col_nd, self.K.col2im_nd

    def forward(self, bottom, top):
        # one image at a time: an image's (rows, 1, P) columns are exactly its slice of the top
        x = bottom[0].data.reshape(self.x4)
        y = top[0].data
        for n in range(x.shape[0]):
            self.fwd(y[n].reshape(self.col4), x[n:n + 1], *self.args)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].grad.reshape(self.x4)
        dy = top[0].grad
        for n in range(dx.shape[0]):
            self.bwd(dx[n:n + 1], dy[n].reshape(self.col4), *self.args)
