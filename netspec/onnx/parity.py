"""Parity of an exported model: netspec's deploy net against ONNX Runtime on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netspec.onnx import require


@dataclass
class Parity:
    inputs: str                           # where the inputs came from: "random", "<source> (TEST batch)"
    batch: int
    outputs: dict[str, tuple[float, float]] = field(default_factory=dict)   # blob -> (max abs, max rel)

    @property
    def max_abs(self) -> float:
        return max((a for a, _ in self.outputs.values()), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((r for _, r in self.outputs.values()), default=0.0)

    def text(self) -> str:
        lines = [f"parity against ONNX Runtime on {self.batch} inputs ({self.inputs}):"]
        for name, (a, r) in self.outputs.items():
            lines.append(f"  {name}: max abs diff {a:.3g}, max rel diff {r:.3g}")
        return "\n".join(lines)


def difference(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max(|b|, tiny)) over elements; relative to the reference's scale
    where it is near zero, so a 1e-9 against 0 does not read as a 100% error."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.size == 0:
        return 0.0, 0.0
    d = np.abs(ours - theirs)
    floor = max(float(np.abs(theirs).max()) * 1e-3, 1e-12)
    return float(d.max()), float((d / np.maximum(np.abs(theirs), floor)).max())


def random_inputs(shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def run_onnxruntime(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ort = require("onnxruntime", "the parity check against ONNX Runtime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # netspec's own kernels are the reference: no graph rewrites that reassociate sums
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def run_netspec(plan, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The deploy plan as a float32 Net on the CPU, with ``weights``, on ``inputs``."""
    from netspec.core.net import Net
    from netspec.graph.plan import plan as make_plan
    from netspec.graph.splits import insert_splits
    from netspec.io.weights import copy_weights

    shapes = {n: tuple(a.shape) for n, a in inputs.items()}
    spec = plan.net
    p = make_plan(insert_splits(spec), shapes if any(shapes[n] != tuple(plan.blobs[n]) for n in shapes) else None)
    net = Net(p, dtype=np.float32, device="cpu")
    copy_weights(net, weights, "<weights>")
    for n, a in inputs.items():
        net.set_input(n, a)
    net.forward()
    return {b: np.array(net.blobs[b].data) for b in p.outputs}


def check_parity(exported, weights: dict[str, np.ndarray], inputs: dict[str, np.ndarray] | None = None,
                 source: str = "random", seed: int = 0) -> Parity:
    """Run both on ``inputs`` (random normal at the exported shapes when None) and compare outputs."""
    if inputs is None:
        inputs = random_inputs(exported.inputs, seed)
        source = "random normal"
    ours = run_netspec(exported.plan, weights, inputs)
    theirs = run_onnxruntime(exported.model, inputs)
    batch = next(iter(inputs.values())).shape[0] if inputs else 0
    res = Parity(source, batch)
    for blob, name in zip(exported.plan.outputs, exported.outputs):
        res.outputs[blob] = difference(ours[blob], theirs[name])
    return res


def test_batch(net, shapes: dict[str, tuple], level=None, stages=None) -> tuple[dict[str, np.ndarray], str]:
    """The first TEST batch of the net's own data (its transforms applied), cut or repeated to the
    exported batch; a NetspecError when the data cannot be read (the caller falls back to random)."""
    from netspec import api

    n = api.build_net(net, "TEST", level=level, stages=stages, dtype=np.float32, device="cpu")
    n.forward()
    out = {}
    for name, shape in shapes.items():
        if name not in n.blobs:
            raise KeyError(name)
        a = np.asarray(n.blobs[name].data, np.float32)
        reps = -(-shape[0] // a.shape[0])
        out[name] = np.concatenate([a] * reps)[:shape[0]].reshape(shape)
    sources = [str(l.get("source")) for l in n.plan.net.layers if l.get("source")]
    return out, (", ".join(sources) or "the TEST net's data") + ", first TEST batch"
