"""The Python API the CLI calls: load, check, compile and describe nets.

Every function raises ``NetspecError`` (often an ``ErrorList``) for bad input and nothing
else; none of them imports numba.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from netspec.errors import ErrorList, GraphError, NetspecError, SpecError
from netspec.graph.deploy import derive_deploy
from netspec.graph.plan import Plan, plan
from netspec.graph.splits import insert_splits
from netspec.graph.state import PHASES, filter_net, stage_sets
from netspec.spec.load import Doc, load_file, load_text
from netspec.spec.migrate import migrate
from netspec.spec.model import NetSpec, as_list
from netspec.spec.normalize import normalize
from netspec.spec.schema import build_net_schema
from netspec.spec.validate import validate

DEPLOY = "DEPLOY"


def load_doc(source: str | os.PathLike | Doc) -> Doc:
    return source if isinstance(source, Doc) else load_file(source)


def net_from_doc(doc: Doc) -> NetSpec:
    """Plugins, migration, schema validation and normalization of a loaded net document."""
    data = doc.data
    if isinstance(data, dict) and "layers" not in data and ("base_lr" in data or "net" in data
                                                            or "lr_policy" in data):
        raise SpecError("this is a solver file, not a net; give the net file, or use 'netspec train' "
                        "with the solver", file=doc.file, line=1)
    if isinstance(data, dict) and data.get("plugins"):
        from netspec.core.plugins import load_plugins

        plugins = data["plugins"]
        if isinstance(plugins, (str, list)) and all(isinstance(p, str) for p in as_list(plugins)):
            n = len(as_list(plugins))
            lines = [doc.line(("plugins", i)) if isinstance(plugins, list) else doc.line(("plugins",))
                     for i in range(n)]
            load_plugins(as_list(plugins), doc.base_dir, doc.file, lines)
    doc = migrate(doc)
    validate(doc, build_net_schema())
    return normalize(doc)


def load_net(source: str | os.PathLike | Doc) -> NetSpec:
    """Load, validate and normalize a net file (YAML or JSON)."""
    return net_from_doc(load_doc(source))


def load_net_text(text: str, file: str = "<string>", base_dir: Path | None = None) -> NetSpec:
    return net_from_doc(load_text(text, file=file, base_dir=base_dir))


def compile_net(net: NetSpec, phase: str = "TRAIN", level: int | None = None,
                stages: Iterable[str] | None = None, input_shapes: dict | None = None) -> Plan:
    """Filter to a state, insert splits, and plan (shapes, backward needs, params)."""
    return plan(insert_splits(phase_net(net, phase, level, stages)), input_shapes)


def phase_net(net: NetSpec, phase: str, level: int | None = None, stages: Iterable[str] | None = None) -> NetSpec:
    """The normalized net of one phase (TRAIN, TEST or DEPLOY), before split insertion.

    Without ``stages``, a phase whose layers all require a stage (the autoencoder's
    ``test-on-train``/``test-on-test`` TEST nets) is built with the first stage set its rules
    name, the choice the net records in its ``state``; otherwise the net's own state's stages.
    """
    if phase == DEPLOY:
        return derive_deploy(net, level=level, stages=stages)
    if stages is None:
        stages = stage_sets(net, phase)[0]
    return filter_net(net, phase, level, stages)


@dataclass
class CheckResult:
    net: NetSpec
    plans: dict[str, Plan] = field(default_factory=dict)   # "TRAIN", "TEST", "TEST[stage]", "DEPLOY"
    warnings: list[NetspecError] = field(default_factory=list)


def check(source: str | os.PathLike | Doc | NetSpec, stages: Iterable[str] | None = None,
          level: int | None = None) -> CheckResult:
    """Everything up to shape inference, for every phase (and stage set) the net defines.

    All errors of all phases are raised together, each once.
    """
    net = source if isinstance(source, NetSpec) else load_net(source)
    result = CheckResult(net)
    errors: list[NetspecError] = []
    empty: list[str] = []
    for phase in PHASES:
        sets = [list(stages)] if stages is not None else stage_sets(net, phase)
        for st in sets:
            label = phase + (f"[{','.join(st)}]" if st else "")
            if not filter_net(net, phase, level, st).layers:
                # a net for one phase only (every layer TRAIN-only, say) has nothing to check
                # in the other; it is an error only when no phase has a layer
                empty.append(label)
                continue
            try:
                result.plans[label] = compile_net(net, phase, level, st)
            except ErrorList as e:
                errors.extend(e.errors)
            except NetspecError as e:
                errors.append(e)
    if not result.plans and not errors:
        errors.append(net.error(GraphError, f"every layer is left out of every net ({' and '.join(empty)}) by "
                                            f"its include/exclude rules", field="layers"))
    if not errors and stages is None and "TEST" in {k.split("[")[0] for k in result.plans}:
        try:
            result.plans[DEPLOY] = compile_net(net, DEPLOY)
        except ErrorList as e:
            errors.extend(e.errors)
        except NetspecError as e:
            errors.append(e)
    unique: dict[tuple, NetspecError] = {}
    for e in errors:
        unique.setdefault((e.file, e.line, e.layer, e.field, e.message), e)
    if unique:
        raise ErrorList(list(unique.values()))
    seen = set()
    for p in result.plans.values():
        for w in p.warnings:
            key = (w.file, w.line, w.message)
            if key not in seen:
                seen.add(key)
                result.warnings.append(w)
    return result


def summary_rows(p: Plan) -> list[dict]:
    """One row per layer: name, type, top shapes, params, forward FLOPs, memory (bytes)."""
    from netspec.graph.plan import describe_shape, memory_bytes

    rows = []
    for lp in p.layers:
        try:
            flops = lp.layer.flops(lp.bottom_shapes, lp.top_shapes)
        except NetspecError:
            flops = 0
        own = sum(q.size for q in lp.params if q.owner is None)
        mem = sum(memory_bytes(s) for s, ip in zip(lp.top_shapes, lp.inplace) if not ip and not lp.layer.view)
        rows.append({"layer": lp.name, "type": lp.type, "tops": [describe_shape(s) for s in lp.top_shapes],
                     "params": own, "flops": int(flops), "memory": mem + own * 4})
    return rows


def summary_totals(p: Plan, rows: list[dict]) -> dict:
    return {"params": p.num_params, "learnable": sum(q.size for q in p.params if q.owner is None and q.lr_mult != 0),
            "flops": sum(r["flops"] for r in rows), "memory": sum(r["memory"] for r in rows)}


def build_net(net: NetSpec, phase: str = "TRAIN", *, level: int | None = None, stages: Iterable[str] | None = None,
              dtype=None, seed: int = 0, dummy_data: bool = False, share_from=None, device=None,
              precision: str = "float32"):
    """A runnable ``Net`` for one phase (imports numpy kernels; numba compiles on first use);
    ``device``: cpu, cuda or cuda:N (default: the current device); ``precision``: of the
    activations, as the solver's field (float16 on a GPU: float16 buffers)."""
    import numpy as np

    from netspec.core.net import Net
    from netspec.graph.dummy import with_dummy_data

    spec = phase_net(net, phase, level, stages)
    if dummy_data:
        spec = with_dummy_data(spec)
    return Net(plan(insert_splits(spec)), dtype=dtype or np.float32, seed=seed, share_from=share_from,
               device=device, precision=precision)


