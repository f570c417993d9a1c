"""Data-parallel throughput: 2 MPI ranks x 1 thread against 1 process x 1 thread, same global batch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_mpi.py            # table
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_mpi.py --out mpi.json --rounds 3

For each net (CIFAR-10 quick at global batch 100, models/vgg_small at 64, the MLP 784-512-512-10
at 128, LeNet at 64) it starts ``mpiexec -n 1`` and ``mpiexec -n 2`` workers in turn (rounds
alternate them, so both see the same machine load).  Each rank builds the TRAIN net with its
data layers replaced by inputs of batch ``global / ranks`` (one random batch per rank, as
``scripts/bench_train.py`` does), runs one thread, and times training steps the way the solver
runs them: clear the gradients, forward and backward, the step's reduction
(``Communicator.reduce_step``: the gradient arena averaged over the ranks with one Allreduce,
plus the loss), the SGD-momentum update.  Reported per net: images per second over the global
batch (median step), the 2-rank / 1-rank ratio, the median time in the reduction and its share
of the step (it includes waiting for the slower rank), and the reduction alone: the same call
timed back to back after a barrier (both ranks arrive together), which is the transfer cost of
the arena's bytes; ``docs/scaling.md`` models many machines from these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

#: name: global batch (bench_train's nets and batches)
NETS = {"cifar10_quick": 100, "vgg_small": 64, "mlp": 128, "lenet": 64}
LR, MOMENTUM = 0.01, 0.9


def worker(name: str, global_batch: int, warmup: int, min_seconds: float, min_steps: int) -> None:
    import netspec  # noqa: F401,I001  (first: it sets OpenBLAS's thread timeout before NumPy loads it)
    import numpy as np

    from bench_train import NETS as BENCH_NETS, _median, _netspec_nets
    from netspec.core.threads import set_threads
    from netspec.solvers.distributed import connect
    from netspec.solvers.rules import Updater

    comm = connect()
    set_threads(1)
    if global_batch % comm.size:
        raise SystemExit(f"global batch {global_batch} is not a multiple of {comm.size} ranks")
    batch = global_batch // comm.size
    net = _netspec_nets(name, batch, "train")
    rng = np.random.default_rng(comm.rank)
    data = net.blobs["data"].data
    data[...] = rng.standard_normal(data.shape, dtype=np.float32)
    classes = BENCH_NETS[name][2]
    net.blobs["label"].data[...] = rng.integers(0, classes, net.blobs["label"].data.shape)
    upd = Updater({"type": "SGD", "momentum": MOMENTUM}, net)
    comm.broadcast(net.param_data)
    flags = np.zeros(3)
    steps: list[float] = []
    reduces: list[float] = []

    def step(timed: bool) -> None:
        t0 = time.perf_counter()
        net.clear_param_grads()
        flags[0] = net.forward_backward()
        t1 = time.perf_counter()
        comm.reduce_step(net.param_grad, flags)
        t2 = time.perf_counter()
        upd.apply(LR, 0)
        if timed:
            steps.append(time.perf_counter() - t0)
            reduces.append(t2 - t1)

    for _ in range(warmup):
        step(False)
    comm.barrier()
    t_end = time.perf_counter() + min_seconds
    while True:
        step(True)
        # every rank must run the same number of steps: rank 0 decides when to stop
        more = np.array([1.0 if (len(steps) < min_steps or time.perf_counter() < t_end) else 0.0])
        comm.broadcast(more)
        if not more[0]:
            break
    # the reduction alone: both ranks arrive together
    alone: list[float] = []
    for _ in range(30):
        comm.barrier()
        t0 = time.perf_counter()
        comm.reduce_step(net.param_grad, flags)
        alone.append(time.perf_counter() - t0)
    if comm.rank == 0:
        step_s, reduce_s = _median(steps), _median(reduces)
        print("RESULT " + json.dumps({
            "net": name, "ranks": comm.size, "global_batch": global_batch, "batch_per_rank": batch,
            "steps": len(steps), "step_ms": 1e3 * step_s, "img_s": global_batch / step_s,
            "reduce_ms": 1e3 * reduce_s, "reduce_share": reduce_s / step_s,
            "reduce_alone_ms": 1e3 * _median(alone[5:]), "arena_bytes": int(net.param_grad.nbytes),
            "params": int(net.param_grad.size)}), flush=True)


def _mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        raise SystemExit('no mpiexec: pip install -e ".[mpi]"')
    return found


def run_worker(name: str, ranks: int, args) -> dict:
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker", name,
           "--warmup", str(args.warmup), "--seconds", str(args.seconds), "--steps", str(args.steps)]
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NETSPEC_ALGO_CACHE="off")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{name} x{ranks} failed:\n{proc.stdout}\n{proc.stderr}")


def blas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(sorted({f"{i['internal_api']} {i.get('architecture')}" for i in threadpool_info()
                                 if i["user_api"] == "blas"}))
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per run (at least)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (at least)")
    ap.add_argument("--out", help="also write the figures as JSON here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, NETS[args.worker], args.warmup, args.seconds, args.steps)
        return
    import numpy as np  # noqa: F401  (threadpoolctl sees numpy's BLAS)

    print(f"BLAS kernels: {blas_kernel()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    results: dict[str, dict[int, list[dict]]] = {}
    for r in range(args.rounds):
        for name in args.nets.split(","):
            for ranks in (1, 2):
                res = run_worker(name, ranks, args)
                results.setdefault(name, {}).setdefault(ranks, []).append(res)
                print(f"  round {r + 1}: {name} x{ranks}: {res['img_s']:.0f} img/s, step {res['step_ms']:.2f} ms, "
                      f"reduce {res['reduce_ms']:.3f} ms", flush=True)
    rows = []
    print()
    print(f"{'net':<14} {'global':>6} {'params':>9} {'MB/step':>8} {'1x1 img/s':>10} {'2x1 img/s':>10} "
          f"{'ratio':>6} {'reduce ms':>10} {'share':>6} {'alone ms':>9}")
    for name, by in results.items():
        best1 = max(by[1], key=lambda d: d["img_s"])
        best2 = max(by[2], key=lambda d: d["img_s"])
        ratios = [b["img_s"] / a["img_s"] for a, b in zip(by[1], by[2])]
        row = {"net": name, "global_batch": best1["global_batch"], "params": best1["params"],
               "arena_mb": best1["arena_bytes"] / 1e6, "one_img_s": best1["img_s"], "two_img_s": best2["img_s"],
               "ratio_best": best2["img_s"] / best1["img_s"], "ratio_per_round": ratios,
               "reduce_ms": best2["reduce_ms"], "reduce_share": best2["reduce_share"],
               "reduce_alone_ms": min(d["reduce_alone_ms"] for d in by[2]),
               "step_ms_one": best1["step_ms"], "step_ms_two": best2["step_ms"], "runs": by}
        rows.append(row)
        print(f"{name:<14} {row['global_batch']:>6} {row['params']:>9} {row['arena_mb']:>8.2f} "
              f"{row['one_img_s']:>10.0f} {row['two_img_s']:>10.0f} {row['ratio_best']:>6.2f} "
              f"{row['reduce_ms']:>10.3f} {100 * row['reduce_share']:>5.1f}% {row['reduce_alone_ms']:>9.3f}")
    print("\nratio: best 2-rank over best 1-rank round; per round: " +
          ", ".join(f"{r['net']} {' '.join(f'{x:.2f}' for x in r['ratio_per_round'])}" for r in rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"blas": blas_kernel(), "nets": rows}, indent=1))


if __name__ == "__main__":
    main()
