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

Snapshots: a snapshot that cannot be written (a full disk, a folder that became read-only)
leaves the previous one valid (both files are written atomically, and a weights file whose
state could not follow is removed) and either stops the run with a ``SolverError`` naming the
file, the reason and the snapshot kept (``snapshot_failure: stop``, the default) or is logged
and the run trains on, trying again at the next snapshot (``continue``; the final snapshot,
at the end or on a signal, stops with the error either way, since the run's result would be
lost).  ``snapshot_keep: K`` keeps the K newest snapshots of the prefix and logs what it
removed and kept.  Before training, the snapshot folder is probed (a read-only or missing
folder is an error then, not at the first snapshot) and temporary files that killed writers
left there are removed.

Data parallel (``mpiexec -n S``; ``netspec.solvers.distributed``): every rank runs this same
loop on its share of each global batch and the ``comm`` it is handed averages the gradient
arenas before the update (one Allreduce, which also sums the loss and the stop/snapshot flags,
so every rank stops and snapshots at the same iteration).  The global batch is stated
(``global_batch``: each rank's data layers get ``global_batch / (S * iter_size)``) or derived
(``S * batch_size * iter_size``); ``lr_scaling: linear`` scales ``base_lr`` by
``global batch / lr_base_batch`` (Goyal et al.'s rule; ``warmup_iter`` still applies).  A test
pass is shared out the same way and its outputs are averaged over every rank.  Only rank 0
logs and writes snapshots.  BatchNorm normalizes with each rank's own batch statistics (Goyal
et al.); before each test and snapshot the running statistics are rank 0's
(``batch_norm_stats: local``) or averaged over the ranks (``allreduce``).

Test nets share the train net's params (views, Caffe's ``ShareTrainedLayersWith``).  Every
random draw comes from the nets' generators, seeded from ``random_seed`` (train net: the seed,
test net k: seed + 1 + k), and a snapshot holds all of their states and every layer's
``get_state()``, so a resumed run continues bit for bit (with the same thread settings).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from netspec.core.device import copy_in, to_host
from netspec.errors import SolverError, WeightsError
from netspec.io import atomic
from netspec.io import snapshot as snap
from netspec.io.weights import copy_weights, load_weights, matches, save_weights
from netspec.solvers.config import Training
from netspec.solvers.distributed import Communicator, rank_device, rank_stream
from netspec.solvers.precision import BACKOFF, LossScaler
from netspec.solvers.precision import all_finite as _all_finite
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
                 snapshots_in_run_dir: bool = False, device=None, comm: Communicator | None = None,
                 snapshot_failure: str | None = None):
        from netspec.api import compile_net
        from netspec.core.net import Net

        self.training = training
        self.cfg = cfg = training.solver
        self.comm = comm = comm if comm is not None else Communicator()
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
        # every rank builds the same net: a seed drawn from the clock is rank 0's
        self.seed = int(comm.broadcast_object(int(seed), what="sharing the random seed"))
        self.freeze = list(cfg.get("freeze", [])) + list(training.train.spec.get("freeze", []))
        self.reinit = list(cfg.get("reinit", [])) + list(training.train.spec.get("reinit", []))

        train_spec = apply_freeze(training.train.spec, self.freeze)
        tr = training.train
        self.device = _solver_device(cfg, device, comm)
        train_plan = compile_net(train_spec, "TRAIN", tr.level, tr.stages)
        self.batch_source = "derived: ranks x batch_size x iter_size"
        self.global_batch = comm.size * _batch_size_of_plan(train_plan) * cfg["iter_size"]
        if "global_batch" in cfg:
            per_rank = self._per_rank_batch(train_plan)
            if per_rank != _batch_size_of_plan(train_plan):
                train_plan = compile_net(_with_batch(train_spec, lambda b: per_rank), "TRAIN", tr.level, tr.stages)
            self.global_batch = int(cfg["global_batch"])
            self.batch_source = "stated: global_batch"
        self.precision = cfg.get("precision", "float32")
        self.net = Net(train_plan, self.dtype, seed=self.seed, device=self.device, precision=self.precision)
        self.test_nets = []
        self.test_iters: list[int] = []     # test batches each rank runs per test
        self.test_notes: list[str] = []
        for k, use in enumerate(training.tests):
            spec = apply_freeze(use.spec, self.freeze)
            plan = compile_net(spec, "TEST", use.level, use.stages)
            iters, per_rank, note = _test_share(plan, use.test_iter, comm.size)
            if per_rank is not None:
                plan = compile_net(_with_batch(spec, lambda b: b // comm.size), "TEST", use.level, use.stages)
            self.test_iters.append(iters)
            self.test_notes.append(note)
            self.test_nets.append(Net(plan, self.dtype, seed=self.seed + 1 + k, share_from=self.net,
                                      precision=self.precision))
        for net in [self.net] + self.test_nets:
            for lp in net.layers:
                if hasattr(lp.layer, "shard"):
                    lp.layer.shard(comm.rank, comm.size)
            rank_stream(net.rng, comm.rank)
        self._bn_ranges = _batchnorm_ranges(self.net)
        names = [lp.name for lp in self.net.layers]
        for key, globs in (("freeze", self.freeze), ("reinit", self.reinit)):
            for g in _unmatched(globs, names):
                self.log.warning(f"{key}: '{g}' matches no layer of the train net")

        self.base_lr = float(cfg["base_lr"])
        if cfg["lr_scaling"] == "linear":
            self.base_lr = self.base_lr * self.global_batch / cfg["lr_base_batch"]
        self.lr = LearningRate(dict(cfg, base_lr=self.base_lr))
        self.updater = Updater(cfg, self.net)
        self.scaler = LossScaler(cfg)
        self.iter = 0
        self.losses: list[float] = []
        self.smoothed_loss = 0.0
        self.elapsed = 0.0
        self.stop_requested: int | None = None
        self.snapshot_requested = False
        self.last_snapshot: Path | None = None
        self.last_snapshot_iter: int | None = None
        # --on-snapshot-failure beats the solver's field; neither changes the trajectory
        self.snapshot_failure = snapshot_failure or cfg["snapshot_failure"]
        self.snapshot_keep = int(cfg["snapshot_keep"])
        self.failed_snapshots: list[int] = []   # iterations whose snapshot could not be written
        self.net_text, self.solver_text = self._texts()
        self.prefix = self._prefix()
        self._train_loss_weights = _output_weights(self.net)
        self._test_loss_weights = [_output_weights(n) for n in self.test_nets]
        self.batch = self.global_batch
        self._scalars = np.zeros(3)     # loss, stop, snapshot: summed over the ranks at each step
        self._stopped = False           # the ranks agreed to stop

    def _per_rank_batch(self, plan) -> int:
        """``global_batch / (ranks * iter_size)``, or a located error when it does not divide."""
        cfg, size = self.cfg, self.comm.size
        g, k = int(cfg["global_batch"]), int(cfg["iter_size"])
        if not _data_layers(plan):
            raise cfg.error("global_batch needs the train net's batches to come from data layers "
                            "(Data, ImageData, HDF5Data) whose batch_size can be set", "global_batch")
        if g % (size * k):
            raise cfg.error(f"global_batch {g} cannot be shared out: it must be a multiple of ranks x "
                            f"iter_size = {size} x {k} = {size * k}", "global_batch",
                            hint="choose a global_batch that the number of ranks divides, or another number "
                                 "of ranks")
        return g // (size * k)

    def describe_parallel(self) -> list[str]:
        """Log lines on the ranks, the global batch and where it came from, and the scaled rate."""
        cfg, comm = self.cfg, self.comm
        per_rank = self.global_batch // (comm.size * cfg["iter_size"])
        lines = []
        if comm.size > 1:
            lines.append(f"Data parallel: {comm.name}")
        if comm.size > 1 or "global_batch" in cfg or cfg["lr_scaling"] != "none":
            lines.append(f"Global batch: {self.global_batch} = {comm.size} rank{'s' if comm.size > 1 else ''} x "
                         f"batch {per_rank} x iter_size {cfg['iter_size']} ({self.batch_source})")
        if cfg["lr_scaling"] == "linear":
            lines.append(f"lr_scaling linear: base_lr {_fmt(cfg['base_lr'])} x {self.global_batch} / "
                         f"lr_base_batch {cfg['lr_base_batch']} = {_fmt(self.base_lr)}")
        if self.precision != "float32":
            total, half = self.net.activation_bytes()
            where = (f"in float16 buffers ({_mb(half)} of the train net's {_mb(total)} of blobs)" if half
                     else "as values rounded in float32 buffers")
            lines.append(f"Precision: {self.precision} activations and gradients {where}, float32 weights "
                         f"and sums; {self.scaler.describe()}")
        if comm.size > 1:
            for k, note in enumerate(self.test_notes):
                lines.append(f"Test net #{k}: {note}")
            if self._bn_ranges:
                lines.append(f"BatchNorm: batch statistics per rank; running statistics "
                             f"{'averaged over the ranks' if cfg['batch_norm_stats'] == 'allreduce' else 'of rank 0'}"
                             f" before each test and snapshot (batch_norm_stats: {cfg['batch_norm_stats']})")
        return lines

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
        """Caffe probes that snapshots can be written before training starts; so do we (a
        read-only folder is found now, not after the first snapshot interval).  Temporary files
        of snapshot writes whose process was killed are removed, and a folder with less free
        space than two snapshots take is warned about."""
        if not (self.cfg["snapshot"] or self.cfg["snapshot_after_train"]):
            return
        folder = self.prefix.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not self.comm.is_root:
                return
            atomic.probe_writable(folder)
        except OSError as e:
            raise SolverError(f"cannot write snapshots to {folder}: {_reason(e)}",
                              hint="set snapshot_prefix (or --run-dir) to a writable folder") from None
        removed = snap.remove_stale_temps(folder)
        if removed:
            self.log.info(f"Removed {len(removed)} temporary file(s) of interrupted snapshot writes: "
                          + ", ".join(p.name for p in removed))
        need = 2 * self.snapshot_bytes()
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return
        if free < need:
            self.log.warning(f"only {_mb(free)} free in {folder}, and one snapshot takes about "
                             f"{_mb(need // 2)}: snapshots may fail (snapshot_failure: {self.snapshot_failure})")

    def snapshot_bytes(self) -> int:
        """About what one snapshot (weights and state files) takes on disk."""
        n = sum(p.blob.data.size for p in self.net.learnable)
        weights = 4 * n * (2 if self.cfg["snapshot_diff"] else 1)
        state = self.dtype.itemsize * n * (1 + len(self.updater.state) + len(self.test_nets))
        # the state also holds the net and solver text; headers and RNG states take a few KiB
        return weights + state + len(self.net_text) + len(self.solver_text) + 8192

    # ---- the loop --------------------------------------------------------------------------
    def solve(self, handle_signals: bool = True) -> int:
        """Train to max_iter; 0 when done, 130 when a signal stopped it (after a snapshot)."""
        cfg = self.cfg
        self.log.info(f"Solving {self.net_name}")
        for line in self.describe_parallel():
            self.log.info(line)
        self.log.info(f"Learning Rate Policy: {cfg['lr_policy']}")
        old = self._install_signals() if handle_signals else {}
        try:
            self.step(max(0, cfg["max_iter"] - self.iter))
            # with several ranks, only a stop they agreed on at a step counts (a signal that
            # reached one rank after the last step must not send it down another path)
            if self.comm.agreed(bool(self.stop_requested), self._stopped):
                if self.last_snapshot_iter != self.iter:
                    self.snapshot(final=True)
                self.log.info("Optimization stopped early.")
                return INTERRUPTED
            # "unless the last iteration just did": also when that snapshot failed and was let go
            if cfg["snapshot_after_train"] and self.last_snapshot_iter != self.iter:
                self.snapshot(final=True)
            if cfg["display"] and self.iter % cfg["display"] == 0:
                loss = self._mean_over_ranks(self.net.forward())
                self._smooth(loss)
                self.log.info(f"Iteration {self.iter}, loss = {_fmt(self.smoothed_loss)}")
            if cfg["test_interval"] and self.iter % cfg["test_interval"] == 0:
                self.test_all()
            if self.failed_snapshots and self.comm.is_root:
                done = sorted(set(self.failed_snapshots))
                self.log.warning(f"{len(done)} snapshot(s) could not be written (iteration"
                                 f"{'s' if len(done) > 1 else ''} {', '.join(map(str, done))}; snapshot_failure: "
                                 f"continue); the final one is {self.last_snapshot}")
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
                net.loss_scale = self.scaler.scale
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
                # one reduction: the gradients averaged over the ranks, the loss and flags summed
                flags = self._scalars
                flags[0], flags[1], flags[2] = loss, bool(self.stop_requested), self.snapshot_requested
                self.comm.reduce_step(net.param_grad, flags)
                loss = float(flags[0]) / self.comm.size
                stop = self.comm.agreed(bool(self.stop_requested), flags[1] > 0)
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
                if not self.scaler.active or self.scaler.unscale(net.param_grad):
                    upd.apply(rate, self.iter)
                else:
                    self.log.info(f"Iteration {self.iter}: a gradient overflowed at loss scale "
                                  f"{_fmt(self.scaler.scale / BACKOFF)}; update skipped, loss scale now "
                                  f"{_fmt(self.scaler.scale)}")
                if shown and upd.last_clip is not None:
                    norm, scale = upd.last_clip
                    self.log.info(f"Gradient clipping: scaling down gradients (L2 norm {_fmt(norm)} > "
                                  f"{_fmt(upd.clip)}) by scale factor {_fmt(scale)}")
                if self.comm.is_root and not _all_finite(net.param_data):   # the same on every rank
                    self._nonfinite_params(rate)
                self.iter += 1
                self.elapsed += time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    its = bar.format_dict.get("rate")
                    bar.set_postfix(loss=f"{self.smoothed_loss:.4g}", lr=f"{rate:.3g}",
                                    img_s=f"{its * self.batch:.0f}" if its else "-", refresh=False)
                stop = stop or self.comm.agreed(bool(self.stop_requested), False)
                asked = self.comm.agreed(self.snapshot_requested, flags[2] > 0)
                if (snapshot and self.iter % snapshot == 0) or asked or stop:
                    self.snapshot_requested = False
                    self.snapshot(final=stop)
                if stop:
                    self.stop_requested = self.stop_requested or signal.SIGTERM   # agreed by another rank
                    self._stopped = True
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

    def _mean_over_ranks(self, value: float) -> float:
        v = np.array([value], dtype=np.float64)
        self.comm.allreduce_sum(v, "averaging the loss")
        return float(v[0]) / self.comm.size

    def _sync_batchnorm(self) -> None:
        """Make every rank's BatchNorm running statistics the same before a test or snapshot:
        rank 0's, or their mean over the ranks (``batch_norm_stats``).  Training never reads them
        (it normalizes by batch statistics), so this changes tests and snapshots only."""
        if self.comm.size == 1 or not self._bn_ranges:
            return
        data = self.net.param_data
        host = np.concatenate([to_host(data[o:o + n]) for o, n in self._bn_ranges]).astype(np.float64)
        if self.cfg["batch_norm_stats"] == "allreduce":
            self.comm.allreduce_sum(host, "averaging the BatchNorm statistics")
            host /= self.comm.size
        else:
            self.comm.broadcast(host, 0, "sharing the BatchNorm statistics")
        j = 0
        for o, n in self._bn_ranges:
            copy_in(data[o:o + n], host[j:j + n].astype(data.dtype))
            j += n

    def _data_wait(self) -> float:
        return sum(float(getattr(lp.layer, "wait_seconds", 0.0) or 0.0) for lp in self.net.layers)

    def _display(self, lapse: float, done: int, rate: float, wait_frac: float) -> None:
        it, cfg = self.iter, self.cfg
        per_s = done / lapse if lapse > 0 and done else 0.0
        self.log.info(f"Iteration {it} ({_fmt(per_s)} iter/s, {lapse:.3f}s/{cfg['display']} iters), "
                      f"loss = {_fmt(self.smoothed_loss)}")
        self._record(it, "TRAIN", "smoothed_loss", self.smoothed_loss, rate, data_wait=round(wait_frac, 4))
        j = 0
        outs = [to_host(self.net.blobs[name].data).ravel() for name, _ in self._train_loss_weights]
        if outs and self.comm.size > 1:   # the mean over the ranks (each value is a mean over a batch)
            flat = np.concatenate(outs).astype(np.float64)
            self.comm.allreduce_sum(flat, "averaging the train outputs")
            flat /= self.comm.size
            outs = np.split(flat, np.cumsum([o.size for o in outs])[:-1])
        for (name, w), data in zip(self._train_loss_weights, outs):
            for v in data:
                self.log.info(f"    Train net output #{j}: {name} = {_fmt(float(v))}" + _loss_msg(w, float(v)))
                j += 1
            if data.size == 1:
                self._record(it, "TRAIN", name, float(data[0]), rate, data_wait=round(wait_frac, 4))
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
        self._sync_batchnorm()
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
        for _ in range(self.test_iters[k]):
            if self.comm.agreed(bool(self.stop_requested), False):   # several ranks finish the pass
                _set_net_state(net, before)
                self.log.info("Test interrupted.")
                return False
            loss += net.forward()
            for name in sums:
                sums[name] += to_host(net.blobs[name].data).ravel()
        # every rank ran test_iters[k] batches: the means are over all of them
        total = self.test_iters[k] * self.comm.size
        if self.comm.size > 1:
            flat = np.concatenate([[loss]] + [sums[name] for name in sums])
            self.comm.allreduce_sum(flat, "summing the test outputs")
            loss = float(flat[0])
            j = 1
            for name in sums:
                sums[name] = flat[j:j + sums[name].size]
                j += sums[name].size
        if self.cfg["test_compute_loss"]:
            loss /= total
            self.log.info(f"Test loss: {_fmt(loss)}")
            self._record(self.iter, "TEST", "test_loss", loss, None, test_net=k)
        j = 0
        for name, w in self._test_loss_weights[k]:
            means = sums[name] / total
            for v in means:
                self.log.info(f"    Test net output #{j}: {name} = {_fmt(float(v))}" + _loss_msg(w, float(v)))
                j += 1
            if means.size == 1:
                self._record(self.iter, "TEST", name, float(means[0]), None, test_net=k)
        return True

    def _record(self, it: int, phase: str, name: str, value: float, lr: float | None, **extra) -> None:
        self.log.record(iter=it, phase=phase, name=name, value=value, lr=lr, seconds=round(self.elapsed, 3), **extra)

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot(self, final: bool = False) -> Path | None:
        """Write the weights and the state (rank 0; every rank calls it at the same iteration);
        None when it could not be written and ``snapshot_failure: continue`` lets the run go
        on (``final``: the run's last snapshot, whose failure always raises)."""
        w = snap.weights_path(self.prefix, self.iter)
        s = snap.state_path(self.prefix, self.iter)
        self._sync_batchnorm()
        if not self.comm.is_root:
            self.last_snapshot, self.last_snapshot_iter = s, self.iter
            return s
        self.log.info(f"Snapshotting to safetensors file {w}")
        try:
            save_weights(w, self.net, {"net": self.net_name, "iter": str(self.iter)},
                         with_diff=self.cfg["snapshot_diff"])
        except OSError as e:
            self._snapshot_failed(e, w, None, final)
            return None
        self.log.info(f"Snapshotting solver state to safetensors file {s}")
        tensors, record = self.state()
        try:
            snap.write_state(s, tensors, record, self.net_text, self.solver_text)
        except OSError as e:
            self._snapshot_failed(e, s, w, final)
            return None
        self.last_snapshot, self.last_snapshot_iter = s, self.iter
        if self.snapshot_keep:
            self._retain()
        return s

    def _snapshot_failed(self, e: OSError, where: Path, orphan: Path | None, final: bool) -> None:
        """A snapshot write failed: its temporary file is gone (atomic_write), and a weights
        file whose state could not follow is removed (it would only take space, and no resume
        can use it).  Stop, or log and go on."""
        if orphan is not None:
            try:
                orphan.unlink()
            except OSError:
                pass
        self.failed_snapshots.append(self.iter)
        msg = (f"cannot write the snapshot of iteration {self.iter} to {where}: {_reason(e)}; "
               f"{self._where()}")
        hint = ("free space there, set snapshot_keep to keep fewer snapshots, or point snapshot_prefix "
                "(or --run-dir) at another folder; resume with --resume latest")
        if self.snapshot_failure == "stop" or final:
            if self.snapshot_failure != "stop":
                msg += " (this was the final snapshot: the run stops so that its result is not lost)"
            else:
                hint += "; snapshot_failure: continue (--on-snapshot-failure continue) trains on instead"
            raise SolverError(msg, hint=hint)
        self.log.warning(f"{msg}; training goes on (snapshot_failure: continue) and the next snapshot "
                         f"tries again")

    def _retain(self) -> None:
        removed, kept, failed = snap.retain(self.prefix, self.snapshot_keep, self.iter)
        if removed:
            self.log.info(f"Snapshot retention (snapshot_keep: {self.snapshot_keep}): removed "
                          + ", ".join(p.name for p in removed) + "; kept iteration"
                          + ("s " if len(kept) > 1 else " ") + ", ".join(str(i) for i in kept))
        for line in failed:
            self.log.warning(f"snapshot retention could not remove {line}")

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        tensors: dict[str, np.ndarray] = {}
        for p in self.net.learnable:
            tensors[f"param/{p.key}"] = to_host(p.blob.data)
            n = p.blob.data.size
            for sname, arr in self.updater.state.items():
                tensors[f"rule/{sname}/{p.key}"] = to_host(arr[p.offset:p.offset + n]).reshape(p.blob.data.shape)
        nets = {"train": _net_state(self.net)}
        for k, tnet in enumerate(self.test_nets):
            nets[f"test{k}"] = _net_state(tnet)
            for p in tnet.learnable:
                tensors[f"test{k}/param/{p.key}"] = to_host(p.blob.data)
        record = {"iter": self.iter, "current_step": self.lr.current_step, "rule": self.cfg["type"],
                  "losses": self.losses, "elapsed": self.elapsed, "seed": self.seed, "net_name": self.net_name,
                  "run_dir": str(self.run_dir.resolve()) if self.run_dir is not None else None,
                  "global_batch": self.global_batch, "ranks": self.comm.size,
                  "loss_scale": self.scaler.state(),
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
        old_batch = record.get("global_batch")
        if old_batch is not None and int(old_batch) != self.global_batch:
            raise SolverError(f"cannot resume: this state was trained with a global batch of {old_batch} "
                              f"({record.get('ranks', 1)} rank(s)), and this run's is {self.global_batch} "
                              f"({self.comm.size} rank(s), {self.batch_source})", file=shown,
                              hint="state global_batch in the solver so that any number of ranks trains the same "
                                   "batch, or resume with as many ranks as before")
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
        for net in [self.net] + self.test_nets:
            rank_stream(net.rng, self.comm.rank)    # the state holds rank 0's streams
        self.iter = int(record["iter"])
        self.lr.current_step = int(record["current_step"])
        self.losses = [float(v) for v in record["losses"]]
        self.smoothed_loss = float(np.mean(self.losses)) if self.losses else 0.0
        self.elapsed = float(record.get("elapsed", 0.0))
        if "loss_scale" in record:
            self.scaler.set_state(record["loss_scale"])
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

def _solver_device(cfg, device, comm: Communicator):
    """The device to train on: ``--device``, else the solver's ``solver_mode: GPU`` with
    ``device_id`` (Caffe's fields), else ``$NETSPEC_DEVICE``, else the CPU; a GPU that cannot be
    used is a DeviceError saying what is missing (never a silent CPU run)."""
    from netspec.core.device import resolve

    return resolve(device_name(cfg, device, comm))


def device_name(cfg, device, comm: Communicator) -> str | None:
    """What ``_solver_device`` resolves: with several ranks, a GPU named without its number
    (``--device cuda``, ``NETSPEC_DEVICE=cuda``, or ``solver_mode: GPU``, whose ``device_id``
    is then not used) is one GPU per rank, ``local rank mod GPU count``."""
    from netspec.core.device import env_device

    if device is None and cfg.get("solver_mode") == "GPU":
        device = f"cuda:{int(cfg.get('device_id', 0))}" if comm.size == 1 else "cuda"
    return rank_device(device or env_device(), comm)


def _reason(e: OSError) -> str:
    """The OS error in words, with what it means for snapshots."""
    text = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        return f"{text} (the disk or quota is full)"
    if e.errno == errno.EROFS:
        return f"{text} (the folder is on a read-only file system)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{text} (the folder is not writable by this user)"
    return text


def _mb(n: int) -> str:
    for unit, k in (("GiB", 30), ("MiB", 20)):
        if n >= 2 ** k:
            return f"{n / 2 ** k:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


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
    return _batch_size_of_plan(net.plan)


def _batch_size_of_plan(plan) -> int:
    """The per-process batch: the first dimension of the first input layer's first top."""
    for lp in plan.layers:
        if not lp.bottoms and lp.top_shapes and lp.top_shapes[0]:
            return int(lp.top_shapes[0][0])
    return 1


def _shardable(layer_type: str) -> bool:
    """Data layers that read a share of each global batch (``shard``) and take a batch_size."""
    from netspec.core.layer import layer_class

    return hasattr(layer_class(layer_type), "shard")


def _data_layers(plan) -> list:
    return [lp for lp in plan.layers if _shardable(lp.type)]


def _with_batch(spec: NetSpec, new_batch) -> NetSpec:
    """The net with every shardable data layer's batch_size replaced by ``new_batch(old)``."""
    layers = []
    for layer in spec.layers:
        if _shardable(layer["type"]) and "batch_size" in layer:
            layer = layer.derive(batch_size=int(new_batch(int(layer["batch_size"]))))
        layers.append(layer)
    return spec.with_layers(layers)


def _test_share(plan, test_iter: int, size: int) -> tuple[int, int | None, str]:
    """How ``size`` ranks share a test of ``test_iter`` batches: (batches per rank, the per-rank
    batch when the batch is split, a note for the log).  The batch is split when the ranks divide
    it; else the batches are dealt out (when the ranks do not divide test_iter either, each rank
    runs one more, and the test covers a few more records)."""
    batches = sorted({int(lp.top_shapes[0][0]) for lp in _data_layers(plan)})
    b = batches[0] if len(batches) == 1 else None
    if size == 1:
        return test_iter, None, f"{test_iter} batches"
    if b is not None and b % size == 0:
        return test_iter, b // size, (f"{size} ranks x batch {b // size} x {test_iter} batches "
                                      f"(= {test_iter} batches of {b})")
    n = -(-test_iter // size)
    note = f"{size} ranks x {n} batches" + (f" of {b}" if b is not None else "")
    if n * size != test_iter:
        note += f" (test_iter {test_iter} is not a multiple of {size}: {n * size - test_iter} batches more)"
    return n, None, note


def _batchnorm_ranges(net) -> list[tuple[int, int]]:
    """(offset, size) in the param arena of every BatchNorm layer's running statistics."""
    types = {lp.name: lp.type for lp in net.layers}
    return [(p.offset, p.blob.data.size) for p in net.learnable if types.get(p.key.split("/")[0]) == "BatchNorm"]


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
    copy_in(dst, src)


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
