"""Normalization and affine layers: LRN, BatchNorm, MVN, Scale, Bias.

The layers reshape their blobs into the 3-D views the ``norm`` kernels take and keep their
scratch (LRN's scale, BatchNorm's normalized input, per-row statistics) from ``setup`` on, on
the net's device; nothing in a forward or backward reads a device value back to the host.
"""

from __future__ import annotations

import numpy as np

from netspec.core import device as D
from netspec.core.device import kernels
from netspec.core.layer import Layer, count, register, wide_dtype
from netspec.spec import types as T


def _fmt(shape) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


@register("LRN")
class LRN(Layer):
    """Local response normalization across channels or within each channel (Caffe's formulas).

    ACROSS_CHANNELS: ``y = x (k + alpha/n sum x^2)^-beta`` over n neighbouring channels.
    WITHIN_CHANNEL: the same over an n x n spatial window, with k fixed at 1.  4-D input.

    Example::

        {name: norm1, type: LRN, bottom: pool1, local_size: 5, alpha: 0.0001, beta: 0.75}
    """

    inplace = False
    schema = {"properties": {
        "local_size": T.integer(1, default=5, desc="window size (odd)"),
        "alpha": T.number(default=1.0),
        "beta": T.number(default=0.75),
        "k": T.number(default=1.0, desc="ACROSS_CHANNELS only"),
        "norm_region": T.enum(("ACROSS_CHANNELS", "WITHIN_CHANNEL"), default="ACROSS_CHANNELS"),
    }}

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        if len(s) != 4:
            raise self.error(f"needs a 4-D input (N, C, H, W), got {_fmt(s)}", "bottom")
        if self.p.get("local_size", 5) % 2 == 0:
            raise self.error(f"local_size must be odd, got {self.p['local_size']}", "local_size")
        return [tuple(s)]

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0]) * (self.p.get("local_size", 5) + 4)

    def setup(self, bottom, top):
        self.K = kernels("norm")
        n, c, h, w = bottom[0].shape
        self.size = int(self.p.get("local_size", 5))
        self.alpha = float(self.p.get("alpha", 1.0))
        self.beta = float(self.p.get("beta", 0.75))
        self.k = float(self.p.get("k", 1.0))
        self.across = self.p.get("norm_region", "ACROSS_CHANNELS") == "ACROSS_CHANNELS"
        self.dims = (n, c, h * w) if self.across else (n * c, h, w)
        self._scale = D.empty(self.dims, wide_dtype(bottom[0].data))  # k + alpha/n sum x^2, for backward
        self._tmp = D.empty(self.dims, wide_dtype(bottom[0].data))    # kernel scratch

    def forward(self, bottom, top):
        x, y = bottom[0].data.reshape(self.dims), top[0].data.reshape(self.dims)
        if self.across:
            self.K.lrn_across_forward(y, self._scale, x, self.size, self.alpha / self.size, self.beta, self.k)
        else:  # k is ignored: Caffe hard-codes the shift to 1 in this region
            self.K.lrn_within_forward(y, self._scale, self._tmp, x, self.size, self.alpha / self.size ** 2,
                                      self.beta)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y = bottom[0].data.reshape(self.dims), top[0].data.reshape(self.dims)
        dx, dy = bottom[0].grad.reshape(self.dims), top[0].grad.reshape(self.dims)
        if self.across:
            self.K.lrn_across_backward(dx, self._tmp, dy, y, self._scale, x, self.size, self.alpha / self.size,
                                       self.beta)
        else:
            self.K.lrn_within_backward(dx, self._tmp, dy, y, self._scale, x, self.size,
                                       self.alpha / self.size ** 2, self.beta)


