"""Element-wise activation layers: same shape in and out, in place allowed (except AbsVal).

Each layer runs one kernel of ``netspec.kernels.<device>.neuron`` over the flat blob.  Where
the gradient is a function of the output (ReLU, Sigmoid, TanH, ELU, Swish, Exp) backward
reads the top, as Caffe does, so it works in place.  Where it needs the input (PReLU, Power,
Log, Clip), a layer run in place keeps a copy of its input, as Caffe's PReLU does (Caffe's
Power, Log and Clip read the overwritten bottom instead, which gives wrong gradients).  BNLL
in place takes its gradient from the output: sigmoid(x) = 1 - exp(-y).

Layers never know the device: kernels come from ``kernels("neuron")`` and scratch buffers (the
saved input, PReLU's slope sums, Swish's gate) are made on the current device in ``setup``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from netspec.core import device as D
from netspec.core.device import kernels
from netspec.core.layer import Layer, count, register, wide_dtype
from netspec.spec import types as T


class Neuron(Layer):
    """Base of element-wise layers: one bottom, one top of the same shape."""

    #: backward reads the input: keep a copy of it when top 0 is bottom 0
    keeps_input: ClassVar[bool] = False

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("neuron")
        # blobs are contiguous, so overlapping bounds mean shared memory: the bounds check is exact
        # here, and on a GPU it costs nothing where CuPy's exact check sorts every element's address
        self.in_place = top[0] is bottom[0] or np.may_share_memory(top[0].data, bottom[0].data)
        self._x = D.empty(bottom[0].count, bottom[0].data.dtype) if self.keeps_input and self.in_place else None

    def save_input(self, bottom) -> None:
        """Copy the input before forward overwrites it (only when it will be needed)."""
        if self._x is not None:
            np.copyto(self._x, bottom[0].data.reshape(-1))

    def input(self, bottom) -> np.ndarray:
        """The flat input as forward saw it."""
        return self._x if self._x is not None else bottom[0].data.reshape(-1)


@register("ReLU")
class ReLU(Neuron):
    """Rectified linear unit: ``y = max(x, 0) + negative_slope * min(x, 0)``.

    Example::

        {name: relu1, type: ReLU, bottom: ip1, top: ip1}
    """

    schema = {"properties": {"negative_slope": T.number(default=0.0, desc="slope for x < 0 (leaky ReLU)")}}

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.slope = float(self.p.get("negative_slope", 0.0))

    def forward(self, bottom, top):
        self.K.relu_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.slope)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.relu_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1),
                                 top[0].data.reshape(-1), self.slope)


@register("Sigmoid")
class Sigmoid(Neuron):
    """Logistic function: ``y = 1 / (1 + exp(-x))``.

    Example::

        {name: sig1, type: Sigmoid, bottom: ip1, top: ip1}
    """

    def forward(self, bottom, top):
        self.K.sigmoid_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.sigmoid_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), top[0].data.reshape(-1))


@register("TanH")
class TanH(Neuron):
    """Hyperbolic tangent: ``y = tanh(x)``.

    Example::

        {name: tanh1, type: TanH, bottom: ip1, top: ip1}
    """

    def forward(self, bottom, top):
        self.K.tanh_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.tanh_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), top[0].data.reshape(-1))


@register("PReLU")
class PReLU(Neuron):
    """Parametric ReLU: ``y = max(x, 0) + a_c min(x, 0)`` with a learned slope per channel (axis 1).

    Param ``slope``: ``(C,)``, or ``(1,)`` with ``channel_shared: true``.  Needs at least 2 axes.

    Example::

        {name: prelu1, type: PReLU, bottom: conv1, top: conv1, filler: {type: constant, value: 0.25}}
    """

    param_names = ("slope",)
    filler_fields = {"slope": "filler"}
    keeps_input = True    # the slope gradient needs x (Caffe keeps bottom_memory_ likewise)
    schema = {"properties": {
        "filler": T.filler(desc="initial slopes (default constant 0.25)"),
        "channel_shared": T.boolean(False, "one slope for all channels"),
    }}

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2:
            raise self.error(f"needs an input with at least 2 axes, got {list(bottom_shapes[0])}", "bottom")
        return [tuple(bottom_shapes[0])]

    def param_shapes(self, bottom_shapes):
        return {"slope": (1,) if self.p.get("channel_shared") else (bottom_shapes[0][1],)}

    def fillers(self):
        return {"slope": dict(self.p.get("filler") or {"type": "constant", "value": 0.25})}

    def setup(self, bottom, top):
        super().setup(bottom, top)
        shape = bottom[0].shape
        self.dims = (shape[0], shape[1], count(shape, 2))
        self.div = shape[1] if self.p.get("channel_shared") else 1   # channel -> slope index divisor
        self._dslope = D.empty(shape[1], wide_dtype(bottom[0].data))  # per-channel slope grads

    def forward(self, bottom, top):
        self.save_input(bottom)
        self.K.prelu_forward(top[0].data.reshape(self.dims), bottom[0].data.reshape(self.dims),
                             self.params["slope"].data.reshape(-1), self.div)

    def backward(self, top, propagate_down, bottom):
        slope = self.params["slope"]
        self.K.prelu_backward(bottom[0].grad.reshape(self.dims), self._dslope, top[0].grad.reshape(self.dims),
                              self.input(bottom).reshape(self.dims), slope.data.reshape(-1), self.div,
                              bool(propagate_down[0]))
        if self.div == 1:
            slope.grad += self._dslope
        else:
            slope.grad += self._dslope.sum()


@register("ELU")
class ELU(Neuron):
    """Exponential linear unit: ``y = x`` for x > 0, else ``alpha (exp(x) - 1)``.

    Example::

        {name: elu1, type: ELU, bottom: conv1, top: conv1, alpha: 1.0}
    """

    schema = {"properties": {"alpha": T.number(default=1.0, desc="scale of the negative part")}}

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.alpha = float(self.p.get("alpha", 1.0))

    def forward(self, bottom, top):
        self.K.elu_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.alpha)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # in place the bottom data is the output, whose sign is the input's (alpha > 0)
            self.K.elu_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), top[0].data.reshape(-1),
                                bottom[0].data.reshape(-1), self.alpha)


@register("Swish")
class Swish(Neuron):
    """Swish: ``y = x * sigmoid(beta x)``.

    Example::

        {name: swish1, type: Swish, bottom: conv1, beta: 1.0}
    """

    schema = {"properties": {"beta": T.number(default=1.0, desc="sharpness of the gate")}}

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.beta = float(self.p.get("beta", 1.0))
        self._sig = D.empty(bottom[0].count, wide_dtype(bottom[0].data))  # sigmoid(beta x)

    def forward(self, bottom, top):
        self.K.swish_forward(top[0].data.reshape(-1), self._sig, bottom[0].data.reshape(-1), self.beta)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.swish_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), top[0].data.reshape(-1),
                                  self._sig, self.beta)


@register("AbsVal")
class AbsVal(Neuron):
    """Absolute value: ``y = |x|``.  Cannot run in place.

    Example::

        {name: abs1, type: AbsVal, bottom: conv1}
    """

    inplace = False

    def forward(self, bottom, top):
        self.K.absval_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.absval_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), bottom[0].data.reshape(-1))


@register("BNLL")
class BNLL(Neuron):
    """Binomial normal log likelihood (softplus): ``y = log(1 + exp(x))``, computed stably.

    Example::

        {name: bnll1, type: BNLL, bottom: conv1, top: conv1}
    """

    def forward(self, bottom, top):
        self.K.bnll_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx, dy = bottom[0].grad.reshape(-1), top[0].grad.reshape(-1)
        if self.in_place:
            # Caffe reads the overwritten bottom here (a bug); sigmoid(x) = 1 - exp(-y) is exact
            self.K.bnll_backward_inplace(dx, dy, top[0].data.reshape(-1))
        else:
            self.K.bnll_backward(dx, dy, bottom[0].data.reshape(-1))


@register("Power")
class Power(Neuron):
    """``y = (shift + scale * x) ^ power``.

    Example::

        {name: square, type: Power, bottom: x, power: 2, scale: 1, shift: 0}
    """

    schema = {"properties": {
        "power": T.number(default=1.0),
        "scale": T.number(default=1.0),
        "shift": T.number(default=0.0),
    }}
    keeps_input = True

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.power = float(self.p.get("power", 1.0))
        self.scale = float(self.p.get("scale", 1.0))
        self.shift = float(self.p.get("shift", 0.0))

    def forward(self, bottom, top):
        self.save_input(bottom)
        self.K.power_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.power, self.scale, self.shift)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.power_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), self.input(bottom),
                                  self.power, self.scale, self.shift)


@register("Exp")
class Exp(Neuron):
    """``y = base ^ (shift + scale * x)``; ``base: -1`` means e.

    Example::

        {name: exp1, type: Exp, bottom: x, base: -1, scale: 1, shift: 0}
    """

    schema = {"properties": {
        "base": T.number(default=-1.0, desc="the base (> 0), or -1 for e"),
        "scale": T.number(default=1.0),
        "shift": T.number(default=0.0),
    }}

    def reshape(self, bottom_shapes):
        b = self.p.get("base", -1.0)
        if b != -1 and b <= 0:
            raise self.error(f"base must be > 0 (or -1 for e), got {b}", "base")
        return [tuple(bottom_shapes[0])]

    def setup(self, bottom, top):
        super().setup(bottom, top)
        base, scale, shift = (float(self.p.get(k, d)) for k, d in (("base", -1.0), ("scale", 1.0), ("shift", 0.0)))
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner_scale = log_base * scale
        self.outer_scale = 1.0 if shift == 0 else math.exp(log_base * shift)

    def forward(self, bottom, top):
        self.K.exp_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.inner_scale, self.outer_scale)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.exp_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), top[0].data.reshape(-1),
                                self.inner_scale)


@register("Log")
class Log(Neuron):
    """``y = log_base(shift + scale * x)``; ``base: -1`` means e.

    Example::

        {name: log1, type: Log, bottom: x, base: -1, scale: 1, shift: 1}
    """

    schema = Exp.schema
    keeps_input = True

    def reshape(self, bottom_shapes):
        b = self.p.get("base", -1.0)
        if b != -1 and (b <= 0 or b == 1):
            raise self.error(f"base must be > 0 and not 1 (or -1 for e), got {b}", "base")
        return [tuple(bottom_shapes[0])]

    def setup(self, bottom, top):
        super().setup(bottom, top)
        base = float(self.p.get("base", -1.0))
        self.base_scale = 1.0 if base == -1 else 1.0 / math.log(base)
        self.scale = float(self.p.get("scale", 1.0))
        self.shift = float(self.p.get("shift", 0.0))

    def forward(self, bottom, top):
        self.save_input(bottom)
        self.K.log_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.base_scale, self.scale,
                           self.shift)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.log_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), self.input(bottom),
                                self.base_scale, self.scale, self.shift)


@register("Threshold")
class Threshold(Neuron):
    """``y = 1 if x > threshold else 0``.  Not differentiable: gives no gradient.

    Example::

        {name: thr, type: Threshold, bottom: x, threshold: 0.5}
    """

    differentiable = False
    schema = {"properties": {"threshold": T.number(default=0.0)}}

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.threshold = float(self.p.get("threshold", 0.0))

    def forward(self, bottom, top):
        self.K.threshold_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.threshold)


@register("Clip")
class Clip(Neuron):
    """``y = min(max(x, min), max)``; the gradient passes where ``min <= x <= max``.

    Example::

        {name: clip1, type: Clip, bottom: x, top: x, min: -1.0, max: 1.0}
    """

    schema = {"properties": {"min": T.number(), "max": T.number()}, "required": ["min", "max"]}
    keeps_input = True

    def reshape(self, bottom_shapes):
        if self.p["min"] > self.p["max"]:
            raise self.error(f"min {self.p['min']} is greater than max {self.p['max']}", "min")
        return [tuple(bottom_shapes[0])]

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.lo, self.hi = float(self.p["min"]), float(self.p["max"])

    def forward(self, bottom, top):
        self.save_input(bottom)
        self.K.clip_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.lo, self.hi)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.clip_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), self.input(bottom),
                                 self.lo, self.hi)