def time_net(n, iterations: int = 50, warmup: int = 1) -> list[dict]:
    """Per-layer forward and backward milliseconds (averaged), after ``warmup`` passes.

    Like ``caffe time``: each layer is timed alone, in order, forward then backward in reverse.
    On a GPU each layer's time is measured on the device with CUDA events (kernels run
    asynchronously, so a host clock would time the launches, not the work).
    """
    from netspec.core.device import use

    for _ in range(warmup):
        n.forward()
        n.backward()
    fwd = [0.0] * len(n.steps)
    bwd = [0.0] * len(n.steps)
    clock = _Clock(n.device)
    with use(n.device):
        for _ in range(iterations):
            for i, (lp, bottoms, tops) in enumerate(n.steps):
                with clock.span() as got:
                    lp.layer.forward(bottoms, tops)
                fwd[i] += got()
            for lp, bottoms, tops in n.steps:
                for j, w in enumerate(lp.loss_weights):
                    if w:
                        tops[j].grad[...] = w
            for i in range(len(n.steps) - 1, -1, -1):
                lp, bottoms, tops = n.steps[i]
                if lp.need_backward:
                    with clock.span() as got:
                        lp.layer.backward(tops, lp.bottom_need_backward, bottoms)
                    bwd[i] += got()
    rows = []
    for i, (lp, _, _) in enumerate(n.steps):
        rows.append({"layer": lp.name, "type": lp.type, "algo": getattr(lp.layer, "algo", ""),
                     "forward_ms": 1000 * fwd[i] / iterations,
                     "backward_ms": 1000 * bwd[i] / iterations if lp.need_backward else None})
    return rows


class _Clock:
    """Seconds spent by a block of work: the host clock on the CPU (and under the CUDA
    simulator, which runs there), CUDA events recorded around the block on a GPU."""

    def __init__(self, device):
        self.device = device
        self.cupy = None
        if device.is_cuda:
            from netspec.kernels.cuda import runtime

            rt = runtime(device.index)
            self.cupy = None if rt.sim else rt.xp

    @contextlib.contextmanager
    def span(self):
        """``with clock.span() as got: ...`` then ``got()`` is the block's seconds."""
        box = [0.0]
        if self.cupy is not None:
            start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            yield lambda: box[0]
            end.record()
            end.synchronize()
            box[0] = self.cupy.cuda.get_elapsed_time(start, end) / 1000.0
        else:
            t0 = time.perf_counter()
            yield lambda: box[0]
            box[0] = time.perf_counter() - t0