@register("BatchNorm")
class BatchNorm(Layer):
    """Normalizes each channel (axis 1) by batch statistics in TRAIN and running ones in TEST.

    No affine part: follow it with ``Scale {bias_term: true}``.  Its three params are Caffe's
    running accumulators (mean, variance, and their normalizer), never trained by the solver:
    each TRAIN forward on batch statistics does ``s = f s + 1``, ``mean = f mean + mu``,
    ``variance = f variance + m/(m-1) var`` (f: moving_average_fraction), and the global mode
    normalizes with ``mean / s`` and ``variance / s``.

    Example::

        {name: bn1, type: BatchNorm, bottom: conv1, top: conv1}
    """

    param_names = ("mean", "variance", "scale_factor")
    fixed_lr_mult = {"mean": 0.0, "variance": 0.0, "scale_factor": 0.0}
    schema = {"properties": {
        "use_global_stats": T.boolean(desc="use the running statistics (default: false in TRAIN, true in TEST)"),
        "moving_average_fraction": T.number(0.0, 1.0, default=0.999, desc="decay of the running statistics"),
        "eps": T.number(exclusive_minimum=0.0, default=1e-5, desc="added to the variance"),
    }}

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        if len(s) < 2:
            raise self.error(f"needs at least 2 axes (N, C, ...), got {_fmt(s)}", "bottom")
        return [tuple(s)]

    def param_shapes(self, bottom_shapes):
        c = bottom_shapes[0][1]
        return {"mean": (c,), "variance": (c,), "scale_factor": (1,)}

    def fillers(self):
        return {p: {"type": "constant", "value": 0.0} for p in self.param_names}

    def flops(self, bottom_shapes, top_shapes):
        return 4 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("norm")
        shape = bottom[0].shape
        c = shape[1]
        self.dims = (shape[0], c, count(shape, 2))
        ug = self.p.get("use_global_stats")
        self.use_global = self.phase == "TEST" if ug is None else bool(ug)
        # The accumulators move only while training on batch statistics.  Caffe also moves
        # them in a TEST-phase layer with use_global_stats: false, and a test net shares them
        # with the train net, so a test pass would change the training state: we do not.
        self.update = self.phase == "TRAIN" and not self.use_global
        self.fraction = float(self.p.get("moving_average_fraction", 0.999))
        self.eps = float(self.p.get("eps", 1e-5))
        m = count(shape) // c
        self.correction = m / (m - 1) if m > 1 else 1.0  # biased -> unbiased variance
        dt = wide_dtype(bottom[0].data)
        self._mean = D.zeros(c, np.float64)      # float64 statistics, whatever the blob dtype
        self._var = D.zeros(c, np.float64)
        self._inv_std = D.zeros(c, np.float64)
        if self.use_global:   # 1 / the running statistics' normalizer, computed where it is
            self._s = D.zeros(1, np.float64)
            self._f = D.zeros(1, dt)
        # the normalized input for backward: top 0 may be overwritten by a later in-place layer
        self._xnorm = None if self.use_global else D.empty(self.dims, dt)
        self._scale = None    # the Scale this layer is fused with (see fuse_next)
        self._ones = D.full(c, 1.0, dt)        # gamma when alone
        self._sums = D.empty((2, c), dt)       # gamma's and beta's, unused alone
        self._bottom_grad = bottom[0].grad.reshape(self.dims)

    def fuse_next(self, nxt, bottom, top, nxt_bottom, nxt_top):
        # BatchNorm on batch statistics, then an in-place per-channel Scale with a learned
        # gamma (Caffe's way of writing PyTorch's BatchNorm2d): this layer writes only xnorm,
        # the Scale computes its top from xnorm, and the Scale's backward gives this layer's
        # bottom gradient directly (both gradients share their two sums over N and S).  Two
        # full passes fewer each way, and no copy of xnorm kept by the Scale.
        if (self._xnorm is None or not isinstance(nxt, Scale) or nxt.two or nxt.dims != self.dims
                or nxt_bottom[0].data.dtype != self._xnorm.dtype):
            return False
        self._scale = nxt
        self.algo = f"fused with {nxt.name}"   # shown by netspec time
        nxt.fuse_batchnorm(self)
        return True

    def forward(self, bottom, top):
        x, y = bottom[0].data.reshape(self.dims), top[0].data.reshape(self.dims)
        mean, var, sf = (self.params[p].data for p in self.param_names)
        if self.use_global:
            # f = 1 / s, or 0 for a fresh net (s == 0: mean 0, variance 0, y = x / sqrt(eps)),
            # without reading s back from a GPU: 1 / s in float64, then rounded to the blob
            # dtype, which is what NumPy does with the Python float 1.0 / float(s)
            np.copyto(self._s, sf)
            np.copyto(self._f, (self._s != 0) / (self._s + (self._s == 0)))
            np.multiply(mean, self._f, out=self._mean)
            np.multiply(var, self._f, out=self._var)
        else:
            self.K.batchnorm_stats(self._mean, self._var, x)
            if self.update:
                sf *= self.fraction
                sf += 1.0
                mean *= self.fraction
                mean += self._mean
                var *= self.fraction
                var += self.correction * self._var
        np.add(self._var, self.eps, out=self._inv_std)
        np.sqrt(self._inv_std, out=self._inv_std)
        np.reciprocal(self._inv_std, out=self._inv_std)
        if self._scale is not None:   # the Scale writes the top
            self.K.batchnorm_normalize(self._xnorm, x, self._mean, self._inv_std)
            return
        self.K.batchnorm_forward(y, y if self._xnorm is None else self._xnorm, x, self._mean, self._inv_std)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self._scale is not None:   # fused: the Scale did it
            return
        dx, dy = bottom[0].grad.reshape(self.dims), top[0].grad.reshape(self.dims)
        if self.use_global:
            self.K.scale_forward(dx, dy, self._inv_std)   # the statistics are constants here
        else:
            self.K.batchnorm_backward(dx, self._sums[0], self._sums[1], dy, self._xnorm, self._ones,
                                      self._inv_std, True)


