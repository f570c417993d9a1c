"""Normalization and affine layers: LRN, BatchNorm, MVN, Scale, Bias (schema and shapes)."""

from __future__ import annotations

from netspec.core.layer import Layer, count, register
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


@register("BatchNorm")
class BatchNorm(Layer):
    """Normalizes each channel (axis 1) by batch statistics in TRAIN and running ones in TEST.

    No affine part: follow it with ``Scale {bias_term: true}``.  Its three params are Caffe's
    running accumulators (mean, variance, and their normalizer), never trained by the solver.

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
