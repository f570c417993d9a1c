"""A netspec net and its weights -> an ONNX model (the derived deploy net, float32).

Each layer becomes the ONNX operators that compute exactly what it computes, or a located error
naming the layer: there is no approximation.  Where ONNX has no single operator with Caffe's
meaning, the layer is written as an exact composition:

- Pooling: Caffe's ceil-mode output size (the last window dropped when it would start in the
  padding) is written as explicit trailing pads with ``ceil_mode=0``, so the window positions are
  Caffe's on every runtime.  AVE divides by the window clipped to ``[-pad, H + pad)``; ONNX's
  ``count_include_pad=1`` divides by the whole window, so where a ceil-mode window runs past the
  padded input the result is multiplied by a constant map ``k_h k_w / divisor`` (exact, and
  absent when every window fits).
- InnerProduct: ``axis: 1`` is Flatten + Gemm; another axis a Reshape + MatMul + Add.
- BatchNorm: the global statistics divided by the scale factor blob, as BatchNormalization
  (unit scale, zero bias: a following Scale layer stays a Mul/Add); without global statistics,
  the batch mean and biased variance as reductions.
- Exp, Log, Power, Swish, Threshold, MVN, WITHIN_CHANNEL LRN: their formulas, operator by operator;
  Crop a Slice at its offsets, Embed a Gather of the weight rows.
- ArgMax (top_k 1) is ONNX's with ``select_last_index=1``: Caffe puts the higher index first
  among equal values.
- No exact equivalent (an error): ArgMax with top_k > 1 (TopK orders ties the other way), STOCHASTIC pooling, Pooling's argmax top, Im2col, and the data and loss layers the deploy
  net does not have.

Initializers are named ``<layer>/<param>`` as in weights files, so the importer gives the same
keys back; graph inputs and outputs are the deploy net's blob names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from netspec.errors import GraphError, NetspecError, WeightsError
from netspec.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, require
from netspec.spec.model import NetSpec

BATCH_DIM = "N"


@dataclass
class Exported:
    model: object                       # onnx.ModelProto
    inputs: dict[str, tuple]            # graph input -> the shape netspec planned (batch included)
    outputs: list[str]
    layers: dict[str, list[str]] = field(default_factory=dict)   # layer -> the ONNX ops it became
    plan: object = None


def deploy_plan(net: NetSpec, batch: int | None = None, level: int | None = None, stages=None):
    """The deploy net, planned without split layers (ONNX tensors fan out by themselves)."""
    from netspec.graph.deploy import derive_deploy
    from netspec.graph.plan import plan

    spec = derive_deploy(net, batch=batch, level=level, stages=stages)
    if not any(l["type"] == "Input" for l in spec.layers) and not any(l["type"] == "Input" for l in net.layers):
        raise net.error(GraphError, "the deploy net has no inputs (no data or Input layer feeds it), so there "
                                    "is nothing to export", field="layers")
    return plan(spec)


def export_model(net: NetSpec, weights: dict[str, np.ndarray], *, opset: int = DEFAULT_OPSET,
                 batch: int | str | None = None, level: int | None = None, stages=None,
                 weights_name: str = "<weights>") -> Exported:
    """The deploy net of ``net`` with ``weights`` ("layer/param" -> array) as an ONNX model.

    ``batch``: None keeps the deploy net's batch, an int fixes it, "dynamic" makes it symbolic.
    The model is checked with ``onnx.checker`` and full shape inference before it is returned.
    """
    onnx = require("onnx", "ONNX export")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise NetspecError(f"opset {opset} is not supported: give one from {MIN_OPSET} to {MAX_OPSET} "
                           f"(default {DEFAULT_OPSET})", field="opset")
    dynamic = batch == "dynamic"
    p = deploy_plan(net, batch=batch if isinstance(batch, int) else None, level=level, stages=stages)
    b = _Builder(onnx, p, weights, weights_name, opset, dynamic)
    b.run()
    model = b.model(net.get("name") or "net")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:   # the checker raises its own ValidationError and InferenceError types
        raise NetspecError(f"the exported model fails onnx.checker: {e}".strip(), file=net.file) from None
    return Exported(model, {n: tuple(p.blobs[n]) for n in p.inputs}, b.output_names, b.ops_of, p)


class _Builder:
    def __init__(self, onnx, p, weights, weights_name, opset, dynamic):
        self.onnx = onnx
        self.h = onnx.helper
        self.plan = p
        self.weights = weights
        self.weights_name = weights_name
        self.opset = opset
        self.dynamic = dynamic
        self.nodes: list = []
        self.inits: list = []
        self.init_names: set[str] = set()
        self.current: dict[str, str] = {}      # netspec blob -> the ONNX tensor holding it now
        self.used: set[str] = set()
        self.ops_of: dict[str, list[str]] = {}
        self.output_names: list[str] = []
        self.lp = None
        # the blob a layer writes last keeps the blob's name; earlier (in-place) writes get versions
        self.last_writer: dict[str, str] = {}
        self.used.update(p.blobs)      # temporaries never take a blob's name
        for lp in p.layers:
            for t in lp.tops:
                self.last_writer[t] = lp.name

    # ---- helpers ------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def tmp(self, what: str) -> str:
        return self.fresh(f"{self.lp.name}/{what}")

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [self.tmp(op.lower())]
        self.nodes.append(self.h.make_node(op, inputs, outputs, name=self.fresh(f"{self.lp.name}:{op}"), **attrs))
        self.ops_of.setdefault(self.lp.name, []).append(op)
        return outputs[0]

    def const(self, what: str, value, dtype=np.float32) -> str:
        name = self.tmp(what)
        self._init(name, np.asarray(value, dtype=dtype))
        return name

    def _init(self, name: str, arr: np.ndarray) -> None:
        from onnx import numpy_helper

        self.used.add(name)
        self.init_names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))

    def param(self, pname: str, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> str:
        """The initializer of this layer's param ``pname`` (its owner's, when shared)."""
        info = next((q for q in self.lp.params if q.name == pname), None)
        if info is None:
            raise self.error(f"has no param '{pname}'")
        key = info.owner or info.key
        if key not in self.weights:
            raise WeightsError(f"the weights have no '{key}' (layer '{self.lp.name}' needs it, shape "
                               f"{list(info.shape)}); export needs every param of the deploy net",
                               file=self.weights_name)
        arr = np.asarray(self.weights[key], dtype=np.float32)
        if arr.size != math.prod(info.shape):
            raise WeightsError(f"'{key}' has shape {list(arr.shape)} but layer '{self.lp.name}' needs "
                               f"{list(info.shape)}", file=self.weights_name)
        arr = arr.reshape(info.shape)
        if transform is None:
            name = key
            if name not in self.init_names:
                self._init(name, arr)
            return name
        return self.const(pname, transform(arr))

    def error(self, msg: str, fld: str | None = None) -> NetspecError:
        return self.lp.spec.error(GraphError, f"cannot be exported to ONNX: {msg}", field=fld)

    def shape_const(self, shape, keep_batch: bool) -> str:
        """A Reshape target; dim 0 copies the input's batch when the layer leaves it alone."""
        dims = list(shape)
        if keep_batch:
            dims[0] = 0
        elif self.dynamic:
            raise self.error(f"it folds the batch axis into others (output {list(shape)}), which a symbolic "
                             f"batch cannot express; export with --batch K")
        return self.const("shape", dims, np.int64)

    # ---- the graph ------------------------------------------------------------------------
    def run(self) -> None:
        for n in self.plan.inputs:
            self.current[n] = n
        for lp in self.plan.layers:
            self.lp = lp
            if lp.type == "Input":
                continue
            fn = getattr(self, "l_" + lp.type, None)
            if fn is None:
                raise self.error(f"ONNX has no operator with the exact meaning of {lp.type}", "type")
            ins = [self.current[b] for b in lp.bottoms]
            outs = []
            for t in lp.tops:
                if self.last_writer[t] == lp.name and t not in self.plan.inputs:
                    outs.append(t)
                else:
                    outs.append(self.fresh(f"{t}/{lp.name}"))
            fn(lp, ins, outs)
            for t, o in zip(lp.tops, outs):
                self.current[t] = o
        self.output_names = [self.current[b] for b in self.plan.outputs]

    def model(self, name: str):
        h, TP = self.h, self.onnx.TensorProto
        inputs = []
        for n in self.plan.inputs:
            shape = list(self.plan.blobs[n])
            if self.dynamic:
                shape[0] = BATCH_DIM
            inputs.append(h.make_tensor_value_info(n, TP.FLOAT, shape))
        outputs = []
        for b, o in zip(self.plan.outputs, self.output_names):
            shape = list(self.plan.blobs[b])
            if self.dynamic and shape:
                shape[0] = BATCH_DIM
            outputs.append(h.make_tensor_value_info(o, TP.FLOAT, shape))
        graph = h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        from netspec import __version__

        model = h.make_model(graph, producer_name="netspec", producer_version=__version__,
                             opset_imports=[h.make_opsetid("", self.opset)])
        model.ir_version = min(model.ir_version, 8 if self.opset <= 17 else 9 if self.opset <= 20 else 10)
        return model

    # ---- layers -----------------------------------------------------------------------------
    def _channel_axis(self, lp, what: str = "axis") -> None:
        ax = lp.spec.get("axis", 1)
        nd = len(lp.bottom_shapes[0])
        if (ax + nd if ax < 0 else ax) != 1:
            raise self.error("ONNX convolutions take channels on axis 1", what)

    def _conv_params(self, lp) -> list[str]:
        has_bias = "bias" in lp.layer.param_shapes(lp.bottom_shapes)
        return [self.param("weight")] + ([self.param("bias")] if has_bias else [])

    def l_Convolution(self, lp, ins, outs):
        self._channel_axis(lp)
        _, _, k, pad, stride, dil = lp.layer.geometry(lp.bottom_shapes[0])
        args = self._conv_params(lp)
        for x, o in zip(ins, outs):
            self.node("Conv", [x] + args, [o], kernel_shape=k, pads=pad + pad, strides=stride, dilations=dil,
                      group=int(lp.spec.get("group", 1)))

    def l_Deconvolution(self, lp, ins, outs):
        self._channel_axis(lp)
        _, _, k, pad, stride, dil = lp.layer.geometry(lp.bottom_shapes[0])
        args = self._conv_params(lp)
        for x, o in zip(ins, outs):
            self.node("ConvTranspose", [x] + args, [o], kernel_shape=k, pads=pad + pad, strides=stride,
                      dilations=dil, group=int(lp.spec.get("group", 1)))

    def l_Pooling(self, lp, ins, outs):
        method = lp.spec.get("pool", "MAX")
        if len(outs) > 1:
            raise self.error("the argmax top has no ONNX equivalent (MaxPool's Indices count over the whole "
                             "tensor, Caffe's within one channel)", "top")
        if method == "STOCHASTIC":
            raise self.error("STOCHASTIC pooling samples; ONNX has no such operator", "pool")
        x, o = ins[0], outs[0]
        if lp.spec.get("global_pooling"):
            self.node("GlobalMaxPool" if method == "MAX" else "GlobalAveragePool", [x], [o])
            return
        shape = lp.bottom_shapes[0]
        k, pad, stride = lp.layer.geometry(shape)
        out_hw = lp.top_shapes[0][2:]
        end = []
        for d, kk, p, s, n in zip(shape[2:], k, pad, stride, out_hw):
            # the trailing pad that makes floor-mode ONNX give Caffe's output size
            end.append(max(p, (n - 1) * s + kk - d - p))
        for e, kk in zip(end, k):
            if e >= kk:
                raise self.error(f"the last window would need a trailing pad of {e} >= kernel {kk}", "stride")
        pads = list(pad) + end
        if method == "MAX":
            self.node("MaxPool", [x], [o], kernel_shape=k, pads=pads, strides=stride)
            return
        div = np.ones(out_hw, np.float64)
        for ax, (d, kk, p, s, n) in enumerate(zip(shape[2:], k, pad, stride, out_hw)):
            start = np.arange(n) * s - p
            size = np.minimum(start + kk, d + p) - start    # Caffe: the window clipped to [-pad, H + pad)
            div = div * (size[:, None] if ax == 0 else size[None, :])
        full = k[0] * k[1]
        if np.all(div == full):
            self.node("AveragePool", [x], [o], kernel_shape=k, pads=pads, strides=stride, count_include_pad=1)
            return
        y = self.node("AveragePool", [x], None, kernel_shape=k, pads=pads, strides=stride, count_include_pad=1)
        self.node("Mul", [y, self.const("divisor", (full / div)[None, None])], [o])

    def l_InnerProduct(self, lp, ins, outs):
        shape = lp.bottom_shapes[0]
        axis = lp.layer.axis(lp.spec.get("axis", 1), len(shape))
        transpose = bool(lp.spec.get("transpose", False))
        has_bias = "bias" in lp.layer.param_shapes(lp.bottom_shapes)
        x, o = ins[0], outs[0]
        if axis == 1:
            if len(shape) != 2:
                x = self.node("Flatten", [x], axis=1)
            args = [x, self.param("weight")] + ([self.param("bias")] if has_bias else [])
            self.node("Gemm", args, [o], transB=0 if transpose else 1)
            return
        k = math.prod(shape[axis:])
        if axis == 0:
            if self.dynamic:
                raise self.error("axis 0 folds the batch into the product, which a symbolic batch cannot "
                                 "express; export with --batch K", "axis")
            x = self.node("Reshape", [x, self.const("shape", [1, k], np.int64)])
        elif len(shape) != axis + 1:
            x = self.node("Reshape", [x, self.shape_const(list(shape[:axis]) + [k], True)])
        w = self.param("weight") if transpose else self.param("weight", lambda a: a.T)
        if not has_bias:
            y = self.node("MatMul", [x, w], None if axis == 0 else [o])
        else:
            y = self.node("MatMul", [x, w])
            y = self.node("Add", [y, self.param("bias")], None if axis == 0 else [o])
        if axis == 0:
            self.node("Reshape", [y, self.const("shape", list(lp.top_shapes[0]), np.int64)], [o])

    def l_ReLU(self, lp, ins, outs):
        slope = float(lp.spec.get("negative_slope", 0.0))
        if slope:
            self.node("LeakyRelu", ins, outs, alpha=slope)
        else:
            self.node("Relu", ins, outs)

    def l_Sigmoid(self, lp, ins, outs):
        self.node("Sigmoid", ins, outs)

    def l_TanH(self, lp, ins, outs):
        self.node("Tanh", ins, outs)

    def l_AbsVal(self, lp, ins, outs):
        self.node("Abs", ins, outs)

    def l_BNLL(self, lp, ins, outs):
        self.node("Softplus", ins, outs)

    def l_ELU(self, lp, ins, outs):
        self.node("Elu", ins, outs, alpha=float(lp.spec.get("alpha", 1.0)))

    def l_Dropout(self, lp, ins, outs):
        # Caffe scales at training time (inverted dropout): the deploy net passes values through
        self.node("Identity", ins, outs)

    def l_Split(self, lp, ins, outs):
        for o in outs:
            self.node("Identity", ins, [o])

    def l_Silence(self, lp, ins, outs):
        pass

    def _affine(self, x: str, scale: float, shift: float, out: str | None = None) -> str:
        """scale x + shift, written as few nodes as the values need (into ``out`` when given)."""
        last = [out] if out is not None else None
        if scale != 1.0:
            x = self.node("Mul", [x, self.const("scale", scale)], last if shift == 0.0 else None)
        if shift != 0.0:
            x = self.node("Add", [x, self.const("shift", shift)], last)
        if out is not None and x != out:
            x = self.node("Identity", [x], [out])
        return x

    def l_Power(self, lp, ins, outs):
        power = float(lp.spec.get("power", 1.0))
        scale, shift = float(lp.spec.get("scale", 1.0)), float(lp.spec.get("shift", 0.0))
        if power == 1.0:
            self._affine(ins[0], scale, shift, outs[0])
            return
        y = self._affine(ins[0], scale, shift)
        self.node("Pow", [y, self.const("power", power)], outs)

    def l_Exp(self, lp, ins, outs):
        base = float(lp.spec.get("base", -1.0))
        ln = 1.0 if base == -1.0 else math.log(base)
        scale, shift = float(lp.spec.get("scale", 1.0)), float(lp.spec.get("shift", 0.0))
        # base^(shift + scale x) = exp(ln(base) shift + ln(base) scale x)
        y = self._affine(ins[0], ln * scale, ln * shift)
        self.node("Exp", [y], outs)

    def l_Log(self, lp, ins, outs):
        base = float(lp.spec.get("base", -1.0))
        scale, shift = float(lp.spec.get("scale", 1.0)), float(lp.spec.get("shift", 0.0))
        y = self.node("Log", [self._affine(ins[0], scale, shift)], outs if base == -1.0 else None)
        if base != -1.0:
            self.node("Mul", [y, self.const("inv_log_base", 1.0 / math.log(base))], outs)

    def l_Swish(self, lp, ins, outs):
        beta = float(lp.spec.get("beta", 1.0))
        g = self.node("Sigmoid", [self._affine(ins[0], beta, 0.0)])
        self.node("Mul", [ins[0], g], outs)

    def l_Clip(self, lp, ins, outs):
        lo, hi = lp.spec.get("min"), lp.spec.get("max")
        args = [ins[0], self.const("min", float(lo)) if lo is not None else "",
                self.const("max", float(hi)) if hi is not None else ""]
        while args[-1] == "":
            args.pop()
        self.node("Clip", args, outs)

    def l_Threshold(self, lp, ins, outs):
        g = self.node("Greater", [ins[0], self.const("threshold", float(lp.spec.get("threshold", 0.0)))])
        self.node("Cast", [g], outs, to=self.onnx.TensorProto.FLOAT)

    def l_PReLU(self, lp, ins, outs):
        nd = len(lp.bottom_shapes[0])
        if lp.spec.get("channel_shared"):
            slope = self.param("slope")
        else:
            slope = self.param("slope", lambda a: a.reshape([-1] + [1] * (nd - 2)))
        self.node("PRelu", [ins[0], slope], outs)

    def l_LRN(self, lp, ins, outs):
        size = int(lp.spec.get("local_size", 5))
        alpha, beta = float(lp.spec.get("alpha", 1.0)), float(lp.spec.get("beta", 0.75))
        k = float(lp.spec.get("k", 1.0))
        if lp.spec.get("norm_region", "ACROSS_CHANNELS") == "ACROSS_CHANNELS":
            # both divide alpha by the window size and centre an odd window on the channel
            self.node("LRN", ins, outs, size=size, alpha=alpha, beta=beta, bias=k)
            return
        # WITHIN_CHANNEL: x (1 + alpha/n^2 sum_window x^2)^-beta, the window padded by (n-1)/2 (k is not used)
        x = ins[0]
        sq = self.node("Mul", [x, x])
        p = (size - 1) // 2
        avg = self.node("AveragePool", [sq], kernel_shape=[size, size], pads=[p] * 4, strides=[1, 1],
                        count_include_pad=1)
        s = self._affine(avg, alpha, 1.0)
        d = self.node("Pow", [s, self.const("neg_beta", -beta)])
        self.node("Mul", [x, d], outs)

    def l_BatchNorm(self, lp, ins, outs):
        global_stats = lp.spec.get("use_global_stats")
        if global_stats is None:
            global_stats = lp.layer.phase != "TRAIN"
        eps = float(lp.spec.get("eps", 1e-5))
        shape = lp.bottom_shapes[0]
        c = shape[1]
        if global_stats:
            info = {q.name: q for q in lp.params}
            key = info["scale_factor"].owner or info["scale_factor"].key
            sf = float(np.asarray(self.weights.get(key, [1.0])).reshape(-1)[0]) if key in self.weights else None
            if sf is None:
                self.param("scale_factor")   # raises the missing-weights error
            f = 0.0 if sf == 0 else 1.0 / sf
            mean = self.param("mean", lambda a: a * np.float32(f))
            var = self.param("variance", lambda a: a * np.float32(f))
            self.node("BatchNormalization", [ins[0], self.const("gamma", np.ones(c)), self.const("beta", np.zeros(c)),
                                             mean, var], outs, epsilon=eps)
            return
        axes = [0] + list(range(2, len(shape)))
        mean = self._reduce_mean(ins[0], axes)
        xc = self.node("Sub", [ins[0], mean])
        var = self._reduce_mean(self.node("Mul", [xc, xc]), axes)
        std = self.node("Sqrt", [self.node("Add", [var, self.const("eps", eps)])])
        self.node("Div", [xc, std], outs)

    def _reduce_mean(self, x: str, axes: list[int], keepdims: int = 1) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const("axes", axes, np.int64)], keepdims=keepdims)
        return self.node("ReduceMean", [x], axes=axes, keepdims=keepdims)

    def _broadcast_shape(self, lp, pshape) -> list[int]:
        """A param of shape ``pshape`` placed at ``axis``: trailing ones to the bottom's rank."""
        nd = len(lp.bottom_shapes[0])
        axis = lp.layer.axis(lp.spec.get("axis", 1), nd)
        return list(pshape) + [1] * (nd - axis - len(pshape))

    def _operand(self, lp, ins, pname: str) -> str:
        """The second bottom (reshaped to broadcast) or the layer's own param."""
        if len(ins) > 1:
            nd = len(lp.bottom_shapes[0])
            axis = lp.layer.axis(lp.spec.get("axis", 1), nd)
            s1 = list(lp.bottom_shapes[1])
            target = s1 + [1] * (nd - axis - len(s1))
            return self.node("Reshape", [ins[1], self.shape_const(target, axis == 0)])
        info = next(q for q in lp.params if q.name == pname)
        return self.param(pname, lambda a: a.reshape(self._broadcast_shape(lp, info.shape)))

    def l_Scale(self, lp, ins, outs):
        has_bias = any(q.name == "bias" for q in lp.params)
        s = self._operand(lp, ins, "scale")
        if not has_bias:
            self.node("Mul", [ins[0], s], outs)
            return
        y = self.node("Mul", [ins[0], s])
        info = next(q for q in lp.params if q.name == "bias")
        b = self.param("bias", lambda a: a.reshape(self._broadcast_shape(lp, info.shape)))
        self.node("Add", [y, b], outs)

    def l_Bias(self, lp, ins, outs):
        self.node("Add", [ins[0], self._operand(lp, ins, "bias")], outs)

    def l_Eltwise(self, lp, ins, outs):
        op = lp.spec.get("operation", "SUM")
        if op == "MAX":
            self.node("Max", ins, outs)
            return
        if op == "PROD":
            y = ins[0]
            for k, x in enumerate(ins[1:], 1):
                y = self.node("Mul", [y, x], outs if k == len(ins) - 1 else None)
            if len(ins) == 1:
                self.node("Identity", ins, outs)
            return
        coeff = lp.spec.get("coeff") or [1.0] * len(ins)
        terms = [x if c == 1.0 else self.node("Mul", [x, self.const("coeff", float(c))]) for x, c in zip(ins, coeff)]
        self.node("Sum", terms, outs)

    def l_Concat(self, lp, ins, outs):
        self.node("Concat", ins, outs, axis=lp.layer.axis(lp.spec.get("axis", 1), len(lp.bottom_shapes[0])))

    def l_Slice(self, lp, ins, outs):
        axis = lp.layer.axis(lp.spec.get("axis", 1), len(lp.bottom_shapes[0]))
        if axis == 0 and self.dynamic:
            raise self.error("it cuts the batch axis, whose size a symbolic batch leaves open; export with "
                             "--batch K", "axis")
        sizes = [s[axis] for s in lp.top_shapes]
        self.node("Split", [ins[0], self.const("split", sizes, np.int64)], outs, axis=axis)

    def l_Softmax(self, lp, ins, outs):
        # opset >= 13: Softmax normalizes over the one axis, as Caffe does
        self.node("Softmax", ins, outs, axis=lp.layer.axis(lp.spec.get("axis", 1), len(lp.bottom_shapes[0])))

    def l_Flatten(self, lp, ins, outs):
        nd = len(lp.bottom_shapes[0])
        axis = lp.layer.axis(lp.spec.get("axis", 1), nd)
        self.node("Reshape", [ins[0], self.shape_const(lp.top_shapes[0], axis >= 1)], outs)

    def l_Reshape(self, lp, ins, outs):
        nd = len(lp.bottom_shapes[0])
        axis = lp.spec.get("axis", 0)
        axis = axis + nd + 1 if axis < 0 else axis
        spec_shape = lp.spec.get("shape") or []
        keeps = axis >= 1 or (bool(spec_shape) and spec_shape[0] == 0)
        self.node("Reshape", [ins[0], self.shape_const(lp.top_shapes[0], keeps)], outs)

    def l_Tile(self, lp, ins, outs):
        nd = len(lp.bottom_shapes[0])
        axis = lp.layer.axis(lp.spec.get("axis", 1), nd)
        reps = [1] * nd
        reps[axis] = int(lp.spec["tiles"])
        self.node("Tile", [ins[0], self.const("repeats", reps, np.int64)], outs)

    def l_Reduction(self, lp, ins, outs):
        op = lp.spec.get("operation", "SUM")
        nd = len(lp.bottom_shapes[0])
        axis = lp.layer.axis(lp.spec.get("axis", 0), nd)
        if axis == 0 and self.dynamic:
            raise self.error("it reduces over the batch axis; export with --batch K", "axis")
        coeff = float(lp.spec.get("coeff", 1.0))
        axes = list(range(axis, nd))
        onnx_op = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceMean"}[op]
        out = outs if coeff == 1.0 else None
        if axes and (onnx_op == "ReduceSum" or self.opset >= 18):
            y = self.node(onnx_op, [ins[0], self.const("axes", axes, np.int64)], out, keepdims=0)
        elif axes:
            y = self.node(onnx_op, [ins[0]], out, axes=axes, keepdims=0)
        else:
            y = self.node("Identity", [ins[0]], out)
        if coeff != 1.0:
            self.node("Mul", [y, self.const("coeff", coeff)], outs)

    def l_MVN(self, lp, ins, outs):
        shape = lp.bottom_shapes[0]
        first = 1 if lp.spec.get("across_channels", False) else 2
        axes = list(range(first, len(shape)))
        if not axes:
            raise self.error(f"it normalizes over no axes for input {list(shape)}")
        x = ins[0]
        scaled = lp.spec.get("normalize_variance", True)
        xc = self.node("Sub", [x, self._reduce_mean(x, axes)], None if scaled else outs)
        if not scaled:
            return
        var = self._reduce_mean(self.node("Mul", [xc, xc]), axes)
        # Caffe adds eps to the standard deviation, not to the variance
        std = self.node("Add", [self.node("Sqrt", [var]), self.const("eps", float(lp.spec.get("eps", 1e-9)))])
        self.node("Div", [xc, std], outs)

    def l_Crop(self, lp, ins, outs):
        shape, ref = lp.bottom_shapes[0], lp.bottom_shapes[1]
        a = lp.layer.axis(lp.spec.get("axis", 2), len(shape))
        if a == 0 and self.dynamic:
            raise self.error("it crops the batch axis; export with --batch K", "axis")
        offs = lp.layer.offsets(shape, ref)
        axes = list(range(a, len(shape)))
        starts = [int(o) for o in offs]
        ends = [o + int(lp.top_shapes[0][i]) for o, i in zip(starts, axes)]
        # the reference bottom gives only its shape, which the plan already fixed
        self.node("Slice", [ins[0], self.const("starts", starts, np.int64), self.const("ends", ends, np.int64),
                            self.const("axes", axes, np.int64)], outs)

    def l_Embed(self, lp, ins, outs):
        # the indices are whole numbers held as floats (netspec checks them in forward): the cast is exact
        idx = self.node("Cast", [ins[0]], to=self.onnx.TensorProto.INT64)
        has_bias = any(q.name == "bias" for q in lp.params)
        y = self.node("Gather", [self.param("weight"), idx], None if has_bias else outs, axis=0)
        if has_bias:
            self.node("Add", [y, self.param("bias")], outs)

    def _reduce_max(self, x: str, axis: int) -> str:
        if self.opset >= 18:
            return self.node("ReduceMax", [x, self.const("axes", [axis], np.int64)], keepdims=1)
        return self.node("ReduceMax", [x], axes=[axis], keepdims=1)

    def l_ArgMax(self, lp, ins, outs):
        if int(lp.spec.get("top_k", 1)) != 1:
            raise self.error("top_k > 1: ONNX TopK puts the lower index first among equal values, Caffe the "
                             "higher", "top_k")
        max_val = bool(lp.spec.get("out_max_val", False))
        f32 = self.onnx.TensorProto.FLOAT
        if "axis" in lp.spec:
            axis = lp.layer.axis(lp.spec["axis"], len(lp.bottom_shapes[0]))
            if max_val:   # with an axis Caffe gives the values alone
                self.node("Identity", [self._reduce_max(ins[0], axis)], outs)
                return
            # Caffe sorts (value, index) pairs descending: the last of equal maxima wins
            idx = self.node("ArgMax", ins, axis=axis, keepdims=1, select_last_index=1)
            self.node("Cast", [idx], outs, to=f32)
            return
        flat = self.node("Reshape", [ins[0], self.const("shape", [0, -1], np.int64)])
        idx = self.node("Cast", [self.node("ArgMax", [flat], axis=1, keepdims=1, select_last_index=1)], to=f32)
        if max_val:   # (N, 2, 1): the index, then the value
            idx = self.node("Concat", [idx, self._reduce_max(flat, 1)], axis=1)
        self.node("Reshape", [idx, self.shape_const(lp.top_shapes[0], True)], outs)
