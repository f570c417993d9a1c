"""Convolution, Deconvolution and Pooling: schema and shape inference.

Output sizes follow Caffe exactly: convolution floors, pooling ceils by default
(``round_mode``) and drops a last window that would start in the padding.
"""

from __future__ import annotations

import math

from netspec.core.layer import SAME, Layer, count, register
from netspec.errors import SpecError
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
}


class _ConvBase(Layer):
    num_bottom = (1, None)
    num_top = SAME
    param_names = ("weight", "bias")
    filler_fields = {"weight": "weight_filler", "bias": "bias_filler"}
    schema = {"properties": CONV_PROPS, "required": ["num_output"], **HW_RULES}
    inplace = False

    @classmethod
    def normalize(cls, fields: dict) -> dict:
        return normalize_hw(fields)

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


def pooled_size(size: int, k: int, pad: int, stride: int, ceil_mode: bool) -> int:
    """Caffe's pooled output size, including the rule that the last window starts inside."""
    if ceil_mode:
        out = int(math.ceil((size + 2 * pad - k) / stride)) + 1
    else:
        out = (size + 2 * pad - k) // stride + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(Layer):
    """Max or average pooling over 2-D windows.

    Bottom ``(N, C, H, W)`` -> top ``(N, C, H', W')``, ``H' = ceil((H + 2 pad - k) / stride) + 1``
    (``round_mode: FLOOR`` floors), minus one when the last window would start in the padding.
    MAX may give a second top: the argmax index ``h * W + w`` of each output.

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
