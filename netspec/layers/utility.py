"""Blob plumbing and small tensor operations: Split, Concat, Slice, Eltwise, Flatten, Reshape,
Silence, Softmax, ArgMax, Reduction, Tile, Crop.

Each layer views its blobs as the 1-D, 2-D or 3-D ``(outer, axis, inner)`` arrays its kernels
take (``netspec/kernels/<device>/utility.py``); reshapes are views, so nothing is copied twice.
"""

from __future__ import annotations

import numpy as np

from netspec.core import device as D
from netspec.core.device import kernels
from netspec.core.layer import Layer, count, register, wide_dtype
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

    def setup(self, bottom, top):
        self.K = kernels("utility")
        shape = top[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.outer, self.total, self.inner = count(shape, 0, axis), shape[axis], count(shape, axis + 1)
        self.sizes = [b.shape[axis] for b in bottom]

    def forward(self, bottom, top):
        out = top[0].data.reshape(self.outer, self.total, self.inner)
        offset = 0
        for b, n in zip(bottom, self.sizes):
            self.K.concat_forward(out, b.data.reshape(self.outer, n, self.inner), offset)
            offset += n

    def backward(self, top, propagate_down, bottom):
        dout = top[0].grad.reshape(self.outer, self.total, self.inner)
        offset = 0
        for b, n, pd in zip(bottom, self.sizes, propagate_down):
            if pd:
                self.K.concat_backward(b.grad.reshape(self.outer, n, self.inner), dout, offset)
            offset += n


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

    def setup(self, bottom, top):
        self.K = kernels("utility")
        shape = bottom[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.outer, self.total, self.inner = count(shape, 0, axis), shape[axis], count(shape, axis + 1)
        self.parts = self.sizes(shape)

    def forward(self, bottom, top):
        inp = bottom[0].data.reshape(self.outer, self.total, self.inner)
        offset = 0
        for t, n in zip(top, self.parts):
            self.K.slice_forward(t.data.reshape(self.outer, n, self.inner), inp, offset)
            offset += n

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dinp = bottom[0].grad.reshape(self.outer, self.total, self.inner)
        offset = 0
        for t, n in zip(top, self.parts):  # the parts tile the axis, so every element is written
            self.K.slice_backward(dinp, t.grad.reshape(self.outer, n, self.inner), offset)
            offset += n


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

    def setup(self, bottom, top):
        self.K = kernels("utility")
        self.op = self.p.get("operation", "SUM")
        # coefficients in the blobs' dtype (float32 for float16 ones), so float32 kernels stay in
        # float32 arithmetic
        dt = wide_dtype(bottom[0].data).type
        self.coeff = [dt(c) for c in (self.p.get("coeff") or [1.0] * len(bottom))]
        self.stable = bool(self.p.get("stable_prod_grad", True))
        size = bottom[0].count
        # scratch lives on the blobs' device (the kernels take device arrays only)
        self.mask = D.zeros(size, dtype=np.int32) if self.op == "MAX" else None
        # in place the top overwrites bottom 0, whose values PROD's backward still needs
        in_place = top[0] is bottom[0]
        self.x0 = D.empty(size, dtype=bottom[0].data.dtype) if self.op == "PROD" and in_place else None

    def forward(self, bottom, top):
        out = top[0].data.reshape(-1)
        xs = [b.data.reshape(-1) for b in bottom]
        # bottom 0 and 1 first: in place, ``out`` is bottom 0, and every kernel reads an
        # element before it writes that element
        if self.op == "SUM":
            self.K.eltwise_sum_forward(out, xs[0], xs[1], self.coeff[0], self.coeff[1])
            for x, c in zip(xs[2:], self.coeff[2:]):
                self.K.axpy(out, x, c)
        elif self.op == "PROD":
            if self.x0 is not None:
                self.K.copy(self.x0, xs[0])
            self.K.mul(out, xs[0], xs[1])
            for x in xs[2:]:
                self.K.mul(out, out, x)
        else:
            self.K.eltwise_max_forward(out, self.mask, xs[0], xs[1])
            for j, x in enumerate(xs[2:], 2):
                self.K.eltwise_max_next(out, self.mask, x, j)

    def backward(self, top, propagate_down, bottom):
        dout = top[0].grad.reshape(-1)
        xs = [b.data.reshape(-1) for b in bottom]
        if self.x0 is not None:
            xs[0] = self.x0
        # bottom 0 last: in place its gradient array is the top's
        for j in list(range(1, len(bottom))) + [0]:
            if not propagate_down[j]:
                continue
            dinp = bottom[j].grad.reshape(-1)
            if self.op == "SUM":
                self.K.scale(dinp, dout, self.coeff[j])
            elif self.op == "MAX":
                self.K.eltwise_max_backward(dinp, dout, self.mask, j)
            elif self.stable:  # dy times the product of the other bottoms
                others = [x for i, x in enumerate(xs) if i != j]
                self.K.mul(dinp, dout, others[0])
                for x in others[1:]:
                    self.K.mul(dinp, dinp, x)
            else:
                self.K.eltwise_prod_quotient_backward(dinp, dout, top[0].data.reshape(-1), xs[j])


class _ViewLayer(Layer):
    """Top 0 is bottom 0 under another shape.  The Net makes the top a view of the bottom's data
    and grad (``view = True``), so there is nothing to move; when the top is a separate array
    (a caller that allocates its own), forward and backward copy."""

    inplace = False
    view = True

    def setup(self, bottom, top):
        self.K = kernels("utility")
        self.copy_data = not np.may_share_memory(top[0].data, bottom[0].data)
        self.copy_grad = not np.may_share_memory(top[0].grad, bottom[0].grad)

    def forward(self, bottom, top):
        if self.copy_data:
            self.K.copy(top[0].data.reshape(-1), bottom[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and self.copy_grad:
            self.K.copy(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1))


@register("Flatten")
class Flatten(_ViewLayer):
    """Collapses axes ``axis`` .. ``end_axis`` into one (a view, no copy).

    Example::

        {name: flat, type: Flatten, bottom: pool5}
    """

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
class Reshape(_ViewLayer):
    """Gives a blob a new shape with the same count (a view): ``0`` copies a dimension, ``-1`` is inferred.

    Only axes ``[axis, axis + num_axes)`` are replaced (``num_axes: -1``: to the end).

    Example::

        {name: reshape, type: Reshape, bottom: fc, shape: [0, -1, 4, 4]}
    """

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

    def setup(self, bottom, top):
        self.K = kernels("utility")

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, pd in zip(bottom, propagate_down):
            if pd:
                self.K.fill_zero(b.grad.reshape(-1))


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
        # Caffe pads the top to at least 3 axes and keeps the bottom's axis count beyond that
        out = [1] * max(len(s), 3)
        out[0], out[1], out[2] = s[0], 2 if self.p.get("out_max_val") else 1, k
        return [tuple(out)]

    def setup(self, bottom, top):
        self.K = kernels("utility")
        shape = bottom[0].shape
        self.k = int(self.p.get("top_k", 1))
        self.out_max_val = bool(self.p.get("out_max_val", False))
        self.has_axis = "axis" in self.p
        if self.has_axis:
            a = self.axis(self.p["axis"], len(shape))
            self.outer, self.dim, self.inner = count(shape, 0, a), shape[a], count(shape, a + 1)
        else:
            self.outer, self.dim, self.inner = shape[0], count(shape, 1), 1
        # receives whichever of indices / values the top does not hold (on the blobs' device)
        self.scratch = D.empty((self.outer, self.k, self.inner), dtype=wide_dtype(bottom[0].data))

    def forward(self, bottom, top):
        inp = bottom[0].data.reshape(self.outer, self.dim, self.inner)
        if self.has_axis:
            t = top[0].data.reshape(self.outer, self.k, self.inner)
            ind, val = (self.scratch, t) if self.out_max_val else (t, self.scratch)
        else:
            t = top[0].data.reshape(self.outer, -1, self.k)  # (N, 1 or 2, top_k): indices, then values
            ind = t[:, 0, :, np.newaxis]
            val = t[:, 1, :, np.newaxis] if self.out_max_val else self.scratch
        self.K.argmax_forward(ind, val, inp, self.k)


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

    OPS = {"SUM": 0, "MEAN": 0, "ASUM": 1, "SUMSQ": 2}  # kernel codes; MEAN is SUM with coeff / dim

    def reshape(self, bottom_shapes):
        s = bottom_shapes[0]
        a = self.axis(self.p.get("axis", 0), len(s))
        return [tuple(s[:a])]

    def flops(self, bottom_shapes, top_shapes):
        return count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("utility")
        shape = bottom[0].shape
        a = self.axis(self.p.get("axis", 0), len(shape))
        self.num, self.dim = count(shape, 0, a), count(shape, a)
        op = self.p.get("operation", "SUM")
        self.op = self.OPS[op]
        self.coeff = float(self.p.get("coeff", 1.0))
        if op == "MEAN" and self.dim:
            self.coeff /= self.dim

    def forward(self, bottom, top):
        self.K.reduction_forward(top[0].data.reshape(self.num), bottom[0].data.reshape(self.num, self.dim),
                                 self.op, self.coeff)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.reduction_backward(bottom[0].grad.reshape(self.num, self.dim), top[0].grad.reshape(self.num),
                                      bottom[0].data.reshape(self.num, self.dim), self.op, self.coeff)


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

    def setup(self, bottom, top):
        self.K = kernels("utility")
        shape = bottom[0].shape
        a = self.axis(self.p.get("axis", 1), len(shape))
        self.outer, self.inner, self.tiles = count(shape, 0, a), count(shape, a), int(self.p["tiles"])

    def forward(self, bottom, top):
        self.K.tile_forward(top[0].data.reshape(self.outer, self.tiles, self.inner),
                            bottom[0].data.reshape(self.outer, self.inner))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.tile_backward(bottom[0].grad.reshape(self.outer, self.inner),
                                 top[0].grad.reshape(self.outer, self.tiles, self.inner))


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

    def setup(self, bottom, top):
        self.K = kernels("utility")
        shape, out = bottom[0].shape, top[0].shape
        a = self.axis(self.p.get("axis", 2), len(shape))
        offs = [0] * a + self.offsets(shape, bottom[1].shape)
        # flat position in bottom 0 of every top element, built once by broadcasting per axis
        index = np.zeros(out, dtype=np.int64)
        for d in range(len(shape)):
            pos = (np.arange(out[d], dtype=np.int64) + offs[d]) * count(shape, d + 1)
            index += pos.reshape([-1 if e == d else 1 for e in range(len(shape))])
        self.index = D.asarray(index.reshape(-1))   # the kernels' copy, on the blobs' device

    def forward(self, bottom, top):
        self.K.crop_forward(top[0].data.reshape(-1), bottom[0].data.reshape(-1), self.index)

    def backward(self, top, propagate_down, bottom):
        # the reference bottom (1) only gives the shape: it never receives a gradient
        if propagate_down[0]:
            self.K.crop_backward(bottom[0].grad.reshape(-1), top[0].grad.reshape(-1), self.index)
