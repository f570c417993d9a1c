"""Element-wise activation layers: same shape in and out, in place allowed (except AbsVal)."""

from __future__ import annotations

from netspec.core.device import kernels
from netspec.core.layer import Layer, count, register
from netspec.spec import types as T


class Neuron(Layer):
    """Base of element-wise layers: one bottom, one top of the same shape."""

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0])


@register("ReLU")
class ReLU(Neuron):
    """Rectified linear unit: ``y = max(x, 0) + negative_slope * min(x, 0)``.

    Example::

        {name: relu1, type: ReLU, bottom: ip1, top: ip1}
    """

    schema = {"properties": {"negative_slope": T.number(default=0.0, desc="slope for x < 0 (leaky ReLU)")}}

    def setup(self, bottom, top):
        self.K = kernels("neuron")
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


@register("TanH")
class TanH(Neuron):
    """Hyperbolic tangent: ``y = tanh(x)``.

    Example::

        {name: tanh1, type: TanH, bottom: ip1, top: ip1}
    """


@register("PReLU")
class PReLU(Neuron):
    """Parametric ReLU: ``y = max(x, 0) + a_c min(x, 0)`` with a learned slope per channel (axis 1).

    Param ``slope``: ``(C,)``, or ``(1,)`` with ``channel_shared: true``.  Needs at least 2 axes.

    Example::

        {name: prelu1, type: PReLU, bottom: conv1, top: conv1, filler: {type: constant, value: 0.25}}
    """

    param_names = ("slope",)
    filler_fields = {"slope": "filler"}
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


@register("ELU")
class ELU(Neuron):
    """Exponential linear unit: ``y = x`` for x > 0, else ``alpha (exp(x) - 1)``.

    Example::

        {name: elu1, type: ELU, bottom: conv1, top: conv1, alpha: 1.0}
    """

    schema = {"properties": {"alpha": T.number(default=1.0, desc="scale of the negative part")}}


@register("Swish")
class Swish(Neuron):
    """Swish: ``y = x * sigmoid(beta x)``.

    Example::

        {name: swish1, type: Swish, bottom: conv1, beta: 1.0}
    """

    schema = {"properties": {"beta": T.number(default=1.0, desc="sharpness of the gate")}}


@register("AbsVal")
class AbsVal(Neuron):
    """Absolute value: ``y = |x|``.  Cannot run in place.

    Example::

        {name: abs1, type: AbsVal, bottom: conv1}
    """

    inplace = False


@register("BNLL")
class BNLL(Neuron):
    """Binomial normal log likelihood (softplus): ``y = log(1 + exp(x))``, computed stably.

    Example::

        {name: bnll1, type: BNLL, bottom: conv1, top: conv1}
    """


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


@register("Log")
class Log(Neuron):
    """``y = log_base(shift + scale * x)``; ``base: -1`` means e.

    Example::

        {name: log1, type: Log, bottom: x, base: -1, scale: 1, shift: 1}
    """

    schema = Exp.schema

    def reshape(self, bottom_shapes):
        b = self.p.get("base", -1.0)
        if b != -1 and (b <= 0 or b == 1):
            raise self.error(f"base must be > 0 and not 1 (or -1 for e), got {b}", "base")
        return [tuple(bottom_shapes[0])]


@register("Threshold")
class Threshold(Neuron):
    """``y = 1 if x > threshold else 0``.  Not differentiable: gives no gradient.

    Example::

        {name: thr, type: Threshold, bottom: x, threshold: 0.5}
    """

    differentiable = False
    schema = {"properties": {"threshold": T.number(default=0.0)}}


@register("Clip")
class Clip(Neuron):
    """``y = min(max(x, min), max)``; the gradient passes where ``min <= x <= max``.

    Example::

        {name: clip1, type: Clip, bottom: x, top: x, min: -1.0, max: 1.0}
    """

    schema = {"properties": {"min": T.number(), "max": T.number()}, "required": ["min", "max"]}

    def reshape(self, bottom_shapes):
        if self.p["min"] > self.p["max"]:
            raise self.error(f"min {self.p['min']} is greater than max {self.p['max']}", "min")
        return [tuple(bottom_shapes[0])]
