"""What ``netspec train`` and ``netspec test`` do, as functions of plain arguments.

``train`` resolves the solver and nets, picks the run folder (``--run-dir``, or
``runs/<net name>/<timestamp>``; a resumed run goes on in the folder it was written in),
builds the ``Solver``, restores a state or copies starting weights, and solves.
``evaluate`` runs the TEST phase of a net with given weights and returns the mean of every
output over the batches (Caffe's ``caffe test``).
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from netspec.errors import NetspecError, SolverError, SpecError
from netspec.io import snapshot as snap
from netspec.solvers.config import Training, resolve_training
from netspec.solvers.runlog import RunLog

DEFAULT_TEST_ITERATIONS = 50


def default_run_dir(net_name: str, root: Path = Path("runs")) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / _safe(net_name) / stamp
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{stamp}-{k}")
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "net"


def weight_refs(refs: Iterable[str], base: Path | None) -> list[tuple[str, Path]]:
    """(shown name, file) for each weights reference: a path (relative to ``base``) or zoo:<name>."""
    # the registry, not netspec.zoo: the zoo imports this module to evaluate and re-train entries
    from netspec import zoo_registry as zoo

    out = []
    for ref in refs:
        if zoo.is_zoo_ref(ref):
            out.append((ref, zoo.resolve_weights(ref)))
        else:
            p = Path(os.path.expanduser(ref))
            if not p.is_absolute() and base is not None:
                p = base / p
            out.append((ref, p))
    return out


def find_resume_state(resume: str, training: Training, run_dir: Path | None) -> Path:
    """The state file ``--resume`` names (``latest``: see ``resume_state``)."""
    return resume_state(resume, training, run_dir)[0]


def resume_state(resume: str, training: Training, run_dir: Path | None) -> tuple[Path, tuple, list[str]]:
    """(the state file, what ``read_state`` returned for it, lines for the log).

    ``latest`` is the newest state file under the run folder (or runs/<net name>) and the
    snapshot_prefix folder that reads back whole: temporary files of interrupted writes are
    never taken (and those whose writer is gone are removed), and a newer state that does not
    read is skipped, with a warning, for the one before it."""
    if resume != "latest":
        p = Path(resume)
        if not p.exists():
            raise SolverError("no such solver state file", file=resume)
        return p, snap.read_state(p), []
    folders = [run_dir] if run_dir is not None else [Path("runs") / _safe(training.net_name)]
    cfg = training.solver
    if "snapshot_prefix" in cfg:
        folders.append(cfg.path(cfg["snapshot_prefix"]).parent)
    folders = [f for f in folders if f is not None]
    notes = []
    for folder in dict.fromkeys(folders):
        removed = snap.remove_stale_temps(folder)
        if removed:
            notes.append(f"Removed {len(removed)} temporary file(s) of interrupted snapshot writes in {folder}: "
                         + ", ".join(p.name for p in removed))
    found = snap.latest_loadable(folders)
    if found is None:
        raise SolverError(f"--resume latest: no solver state (*{snap.STATE_SUFFIX}) under "
                          f"{', '.join(str(f) for f in folders)}", hint="train without --resume first, or name "
                          "the state file")
    path, loaded, errors = found
    notes += [f"warning: --resume latest skips {e.file or 'a state file'}, which does not read back "
              f"({e.message}); resuming from {path} instead" for e in errors]
    return path, loaded, notes


def train(file: str | os.PathLike, *, solver: str | None = None, weights: str | None = None,
          resume: str | None = None, run_dir: str | os.PathLike | None = None,
          stages: Iterable[str] | None = None, level: int | None = None, seed: int | None = None,
          progress: bool = True, echo: Callable[[str], None] | None = None, device: str | None = None,
          snapshot_failure: str | None = None) -> int:
    """Train; returns the exit status (0 done, 130 stopped by a signal after a snapshot).

    ``snapshot_failure``: stop or continue when a snapshot cannot be written (instead of the
    solver's ``snapshot_failure``).

    ``device``: cpu, cuda or cuda:N; by default the solver's ``solver_mode``/``device_id``,
    else ``$NETSPEC_DEVICE``, else the CPU.

    Under an MPI launcher (``mpiexec -n S netspec train ...``) every rank runs this: rank 0
    logs and snapshots, the others train silently; an error all ranks make while setting up
    is reported once, by rank 0 (the others return 1), and an error during training ends the
    whole job (``Communicator.abort``)."""
    from netspec.solvers import distributed

    comm = distributed.connect()
    threads = distributed.threads_per_rank(comm)
    if threads is not None:
        from netspec.core.threads import set_threads

        set_threads(threads)
    try:
        return _train(comm, file, solver=solver, weights=weights, resume=resume, run_dir=run_dir, stages=stages,
                      level=level, seed=seed, progress=progress and comm.is_root, echo=echo,
                      device=distributed.rank_device(device, comm), snapshot_failure=snapshot_failure)
    except distributed.QuietExit:
        return 1
    finally:
        comm.close()


def _train(comm, file, *, solver, weights, resume, run_dir, stages, level, seed, progress, echo, device,
           snapshot_failure=None) -> int:
    from netspec.solvers.distributed import QuietExit
    from netspec.solvers.solver import Solver

    log = s = None
    failure: BaseException | None = None
    try:
        # 1. what to train and where (no collective here, so a rank that fails cannot leave
        #    the others waiting: agree() below reports the first failure once)
        try:
            training = resolve_training(file, solver, stages, level)
            if resume is not None and weights is not None:
                raise SolverError("--weights cannot be combined with --resume (the state holds the weights)")
            rdir = Path(run_dir) if run_dir is not None else None
            state = None
            notes: list[str] = []
            if resume is not None:
                path, loaded, notes = resume_state(resume, training, rdir)
                state = (path, loaded)
                if rdir is None:
                    recorded = state[1][1].get("run_dir")
                    rdir = Path(recorded) if recorded and Path(recorded).is_dir() else path.parent
            if rdir is None and comm.is_root:
                rdir = default_run_dir(training.net_name)
            log = RunLog(rdir, echo) if comm.is_root else RunLog(None, echo=None)
            for w in training.warnings:
                log.warning(str(w))
            for line in notes:
                log.info(line)
        except Exception as e:  # noqa: BLE001 - re-raised by agree
            failure = e
        comm.agree(failure)
        rdir = Path(comm.broadcast_object(str(rdir), what="sharing the run folder"))
        # 2. the nets, their weights or state
        try:
            s = Solver(training, rdir, log, progress=progress, seed=seed, snapshots_in_run_dir=run_dir is not None,
                       device=device, comm=comm, snapshot_failure=snapshot_failure)
            log.info(f"Run folder: {rdir}")
            if state is not None:
                s.restore(state[0], loaded=state[1])
            else:
                if weights is not None:
                    refs = weight_refs([w.strip() for w in weights.split(",") if w.strip()], None)
                elif "init_from" in training.solver:
                    refs = weight_refs([training.solver["init_from"]], training.solver.base_dir)
                else:
                    refs = weight_refs(training.solver.get("weights", []), training.solver.base_dir)
                s.load_initial_weights(refs)
                log.info(f"Random seed: {s.seed} ({s.seed_source})")
            s.check_snapshot_dir()
        except Exception as e:  # noqa: BLE001 - re-raised by agree
            failure = e
        comm.agree(failure)
        # 3. train (every rank starts from rank 0's params, which the others already equal)
        try:
            comm.broadcast(s.net.param_data, 0, "sharing the initial params")
            return s.solve()
        except NetspecError as e:
            if comm.size > 1:
                log.info(f"error: {e}", echo=False)
                log.close()
                comm.abort(_rank_message(comm, str(e)))
            raise
        except Exception as e:
            if comm.size > 1 and not isinstance(e, QuietExit):
                comm.abort(_rank_message(comm, f"internal error: {type(e).__name__}: {e}. This is a bug in "
                                               f"netspec, not in your files; run again with NETSPEC_DEBUG=1 "
                                               f"to see where it happened."))
            raise
    except NetspecError as e:
        if log is not None:
            log.info(f"error: {e}", echo=False)   # the caller reports it; the run's log keeps it too
        raise
    finally:
        if s is not None:
            s.close()
        if log is not None:
            log.close()


def _rank_message(comm, text: str) -> str:
    return f"error (rank {comm.rank} of {comm.size}): {text}" if not text.startswith("internal") else \
        f"{text} (rank {comm.rank} of {comm.size})"


# ---- evaluation ----------------------------------------------------------------------------

def _fmt_item(data: np.ndarray, i: int) -> str:
    """Item ``i`` of a blob as text: a scalar, or a short bracketed list."""
    v = np.asarray(data[i] if data.ndim else data).ravel()
    if v.size == 1:
        return f"{v[0]:.4g}"
    text = "[" + ", ".join(f"{x:.4g}" for x in v[:8]) + (", ..." if v.size > 8 else "") + "]"
    return text


def full_pass_iterations(net) -> int | None:
    """Batches for one pass over the largest data source, when the data layers know its size."""
    best = None
    for lp in net.layers:
        n = getattr(lp.layer, "num_records", None)
        bs = lp.layer.p.get("batch_size") if hasattr(lp.layer, "p") else None
        if n and bs:
            k = math.ceil(int(n) / int(bs))
            best = k if best is None else max(best, k)
    return best


def evaluate(file: str | os.PathLike, weights: str, *, iterations: int | None = None,
             stages: Iterable[str] | None = None, level: int | None = None, progress: bool = True,
             echo: Callable[[str], None] | None = None, show: Iterable[str] = (),
             show_rows: int = 20, device: str | None = None, precision: str = "float32") -> dict[str, list[float]]:
    """The TEST phase of a net (or of a solver's first test net) with these weights: the mean
    of every output over ``iterations`` batches (default: a full pass when the data size is
    known, else 50).  Returns {"loss": [mean], output: [mean per element]}.

    ``show`` names blobs to print item by item (the first ``show_rows`` items): the inputs,
    predictions and labels side by side, e.g. the XOR truth table.  ``precision`` is the
    activations' (float16 on a GPU: float16 buffers, half the memory), as the solver's field."""
    from netspec.api import compile_net
    from netspec.core.net import Net
    from netspec.io.weights import copy_weights, load_weights
    from netspec.solvers.config import is_solver_doc
    from netspec.spec.load import load_file

    say = echo if echo is not None else (lambda m: None)
    doc = load_file(file)
    if is_solver_doc(doc):
        tr = resolve_training(file)
        use = tr.tests[0] if tr.tests else tr.train
        spec, lv, st = use.spec, use.level, use.stages
    else:
        from netspec.api import net_from_doc

        spec, lv, st = net_from_doc(doc), None, None
    if stages is not None:
        st = list(stages)
    if level is not None:
        lv = level
    from netspec.core.device import env_device, resolve, to_host

    net = Net(compile_net(spec, "TEST", lv, st), np.float32, seed=0, device=resolve(device or env_device()),
              precision=precision)
    try:
        for shown, path in weight_refs([w.strip() for w in weights.split(",") if w.strip()], None):
            report = copy_weights(net, load_weights(path), shown)
            missing = [r.key for r in report.rows if r.status == "not in source"]
            if missing:
                say(f"warning: {len(missing)} param(s) are not in {shown} and keep their initial values: "
                    f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if iterations is None:
            iterations = full_pass_iterations(net) or DEFAULT_TEST_ITERATIONS
        if iterations < 1:
            raise SpecError("--iterations must be at least 1")
        weights_of = {}
        for lp in net.layers:
            for t, w in zip(lp.tops, lp.loss_weights):
                weights_of[t] = w
        outs = list(net.plan.outputs)
        show = list(show)
        for name in show:
            if name not in net.blobs:
                from netspec.errors import suggestion

                raise SpecError(f"--show: the TEST net has no blob '{name}'" + suggestion(name, net.blobs)
                                + f" (blobs: {', '.join(net.blobs)})")
        rows: list[list[str]] = []
        sums = {name: np.zeros(net.blobs[name].data.size) for name in outs}
        loss = 0.0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=iterations, unit="batch", leave=False, dynamic_ncols=True)
        for _ in range(iterations):
            loss += net.forward()
            for name in outs:
                sums[name] += to_host(net.blobs[name].data).ravel()
            if show and len(rows) < show_rows:
                batch = min(net.blobs[n].data.shape[0] if net.blobs[n].data.ndim else 1 for n in show)
                shown = {n: to_host(net.blobs[n].data) for n in show}
                for i in range(min(batch, show_rows - len(rows))):
                    rows.append([_fmt_item(shown[n], i) for n in show])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        result = {"loss": [loss / iterations]}
        say(f"Loss: {loss / iterations:.6g}")
        for name in outs:
            means = sums[name] / iterations
            w = weights_of.get(name, 0.0)
            for v in means:
                extra = f" (* {w:.6g} = {w * v:.6g} loss)" if w else ""
                say(f"{name} = {v:.6g}{extra}")
            result[name] = [float(v) for v in means]
        if show:
            table = [list(show)] + rows
            widths = [max(len(r[j]) for r in table) for j in range(len(show))]
            for r in table:
                say("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return result
    finally:
        for lp in net.layers:
            lp.layer.close()
