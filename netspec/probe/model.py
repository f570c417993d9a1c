"""A trained net opened for probing, and gradients with respect to its input.

``open_model(net, weights)`` derives the deploy net (data layers out, an ``Input`` in, losses
out) with ``force_backward`` on, so that the layers' own backward carries a gradient all the
way to the input blob; ``Model.gradient`` seeds the gradient of any blob (class scores, a
feature map) and runs the layers' backward from that blob's producer down to the input.
There is no second implementation of any layer's derivative here.

What the net reads comes from the zoo manifest (``input.preprocessing``, ``input.classes``)
when the net is ``zoo:<name>``, else from the TEST data layer of the file (its ``transform``
and ``source``); the data range (0..255 raw for 8-bit sources) is mapped through the
preprocessing, so that clipping and epsilons are in the units the net reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec.errors import GraphError, NetspecError, SpecError, WeightsError, suggestion


@dataclass
class Preprocessing:
    """``x = (raw - mean) * scale`` (the transform fields that change values; a crop is applied
    by ``inputs`` before this)."""

    scale: float = 1.0
    mean: np.ndarray | None = None          # broadcastable to one sample, in raw units
    crop: int = 0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float32)
        if self.mean is not None:
            x = x - self.mean
        return (x * np.float32(self.scale)).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        raw = np.asarray(x, dtype=np.float32) / np.float32(self.scale)
        return raw + self.mean if self.mean is not None else raw


@dataclass
class Model:
    """A deploy net with weights, ready to be asked about its input."""

    spec: object                        # the NetSpec (all phases), for locating errors
    deploy: object                      # the deploy NetSpec (force_backward on, batch 1)
    tensors: dict[str, np.ndarray]
    shown: str                          # how the weights were named, for messages
    input: str                          # the input blob
    sample_shape: tuple[int, ...]       # one sample, e.g. (1, 28, 28)
    score_blob: str | None              # the blob of class scores (the Softmax's bottom, or the output)
    prob: str | None                    # the Softmax output, when the net has one
    prep: Preprocessing
    lo: float | None                    # the data range in the net's input units (None: unknown)
    hi: float | None
    classes: list[str]
    source: str | None = None           # the TEST data layer's source, and the folder it is relative to
    source_base: Path | None = None
    source_options: object = None
    device: object = None
    no_scores: str = ""                 # why the net has no class scores (filters and features still work)
    _nets: dict = field(default_factory=dict)

    # ---- building -------------------------------------------------------------------------
    def net(self, batch: int):
        """The runnable deploy net for ``batch`` samples (built once per batch size)."""
        if batch not in self._nets:
            from netspec.core.net import Net
            from netspec.graph.deploy import derive_deploy
            from netspec.graph.plan import plan
            from netspec.graph.splits import insert_splits
            from netspec.io.weights import copy_weights

            spec = _batched(derive_deploy(_forced(self.spec), batch=batch), batch)
            n = Net(plan(insert_splits(spec)), np.float32, seed=0, device=self.device)
            report = copy_weights(n, self.tensors, self.shown)
            missing = [r.key for r in report.rows if r.status == "not in source"]
            if missing:
                raise WeightsError(f"{len(missing)} param(s) of the deploy net are not in the weights: "
                                   f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}; probing a "
                                   f"net with untrained layers would describe their random initial values",
                                   file=self.shown)
            self._nets[batch] = n
        return self._nets[batch]

    @property
    def scores(self) -> str:
        """The class-score blob; a GraphError for nets without one (an autoencoder)."""
        if self.score_blob is None:
            raise GraphError(self.no_scores, file=self.spec.file)
        return self.score_blob

    @property
    def num_classes(self) -> int:
        return int(np.prod(self._shape(self.scores)[1:]))

    @property
    def has_range(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def span(self) -> float:
        """The width of the data range (1 when it is unknown), the unit of steps and noise."""
        return float(self.hi - self.lo) if self.has_range else 1.0

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.lo, self.hi) if self.has_range else x

    def blob_names(self) -> list[str]:
        return list(self.net(1).blobs)

    def _shape(self, blob: str) -> tuple[int, ...]:
        return tuple(self.net(1).blobs[blob].data.shape)

    def check_blob(self, blob: str, option: str = "--blob") -> None:
        names = self.blob_names()
        if blob not in names:
            raise SpecError(f"{option}: the deploy net has no blob '{blob}'{suggestion(blob, names)} "
                            f"(blobs: {', '.join(names)})", file=self.spec.file)

    def check_class(self, k: int, option: str = "--class") -> None:
        if not 0 <= k < self.num_classes:
            raise SpecError(f"{option} {k} is out of range: the net scores {self.num_classes} classes "
                            f"(0..{self.num_classes - 1})", file=self.spec.file)

    def class_name(self, k: int) -> str:
        return self.classes[k] if k < len(self.classes) else str(k)

    # ---- running --------------------------------------------------------------------------
    def forward(self, x: np.ndarray, blobs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Host copies of ``blobs`` and, for nets with class scores, ``scores`` and ``prob``
        (their softmax, in float64: the net's Softmax up to its float32 rounding, so that a
        probability of 1 - 1e-9 and the gradient of its logarithm keep their digits), for the
        batch ``x`` (n, *sample_shape)."""
        from netspec.core.device import to_host

        n = self.net(len(x))
        n.set_input(self.input, np.ascontiguousarray(x, dtype=np.float32))
        n.forward()
        out = {b: to_host(n.blobs[b].data).copy() for b in blobs}
        if self.score_blob is not None:
            s = to_host(n.blobs[self.score_blob].data).reshape(len(x), -1).astype(np.float64)
            out["scores"] = s
            out["prob"] = softmax(s)
        return out

    def gradient(self, x: np.ndarray, blob: str, seed) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """d(sum(seed * blob)) / d input for the batch ``x``.

        ``seed`` is an array of ``blob``'s shape, or a function of the forward's results (the
        dict ``forward`` returns, ``blob`` included) that returns one: the gradient of the
        objective with respect to ``blob``.  Every blob's gradient is cleared, ``blob``'s is
        set to the seed, and the layers from ``blob``'s producer back to the input run their
        own backward.  Returns (the input gradient, the forward's results).
        """
        from netspec.core import device as D

        n = self.net(len(x))
        out = self.forward(x, (blob,))
        g = seed(out) if callable(seed) else seed
        g = np.asarray(g, dtype=np.float32).reshape(n.blobs[blob].data.shape)
        with D.use(n.device):
            for b in n.blobs.values():
                b.grad[...] = 0
            D.copy_in(n.blobs[blob].grad, g)
            last = max(k for k, (lp, _, _) in enumerate(n.steps) if blob in lp.tops)
            for lp, bottoms, tops in reversed(n.steps[:last + 1]):
                if lp.need_backward:
                    lp.layer.backward(tops, lp.bottom_need_backward, bottoms)
            grad = D.to_host(n.blobs[self.input].grad).copy()
        return grad, out

    def close(self) -> None:
        for n in self._nets.values():
            for lp in n.layers:
                lp.layer.close()
        self._nets.clear()


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _batched(spec, batch: int):
    """The deploy net with every Input shaped for ``batch`` samples (derive_deploy sizes the
    Input it makes from data layers; an Input the file itself has keeps its own batch)."""
    layers = []
    for l in spec.layers:
        if l["type"] == "Input":
            shape = l["shape"]
            many = bool(shape) and isinstance(shape[0], list)
            shapes = shape if many else [shape]
            shapes = [[batch] + list(s[1:]) for s in shapes]
            l = l.derive(shape=shapes if many else shapes[0])
        layers.append(l)
    return spec.with_layers(layers)


