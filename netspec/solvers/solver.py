"""The training loop, in Caffe's order (``Solver::Step``/``Solve``, ``SGDSolver::ApplyUpdate``).

One iteration::

    clear the param gradients
    test (every test_interval iterations; at 0 only with test_initialization)
    iter_size x forward/backward (param gradients accumulate); loss = their mean
    smooth the loss over average_loss iterations; display (every display iterations)
    rate = lr(iter); clip, normalize, regularize, update (netspec.solvers.rules)
    iter += 1
    snapshot (every snapshot iterations, or when a signal asked for one)

``solve()`` runs to ``max_iter``, snapshots at the end (``snapshot_after_train``, unless the
last iteration just did), logs a final loss and test when they fall on their intervals, and
says "Optimization Done.".  Ctrl-C and SIGTERM finish the current iteration, snapshot, and make
``solve()`` return 130; SIGHUP snapshots and goes on.  A NaN or Inf loss or param stops the run
with a ``SolverError`` naming the iteration and the first layer whose output went bad (found
by re-running that forward pass layer by layer); snapshots already written are kept.

Test nets share the train net's params (views, Caffe's ``ShareTrainedLayersWith``).  Every
random draw comes from the nets' generators, seeded from ``random_seed`` (train net: the seed,
test net k: seed + 1 + k), and a snapshot holds all of their states and every layer's
``get_state()``, so a resumed run continues bit for bit (with the same thread settings).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from netspec.errors import SolverError, WeightsError
from netspec.io import snapshot as snap
from netspec.io.weights import copy_weights, load_weights, matches, save_weights
from netspec.solvers.config import Training
from netspec.solvers.rules import Updater
from netspec.solvers.runlog import RunLog
from netspec.solvers.schedules import LearningRate
from netspec.solvers.schema import RESUMABLE_CHANGES
from netspec.spec.model import NetSpec, to_plain

INTERRUPTED = 130


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def apply_freeze(spec: NetSpec, globs: Iterable[str]) -> NetSpec:
    """The net with ``lr_mult: 0`` on every param of the layers the globs name."""
    from netspec.core.layer import layer_class

    globs = list(globs)
    if not globs:
        return spec
    layers = []
    for layer in spec.layers:
        cls = layer_class(layer["type"])
        if cls.param_names and matches(layer["name"], globs):
            param = {k: dict(v or {}) for k, v in (layer.get("param") or {}).items()}
            for pn in cls.param_names:
                param.setdefault(pn, {})["lr_mult"] = 0.0
            layer = layer.derive(param=param)
        layers.append(layer)
    return spec.with_layers(layers)


def _unmatched(globs: Iterable[str], names: list[str]) -> list[str]:
    return [g for g in globs if not any(matches(n, [g]) for n in names)]


class Solver:
    """A train net, its test nets, the schedule and the update rule; ``solve()`` trains."""

    def __init__(self, training: Training, run_dir: Path | None = None, log: RunLog | None = None,
                 progress: bool = False, dtype=np.float32, seed: int | None = None,
                 snapshots_in_run_dir: bool = False):
        from netspec.api import compile_net
        from netspec.core.net import Net

        self.training = training
        self.cfg = cfg = training.solver
        self.run_dir = run_dir
        # a run folder given on the command line beats the folder of the solver's snapshot_prefix
        self.snapshots_in_run_dir = snapshots_in_run_dir and run_dir is not None
        self.log = log or RunLog(None, echo=None)
        self.progress = progress
        self.dtype = np.dtype(dtype)
        if seed is None:
            seed = cfg["random_seed"]
        if seed < 0:
            seed = int(np.random.SeedSequence().entropy % (2 ** 31))
            self.seed_source = "from the clock"
        else:
            self.seed_source = "random_seed"
        self.seed = int(seed)
        self.freeze = list(cfg.get("freeze", [])) + list(training.train.spec.get("freeze", []))
        self.reinit = list(cfg.get("reinit", [])) + list(training.train.spec.get("reinit", []))

        train_spec = apply_freeze(training.train.spec, self.freeze)
        tr = training.train
        self.net = Net(compile_net(train_spec, "TRAIN", tr.level, tr.stages), self.dtype, seed=self.seed)
        self.test_nets = []
        for k, use in enumerate(training.tests):
            spec = apply_freeze(use.spec, self.freeze)
            plan = compile_net(spec, "TEST", use.level, use.stages)
            self.test_nets.append(Net(plan, self.dtype, seed=self.seed + 1 + k, share_from=self.net))
        names = [lp.name for lp in self.net.layers]
        for key, globs in (("freeze", self.freeze), ("reinit", self.reinit)):
            for g in _unmatched(globs, names):
                self.log.warning(f"{key}: '{g}' matches no layer of the train net")

        self.lr = LearningRate(cfg)
        self.updater = Updater(cfg, self.net)
        self.iter = 0
        self.losses: list[float] = []
        self.smoothed_loss = 0.0
        self.elapsed = 0.0
        self.stop_requested: int | None = None
        self.snapshot_requested = False
        self.last_snapshot: Path | None = None
        self.last_snapshot_iter: int | None = None
        self.net_text, self.solver_text = self._texts()
        self.prefix = self._prefix()
        self._train_loss_weights = _output_weights(self.net)
        self._test_loss_weights = [_output_weights(n) for n in self.test_nets]
        self.batch = _batch_size(self.net) * cfg["iter_size"]

    # ---- identity --------------------------------------------------------------------------
    @property
    def net_name(self) -> str:
        return self.training.net_name

    def _texts(self) -> tuple[str, str]:
        train = self.training.train.spec

        def plain(spec: NetSpec) -> dict:
            # the solver a net file carries is compared as the solver, not as part of the net
            return {k: v for k, v in to_plain(spec).items() if k != "solver"}

        nets = {"train": plain(train),
                "test": [("train" if u.spec is train else plain(u.spec)) for u in self.training.tests],
                "train_state": {"level": self.training.train.level, "stage": self.training.train.stages},
                "test_state": [{"level": u.level, "stage": u.stages} for u in self.training.tests],
                "dtype": self.dtype.name}
        return json.dumps(nets, indent=1), json.dumps(self.cfg.plain(), indent=1)

    def _prefix(self) -> Path:
        cfg = self.cfg
        if "snapshot_prefix" in cfg:
            p = cfg.path(cfg["snapshot_prefix"])
            if str(cfg["snapshot_prefix"]).endswith(("/", os.sep)) or p.is_dir():
                # Caffe appends the solver file's stem here; the net name matches the default prefix
                p = p / self.net_name
            if self.snapshots_in_run_dir:   # keep the file names, in the folder asked for
                return self.run_dir / p.name
            return p
        base = self.run_dir if self.run_dir is not None else Path(".")
        return base / self.net_name

    # ---- weights ---------------------------------------------------------------------------
    def load_initial_weights(self, refs: list[tuple[str, Path]]) -> None:
        """Copy weights files into the nets by name, in order (later files win), printing a table."""
        for shown, path in refs:
            tensors = load_weights(path)
            report = copy_weights(self.net, tensors, shown, self.reinit)
            for line in report.table().splitlines():
                self.log.info(line)
            for tnet in self.test_nets:
                copy_weights(tnet, tensors, shown, self.reinit)

    def check_snapshot_dir(self) -> None:
        """Caffe probes that snapshots can be written before training starts; so do we."""
        if not (self.cfg["snapshot"] or self.cfg["snapshot_after_train"]):
            return
        folder = self.prefix.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".netspec-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise SolverError(f"cannot write snapshots to {folder}: {e.strerror}",
                              hint="set snapshot_prefix to a writable folder") from None

    # ---- the loop --------------------------------------------------------------------------
    def solve(self, handle_signals: bool = True) -> int:
        """Train to max_iter; 0 when done, 130 when a signal stopped it (after a snapshot)."""
        cfg = self.cfg
        self.log.info(f"Solving {self.net_name}")
        self.log.info(f"Learning Rate Policy: {cfg['lr_policy']}")
        old = self._install_signals() if handle_signals else {}
        try:
            self.step(max(0, cfg["max_iter"] - self.iter))
            if self.stop_requested:
                if self.last_snapshot_iter != self.iter:
                    self.snapshot()
                self.log.info("Optimization stopped early.")
                return INTERRUPTED
            if cfg["snapshot_after_train"] and (not cfg["snapshot"] or self.iter % cfg["snapshot"] != 0):
                self.snapshot()
            if cfg["display"] and self.iter % cfg["display"] == 0:
                loss = self.net.forward()
                self._smooth(loss)
                self.log.info(f"Iteration {self.iter}, loss = {_fmt(self.smoothed_loss)}")
            if cfg["test_interval"] and self.iter % cfg["test_interval"] == 0:
                self.test_all()
            self.log.info("Optimization Done.")
            return 0
        finally:
            self._restore_signals(old)

    def step(self, iters: int) -> None:
        cfg, net, upd = self.cfg, self.net, self.updater
        stop_iter = self.iter + iters
        display, test_interval, snapshot = cfg["display"], cfg["test_interval"], cfg["snapshot"]
        iter_size = cfg["iter_size"]
        bar = self._bar(stop_iter)
        t_display, it_display = time.perf_counter(), self.iter
        wait_display = self._data_wait()
        try:
            while self.iter < stop_iter:
                t0 = time.perf_counter()
                net.clear_param_grads()
                if test_interval and self.iter % test_interval == 0 and (self.iter > 0 or cfg["test_initialization"]):
                    if not self.test_all():
                        break
                loss = 0.0
                for _ in range(iter_size):
                    one = net.forward_backward()
                    if not math.isfinite(one):
                        self._nonfinite_loss(one)
                    loss += one
                loss /= iter_size
                self._smooth(loss)
                rate = self.lr(self.iter)
                shown = bool(display) and self.iter % display == 0
                if shown:
                    now = time.perf_counter()
                    lapse = now - t_display
                    wait = self._data_wait()
                    frac = (wait - wait_display) / lapse if lapse > 0 else 0.0
                    self._display(lapse, self.iter - it_display, rate, frac)
                    t_display, it_display, wait_display = now, self.iter, wait
                upd.apply(rate, self.iter)
                if shown and upd.last_clip is not None:
                    norm, scale = upd.last_clip
                    self.log.info(f"Gradient clipping: scaling down gradients (L2 norm {_fmt(norm)} > "
                                  f"{_fmt(upd.clip)}) by scale factor {_fmt(scale)}")
                if not _all_finite(net.param_data):
                    self._nonfinite_params(rate)
                self.iter += 1
                self.elapsed += time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    its = bar.format_dict.get("rate")
                    bar.set_postfix(loss=f"{self.smoothed_loss:.4g}", lr=f"{rate:.3g}",
                                    img_s=f"{its * self.batch:.0f}" if its else "-", refresh=False)
                if (snapshot and self.iter % snapshot == 0) or self.snapshot_requested or self.stop_requested:
                    self.snapshot_requested = False
                    self.snapshot()
                if self.stop_requested:
                    break
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, stop_iter: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=stop_iter, initial=self.iter, unit="it", dynamic_ncols=True, leave=False)

    def _smooth(self, loss: float) -> None:
        """Caffe's moving average over the last ``average_loss`` losses; the window is indexed by
        the iteration so that a resumed run continues the same window."""
        k = self.cfg["average_loss"]
        if len(self.losses) < k:
            self.losses.append(loss)
        else:
            self.losses[self.iter % k] = loss
        self.smoothed_loss = float(np.mean(self.losses))

    def _data_wait(self) -> float:
        return sum(float(getattr(lp.layer, "wait_seconds", 0.0) or 0.0) for lp in self.net.layers)

    def _display(self, lapse: float, done: int, rate: float, wait_frac: float) -> None:
        it, cfg = self.iter, self.cfg
        per_s = done / lapse if lapse > 0 and done else 0.0
        self.log.info(f"Iteration {it} ({_fmt(per_s)} iter/s, {lapse:.3f}s/{cfg['display']} iters), "
                      f"loss = {_fmt(self.smoothed_loss)}")
        self._record(it, "TRAIN", "smoothed_loss", self.smoothed_loss, rate, data_wait=round(wait_frac, 4))
        j = 0
        for name, w in self._train_loss_weights:
            for v in self.net.blobs[name].data.ravel():
                self.log.info(f"    Train net output #{j}: {name} = {_fmt(float(v))}" + _loss_msg(w, float(v)))
                j += 1
            data = self.net.blobs[name].data
            if data.size == 1:
                self._record(it, "TRAIN", name, float(data.ravel()[0]), rate, data_wait=round(wait_frac, 4))
        if wait_frac >= 0.0005:
            self.log.info(f"    Data wait: {100 * wait_frac:.1f}% of the step time")
        self.log.info(f"Iteration {it}, lr = {_fmt(rate)}")
        if cfg["debug_info"]:
            self._debug_info()

    def _debug_info(self) -> None:
        """Mean absolute values of every top, param and gradient (Caffe's debug_info, on display)."""
        for lp, bottoms, tops in self.net.steps:
            for t in tops:
                self.log.info(f"    [Forward] Layer {lp.name}, top blob {t.name} data: "
                              f"{_fmt(float(np.abs(t.data).mean()) if t.data.size else 0.0)}")
            for pn, blob in lp.layer.params.items():
                self.log.info(f"    [Forward] Layer {lp.name}, param blob {pn} data: "
                              f"{_fmt(float(np.abs(blob.data).mean()))}")
        for lp, bottoms, tops in reversed(self.net.steps):
            if not lp.need_backward:
                continue
            for b, need in zip(bottoms, lp.bottom_need_backward):
                if need:
                    self.log.info(f"    [Backward] Layer {lp.name}, bottom blob {b.name} diff: "
                                  f"{_fmt(float(np.abs(b.grad).mean()) if b.grad.size else 0.0)}")
            for pn, blob in lp.layer.params.items():
                self.log.info(f"    [Backward] Layer {lp.name}, param blob {pn} diff: "
                              f"{_fmt(float(np.abs(blob.grad).mean()))}")

    # ---- testing ---------------------------------------------------------------------------
    def test_all(self) -> bool:
        """Run every test net; False when a signal interrupted it (the test nets are then put
        back as they were, so a resumed run tests the same batches)."""
        for k in range(len(self.test_nets)):
            if not self.test(k):
                return False
        return True

    def test(self, k: int) -> bool:
        net, use = self.test_nets[k], self.training.tests[k]
        self.log.info(f"Iteration {self.iter}, Testing net (#{k})")
        before = _net_state(net)
        sums: dict[str, np.ndarray] = {name: np.zeros(net.blobs[name].data.size) for name, _ in
                                       self._test_loss_weights[k]}
        loss = 0.0
        for _ in range(use.test_iter):
            if self.stop_requested:
                _set_net_state(net, before)
                self.log.info("Test interrupted.")
                return False
            loss += net.forward()
            for name in sums:
                sums[name] += net.blobs[name].data.ravel()
        if self.cfg["test_compute_loss"]:
            loss /= use.test_iter
            self.log.info(f"Test loss: {_fmt(loss)}")
            self._record(self.iter, "TEST", "test_loss", loss, None, test_net=k)
        j = 0
        for name, w in self._test_loss_weights[k]:
            means = sums[name] / use.test_iter
            for v in means:
                self.log.info(f"    Test net output #{j}: {name} = {_fmt(float(v))}" + _loss_msg(w, float(v)))
                j += 1
            if means.size == 1:
                self._record(self.iter, "TEST", name, float(means[0]), None, test_net=k)
        return True

    def _record(self, it: int, phase: str, name: str, value: float, lr: float | None, **extra) -> None:
        self.log.record(iter=it, phase=phase, name=name, value=value, lr=lr, seconds=round(self.elapsed, 3), **extra)

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> Path:
        w = snap.weights_path(self.prefix, self.iter)
        s = snap.state_path(self.prefix, self.iter)
        self.log.info(f"Snapshotting to safetensors file {w}")
        save_weights(w, self.net, {"net": self.net_name, "iter": str(self.iter)}, with_diff=self.cfg["snapshot_diff"])
        self.log.info(f"Snapshotting solver state to safetensors file {s}")
        tensors, record = self.state()
        snap.write_state(s, tensors, record, self.net_text, self.solver_text)
        self.last_snapshot, self.last_snapshot_iter = s, self.iter
        return s

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors: dict[str, np.ndarray] = {}
        for p in self.net.learnable:
            tensors[f"param/{p.key}"] = p.blob.data
            n = p.blob.data.size
            for sname, arr in self.updater.state.items():
                tensors[f"rule/{sname}/{p.key}"] = arr[p.offset:p.offset + n].reshape(p.blob.data.shape)
        nets = {"train": _net_state(self.net)}
        for k, tnet in enumerate(self.test_nets):
            nets[f"test{k}"] = _net_state(tnet)
            for p in tnet.learnable:
                tensors[f"test{k}/param/{p.key}"] = p.blob.data
        record = {"iter": self.iter, "current_step": self.lr.current_step, "rule": self.cfg["type"],
                  "losses": self.losses, "elapsed": self.elapsed, "seed": self.seed, "net_name": self.net_name,
                  "run_dir": str(self.run_dir.resolve()) if self.run_dir is not None else None,
                  "nets": snap.pack(nets, "state", tensors)}
        return tensors, record

    def restore(self, path: str | os.PathLike, loaded: tuple | None = None) -> None:
        """Continue from a state file (``loaded``: what ``read_state`` already returned for it);
        refuses one written for another net or solver."""
        tensors, record, net_text, solver_text = loaded if loaded is not None else snap.read_state(path)
        shown = str(path)
        changes = _changes("net", json.loads(net_text), json.loads(self.net_text))
        old_solver, new_solver = json.loads(solver_text), json.loads(self.solver_text)
        for key in RESUMABLE_CHANGES:
            old_solver.pop(key, None)
            new_solver.pop(key, None)
        changes += _changes("solver", old_solver, new_solver)
        if changes:
            listed = "; ".join(changes[:12]) + (f"; and {len(changes) - 12} more" if len(changes) > 12 else "")
            raise SolverError(f"cannot resume: the net or solver changed since this state was written: {listed}",
                              file=shown, hint="only " + ", ".join(RESUMABLE_CHANGES[:4]) + " (and output "
                              "settings) may change; start a new run to train the changed setup")
        self.log.info(f"Restoring previous solver status from {shown}")
        for p in self.net.learnable:
            _put(p.blob.data, tensors, f"param/{p.key}", shown)
            n = p.blob.data.size
            for sname, arr in self.updater.state.items():
                _put(arr[p.offset:p.offset + n].reshape(p.blob.data.shape), tensors, f"rule/{sname}/{p.key}", shown)
        for k, tnet in enumerate(self.test_nets):
            for p in tnet.learnable:
                _put(p.blob.data, tensors, f"test{k}/param/{p.key}", shown)
        nets = snap.unpack(record["nets"], tensors)
        _set_net_state(self.net, nets["train"])
        for k, tnet in enumerate(self.test_nets):
            _set_net_state(tnet, nets[f"test{k}"])
        self.iter = int(record["iter"])
        self.lr.current_step = int(record["current_step"])
        self.losses = [float(v) for v in record["losses"]]
        self.smoothed_loss = float(np.mean(self.losses)) if self.losses else 0.0
        self.elapsed = float(record.get("elapsed", 0.0))
        self.seed = int(record.get("seed", self.seed))
        self.last_snapshot, self.last_snapshot_iter = Path(path), self.iter

    # ---- failures --------------------------------------------------------------------------
    def _where(self) -> str:
        return (f"the last good snapshot, {self.last_snapshot}, is kept" if self.last_snapshot is not None
                else "no snapshot was written before it")

    def _nonfinite_loss(self, loss: float) -> None:
        where = locate_nonfinite(self.net)
        what = f"; it first appears in {where}" if where else ""
        raise SolverError(f"training stopped at iteration {self.iter}: the loss is {loss}{what}; {self._where()}",
                          hint="lower base_lr, set clip_gradients, or check the data for NaN/Inf")

    def _nonfinite_params(self, rate: float) -> None:
        bad = [p.key for p in self.net.learnable if not np.isfinite(p.blob.data).all()]
        listed = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise SolverError(f"training stopped at iteration {self.iter}: the update (lr {_fmt(rate)}) made params "
                          f"NaN/Inf, first in layer '{bad[0].split('/')[0]}' ({listed}); {self._where()}",
                          hint="lower base_lr, set clip_gradients, or check the data for NaN/Inf")

    # ---- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                old[sig] = signal.signal(sig, self._on_signal)
        return old

    @staticmethod
    def _restore_signals(old: dict) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            self.snapshot_requested = True
            return
        if self.stop_requested:  # a second Ctrl-C: stop at once, without a snapshot
            raise KeyboardInterrupt
        self.stop_requested = signum
        self.log.info(f"{signal.Signals(signum).name} received: stopping after this iteration "
                      f"(again to stop at once)")

    def close(self) -> None:
        for net in [self.net] + self.test_nets:
            for lp in net.layers:
                lp.layer.close()


# ---- helpers -------------------------------------------------------------------------------

def _all_finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no NaN or Inf: one BLAS dot product (a NaN or Inf anywhere makes it
    non-finite), and the exact element test only when the sum of squares overflowed."""
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(np.dot(a, a))):
            return True
    return bool(np.isfinite(a).all())


def _loss_msg(w: float, v: float) -> str:
    return f" (* {_fmt(w)} = {_fmt(w * v)} loss)" if w else ""


def _output_weights(net) -> list[tuple[str, float]]:
    """(output blob, its loss weight) in net-output order (alphabetical, as Caffe)."""
    weight: dict[str, float] = {}
    for lp in net.layers:
        for t, w in zip(lp.tops, lp.loss_weights):
            weight[t] = w
    return [(name, weight.get(name, 0.0)) for name in net.plan.outputs]


def _batch_size(net) -> int:
    for lp in net.layers:
        if not lp.bottoms and lp.top_shapes and lp.top_shapes[0]:
            return int(lp.top_shapes[0][0])
    return 1


def _net_state(net) -> dict:
    layers = {}
    for lp in net.layers:
        st = lp.layer.get_state()
        if st:
            layers[lp.name] = st
    return {"rng": net.rng.bit_generator.state, "layers": layers}


def _set_net_state(net, state: dict) -> None:
    net.rng.bit_generator.state = state["rng"]
    by_name = {lp.name: lp for lp in net.layers}
    for name, st in state["layers"].items():
        if name in by_name:
            by_name[name].layer.set_state(st)


def _put(dst: np.ndarray, tensors: dict, key: str, file: str) -> None:
    src = tensors.get(key)
    if src is None:
        raise WeightsError(f"the state has no '{key}'", file=file)
    if src.shape != dst.shape:
        raise WeightsError(f"'{key}' has shape {list(src.shape)} in the state, {list(dst.shape)} here", file=file)
    dst[...] = src


def locate_nonfinite(net) -> str | None:
    """Re-run the last forward pass layer by layer (data layers keep their batch) and name the
    first layer whose output holds a NaN or Inf."""
    with np.errstate(all="ignore"):
        for lp, bottoms, tops in net.steps:
            if bottoms:
                lp.layer.forward(bottoms, tops)
            for t in tops:
                if not np.isfinite(t.data).all():
                    kind = "input" if not bottoms else "output"
                    return f"the {kind} '{t.name}' of layer '{lp.name}' ({lp.type})"
    return None


def _changes(label: str, old, new, path: str = "") -> list[str]:
    """Human lines for every difference between two plain structures."""
    out: list[str] = []
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(f"{label}: {sub} was {_short(old[k])}, now absent")
            elif k not in old:
                out.append(f"{label}: {sub} is new ({_short(new[k])})")
            else:
                out.extend(_changes(label, old[k], new[k], sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        named = all(isinstance(x, dict) and "name" in x for x in old + new)
        if named:
            old_by = {x["name"]: x for x in old}
            new_by = {x["name"]: x for x in new}
            for name in list(old_by) + [n for n in new_by if n not in old_by]:
                sub = f"{path}[{name}]"
                if name not in new_by:
                    out.append(f"{label}: {sub} was removed")
                elif name not in old_by:
                    out.append(f"{label}: {sub} was added")
                else:
                    out.extend(_changes(label, old_by[name], new_by[name], sub))
            if not out and [x["name"] for x in old] != [x["name"] for x in new]:
                out.append(f"{label}: the order of {path} changed")
            return out
        if len(old) == len(new):
            for i, (a, b) in enumerate(zip(old, new)):
                out.extend(_changes(label, a, b, f"{path}[{i}]"))
            return out
    if old != new:
        out.append(f"{label}: {path or 'value'} {_short(old)} -> {_short(new)}")
    return out


def _short(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."