@register("MVN")
class MVN(Layer):
    """Mean-variance normalization per item and channel (or per item): ``(x - mean) / (std + eps)``.

    Example::

        {name: mvn, type: MVN, bottom: data, normalize_variance: true}
    """

    schema = {"properties": {
        "normalize_variance": T.boolean(True),
        "across_channels": T.boolean(False),
        "eps": T.number(exclusive_minimum=0.0, default=1e-9, desc="added to the standard deviation"),
    }}

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2:
            raise self.error(f"needs at least 2 axes, got {_fmt(bottom_shapes[0])}", "bottom")
        return [tuple(bottom_shapes[0])]

    def flops(self, bottom_shapes, top_shapes):
        return 4 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("norm")
        shape = bottom[0].shape
        rows = shape[0] if self.p.get("across_channels") else shape[0] * shape[1]
        self.dims = (rows, count(shape) // rows)
        self.normalize_variance = bool(self.p.get("normalize_variance", True))
        self.eps = float(self.p.get("eps", 1e-9))
        self._mean = D.zeros(rows, np.float64)
        self._std = D.zeros(rows, np.float64)

    def forward(self, bottom, top):
        self.K.mvn_forward(top[0].data.reshape(self.dims), self._mean, self._std, bottom[0].data.reshape(self.dims),
                           self.normalize_variance, self.eps)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # from the output, as Caffe: in place works
            self.K.mvn_backward(bottom[0].grad.reshape(self.dims), top[0].grad.reshape(self.dims),
                                top[0].data.reshape(self.dims), self._std, self.normalize_variance, self.eps)


def _broadcast_shape(layer, shape, axis_field="axis", num_axes_field="num_axes"):
    """The shape of a Scale/Bias param: ``shape[axis:axis+num_axes]`` (num_axes -1: to the end)."""
    axis = layer.axis(layer.p.get(axis_field, 1), len(shape)) if len(shape) else 0
    na = layer.p.get(num_axes_field, 1)
    if na == -1:
        return tuple(shape[axis:])
    if axis + na > len(shape):
        raise layer.error(f"axis {axis} + num_axes {na} goes past the {len(shape)} axes of {_fmt(shape)}",
                          num_axes_field)
    return tuple(shape[axis:axis + na])


def _affine_dims(layer, shape, operand) -> tuple[int, int, int]:
    """The (outer, D, inner) view of a bottom of ``shape`` for a Scale/Bias operand shape."""
    d = count(operand)
    if d == 1:  # a scalar broadcasts over everything (Caffe treats the axis as 0)
        return 1, 1, count(shape)
    axis = layer.axis(layer.p.get("axis", 1), len(shape))
    return count(shape, 0, axis), d, count(shape, axis + len(operand))


def _check_operand(layer, shape, operand):
    """A second bottom must match ``shape`` at some axis: at ``axis`` (scalars anywhere)."""
    if count(operand) == 1 and len(operand) <= 1:
        return
    axis = layer.axis(layer.p.get("axis", 1), len(shape))
    if tuple(shape[axis:axis + len(operand)]) != tuple(operand):
        raise layer.error(f"bottom 1 {_fmt(operand)} must equal the input's axes from {axis}: "
                          f"{_fmt(shape[axis:axis + len(operand)])}", "bottom")


@register("Scale")
class Scale(Layer):
    """``y = x * gamma (+ beta)``, gamma broadcast over axes ``[axis, axis + num_axes)``.

    With one bottom gamma is learned (param ``scale``); with two, bottom 1 is gamma.
    ``bias_term: true`` adds a learned ``bias``.  Typically follows BatchNorm.

    Example::

        {name: scale1, type: Scale, bottom: conv1, top: conv1, bias_term: true}
    """

    num_bottom = (1, 2)
    param_names = ("scale", "bias")
    filler_fields = {"scale": "filler", "bias": "bias_filler"}
    schema = {"properties": {
        "axis": T.integer(default=1, desc="first axis gamma covers"),
        "num_axes": T.integer(-1, default=1, desc="axes gamma covers (-1: to the end, 0: a scalar)"),
        "filler": T.filler(desc="initial gamma (default constant 1)"),
        "bias_term": T.boolean(False, "also learn a bias"),
        "bias_filler": T.filler(desc="initial bias (default constant 0)"),
    }}

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            _check_operand(self, shape, bottom_shapes[1])
        else:
            _broadcast_shape(self, shape)
        return [tuple(shape)]

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            out = {}
            ps = tuple(bottom_shapes[1])
        else:
            ps = _broadcast_shape(self, shape)
            out = {"scale": ps}
        if self.p.get("bias_term"):
            out["bias"] = ps
        return out

    def fillers(self):
        return {"scale": dict(self.p.get("filler") or {"type": "constant", "value": 1.0}),
                "bias": dict(self.p.get("bias_filler") or {"type": "constant", "value": 0.0})}

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0]) * (2 if self.p.get("bias_term") else 1)

    def setup(self, bottom, top):
        self.K = kernels("norm")
        self.two = len(bottom) == 2
        operand = bottom[1].shape if self.two else self.params["scale"].data.shape
        self.dims = _affine_dims(self, bottom[0].shape, operand)
        self.bias = "bias" in self.params
        dtype = wide_dtype(bottom[0].data)
        self._dscale = D.empty(self.dims[1], dtype)
        self._dbias = D.empty(self.dims[1], dtype)
        # in place, the gradient of gamma needs the input forward overwrote (as Caffe's temp_).
        # Blobs are contiguous, so overlapping bounds mean shared memory (and a false alarm
        # would cost only the copy); CuPy tests bounds without a kernel, where its
        # shares_memory sorts a pointer per element
        in_place = top[0] is bottom[0] or np.may_share_memory(top[0].data, bottom[0].data)
        self._x = D.empty(self.dims, dtype) if in_place else None
        self._bn = None       # the BatchNorm before this layer, when fused with it

    def fuse_batchnorm(self, bn) -> None:
        """Run fused with the BatchNorm before: x is its kept xnorm, and backward goes through it."""
        self._bn = bn
        self._x = None
        self.algo = f"fused with {bn.name}"

    def _gamma(self, bottom) -> np.ndarray:
        return (bottom[1].data if self.two else self.params["scale"].data).reshape(-1)

    def forward(self, bottom, top):
        x, y = bottom[0].data.reshape(self.dims), top[0].data.reshape(self.dims)
        if self._bn is not None:
            x = self._bn._xnorm
        if self._x is not None:  # in place: keep x while writing y
            bias = self.params["bias"].data.reshape(-1) if self.bias else self._dbias
            self.K.scale_keep_forward(y, self._x, x, self._gamma(bottom), bias, self.bias)
        elif self.bias:
            self.K.scale_bias_forward(y, x, self._gamma(bottom), self.params["bias"].data.reshape(-1))
        else:
            self.K.scale_forward(y, x, self._gamma(bottom))

    def backward(self, top, propagate_down, bottom):
        dy = top[0].grad.reshape(self.dims)
        if self._bn is not None:
            self._backward_with_batchnorm(dy)
            return
        need_dx = bool(propagate_down[0])
        need_dgamma = not self.two or bool(propagate_down[1])
        if not (need_dx or need_dgamma or self.bias):
            return
        x = self._x if self._x is not None else bottom[0].data.reshape(self.dims)
        # one kernel: the sums for gamma and beta in one pass over dy, then dx (which may be dy)
        self.K.scale_backward(bottom[0].grad.reshape(self.dims), self._dscale, self._dbias, dy, x,
                              self._gamma(bottom), need_dx, need_dgamma, self.bias)
        if self.bias:
            self.params["bias"].grad.reshape(-1)[...] += self._dbias
        if need_dgamma:
            if self.two:
                bottom[1].grad.reshape(-1)[...] = self._dscale
            else:
                self.params["scale"].grad.reshape(-1)[...] += self._dscale


    def _backward_with_batchnorm(self, dy) -> None:
        bn = self._bn
        need_dx = bool(bn.need_backward and bn.propagate_down[0])
        self.K.batchnorm_backward(bn._bottom_grad, self._dscale, self._dbias, dy, bn._xnorm,
                                        self._gamma(None), bn._inv_std, need_dx)
        self.params["scale"].grad.reshape(-1)[...] += self._dscale
        if self.bias:
            self.params["bias"].grad.reshape(-1)[...] += self._dbias


