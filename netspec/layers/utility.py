"""Blob plumbing and small tensor operations: schema and shape inference.

Split, Concat, Slice, Eltwise, Flatten, Reshape, Silence, Softmax, ArgMax, Reduction, Tile, Crop.
"""

from __future__ import annotations

import numpy as np

from netspec.core.device import kernels
from netspec.core.layer import Layer, count, register
from netspec.spec import types as T


def _fmt(shape) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


@register("Split")
class Split(Layer):
    """Copies one blob to several tops; backward sums their gradients.  Inserted automatically
    for every blob read by more than one layer; rarely written by hand.

    Example::

        {name: fork, type: Split, bottom: data, top: [data_a, data_b]}
    """

    num_top = (1, None)
    inplace = False

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * len(self.p["top"])

    def forward(self, bottom, top):
        for t in top:  # tops normally alias the bottom's data (the Net arranges it)
            if t.data is not bottom[0].data:
                t.data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = bottom[0].grad
            np.copyto(g, top[0].grad)
            for t in top[1:]:
                g += t.grad


@register("Concat")
class Concat(Layer):
    """Joins bottoms along ``axis``; every other axis must match.

    Example::

        {name: inception_out, type: Concat, bottom: [b1, b2, b3, b4], axis: 1}
    """

    num_bottom = (1, None)
    inplace = False
    schema = {"properties": {
        "axis": T.integer(default=1, desc="the axis to join along (negative counts from the end)"),
        "concat_dim": T.integer(0, desc="deprecated alias of axis"),
    }, "allOf": [{"not": {"required": ["axis", "concat_dim"]}}]}

    @classmethod
    def normalize(cls, fields):
        f = dict(fields)
        if "concat_dim" in f:
            f["axis"] = f.pop("concat_dim")
        return f

    def reshape(self, bottom_shapes):
        first = bottom_shapes[0]
        axis = self.axis(self.p.get("axis", 1), len(first))
        total = 0
        for j, s in enumerate(bottom_shapes):
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
                raise self.error(f"bottom {j} is {_fmt(s)} but bottom 0 is {_fmt(first)}: all axes except "
                                 f"the concat axis {axis} must match", "bottom")
            total += s[axis]
        out = list(first)
        out[axis] = total
        return [tuple(out)]


