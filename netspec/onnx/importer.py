"""An ONNX model -> a netspec net (YAML) and its weights, with the Caffe converter's report.

The operators netspec can express exactly become layers; every other operator is an error that
names its node, all of them reported together.  Shapes come from ONNX shape inference (with a
symbolic batch read as 1), so each decision is made on the real tensor shapes:

- Conv/ConvTranspose with symmetric pads -> Convolution/Deconvolution; Gemm and MatMul by a
  constant (with a following Add of a bias) -> InnerProduct, a preceding Flatten folded in.
- MaxPool/AveragePool -> Pooling with Caffe's CEIL or FLOOR rounding, whichever gives ONNX's
  windows; where the divisors differ (``count_include_pad=0`` over padding, Caffe's clipped
  overhang), a Scale layer with the constant map ``caffe divisor / onnx divisor`` follows.
- BatchNormalization -> BatchNorm (global statistics, scale factor 1) + Scale (gamma, beta)
  unless gamma is 1 and beta 0.
- Add/Sub/Mul/Div by a constant -> Bias/Scale over the axes the constant spans (a scalar:
  Power); of two tensors of one shape -> Eltwise.
- Flatten, Reshape, Squeeze, Unsqueeze -> Flatten or Reshape to the inferred shape (the batch copied);
  Identity and Dropout are passed through.

Params are named ``<layer>/<param>`` as in netspec's weights files; a model netspec exported
keeps its layer names (from its ``<layer>/<param>`` initializers and ``<layer>:<op>`` nodes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netspec.caffe.emit import Item, net_document
from netspec.caffe.report import Report
from netspec.errors import NetspecError, SpecError, raise_all
from netspec.onnx import require

ELEMENTWISE = {"Relu": ("ReLU", {}), "Sigmoid": ("Sigmoid", {}), "Tanh": ("TanH", {}), "Abs": ("AbsVal", {}),
               "Softplus": ("BNLL", {}), "Exp": ("Exp", {}), "Log": ("Log", {}),
               "Sqrt": ("Power", {"power": 0.5}), "Neg": ("Power", {"scale": -1.0}),
               "Reciprocal": ("Power", {"power": -1.0})}
IN_PLACE = {"ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "PReLU", "Clip", "Power", "Exp", "Log"}


@dataclass
class ConvertedOnnx:
    text: str                          # the YAML
    net: Any                           # the loaded NetSpec
    weights: dict[str, np.ndarray]
    report: Report


def read_model(path: str | os.PathLike):
    """Load and check an .onnx file; a located SpecError for anything that is not a valid model."""
    onnx = require("onnx", "ONNX import")
    from netspec.spec.load import display_name

    p = Path(path)
    name = display_name(p)
    if not p.is_file():
        raise SpecError("no such file" if not p.exists() else "is not a file", file=name)
    raw = p.read_bytes()
    if not raw:
        raise SpecError("is empty, not an ONNX model", file=name)
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as e:   # protobuf's DecodeError, or onnx's own on external data
        raise SpecError(f"is not a readable ONNX model (truncated or not protobuf: {_first_line(e)})",
                        file=name) from None
    if not model.graph.node and not model.graph.output:
        raise SpecError("is not an ONNX model: it parses, but has no graph (a truncated or unrelated file?)",
                        file=name)
    try:
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(p.resolve().parent))
        onnx.checker.check_model(model)
    except Exception as e:
        raise SpecError(f"is not a valid ONNX model: {_first_line(e)}", file=name) from None
    return model


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0] if len(text.splitlines()) < 4 else " ".join(text.split())[:300]


def convert_onnx_file(path: str | os.PathLike, out_path: Path | None = None,
                      weights_path: Path | None = None) -> ConvertedOnnx:
    from netspec.spec.load import display_name

    model = read_model(path)
    return convert_model(model, display_name(path), out_path, weights_path)


def convert_model(model, file: str = "<model.onnx>", out_path: Path | None = None,
                  weights_path: Path | None = None) -> ConvertedOnnx:
    """The netspec net and weights of a checked ModelProto."""
    from netspec import api
    from netspec.spec.load import display_name

    conv = _Converter(model, file)
    conv.run()
    report = conv.report
    out_name = display_name(out_path) if out_path is not None else f"<{Path(file).stem}.yaml>"
    header = [f" converted by netspec from {Path(file).name} (ONNX opset {conv.opset}"
              + (f", made by {model.producer_name} {model.producer_version}".rstrip() if model.producer_name else "")
              + ")"]
    if weights_path is not None:
        header.append(f" weights: {weights_path.name}")
    top = Item({"netspec": 1, "name": model.graph.name or Path(file).stem})
    from netspec.caffe.convert_net import _chain_defaults, _LayerItem

    items = [_LayerItem(Item(dict(f)), 0) for f in conv.layers]
    _chain_defaults(items)
    text = net_document(header, top, [it.item for it in items])
    base_dir = out_path.resolve().parent if out_path is not None else Path.cwd()
    try:
        net = api.load_net_text(text, file=out_name, base_dir=base_dir)
        api.check(net)
    except NetspecError as e:
        raise NetspecError(f"the converted net is not valid netspec: {e}", file=file) from None
    report.output = out_name if out_path is not None else None
    report.summary["layers"] = len(conv.layers)
    report.summary["params"] = int(sum(a.size for a in conv.weights.values()))
    return ConvertedOnnx(text, net, conv.weights, report)


class _Converter:
    def __init__(self, model, file: str):
        self.onnx = require("onnx", "ONNX import")
        from onnx import numpy_helper

        self.nh = numpy_helper
        self.model = model
        self.file = file
        self.report = Report(file, "net")
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        g = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.layers: list[dict] = []
        self.weights: dict[str, np.ndarray] = {}
        self.names: set[str] = set()
        self.alias: dict[str, str] = {}          # ONNX tensor -> the tensor it passes through (Identity)
        self.tensor_blob: dict[str, str] = {}    # ONNX tensor -> its netspec blob
        self.blob_names: set[str] = set()
        self.io_names = {i.name for i in g.input} | {o.name for o in g.output}
        self.outputs = [o.name for o in g.output]
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.shapes = self._infer_shapes()
        self.skip: set[int] = set()               # nodes folded into an earlier layer
        self.fold_flatten: dict[str, str] = {}    # Flatten output -> its input, when a Gemm absorbs it

    # ---- shapes ---------------------------------------------------------------------------
    def _infer_shapes(self) -> dict[str, tuple]:
        onnx = self.onnx
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        self.inputs: list[tuple[str, list[int]]] = []
        errors = []
        for vi in m.graph.input:
            if vi.name in self.consts:
                continue
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
                errors.append(SpecError(f"graph input '{vi.name}' has no tensor shape", file=self.file))
                continue
            if tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
                errors.append(SpecError(f"graph input '{vi.name}' is of type "
                                        f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; netspec nets take "
                                        f"floating-point inputs", file=self.file))
                continue
            dims = []
            for k, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                elif k == 0:
                    dims.append(1)      # a symbolic batch: netspec's Input gets batch 1
                    self.report.note(f"input '{vi.name}'", f"the batch axis is symbolic ({d.dim_param or '?'}): the "
                                                          f"Input layer is written with batch 1; edit its shape for "
                                                          f"another", field="shape")
                    d.Clear()
                    d.dim_value = 1
                else:
                    errors.append(SpecError(f"graph input '{vi.name}' has a symbolic size on axis {k} "
                                            f"({d.dim_param or '?'}); netspec needs every axis but the batch "
                                            f"fixed", file=self.file))
            self.inputs.append((vi.name, dims))
        raise_all(errors)
        for vi in list(m.graph.output):
            m.graph.output.remove(vi)
            m.graph.output.append(onnx.helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, None))
        del m.graph.value_info[:]
        try:
            m = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        except Exception as e:
            raise SpecError(f"ONNX shape inference fails on this model: {_first_line(e)}", file=self.file) from None
        shapes = {}
        for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        for name, a in self.consts.items():
            shapes[name] = tuple(a.shape)
        return shapes

    # ---- helpers ----------------------------------------------------------------------------
    def shape(self, tensor: str, node) -> tuple:
        if tensor not in self.shapes:
            raise self.err(node, f"the shape of '{tensor}' cannot be inferred")
        return self.shapes[tensor]

    def err(self, node, msg: str) -> SpecError:
        return SpecError(f"node '{node.name or node.output[0]}' ({node.op_type}): {msg}", file=self.file)

    def where(self, node) -> str:
        return f"node '{node.name or node.output[0]}' ({node.op_type})"

    def attrs(self, node) -> dict:
        out = {}
        for a in node.attribute:
            v = self.onnx.helper.get_attribute_value(a)
            if isinstance(v, float):
                # ONNX keeps float32: its shortest decimal (0.1, not 0.10000000149011612) is the same value
                v = float(str(np.float32(v)))
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def blob(self, tensor: str) -> str:
        tensor = self.alias.get(tensor, tensor)
        return self.tensor_blob.get(tensor, tensor)

    def name_blob(self, tensor: str, layer: str) -> str:
        """The blob for an ONNX tensor: graph inputs and outputs keep their names, the others take
        their layer's name (as hand-written nets name blobs)."""
        if tensor in self.io_names:
            blob = tensor
        else:
            blob, k = layer, 1
            while blob in self.blob_names or blob in self.io_names:
                k += 1
                blob = f"{layer}_{k}"
        self.blob_names.add(blob)
        self.tensor_blob[tensor] = blob
        return blob

    def layer_name(self, node, params: list[str] = ()) -> str:
        base = None
        for p in params:
            if "/" in p and p.rsplit("/", 1)[0] not in self.names:
                base = p.rsplit("/", 1)[0]
                break
        if base is None:
            base = _node_base(node)
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", base).strip("_") or node.op_type.lower()
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def add(self, node, ltype: str, bottoms: list[str], top: str, fields: dict | None = None,
            params: dict[str, np.ndarray] | None = None, mapped: dict[str, str] | None = None,
            ignored: dict[str, str] | None = None, name: str | None = None) -> str:
        pnames = [node.input[k] for k in range(1, len(node.input)) if node.input[k] in self.consts]
        name = name or self.layer_name(node, pnames)
        bots = [self.blob(b) for b in bottoms]
        if ltype in IN_PLACE and len(bottoms) == 1 and self._only_consumer(bottoms[0], node) \
                and not any(l["type"] == "Input" and bots[0] in l["top"] for l in self.layers) \
                and any(bots[0] in l["top"] for l in self.layers):
            # an activation that alone reads its input runs in place, as hand-written nets do
            old_name = bots[0]
            if top in self.io_names:   # a graph output: the in-place chain takes its name
                for l in self.layers:
                    l["top"] = [top if t == old_name else t for t in l["top"]]
                    l["bottom"] = [top if b == old_name else b for b in l.get("bottom", [])]
                for t, b in list(self.tensor_blob.items()):
                    if b == old_name:
                        self.tensor_blob[t] = top
                self.tensor_blob[top] = top
                bots = [top]
            else:
                self.tensor_blob[top] = old_name
            out = bots[0]
        else:
            out = self.name_blob(top, name)
        f = {"name": name, "type": ltype, "bottom": bots, "top": [out]}
        f.update(fields or {})
        self.layers.append(f)
        for k, v in (params or {}).items():
            self.weights[f"{name}/{k}"] = np.ascontiguousarray(v, dtype=np.float32)
        where = self.where(node)
        self.report.mapped(where, node.op_type, f"layer '{name}' ({ltype})")
        for a, to in (mapped or {}).items():
            self.report.mapped(where, a, to)
        for a, why in (ignored or {}).items():
            self.report.ignored(where, a, why)
        return name

    # ---- the graph ----------------------------------------------------------------------------
    def run(self) -> None:
        g = self.model.graph
        for name, dims in self.inputs:
            self.names.add(name)
            self.layers.append({"name": name, "type": "Input", "top": [name], "shape": dims})
            self.report.mapped(f"input '{name}'", "shape", f"layer '{name}' (Input)")
        for n in g.node:
            if n.op_type == "Constant":
                a = self.attrs(n)
                if "value" not in a:
                    continue
                self.consts[n.output[0]] = self.nh.to_array(a["value"])
                self.shapes[n.output[0]] = tuple(self.consts[n.output[0]].shape)
        errors: list[NetspecError] = []
        for k, n in enumerate(g.node):
            if k in self.skip or n.op_type == "Constant":
                continue
            if n.domain not in ("", "ai.onnx"):
                errors.append(self.err(n, f"operators of domain '{n.domain}' have no netspec layer"))
                continue
            fn = getattr(self, "op_" + n.op_type, None)
            if fn is None:
                errors.append(self.err(n, "netspec has no layer computing this operator"))
                continue
            try:
                fn(n, k)
            except NetspecError as e:
                errors.append(e)
        raise_all(errors)
        # a graph output that is only an alias (an Identity at the end) still needs its name
        for o in self.outputs:
            if o in self.alias:
                self.layers.append({"name": self.layer_name_str(o), "type": "Split", "bottom": [self.blob(o)],
                                    "top": [o]})
            elif o in self.consts:
                raise SpecError(f"graph output '{o}' is a constant; a netspec net computes its outputs",
                                file=self.file)

    def layer_name_str(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", base).strip("_") or "out"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _weight(self, n, k: int, what: str) -> np.ndarray:
        w = self.const(n.input[k]) if len(n.input) > k else None
        if w is None:
            raise self.err(n, f"its {what} ('{n.input[k] if len(n.input) > k else ''}') is computed by the graph; "
                              f"netspec layers learn their {what} as a param, so it must be an initializer")
        return w

    def _sym_pads(self, n, a: dict, nsp: int) -> list[int]:
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
            raise self.err(n, f"auto_pad {a['auto_pad']} has no netspec field; export with explicit pads")
        pads = list(a.get("pads", [0] * 2 * nsp))
        if pads[:nsp] != pads[nsp:]:
            raise self.err(n, f"pads {pads} are asymmetric; Caffe pads both sides alike")
        return pads[:nsp]

    # ---- operators ------------------------------------------------------------------------------
    def op_Conv(self, n, k):
        a = self.attrs(n)
        w = self._weight(n, 1, "weight")
        b = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if len(n.input) > 2 and n.input[2] and b is None:
            self._weight(n, 2, "bias")
        nsp = w.ndim - 2
        pad = self._sym_pads(n, a, nsp)
        f = {"num_output": int(w.shape[0]), "kernel_size": _one(list(w.shape[2:])), "bias_term": b is not None}
        if any(pad):
            f["pad"] = _one(pad)
        if any(s != 1 for s in a.get("strides", [1] * nsp)):
            f["stride"] = _one(list(a["strides"]))
        if any(d != 1 for d in a.get("dilations", [1] * nsp)):
            f["dilation"] = _one(list(a["dilations"]))
        if a.get("group", 1) != 1:
            f["group"] = int(a["group"])
        if b is None:
            f["bias_term"] = False
        else:
            del f["bias_term"]
        params = {"weight": w} | ({"bias": b} if b is not None else {})
        self.add(n, "Convolution", [n.input[0]], n.output[0], f, params,
                 {x: x for x in ("kernel_shape", "pads", "strides", "dilations", "group") if x in a})

    def op_ConvTranspose(self, n, k):
        a = self.attrs(n)
        if any(a.get("output_padding", [])) or "output_shape" in a:
            raise self.err(n, "output_padding/output_shape have no Deconvolution field (Caffe's output size is "
                              "(in - 1) stride - 2 pad + dilated kernel)")
        w = self._weight(n, 1, "weight")
        b = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if len(n.input) > 2 and n.input[2] and b is None:
            self._weight(n, 2, "bias")
        nsp = w.ndim - 2
        g = int(a.get("group", 1))
        pad = self._sym_pads(n, a, nsp)
        f = {"num_output": int(w.shape[1]) * g, "kernel_size": _one(list(w.shape[2:]))}
        if any(pad):
            f["pad"] = _one(pad)
        if any(s != 1 for s in a.get("strides", [1] * nsp)):
            f["stride"] = _one(list(a["strides"]))
        if any(d != 1 for d in a.get("dilations", [1] * nsp)):
            f["dilation"] = _one(list(a["dilations"]))
        if g != 1:
            f["group"] = g
        if b is None:
            f["bias_term"] = False
        params = {"weight": w} | ({"bias": b} if b is not None else {})
        self.add(n, "Deconvolution", [n.input[0]], n.output[0], f, params,
                 {x: x for x in ("kernel_shape", "pads", "strides", "dilations", "group") if x in a})

    def _pool(self, n, method: str):
        a = self.attrs(n)
        x = self.shape(n.input[0], n)
        if len(x) != 4:
            raise self.err(n, f"Caffe pools 4-D blobs only; the input is {list(x)}")
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
            raise self.err(n, f"auto_pad {a['auto_pad']} has no netspec field; export with explicit pads")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.err(n, "dilated pooling has no Caffe equivalent")
        if len(n.output) > 1 and n.output[1]:
            raise self.err(n, "MaxPool's Indices output has no netspec equivalent")
        kern = list(a["kernel_shape"])
        stride = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        begin, end = pads[:2], pads[2:]
        out = self.shape(n.output[0], n)[2:]
        ceil = bool(a.get("ceil_mode", 0))
        for d, kk, pb, pe, s, o in zip(x[2:], kern, begin, end, stride, out):
            floor_out = (d + pb + pe - kk) // s + 1
            if ceil and o != floor_out and method == "AVE":
                raise self.err(n, "ceil_mode windows that run past the padding divide differently in ONNX "
                                  "runtimes; export with ceil_mode=0 and explicit trailing pads")
        if any(pb >= kk for pb, kk in zip(begin, kern)):
            raise self.err(n, f"pads {begin} must be smaller than the kernel {kern} in Caffe")
        # Caffe's windows start at i stride - pad: the same when its pad is ONNX's leading pad,
        # and the count of windows decides CEIL or FLOOR
        mode = None
        for m in ("CEIL", "FLOOR"):
            axes = zip(x[2:], kern, begin, stride, out)
            if all(_caffe_pooled(d, kk, pb, s, m == "CEIL") == o for d, kk, pb, s, o in axes):
                mode = m
                break
        if mode is None:
            raise self.err(n, f"its output size {list(out)} is neither Caffe's CEIL nor FLOOR size for input "
                              f"{list(x)}, kernel {kern}, stride {stride}, pads {pads}")
        f = {"pool": method, "kernel_size": _one(kern)}
        if any(stride_ != 1 for stride_ in stride):
            f["stride"] = _one(stride)
        if any(begin):
            f["pad"] = _one(begin)
        if mode == "FLOOR":
            f["round_mode"] = "FLOOR"
        mapped = {x_: x_ for x_ in ("kernel_shape", "strides", "pads", "ceil_mode") if x_ in a}
        if method == "MAX":
            self.add(n, "Pooling", [n.input[0]], n.output[0], f, mapped=mapped,
                     ignored={"storage_order": "it orders the Indices output, which netspec does not give"}
                     if "storage_order" in a else None)
            return
        include = bool(a.get("count_include_pad", 0))
        d_caffe = np.ones(out, np.float64)
        d_onnx = np.ones(out, np.float64)
        for ax, (d, kk, pb, pe, s, o) in enumerate(zip(x[2:], kern, begin, end, stride, out)):
            start = np.arange(o) * s - pb
            c = np.minimum(start + kk, d + pb) - start
            real = np.minimum(start + kk, d) - np.maximum(start, 0)
            on = np.full(o, float(kk)) if include else real.astype(np.float64)
            d_caffe = d_caffe * (c[:, None] if ax == 0 else c[None, :])
            d_onnx = d_onnx * (on[:, None] if ax == 0 else on[None, :])
        mapped["count_include_pad"] = "count_include_pad"
        if np.array_equal(d_caffe, d_onnx):
            self.add(n, "Pooling", [n.input[0]], n.output[0], f, mapped=mapped)
            return
        ratio = d_caffe / d_onnx
        cons = self.consumers.get(n.output[0], [])
        if len(cons) == 1 and cons[0].op_type == "Mul" and n.output[0] not in self.outputs:
            other = [i for i in cons[0].input if i != n.output[0]]
            c = self.const(other[0]) if len(other) == 1 else None
            if c is not None and c.size == ratio.size and np.allclose(c.reshape(ratio.shape) * ratio, 1.0, rtol=1e-6):
                # netspec's own export: AveragePool over the whole window, then the map back to
                # Caffe's divisors, which is this Pooling layer exactly
                self.skip.add(list(self.model.graph.node).index(cons[0]))
                self.add(n, "Pooling", [n.input[0]], cons[0].output[0], f, mapped=mapped)
                self.report.mapped(self.where(cons[0]), "Mul", "Caffe's AVE divisors (the Pooling layer)")
                return
        mid = n.output[0] + "_caffe_ave"
        name = self.add(n, "Pooling", [n.input[0]], mid, f, mapped=mapped)
        sname = self.layer_name_str(name + "_divisor")
        self.layers.append({"name": sname, "type": "Scale", "bottom": [self.blob(mid)],
                            "top": [self.name_blob(n.output[0], sname)], "axis": 2,
                            "num_axes": 2})
        self.weights[f"{sname}/scale"] = ratio.astype(np.float32)
        by = "the whole window" if include else "the cells inside the input"
        self.report.note(self.where(n), f"ONNX divides by {by}, "
                                        f"Caffe by the window clipped to the padded input: layer '{sname}' "
                                        f"multiplies by the ratio", field="count_include_pad")

    def op_MaxPool(self, n, k):
        self._pool(n, "MAX")

    def op_AveragePool(self, n, k):
        self._pool(n, "AVE")

    def op_GlobalMaxPool(self, n, k):
        self._global(n, "MAX")

    def op_GlobalAveragePool(self, n, k):
        self._global(n, "AVE")

    def _global(self, n, method):
        x = self.shape(n.input[0], n)
        if len(x) != 4:
            raise self.err(n, f"Caffe pools 4-D blobs only; the input is {list(x)}")
        self.add(n, "Pooling", [n.input[0]], n.output[0], {"pool": method, "global_pooling": True})

    def _only_consumer(self, tensor: str, node) -> bool:
        return tensor not in self.outputs and [id(c) for c in self.consumers.get(tensor, [])] == [id(node)]

    def op_Flatten(self, n, k):
        a = self.attrs(n)
        x = self.shape(n.input[0], n)
        axis = a.get("axis", 1)
        axis = axis + len(x) if axis < 0 else axis
        cons = self.consumers.get(n.output[0], [])
        if axis == 1 and len(cons) == 1 and cons[0].op_type == "Gemm" and cons[0].input[0] == n.output[0] \
                and n.output[0] not in self.outputs:
            # InnerProduct flattens from its axis itself
            self.alias[n.output[0]] = self.blob(n.input[0])
            self.report.mapped(self.where(n), "Flatten", "the InnerProduct's axis: 1")
            return
        if axis == 1:
            self.add(n, "Flatten", [n.input[0]], n.output[0], mapped={"axis": "axis"} if "axis" in a else None)
            return
        self._reshape(n)

    def _reshape(self, n):
        x = self.shape(n.input[0], n)
        y = self.shape(n.output[0], n)
        dims = list(y)
        if dims and x and dims[0] == x[0] and self._keeps_batch(n):
            dims[0] = 0
        self.add(n, "Reshape", [n.input[0]], n.output[0], {"shape": dims})

    def _keeps_batch(self, n) -> bool:
        a = self.attrs(n)
        if n.op_type == "Flatten":
            return a.get("axis", 1) >= 1
        if n.op_type == "Reshape":
            s = self.const(n.input[1])
            return s is not None and s.size > 0 and int(s.reshape(-1)[0]) == 0
        if n.op_type in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(n.input) > 1:
                c = self.const(n.input[1])
                axes = None if c is None else c.reshape(-1).tolist()
            return axes is not None and 0 not in axes
        return False

    def op_Reshape(self, n, k):
        if self.const(n.input[1]) is None and n.input[1] not in self.shapes:
            raise self.err(n, "its target shape is computed by the graph")
        self._reshape(n)

    def op_Squeeze(self, n, k):
        self._reshape(n)

    def op_Unsqueeze(self, n, k):
        self._reshape(n)

    def op_Gemm(self, n, k):
        a = self.attrs(n)
        if a.get("transA", 0):
            raise self.err(n, "transA=1 transposes the input, which InnerProduct does not")
        w = self._weight(n, 1, "weight").astype(np.float64)
        c = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if len(n.input) > 2 and n.input[2] and c is None:
            self._weight(n, 2, "bias")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        trans_b = bool(a.get("transB", 0))
        nout = w.shape[0] if trans_b else w.shape[1]
        if alpha != 1.0:
            w = w * alpha
        f = {"num_output": int(nout)}
        if not trans_b:
            f["transpose"] = True
        params = {"weight": w}
        if c is not None:
            if c.size not in (1, nout) or (c.ndim == 2 and c.shape[0] != 1):
                raise self.err(n, f"its C {list(c.shape)} is not one value per output (InnerProduct's bias)")
            params["bias"] = np.broadcast_to(c.reshape(-1) * beta, (nout,)).copy()
        else:
            f["bias_term"] = False
        mapped = {x: x for x in ("transB", "alpha", "beta") if x in a}
        self.add(n, "InnerProduct", [n.input[0]], n.output[0], f, params, mapped)

    def op_MatMul(self, n, k):
        w = self.const(n.input[1])
        if w is None or w.ndim != 2:
            if self.const(n.input[0]) is None:
                raise self.err(n, "a product of two computed tensors has no netspec layer")
            raise self.err(n, "InnerProduct multiplies by a 2-D constant on the right")
        x = self.shape(n.input[0], n)
        f = {"num_output": int(w.shape[1]), "transpose": True}
        if len(x) != 2:
            f["axis"] = len(x) - 1
        params = {"weight": w}
        out = n.output[0]
        cons = self.consumers.get(out, [])
        bias_node = None
        if len(cons) == 1 and cons[0].op_type == "Add" and out not in self.outputs:
            other = [i for i in cons[0].input if i != out]
            b = self.const(other[0]) if len(other) == 1 else None
            if b is not None and b.size == w.shape[1] and b.shape[-1:] == (w.shape[1],) and b.ndim <= len(x):
                bias_node = cons[0]
                params["bias"] = b.reshape(-1)
        if bias_node is None:
            f["bias_term"] = False
        else:
            self.skip.add(list(self.model.graph.node).index(bias_node))
            out = bias_node.output[0]
        self.add(n, "InnerProduct", [n.input[0]], out, f, params)

    def op_Relu(self, n, k):
        self.add(n, "ReLU", [n.input[0]], n.output[0])

    def op_LeakyRelu(self, n, k):
        a = self.attrs(n)
        self.add(n, "ReLU", [n.input[0]], n.output[0], {"negative_slope": float(a.get("alpha", 0.01))},
                 mapped={"alpha": "negative_slope"})

    def op_Elu(self, n, k):
        a = self.attrs(n)
        self.add(n, "ELU", [n.input[0]], n.output[0], {"alpha": float(a.get("alpha", 1.0))}, mapped={"alpha": "alpha"})

    def _elementwise(self, n, k):
        ltype, fields = ELEMENTWISE[n.op_type]
        self.add(n, ltype, [n.input[0]], n.output[0], dict(fields))

    op_Sigmoid = op_Tanh = op_Abs = op_Softplus = op_Exp = op_Log = op_Sqrt = op_Neg = op_Reciprocal = _elementwise

    def op_Identity(self, n, k):
        self.alias[n.output[0]] = self.blob(n.input[0])
        self.report.mapped(self.where(n), n.op_type, "passed through (no layer)")

    def op_Dropout(self, n, k):
        if len(n.output) > 1 and n.output[1] and self.consumers.get(n.output[1]):
            raise self.err(n, "its mask output is read; netspec's Dropout gives no mask")
        self.alias[n.output[0]] = self.blob(n.input[0])
        self.report.mapped(self.where(n), n.op_type, "passed through (no layer)")
        self.report.ignored(self.where(n), "ratio", "an inference graph passes values through (Caffe scales at "
                                                   "training time); add a Dropout layer to train with it")

    def op_PRelu(self, n, k):
        s = self._weight(n, 1, "slope")
        x = self.shape(n.input[0], n)
        if s.size == 1:
            self.add(n, "PReLU", [n.input[0]], n.output[0], {"channel_shared": True}, {"slope": s.reshape(1)})
            return
        c = x[1] if len(x) > 1 else 0
        if s.size != c or (s.ndim > 1 and s.shape[0] != c) or s.ndim >= len(x):
            raise self.err(n, f"its slope {list(s.shape)} is not one per channel of input {list(x)}")
        self.add(n, "PReLU", [n.input[0]], n.output[0], None, {"slope": s.reshape(-1)})

    def op_Clip(self, n, k):
        a = self.attrs(n)
        f = {}
        lo = a.get("min") if self.opset < 11 else (self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else None)
        hi = a.get("max") if self.opset < 11 else (self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None)
        for i in (1, 2):
            if len(n.input) > i and n.input[i] and self.const(n.input[i]) is None:
                raise self.err(n, "its bounds are computed by the graph")
        if lo is not None:
            f["min"] = float(np.asarray(lo).reshape(-1)[0])
        if hi is not None:
            f["max"] = float(np.asarray(hi).reshape(-1)[0])
        if not f:
            self.op_Identity(n, k)
            return
        self.add(n, "Clip", [n.input[0]], n.output[0], f)

    def op_LRN(self, n, k):
        a = self.attrs(n)
        size = int(a["size"])
        if size % 2 == 0:
            raise self.err(n, f"size {size} is even; Caffe centres an odd window on the channel")
        self.add(n, "LRN", [n.input[0]], n.output[0],
                 {"local_size": size, "alpha": float(a.get("alpha", 1e-4)), "beta": float(a.get("beta", 0.75)),
                  "k": float(a.get("bias", 1.0))}, mapped={"size": "local_size", "alpha": "alpha", "beta": "beta",
                                                           "bias": "k"})

    def op_Softmax(self, n, k):
        a = self.attrs(n)
        x = self.shape(n.input[0], n)
        default = -1 if self.opset >= 13 else 1
        axis = a.get("axis", default)
        axis = axis + len(x) if axis < 0 else axis
        if self.opset < 13 and axis != len(x) - 1:
            raise self.err(n, f"before opset 13 Softmax normalizes over axes {axis}.. together; Caffe over one axis")
        self.add(n, "Softmax", [n.input[0]], n.output[0], {"axis": axis}, mapped={"axis": "axis"})

    def op_BatchNormalization(self, n, k):
        a = self.attrs(n)
        if a.get("training_mode", 0) or (len(n.output) > 1 and any(n.output[1:])):
            raise self.err(n, "training mode (batch statistics as outputs) has no deploy equivalent")
        gamma, beta = self._weight(n, 1, "scale"), self._weight(n, 2, "bias")
        mean, var = self._weight(n, 3, "mean"), self._weight(n, 4, "variance")
        eps = float(a.get("epsilon", 1e-5))
        plain = bool(np.all(gamma == 1) and np.all(beta == 0))
        mid = n.output[0] if plain else n.output[0] + "_normalized"
        name = self.add(n, "BatchNorm", [n.input[0]], mid, {"use_global_stats": True, "eps": eps},
                        {"mean": mean, "variance": var, "scale_factor": np.ones(1)},
                        mapped={"epsilon": "eps"}, ignored={"momentum": "the running averages are params here; "
                                                                        "moving_average_fraction sets training's"}
                        if "momentum" in a else None)
        if not plain:
            sname = self.layer_name_str(name + "_scale")
            self.layers.append({"name": sname, "type": "Scale", "bottom": [self.blob(mid)],
                                "top": [self.name_blob(n.output[0], sname)],
                                "bias_term": True})
            self.weights[f"{sname}/scale"] = gamma.astype(np.float32)
            self.weights[f"{sname}/bias"] = beta.astype(np.float32)
            self.report.mapped(self.where(n), "scale, B", f"layer '{sname}' (Scale)")

    def _binary(self, n, op: str):
        a_in, b_in = n.input[0], n.input[1]
        ca, cb = self.const(a_in), self.const(b_in)
        if ca is not None and cb is not None:
            raise self.err(n, "both operands are constants (fold them before converting)")
        if ca is not None and op in ("Sub", "Div"):
            raise self.err(n, f"a constant {'minus' if op == 'Sub' else 'divided by'} a tensor has no netspec layer")
        if ca is not None:
            a_in, b_in, cb = b_in, a_in, ca
        x = self.shape(a_in, n)
        if cb is None:
            y = self.shape(b_in, n)
            if tuple(x) != tuple(y):
                raise self.err(n, f"its operands' shapes {list(x)} and {list(y)} differ; Eltwise needs equal shapes")
            f = {"operation": {"Add": "SUM", "Sub": "SUM", "Mul": "PROD"}.get(op, "MAX")}
            if op == "Div":
                raise self.err(n, "a quotient of two computed tensors has no netspec layer")
            if op == "Sub":
                f["coeff"] = [1.0, -1.0]
            self.add(n, "Eltwise", [a_in, b_in], n.output[0], f)
            return
        c = np.asarray(cb, np.float64)
        if c.ndim > len(x):
            raise self.err(n, f"the constant {list(c.shape)} has more axes than the tensor {list(x)}")
        if op == "Sub":
            op, c = "Add", -c
        elif op == "Div":
            op, c = "Mul", 1.0 / c
            self.report.note(self.where(n), "divides by a constant: the Scale layer multiplies by its reciprocal "
                                            "(equal to within one rounding)")
        full = (1,) * (len(x) - c.ndim) + c.shape
        spans = [i for i, d in enumerate(full) if d != 1]
        if not spans:
            v = float(c.reshape(-1)[0])
            self.add(n, "Power", [a_in], n.output[0], {"scale": v} if op == "Mul" else {"shift": v})
            return
        first, last = spans[0], spans[-1]
        if any(full[i] not in (1, x[i]) for i in range(len(x))):
            raise self.err(n, f"the constant {list(c.shape)} does not broadcast to {list(x)}")
        p = np.broadcast_to(c.reshape(full[first:last + 1] + (1,) * 0), tuple(x[first:last + 1]))
        f = {}
        if first != 1:
            f["axis"] = first
        if last - first + 1 != 1:
            f["num_axes"] = last - first + 1
        if op == "Mul":
            out, params = n.output[0], {"scale": p}
            cons = self.consumers.get(out, [])
            if len(cons) == 1 and cons[0].op_type == "Add" and out not in self.outputs:
                other = [i for i in cons[0].input if i != out]
                b = self.const(other[0]) if len(other) == 1 else None
                if b is not None and b.ndim <= len(x):
                    bf = (1,) * (len(x) - b.ndim) + b.shape
                    if all(d == 1 for i, d in enumerate(bf) if not first <= i <= last) \
                            and all(bf[i] in (1, x[i]) for i in range(first, last + 1)):
                        # y = x s + b over the same axes: one Scale with its bias
                        params["bias"] = np.broadcast_to(np.asarray(b, np.float64).reshape(bf[first:last + 1]),
                                                         tuple(x[first:last + 1]))
                        f["bias_term"] = True
                        self.skip.add(list(self.model.graph.node).index(cons[0]))
                        out = cons[0].output[0]
            self.add(n, "Scale", [a_in], out, f, params)
        else:
            self.add(n, "Bias", [a_in], n.output[0], f, {"bias": p})

    def op_Add(self, n, k):
        self._binary(n, "Add")

    def op_Sub(self, n, k):
        self._binary(n, "Sub")

    def op_Mul(self, n, k):
        self._binary(n, "Mul")

    def op_Div(self, n, k):
        self._binary(n, "Div")

    def op_Max(self, n, k):
        if any(self.const(i) is not None for i in n.input):
            raise self.err(n, "a maximum with a constant has no netspec layer (Clip takes scalar bounds)")
        self._nary(n, "MAX")

    def op_Sum(self, n, k):
        if any(self.const(i) is not None for i in n.input):
            raise self.err(n, "a sum with a constant: write it as Add")
        self._nary(n, "SUM")

    def _nary(self, n, op):
        shapes = {tuple(self.shape(i, n)) for i in n.input}
        if len(shapes) != 1:
            raise self.err(n, f"its operands' shapes differ ({[list(s) for s in shapes]}); Eltwise needs equal shapes")
        if len(n.input) == 1:
            self.op_Identity(n, 0)
            return
        self.add(n, "Eltwise", list(n.input), n.output[0], {"operation": op})

    def op_Pow(self, n, k):
        e = self.const(n.input[1])
        if e is None or e.size != 1:
            raise self.err(n, "the exponent must be one constant (netspec's Power)")
        self.add(n, "Power", [n.input[0]], n.output[0], {"power": float(e.reshape(-1)[0])})

    def op_Concat(self, n, k):
        a = self.attrs(n)
        x = self.shape(n.input[0], n)
        axis = a["axis"] + len(x) if a["axis"] < 0 else a["axis"]
        self.add(n, "Concat", list(n.input), n.output[0], {"axis": axis}, mapped={"axis": "axis"})

    def op_Split(self, n, k):
        a = self.attrs(n)
        x = self.shape(n.input[0], n)
        axis = a.get("axis", 0)
        axis = axis + len(x) if axis < 0 else axis
        sizes = [self.shape(o, n)[axis] for o in n.output]
        points = list(np.cumsum(sizes)[:-1].astype(int).tolist())
        name = self.layer_name(n)
        tops = [self.name_blob(o, f"{name}_{k}") for k, o in enumerate(n.output)]
        f = {"name": name, "type": "Slice", "bottom": [self.blob(n.input[0])], "top": tops, "axis": axis,
             "slice_point": points}
        self.layers.append(f)
        self.report.mapped(self.where(n), "Split", f"layer '{name}' (Slice)")

    def op_Tile(self, n, k):
        r = self.const(n.input[1])
        if r is None:
            raise self.err(n, "its repeats are computed by the graph")
        axes = [i for i, v in enumerate(r.reshape(-1).tolist()) if v != 1]
        if len(axes) > 1:
            raise self.err(n, f"it repeats {len(axes)} axes; netspec's Tile repeats one")
        if not axes:
            self.op_Identity(n, k)
            return
        self.add(n, "Tile", [n.input[0]], n.output[0], {"axis": axes[0], "tiles": int(r.reshape(-1)[axes[0]])})

    def _reduce(self, n, op: str):
        a = self.attrs(n)
        x = self.shape(n.input[0], n)
        axes = a.get("axes")
        if axes is None and len(n.input) > 1 and n.input[1]:
            c = self.const(n.input[1])
            if c is None:
                raise self.err(n, "its axes are computed by the graph")
            axes = c.reshape(-1).tolist()
        if axes is None:
            if a.get("noop_with_empty_axes", 0):
                self.op_Identity(n, 0)
                return
            axes = list(range(len(x)))
        axes = sorted(int(v) + len(x) if v < 0 else int(v) for v in axes)
        if a.get("keepdims", 1) or axes != list(range(axes[0], len(x))):
            raise self.err(n, f"netspec's Reduction removes every axis from one axis on (keepdims=0); this "
                              f"node reduces axes {axes} of {list(x)}"
                              + (" and keeps them (keepdims=1)" if a.get("keepdims", 1) else ""))
        self.add(n, "Reduction", [n.input[0]], n.output[0], {"operation": op, "axis": axes[0]},
                 mapped={"axes": "axis", "keepdims": "keepdims"})

    def op_ReduceSum(self, n, k):
        self._reduce(n, "SUM")

    def op_ReduceMean(self, n, k):
        self._reduce(n, "MEAN")

    def op_ReduceL1(self, n, k):
        self._reduce(n, "ASUM")

    def op_ReduceSumSquare(self, n, k):
        self._reduce(n, "SUMSQ")

    def op_Greater(self, n, k):
        t = self.const(n.input[1])
        cons = self.consumers.get(n.output[0], [])
        cast = cons[0] if len(cons) == 1 and cons[0].op_type == "Cast" else None
        if t is None or t.size != 1 or cast is None or n.output[0] in self.outputs \
                or self.attrs(cast).get("to") != self.onnx.TensorProto.FLOAT:
            raise self.err(n, "only a comparison with one constant, cast to float, has a netspec layer "
                              "(Threshold)")
        self.skip.add(list(self.model.graph.node).index(cast))
        self.add(n, "Threshold", [n.input[0]], cast.output[0], {"threshold": float(t.reshape(-1)[0])})


def _node_base(node) -> str:
    """A layer name from a node's: netspec's ``<layer>:<op>``, PyTorch's ``/<module path>/<Op>``."""
    name = node.name
    if not name:
        return node.output[0]
    if ":" in name:
        return name.split(":")[0]
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and parts[-1].startswith(node.op_type):
        parts = parts[:-1]
    elif len(parts) == 1 and parts[0].startswith(node.op_type):
        return parts[0].lower() if parts[0] == node.op_type else parts[0]
    base = "_".join(parts) or node.op_type.lower()
    # a container's index (PyTorch's Sequential: "0", "1") reads better with the operator's name
    return f"{node.op_type.lower()}{base}" if base.isdigit() else base


def _one(v: list[int]):
    """A per-axis list written as one number when all axes agree (as hand-written nets do)."""
    return v[0] if len(set(v)) == 1 else v


def _caffe_pooled(d: int, k: int, p: int, s: int, ceil: bool) -> int:
    from netspec.layers.vision import pooled_size

    return pooled_size(d, k, p, s, ceil)