@register("Bias")
class Bias(Layer):
    """``y = x + beta``, beta broadcast over axes ``[axis, axis + num_axes)``; learned (param ``bias``)
    with one bottom, bottom 1 with two.

    Example::

        {name: bias1, type: Bias, bottom: conv1, top: conv1}
    """

    num_bottom = (1, 2)
    param_names = ("bias",)
    filler_fields = {"bias": "filler"}
    schema = {"properties": {
        "axis": T.integer(default=1),
        "num_axes": T.integer(-1, default=1),
        "filler": T.filler(desc="initial bias (default constant 0)"),
    }}

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            _check_operand(self, shape, bottom_shapes[1])
        else:
            _broadcast_shape(self, shape)
        return [tuple(shape)]

    def param_shapes(self, bottom_shapes):
        if len(bottom_shapes) == 2:
            return {}
        return {"bias": _broadcast_shape(self, bottom_shapes[0])}

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("norm")
        self.two = len(bottom) == 2
        operand = bottom[1].shape if self.two else self.params["bias"].data.shape
        self.dims = _affine_dims(self, bottom[0].shape, operand)
        self._dbias = D.empty(self.dims[1], wide_dtype(bottom[0].data))

    def _beta(self, bottom) -> np.ndarray:
        return (bottom[1].data if self.two else self.params["bias"].data).reshape(-1)

    def forward(self, bottom, top):
        self.K.bias_forward(top[0].data.reshape(self.dims), bottom[0].data.reshape(self.dims), self._beta(bottom))

    def backward(self, top, propagate_down, bottom):
        dy = top[0].grad.reshape(self.dims)
        if not self.two or propagate_down[1]:
            self.K.bias_backward(self._dbias, dy)
            if self.two:
                bottom[1].grad.reshape(-1)[...] = self._dbias
            else:
                self.params["bias"].grad.reshape(-1)[...] += self._dbias
        if propagate_down[0] and bottom[0].grad is not top[0].grad:
            np.copyto(bottom[0].grad, top[0].grad)
