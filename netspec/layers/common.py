"""InnerProduct, Dropout and Embed."""

from __future__ import annotations

import numpy as np

from netspec.core import device as D
from netspec.core.device import kernels
from netspec.core.layer import Layer, count, register, wide_dtype
from netspec.errors import DataError
from netspec.spec import types as T


@register("InnerProduct")
class InnerProduct(Layer):
    """Fully connected: ``y = x W^T + b`` over the axes from ``axis`` on.

    Bottom ``(N, ...)`` -> top ``bottom.shape[:axis] + (num_output,)``; ``K = count(axis:)``.
    Weight ``(num_output, K)`` (``(K, num_output)`` with ``transpose: true``), bias ``(num_output,)``.

    Example::

        {name: ip1, type: InnerProduct, bottom: pool2, num_output: 500,
         weight_filler: {type: xavier}, bias_filler: {type: constant}}
    """

    param_names = ("weight", "bias")
    filler_fields = {"weight": "weight_filler", "bias": "bias_filler"}
    inplace = False
    schema = {
        "properties": {
            "num_output": T.integer(1, desc="number of outputs"),
            "bias_term": T.boolean(True, "learn a bias per output"),
            "weight_filler": T.filler(desc="initial weights (default constant 0: give one)"),
            "bias_filler": T.filler(desc="initial biases (default constant 0)"),
            "axis": T.integer(default=1, desc="the first axis flattened into the input vector"),
            "transpose": T.boolean(False, "store the weight as (K, num_output)"),
        },
        "required": ["num_output"],
    }

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = self.axis(self.p.get("axis", 1), len(shape))
        return [tuple(shape[:axis]) + (self.p["num_output"],)]

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = self.axis(self.p.get("axis", 1), len(shape))
        k = count(shape, axis)
        n = self.p["num_output"]
        w = (k, n) if self.p.get("transpose") else (n, k)
        return {"weight": w, "bias": (n,)} if self.p.get("bias_term", True) else {"weight": w}

    def flops(self, bottom_shapes, top_shapes):
        return 2 * count(bottom_shapes[0]) * self.p["num_output"]

    def setup(self, bottom, top):
        self.K = kernels("inner_product")
        shape = bottom[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.m, self.k = count(shape, 0, axis), count(shape, axis)
        self.transpose = bool(self.p.get("transpose"))
        self.bias = "bias" in self.params
        self.n = self.p["num_output"]
        dt = wide_dtype(bottom[0].data)
        self._zero_bias = D.zeros(self.n, dt)    # the kernels' bias when there is none
        w = self.params["weight"]
        self._db = D.empty(self.n, np.float64)
        self._buf = D.empty((1, 1), dt)
        self._slots = 0
        if D.current().is_cuda:
            # on a GPU: one cuBLAS GEMM per direction over the whole batch, the weight
            # gradient's with beta 1 straight into the param's gradient (no thread slots)
            from netspec.kernels.cuda._blas import gemm

            self._gpu_gemm = gemm
            self._gemm = None
            self._dw = None
        else:
            self._gpu_gemm = None
            self._gemm = _gemm_beta(dt)
            self._dw = np.empty_like(w.grad)     # dW before it is added to the param's gradient

    def _nslots(self) -> int:
        """Threads to split the work between (the batch rows in forward and for the input
        gradient, the weight gradient's rows in backward)."""
        if self._gpu_gemm is not None:
            return 1
        from netspec.core.threads import kernel_blas_serial
        from netspec.kernels.jit import get_num_threads

        # one part per thread when the GEMMs inside can run single-threaded; parts of fewer
        # than 16 batch rows cost more in GEMM speed than they gain
        n = max(1, min(get_num_threads(), self.m // 16)) if kernel_blas_serial() else 1
        if n != self._slots:
            # copies of each thread's columns of the gradient (a contiguous GEMM operand)
            rows = self.k if self.transpose else self.n
            self._buf = np.empty((n, self.m * -(-rows // n)), self._dw.dtype) if n > 1 else self._buf
            self._slots = n
        return n

    def forward(self, bottom, top):
        # x: (M, K), W: (N, K) [transpose: (K, N)], y: (M, N)
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.n)
        b = self.params["bias"].data if self.bias else self._zero_bias
        self.K.ip_forward(y, x, self.params["weight"].data, b, self.bias, self.transpose, self._nslots())

    def backward(self, top, propagate_down, bottom):
        dy = top[0].grad.reshape(self.m, self.n)
        x = bottom[0].data.reshape(self.m, self.k)
        w = self.params["weight"]
        ns = self._nslots()
        dx = bottom[0].grad.reshape(self.m, self.k) if propagate_down[0] else x
        if self._gpu_gemm is not None:
            # dW += dy^T x (transpose: x^T dy); w.grad stands in for the unused dwt
            if self.transpose:
                self._gpu_gemm(w.grad, x.T, dy, 1.0, 1.0)
            else:
                self._gpu_gemm(w.grad, dy.T, x, 1.0, 1.0)
            self.K.ip_backward(dx, w.grad, self._db, dy, x, w.data, self._buf, self.transpose, 1,
                               bool(propagate_down[0]), False, self.bias)
            if self.bias:
                self.K.ip_bias_grad(self.params["bias"].grad, self._db)
            return
        if ns == 1 and self._gemm is not None:
            # dW += dy^T x (transpose: x^T dy) by one GEMM with beta 1, straight into the
            # gradient (seen in Fortran order, where it is the transpose)
            if self.transpose:
                self._gemm(1.0, dy.T, x.T, 1.0, w.grad.T, trans_b=1, overwrite_c=1)
            else:
                self._gemm(1.0, x.T, dy.T, 1.0, w.grad.T, trans_b=1, overwrite_c=1)
        elif ns == 1:
            np.dot(x.T, dy, out=self._dw) if self.transpose else np.dot(dy.T, x, out=self._dw)
        self.K.ip_backward(dx, self._dw, self._db, dy, x, w.data, self._buf, self.transpose, ns,
                           bool(propagate_down[0]), ns > 1, self.bias)
        if ns > 1 or self._gemm is None:
            self.K.ip_accumulate(w.grad, self._dw)    # dW += dy^T x (transpose: x^T dy)
        if self.bias:
            self.K.ip_bias_grad(self.params["bias"].grad, self._db)


def _gemm_beta(dtype):
    """BLAS gemm with beta (C = alpha A B + beta C, in place on a Fortran-ordered C), from
    SciPy; None without SciPy (the weight gradient then goes through a scratch copy)."""
    try:
        from scipy.linalg.blas import get_blas_funcs
    except ImportError:
        return None
    if np.dtype(dtype) not in (np.float32, np.float64):
        return None
    return get_blas_funcs("gemm", dtype=np.dtype(dtype))


@register("Dropout")
class Dropout(Layer):
    """Inverted dropout: in TRAIN ``y = x * mask / (1 - ratio)``, identity in TEST.

    Example::

        {name: drop6, type: Dropout, bottom: fc6, top: fc6, dropout_ratio: 0.5}
    """

    schema = {"properties": {"dropout_ratio": T.number(0.0, exclusive_maximum=1.0, default=0.5,
                                                       desc="probability of dropping a unit")}}

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("common")
        self.ratio = float(self.p.get("dropout_ratio", 0.5))
        self.scale = 1.0 / (1.0 - self.ratio)
        self.train = self.phase == "TRAIN"   # the layer's own phase, as Caffe
        # the uniform draws of the last forward, the mask that backward reuses; float64 whatever
        # the blob dtype, so that a float32 and a float64 net with one seed drop the same units
        # (drawn on the host, so that a GPU net drops the units a CPU net with that seed does,
        # and copied over: the device's copy is the array itself on the CPU)
        self._rand = np.empty(bottom[0].count) if self.train else None
        self._rand_d = D.asarray(self._rand) if self.train else None

    def forward(self, bottom, top):
        if self.train:
            self.rng.random(out=self._rand)
            if self._rand_d is not self._rand:
                D.copy_in(self._rand_d, self._rand)
            self.K.dropout_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self._rand_d,
                                   self.ratio, self.scale)
        elif top[0].data is not bottom[0].data:
            np.copyto(top[0].data, bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.train:
            self.K.dropout_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), self._rand_d,
                                    self.ratio, self.scale)
        elif bottom[0].grad is not top[0].grad:
            np.copyto(bottom[0].grad, top[0].grad)


@register("Embed")
class Embed(Layer):
    """A lookup table: integer indices -> learned vectors (``W[x] + b``).

    Bottom of any shape holding integers in ``[0, input_dim)`` -> top ``bottom.shape + (num_output,)``.
    Weight ``(input_dim, num_output)``, bias ``(num_output,)``.

    Example::

        {name: embed, type: Embed, bottom: words, num_output: 64, input_dim: 1000,
         weight_filler: {type: uniform, min: -0.1, max: 0.1}}
    """

    param_names = ("weight", "bias")
    filler_fields = {"weight": "weight_filler", "bias": "bias_filler"}
    inplace = False
    no_grad_bottoms = (0,)   # indices: Caffe refuses to backpropagate to them
    schema = {
        "properties": {
            "num_output": T.integer(1, desc="size of each vector"),
            "input_dim": T.integer(1, desc="number of entries (largest index + 1)"),
            "bias_term": T.boolean(True, "learn a bias"),
            "weight_filler": T.filler(),
            "bias_filler": T.filler(),
        },
        "required": ["num_output", "input_dim"],
    }

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.p["num_output"],)]

    def param_shapes(self, bottom_shapes):
        w = (self.p["input_dim"], self.p["num_output"])
        return {"weight": w, "bias": (self.p["num_output"],)} if self.p.get("bias_term", True) else {"weight": w}

    def setup(self, bottom, top):
        self.K = kernels("common")
        self.m = bottom[0].count
        self.n = self.p["num_output"]
        self.input_dim = self.p["input_dim"]
        self.bias = "bias" in self.params
        self._db = D.empty(self.n, dtype=wide_dtype(top[0].data))

    def forward(self, bottom, top):
        index = bottom[0].data.reshape(-1)
        bad = self.K.embed_check(index, self.input_dim)
        if bad >= 0:
            raise self.error(f"index {float(index[bad]):g} at position {bad} of the batch is not an integer in "
                             f"[0, {self.input_dim}); check the data or input_dim", "bottom", cls=DataError)
        y = top[0].data.reshape(self.m, self.n)
        self.K.embed_forward(y, index, self.params["weight"].data)
        if self.bias:
            y += self.params["bias"].data

    def backward(self, top, propagate_down, bottom):
        # no gradient to the indices (no_grad_bottoms): only the params learn
        dy = top[0].grad.reshape(self.m, self.n)
        self.K.embed_backward(self.params["weight"].grad, dy, bottom[0].data.reshape(-1))
        if self.bias:
            np.sum(dy, axis=0, dtype=self._db.dtype, out=self._db)
            self.params["bias"].grad += self._db