def _forced(spec):
    from netspec.spec.model import NetSpec

    return NetSpec({**spec, "force_backward": True}, spec.src, spec.base_dir)


# ---- opening ---------------------------------------------------------------------------------

def open_model(net: str | os.PathLike, weights: str | None = None, device: str | None = None) -> Model:
    """The net file (or ``zoo:<name>``, whose weights are the default) with its weights.

    Raises a located NetspecError when the net has no single input blob, when no gradient can
    reach its input (its first layers take none), or when the weights do not fit.
    """
    from netspec import api
    from netspec import zoo_registry as zoo
    from netspec.core.device import env_device, resolve
    from netspec.io.weights import load_weights
    from netspec.solvers.run import weight_refs

    manifest: dict = {}
    ref = os.fspath(net)
    if zoo.is_zoo_ref(ref):
        entry = zoo.load_entry(zoo.ref_name(ref))
        manifest = dict(entry.get("input") or {})
        path = entry.path("net")
        if weights is None:
            weights = ref
    else:
        path = Path(ref)
        if not path.is_file():
            raise SpecError("no such net file", file=ref)
    if weights is None:
        raise SpecError("give the trained weights with --weights (a .safetensors file or zoo:<name>)",
                        file=os.fspath(path))
    spec = api.load_net(path)
    refs = [w.strip() for w in weights.split(",") if w.strip()]
    tensors: dict[str, np.ndarray] = {}
    for shown, p in weight_refs(refs, None):
        if not Path(p).is_file():
            raise WeightsError("no such weights file", file=shown)
        tensors.update(load_weights(p))
    deploy = api.phase_net(_forced(spec), api.DEPLOY)
    inputs = [l for l in deploy.layers if l["type"] == "Input"]
    if not inputs or not inputs[0]["top"]:
        raise GraphError("the deploy net has no input blob: its data layers feed nothing that is kept, so there "
                         "is no input to visualize or perturb", file=spec.file)
    tops = list(inputs[0]["top"])
    name = manifest.get("blob") or tops[0]
    if name not in tops:
        raise GraphError(f"the zoo manifest's input.blob '{name}' is not an input of the deploy net "
                         f"(inputs: {', '.join(tops)})", file=spec.file)
    if len(tops) > 1 and not manifest.get("blob"):
        raise GraphError(f"the deploy net has several inputs ({', '.join(tops)}); probing needs one image input",
                         file=spec.file)
    prep, source, base, opts = _preprocessing(spec, manifest, name)
    model = Model(spec=spec, deploy=deploy, tensors=tensors, shown=", ".join(refs), input=name,
                  sample_shape=(), score_blob=None, prob=None, prep=prep, lo=None, hi=None,
                  classes=list(manifest.get("classes") or []), source=source, source_base=base,
                  source_options=opts, device=resolve(device or env_device()))
    n = model.net(1)
    model.sample_shape = tuple(n.blobs[name].data.shape[1:])
    _check_differentiable(n, name, spec)
    model.score_blob, model.prob, model.no_scores = _scores(n)
    model.lo, model.hi = _data_range(model)
    if not model.classes and source is not None:
        model.classes = _class_names(source, base)
    return model


