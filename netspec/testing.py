"""Test a layer in isolation: run it on given arrays and check its gradients numerically.

The same tools serve netspec's own test-suite and plugin authors::

    import numpy as np
    from netspec.testing import LayerHarness, check_gradients

    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5))
    h = LayerHarness({"type": "MyLayer", "gain": 2.0}, [x])
    (y,) = h.forward()
    check_gradients({"type": "MyLayer", "gain": 2.0}, [x])   # raises AssertionError on a mismatch

``check_gradients`` follows Caffe's GradientChecker: central differences in float64 on every
input and param element, against the layer's backward, with the objective
``sum_j <R_j, top_j>`` for fixed random ``R_j``; an element passes when
``|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)``.  Elements within
``kink_range`` of a ``kink`` (0 for ReLU) are skipped, as Caffe does.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from netspec.core import device as D
from netspec.core.blob import Blob
from netspec.core.fillers import fill
from netspec.core.layer import layer_class
from netspec.spec.load import Doc
from netspec.spec.model import Src
from netspec.spec.normalize import normalize_layer


def validate_layer(fields: dict) -> None:
    """Check one layer's fields against its type's schema (raises a located SpecError)."""
    from netspec.spec.schema import build_net_schema
    from netspec.spec.validate import validate

    validate(Doc({"layers": [fields]}, {(): 1}, "<layer>"), build_net_schema())


class LayerHarness:
    """One layer, set up on given bottom arrays, with its params and tops allocated.

    ``params`` maps param names to initial values (default: the layer's fillers, or standard
    normal values with ``random_params=True``, which makes gradient checks meaningful).
    ``inplace=True`` makes top 0 the same blob as bottom 0.  ``device="cuda"`` runs the layer on
    the GPU (or the simulator): blobs and params live there, and every array the harness
    returns is a host copy, so results compare directly with a CPU harness.
    ``storage=np.float16`` makes the activations half-width buffers, as a Net with
    ``precision: float16`` has them on a GPU: the bottoms, the tops of a differentiable layer
    (a loss layer's loss top excepted) and all their gradients; params stay ``dtype``.
    """

    def __init__(self, fields: dict, bottoms: Sequence[np.ndarray], *, phase: str = "TRAIN",
                 dtype=np.float64, seed: int = 0, params: dict[str, np.ndarray] | None = None,
                 random_params: bool = False, inplace: bool = False, validate: bool = True,
                 device: "str | D.Device | None" = None, storage=None):
        self.device = D.resolve(device) if device is not None else D.current()
        with D.use(self.device):
            self._build(fields, bottoms, phase, dtype, seed, params, random_params, inplace, validate,
                        storage)

    def _build(self, fields, bottoms, phase, dtype, seed, params, random_params, inplace, validate,
               storage=None):
        dev = self.device
        f = dict(fields)
        f.setdefault("name", "layer")
        f.setdefault("bottom", [f"b{i}" for i in range(len(bottoms))])
        if inplace:
            tops = list(f.get("top", [f["name"]])) if isinstance(f.get("top"), list) else [f.get("top", f["name"])]
            tops[0] = f["bottom"][0]
            f["top"] = tops
        if validate:
            validate_layer(f)
        cls = layer_class(f["type"])
        self.spec = normalize_layer(f, None, Src())
        self.layer = cls(self.spec, phase)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.inputs = [np.array(b, dtype=self.dtype) for b in bottoms]
        act = np.dtype(storage) if storage is not None else self.dtype    # bottoms' and tops' type
        self.bottom = [Blob(name, dev.asarray(x.astype(act)), dev.zeros(x.shape, act))
                       for name, x in zip(self.spec.get("bottom", []), self.inputs)]
        shapes = [x.shape for x in self.inputs]
        self.top_shapes = [tuple(s) for s in self.layer.reshape(shapes)]
        pshapes = self.layer.param_shapes(shapes)
        rng = np.random.Generator(np.random.PCG64(seed + 1))
        fillers = self.layer.fillers()
        self.params: dict[str, Blob] = {}
        for name, shp in pshapes.items():
            data = np.zeros(shp, dtype=self.dtype)
            if params and name in params:
                data[...] = params[name]
            elif random_params and name not in cls.fixed_lr_mult:
                data[...] = rng.normal(size=shp)
            else:
                fill(data, fillers.get(name, {"type": "constant"}), rng)
            self.params[name] = Blob(name, dev.asarray(data), dev.zeros(shp, self.dtype))
        from netspec.core.net import holds_half
        from netspec.graph.plan import _loss_weights

        weighted = _loss_weights(self.spec, cls, len(self.top_shapes))
        self.top: list[Blob] = []
        for j, (t, s) in enumerate(zip(self.spec["top"], self.top_shapes)):
            if j < len(self.bottom) and self.spec.get("bottom", [])[j] == t:
                self.top.append(self.bottom[j])
            elif self.layer.view and j == 0:
                self.top.append(Blob(t, self.bottom[0].data.reshape(s), self.bottom[0].grad.reshape(s)))
            elif cls.type == "Split":
                self.top.append(Blob(t, self.bottom[0].data, dev.zeros(s, act)))
            else:
                tdt = act if holds_half(cls, bool(self.bottom), weighted[j]) else self.dtype
                self.top.append(Blob(t, dev.zeros(s, tdt), dev.zeros(s, tdt)))
        self.layer.params = self.params
        self.reset_rng()
        self.layer.setup(self.bottom, self.top)

    def reset_rng(self) -> None:
        self.layer.rng = np.random.Generator(np.random.PCG64(self.seed))

    def reset_inputs(self) -> None:
        for b, x in zip(self.bottom, self.inputs):
            D.copy_in(b.data, x)

    def forward(self, reset_rng: bool = True) -> list[np.ndarray]:
        """Forward on the original inputs; copies of the tops (host arrays)."""
        self.reset_inputs()
        if reset_rng:
            self.reset_rng()
        with D.use(self.device):
            self.layer.forward(self.bottom, self.top)
        return [D.to_host(t.data).copy() for t in self.top]

    def backward(self, top_grads: Sequence[np.ndarray], propagate_down: Sequence[bool] | None = None,
                 clear_params: bool = True) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """Backward from ``top_grads`` (after a forward); (bottom grads, param grads), copies."""
        if clear_params:
            for p in self.params.values():
                p.grad[...] = 0
        for t, g in zip(self.top, top_grads):
            D.copy_in(t.grad, g)
        pd = list(propagate_down) if propagate_down is not None else self.default_propagate()
        with D.use(self.device):
            self.layer.backward(self.top, pd, self.bottom)
        return ([D.to_host(b.grad).copy() for b in self.bottom],
                {k: D.to_host(p.grad).copy() for k, p in self.params.items()})

    def default_propagate(self) -> list[bool]:
        return [j not in self.layer.no_grad_bottoms and self.layer.differentiable for j in range(len(self.bottom))]


def check_gradients(fields: dict, bottoms: Sequence[np.ndarray], *, phase: str = "TRAIN", seed: int = 0,
                    params: dict[str, np.ndarray] | None = None, random_params: bool = True,
                    step: float = 1e-3, threshold: float = 1e-4, kink: float | None = None,
                    kink_range: float = -1.0, check_bottoms: Sequence[int] | None = None,
                    check_params: bool = True, inplace: bool = False, top_weights: Sequence[np.ndarray] | None = None,
                    max_elements: int | None = None, check_tops: Sequence[int] | None = None) -> dict[str, Any]:
    """Compare the layer's backward with central differences; raise AssertionError on a mismatch.

    ``check_tops`` limits the objective to some tops (the others get zero weight).
    Returns a report: the number of elements checked and the largest scaled error.
    """
    h = LayerHarness(fields, bottoms, phase=phase, dtype=np.float64, seed=seed, params=params,
                     random_params=random_params, inplace=inplace)
    rng = np.random.Generator(np.random.PCG64(seed + 7))
    tops = h.forward()
    weights = list(top_weights) if top_weights is not None else [rng.normal(size=t.shape) for t in tops]
    if check_tops is not None:  # tops that carry no gradient (e.g. a loss layer's probabilities)
        weights = [w if j in check_tops else np.zeros_like(w) for j, w in enumerate(weights)]

    def objective() -> float:
        out = h.forward()
        return float(sum(np.sum(w * t) for w, t in zip(weights, out)))

    h.forward()
    pd = h.default_propagate()
    if check_bottoms is not None:
        pd = [j in check_bottoms and pd[j] for j in range(len(pd))]
    bgrads, pgrads = h.backward(weights, pd)
    targets: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for j, on in enumerate(pd):
        if on:
            targets.append((f"bottom {j}", h.inputs[j], bgrads[j], h.inputs[j]))
    if check_params:
        for name, blob in h.params.items():
            if name in h.layer.fixed_lr_mult:
                continue
            targets.append((f"param '{name}'", blob.data, pgrads[name], None))
    worst = 0.0
    checked = 0
    failures = []
    for label, arr, analytic, kink_src in targets:
        flat = arr.reshape(-1)
        agrad = analytic.reshape(-1)
        idx = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            idx = np.sort(rng.choice(flat.size, max_elements, replace=False))
        for i in idx:
            if kink is not None and kink_src is not None and abs(float(kink_src.reshape(-1)[i]) - kink) < kink_range:
                continue
            orig = float(flat[i])
            flat[i] = orig + step
            plus = objective()
            flat[i] = orig - step
            minus = objective()
            flat[i] = orig
            numeric = (plus - minus) / (2 * step)
            a = float(agrad[i])
            scale = max(abs(a), abs(numeric), 1.0)
            err = abs(a - numeric) / scale
            worst = max(worst, err)
            checked += 1
            if err > threshold:
                failures.append(f"{label}[{np.unravel_index(i, arr.shape)}]: backward {a:.8g}, numeric {numeric:.8g}")
    h.forward()
    if failures:
        more = f" (and {len(failures) - 8} more)" if len(failures) > 8 else ""
        raise AssertionError(f"{fields.get('type')}: gradient mismatch in {len(failures)} of {checked} elements"
                             f"{more}:\n  " + "\n  ".join(failures[:8]))
    return {"checked": checked, "worst": worst}