@register("Slice")
class Slice(Layer):
    """Cuts a blob along ``axis`` into several tops, at ``slice_point``s or into equal parts.

    Example::

        {name: slice_pair, type: Slice, bottom: pair_data, top: [data, data_p], axis: 1, slice_point: [1]}
    """

    num_top = (1, None)
    inplace = False
    schema = {"properties": {
        "axis": T.integer(default=1, desc="the axis to cut"),
        "slice_dim": T.integer(0, desc="deprecated alias of axis"),
        "slice_point": {"type": ["integer", "array"], "items": T.integer(1), "minimum": 1,
                        "description": "the indices where each new top starts"},
    }, "allOf": [{"not": {"required": ["axis", "slice_dim"]}}]}

    @classmethod
    def normalize(cls, fields):
        f = dict(fields)
        if "slice_dim" in f:
            f["axis"] = f.pop("slice_dim")
        if "slice_point" in f and not isinstance(f["slice_point"], list):
            f["slice_point"] = [f["slice_point"]]
        return f

    def sizes(self, shape) -> list[int]:
        axis = self.axis(self.p.get("axis", 1), len(shape))
        n = len(self.p["top"])
        dim = shape[axis]
        points = self.p.get("slice_point")
        if points:
            if len(points) != n - 1:
                raise self.error(f"{n} tops need {n - 1} slice points, got {len(points)}", "slice_point")
            if any(b <= a for a, b in zip(points, points[1:])) or points[-1] >= dim:
                raise self.error(f"slice points {points} must increase strictly and stay below the axis size {dim}",
                                 "slice_point")
            bounds = [0] + list(points) + [dim]
            return [b - a for a, b in zip(bounds, bounds[1:])]
        if dim % n:
            raise self.error(f"axis {axis} has size {dim}, which does not divide into {n} equal tops; "
                             f"give slice_point", "top")
        return [dim // n] * n

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = self.axis(self.p.get("axis", 1), len(shape))
        out = []
        for size in self.sizes(shape):
            s = list(shape)
            s[axis] = size
            out.append(tuple(s))
        return out


@register("Eltwise")
class Eltwise(Layer):
    """Element-wise SUM (with optional coefficients), PROD or MAX of equally shaped bottoms.

    Example::

        {name: res2a, type: Eltwise, bottom: [res2a_branch1, res2a_branch2c], operation: SUM}
    """

    num_bottom = (2, None)
    inplace = True
    schema = {"properties": {
        "operation": T.enum(("PROD", "SUM", "MAX"), default="SUM"),
        "coeff": {"type": ["number", "array"], "items": T.number(), "description": "SUM only: one per bottom"},
        "stable_prod_grad": T.boolean(True, "PROD: compute the gradient as a product of the others"),
    }}

    @classmethod
    def normalize(cls, fields):
        f = dict(fields)
        if "coeff" in f and not isinstance(f["coeff"], list):
            f["coeff"] = [f["coeff"]]
        return f

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        for j, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != first:
                raise self.error(f"bottom {j} is {_fmt(s)} but bottom 0 is {_fmt(first)}; Eltwise needs equal shapes",
                                 "bottom")
        coeff = self.p.get("coeff")
        if coeff is not None:
            if self.p.get("operation", "SUM") != "SUM":
                raise self.error("coefficients work only with operation SUM", "coeff")
            if len(coeff) != len(bottom_shapes):
                raise self.error(f"needs one coefficient per bottom ({len(bottom_shapes)}), got {len(coeff)}", "coeff")
        return [first]

    def flops(self, bottom_shapes, top_shapes):
        return count(top_shapes[0]) * len(bottom_shapes)


@register("Flatten")
class Flatten(Layer):
    """Collapses axes ``axis`` .. ``end_axis`` into one (a view, no copy).

    Example::

        {name: flat, type: Flatten, bottom: pool5}
    """

    inplace = False
    view = True
    schema = {"properties": {
        "axis": T.integer(default=1, desc="first axis to flatten"),
        "end_axis": T.integer(default=-1, desc="last axis to flatten"),
    }}

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        a = self.axis(self.p.get("axis", 1), len(s))
        e = self.axis(self.p.get("end_axis", -1), len(s), "end_axis")
        if e < a:
            raise self.error(f"end_axis {e} comes before axis {a}", "end_axis")
        return [tuple(s[:a]) + (count(s, a, e + 1),) + tuple(s[e + 1:])]


@register("Reshape")
class Reshape(Layer):
    """Gives a blob a new shape with the same count (a view): ``0`` copies a dimension, ``-1`` is inferred.

    Only axes ``[axis, axis + num_axes)`` are replaced (``num_axes: -1``: to the end).

    Example::

        {name: reshape, type: Reshape, bottom: fc, shape: [0, -1, 4, 4]}
    """

    inplace = False
    view = True
    schema = {"properties": {
        "shape": T.shape("the new shape of the replaced axes"),
        "axis": T.integer(default=0, desc="first axis replaced"),
        "num_axes": T.integer(-1, default=-1, desc="how many axes are replaced (-1: all the rest)"),
    }, "required": ["shape"]}

    def reshape(self, bottom_shapes):
        s = list(bottom_shapes[0])
        spec = list(self.p["shape"])
        axis = self.p.get("axis", 0)
        start = axis if axis >= 0 else len(s) + axis + 1
        if not 0 <= start <= len(s):
            raise self.error(f"axis {axis} is out of range for a {len(s)}-axis input", "axis")
        na = self.p.get("num_axes", -1)
        end = len(s) if na == -1 else start + na
        if end > len(s):
            raise self.error(f"axis {axis} + num_axes {na} goes past the {len(s)} axes of the input", "num_axes")
        if spec.count(-1) > 1:
            raise self.error("at most one dimension may be -1 (inferred)", "shape")
        out = []
        for i, d in enumerate(spec):
            if d == 0:
                if start + i >= len(s):
                    raise self.error(f"dimension {i} is 0 (copy) but the input has no axis {start + i}", "shape")
                out.append(s[start + i])
            else:
                out.append(d)
        new = s[:start] + out + s[end:]
        total = count(s)
        if -1 in new:
            known = count([d for d in new if d != -1])
            if known == 0 or total % known:
                raise self.error(f"cannot infer the -1 dimension: {total} values do not divide by {known}", "shape")
            new[new.index(-1)] = total // known
        if count(new) != total:
            raise self.error(f"the new shape {new} holds {count(new)} values but the input {_fmt(s)} holds {total}",
                             "shape")
        return [tuple(new)]


@register("Silence")
class Silence(Layer):
    """Consumes blobs so they are not net outputs; gives no top and zero gradients.

    Example::

        {name: silence, type: Silence, bottom: [unused_a, unused_b]}
    """

    num_bottom = (1, None)
    num_top = 0

    def reshape(self, bottom_shapes):
        return []


@register("Softmax")
class Softmax(Layer):
    """Softmax along ``axis`` (numerically stable).

    Example::

        {name: prob, type: Softmax, bottom: ip2}
    """

    schema = {"properties": {"axis": T.integer(default=1, desc="the axis that sums to 1")}}

    def reshape(self, bottom_shapes):
        self.axis(self.p.get("axis", 1), len(bottom_shapes[0]))
        return [tuple(bottom_shapes[0])]

    def flops(self, bottom_shapes, top_shapes):
        return 4 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("softmax")
        shape = bottom[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.view = (count(shape, 0, axis), shape[axis], count(shape, axis + 1))

    def forward(self, bottom, top):
        self.K.softmax_forward(top[0].data.reshape(self.view), bottom[0].data.reshape(self.view))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.softmax_backward(bottom[0].grad.reshape(self.view), top[0].grad.reshape(self.view),
                                    top[0].data.reshape(self.view))


@register("ArgMax")
class ArgMax(Layer):
    """Indices (and optionally values) of the ``top_k`` largest entries, per item or along ``axis``.

    Example::

        {name: pred, type: ArgMax, bottom: prob, top_k: 1}
    """

    differentiable = False
    inplace = False
    schema = {"properties": {
        "out_max_val": T.boolean(False, "also give the values"),
        "top_k": T.integer(1, default=1),
        "axis": T.integer(desc="the axis to search (unset: each item flattened)"),
    }}

    def reshape(self, bottom_shapes):
        s = list(bottom_shapes[0])
        k = self.p.get("top_k", 1)
        if "axis" in self.p:
            a = self.axis(self.p["axis"], len(s))
            if k > s[a]:
                raise self.error(f"top_k {k} is larger than axis {a} ({s[a]})", "top_k")
            s[a] = k
            return [tuple(s)]
        if k > count(s, 1):
            raise self.error(f"top_k {k} is larger than the {count(s, 1)} values of each item", "top_k")
        out = [s[0], 2 if self.p.get("out_max_val") else 1, k]
        return [tuple(out)]


@register("Reduction")
class Reduction(Layer):
    """Reduces all axes from ``axis`` on with SUM, ASUM, SUMSQ or MEAN, times ``coeff``.

    Example::

        {name: total, type: Reduction, bottom: x, operation: SUM, axis: 1}
    """

    inplace = False
    schema = {"properties": {
        "operation": T.enum(("SUM", "ASUM", "SUMSQ", "MEAN"), default="SUM"),
        "axis": T.integer(default=0, desc="the first axis reduced; all later axes are reduced too"),
        "coeff": T.number(default=1.0),
    }}

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        a = self.axis(self.p.get("axis", 0), len(s))
        return [tuple(s[:a])]


@register("Tile")
class Tile(Layer):
    """Repeats the block ``x[..., axis:]`` ``tiles`` times along ``axis``.

    Example::

        {name: tile, type: Tile, bottom: x, axis: 1, tiles: 3}
    """

    inplace = False
    schema = {"properties": {"axis": T.integer(default=1), "tiles": T.integer(1)}, "required": ["tiles"]}

    def reshape(self, bottom_shapes):
        s = list(bottom_shapes[0])
        a = self.axis(self.p.get("axis", 1), len(s))
        s[a] *= self.p["tiles"]
        return [tuple(s)]


@register("Crop")
class Crop(Layer):
    """Crops bottom 0 to the shape of bottom 1 on the axes from ``axis`` on, at ``offset``.

    Example::

        {name: score, type: Crop, bottom: [upscore, data], axis: 2, offset: 19}
    """

    num_bottom = 2
    inplace = False
    no_grad_bottoms = (1,)
    schema = {"properties": {
        "axis": T.integer(default=2, desc="the first cropped axis"),
        "offset": {"type": ["integer", "array"], "items": T.integer(0), "minimum": 0,
                   "description": "one offset for all cropped axes, or one per axis (default 0)"},
    }}

    def offsets(self, shape, ref) -> list[int]:
        a = self.axis(self.p.get("axis", 2), len(shape))
        n = len(shape) - a
        off = self.p.get("offset", 0)
        offs = off if isinstance(off, list) else [off]
        if len(offs) == 1:
            offs = offs * n
        if len(offs) != n:
            raise self.error(f"gives {len(offs)} offsets for {n} cropped axes; give one, or one per axis", "offset")
        return offs

    def reshape(self, bottom_shapes):
        shape, ref = bottom_shapes
        if len(shape) != len(ref):
            raise self.error(f"both bottoms need the same number of axes: {_fmt(shape)} vs {_fmt(ref)}", "bottom")
        a = self.axis(self.p.get("axis", 2), len(shape))
        offs = self.offsets(shape, ref)
        out = list(shape[:a])
        for i, o in zip(range(a, len(shape)), offs):
            if shape[i] - o < ref[i]:
                raise self.error(f"axis {i}: size {shape[i]} at offset {o} cannot hold the reference size {ref[i]}",
                                 "offset")
            out.append(ref[i])
        return [tuple(out)]