def _check_differentiable(n, name: str, spec) -> None:
    readers = [(lp, j) for lp in n.layers for j, b in enumerate(lp.bottoms) if b == name]
    if readers and any(lp.bottom_need_backward[j] for lp, j in readers):
        return
    lp = readers[0][0] if readers else None
    if lp is None:
        raise GraphError(f"no layer of the deploy net reads its input '{name}'", file=spec.file)
    raise lp.spec.error(GraphError, f"this layer passes no gradient to the input '{name}' (a "
                        f"{lp.type} is not differentiable in its input), so the input gradient that "
                        f"visualization and attacks follow does not exist for this net")


def _scores(n) -> tuple[str | None, str | None, str]:
    """(class-score blob, softmax output, why there are none): the bottom of the deploy net's
    Softmax that gives an output, else its one output."""
    outputs = list(n.plan.outputs)
    for lp in n.layers:
        if lp.type == "Softmax" and lp.tops[0] in outputs:
            src = lp.bottoms[0]
            # an inserted split's source is the blob the file names
            for other in n.layers:
                if other.type == "Split" and src in other.tops:
                    src = other.bottoms[0]
            return src, lp.tops[0], ""
    if len(outputs) != 1:
        return None, None, (f"the deploy net has {len(outputs)} outputs ({', '.join(outputs)}) and no Softmax "
                            f"output, so it gives no class scores to visualize, explain or attack (filters, "
                            f"features and neurons work)")
    return outputs[0], None, ""


def _test_data_layer(spec, blob: str):
    from netspec.core.layer import layer_class
    from netspec.graph.state import filter_net, stage_sets

    test = filter_net(spec, "TEST", None, stage_sets(spec, "TEST")[0])
    for l in test.layers:
        if layer_class(l["type"]).is_data and blob in l["top"]:
            return l
    return None


def _preprocessing(spec, manifest: dict, blob: str):
    from netspec.data.transforms import load_mean

    layer = _test_data_layer(spec, blob)
    t = manifest.get("preprocessing")
    if t is None:
        t = dict((layer or {}).get("transform") or {})
    mean = None
    if "mean_file" in t:
        from netspec.data.catalog import resolve_path

        mean = load_mean(resolve_path(t["mean_file"], spec.base_dir))
    elif "mean_value" in t:
        v = t["mean_value"]
        mean = np.asarray(v if isinstance(v, list) else [v], dtype=np.float32)
        mean = mean.reshape((-1, 1, 1)) if mean.size > 1 else mean.reshape(())
    prep = Preprocessing(float(t.get("scale", 1.0)), mean, int(t.get("crop_size", 0) or 0))
    if layer is None or "source" not in layer:
        return prep, None, None, None
    from netspec.core.layer import layer_class

    try:
        inst = layer_class(layer["type"])(layer, "TEST")
        inst.base_dir = spec.base_dir
        opts = inst.source_options(len(layer["top"]))
    except (AttributeError, KeyError, NetspecError):
        opts = None       # a data layer without file options (memory:, HDF5 lists): defaults
    return prep, layer["source"], spec.base_dir, opts


def _data_range(model: Model) -> tuple[float | None, float | None]:
    """The range of the net's input values: raw 0..255 for 8-bit sources, else the records'
    own minimum and maximum, through the preprocessing; (None, None) when nothing says."""
    if model.source is None:
        return None, None
    from netspec.probe.inputs import open_records

    try:
        src = open_records(model)
    except NetspecError:
        return None, None
    if src.dtypes[0] == np.uint8:
        raw_lo, raw_hi = 0.0, 255.0
    else:
        k = min(src.size, 1000)
        buf = np.empty((k,) + tuple(src.shapes[0]), dtype=src.dtypes[0])
        src.read(np.arange(k), [buf])
        raw_lo, raw_hi = float(buf.min()), float(buf.max())
    mean = 0.0 if model.prep.mean is None else model.prep.mean
    lo = np.min((raw_lo - np.asarray(mean)) * model.prep.scale)
    hi = np.max((raw_hi - np.asarray(mean)) * model.prep.scale)
    if model.prep.scale < 0:
        lo, hi = hi, lo
    return float(lo), float(hi)


def _class_names(source: str, base: Path | None) -> list[str]:
    from netspec.data import catalog

    try:
        bi = catalog.parse_builtin(source)
    except NetspecError:
        return []
    return list(bi[0].class_names) if bi else []
