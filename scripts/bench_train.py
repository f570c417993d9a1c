"""Training and inference throughput of netspec and PyTorch (CPU, float32), side by side.

    python scripts/bench_train.py                       # everything, table on stdout
    python scripts/bench_train.py --out bench.json      # and the figures as JSON
    python scripts/bench_train.py --nets lenet,mlp --threads 1 --rounds 1   # a quick look

For each net (LeNet batch 64, CIFAR-10 quick batch 100, an MLP 784-512-512-10 batch 128, and
models/vgg_small batch 64: 3x3 convolutions with BatchNorm), each thread count (1 and 2) and
each framework, a fresh subprocess builds the same architecture, fills one random batch
(``torch.randn`` / the same normal draws, random labels), and times training steps (forward,
backward and an SGD-momentum update: netspec's ``Net.forward_backward`` + ``Updater.apply``
with the gradients cleared first, as its solver does; PyTorch's ``zero_grad``, loss,
``backward``, ``SGD.step``), then inference (forward of the deploy net / ``eval()`` under
``no_grad``), each in a subprocess of its own so that peak memory (``ru_maxrss``) is that
mode's.  The step time is the median of all timed steps after a warm-up; rounds alternate the
two frameworks so that both see the same machine load, and the ratios (netspec / PyTorch) of
one run are the figures that count.

Also measured, each in a fresh subprocess on one thread: the machine's SGEMM (``np.dot`` on
square float32 matrices of 1024-2048), the GFLOP/s of CIFAR-10 quick's convolution layers (from
netspec's own per-layer timing, forward + backward) as a share of that SGEMM, and start-up: the
time from starting ``netspec train`` (one iteration of CIFAR-10 quick) to its first finished
iteration, with an empty numba cache (cold) and a filled one (warm), against PyTorch's import
plus first training step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NETS = {
    # name: (net file, batch, classes)
    "lenet": ("models/lenet/train_val.yaml", 64, 10),
    "cifar10_quick": ("models/cifar10_quick/train_val.yaml", 100, 10),
    "mlp": ("models/mlp/train_val.yaml", 128, 10),
    "vgg_small": ("models/vgg_small/train_val.yaml", 64, 10),
}

LR, MOMENTUM = 0.01, 0.9


# ---- workers (run in subprocesses) -----------------------------------------------------------

def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _time_steps(step, warmup: int, steps: int, min_seconds: float) -> list[float]:
    for _ in range(warmup):
        step()
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < steps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * steps:
            break
    return times


def train_with_inputs(net, batch: int):
    """The TRAIN net of ``net`` (a loaded NetSpec), its data layers replaced by Input layers of
    batch ``batch`` (filled once by the caller)."""
    from netspec import api
    from netspec.core.layer import layer_class
    from netspec.graph.deploy import is_source
    from netspec.graph.plan import plan
    from netspec.graph.splits import insert_splits
    from netspec.spec.normalize import normalize_layer

    spec = api.phase_net(net, "TRAIN")
    shapes = plan(insert_splits(spec)).blobs
    layers = []
    for layer in spec.layers:
        if is_source(layer_class(layer["type"])):
            tops = list(layer["top"])
            fields = {"name": layer["name"], "type": "Input", "top": tops,
                      "shape": [[batch] + list(shapes[t][1:]) for t in tops]}
            layers.append(normalize_layer(fields, None, layer.src))
        else:
            layers.append(layer)
    return spec.with_layers(layers)


def _netspec_nets(name: str, batch: int, mode: str):
    """The net of ``name`` for ``mode`` (train: the TRAIN net; infer: the deploy net), its data
    layers replaced by inputs of batch ``batch`` that are filled once."""
    from netspec import api
    from netspec.core.net import Net
    from netspec.graph.deploy import derive_deploy
    from netspec.graph.plan import plan
    from netspec.graph.splits import insert_splits

    net = api.load_net(ROOT / NETS[name][0])
    spec = derive_deploy(net, batch=batch) if mode == "infer" else train_with_inputs(net, batch)
    return Net(plan(insert_splits(spec)), dtype="float32", seed=1)


def worker_netspec(name: str, mode: str, threads: int, warmup: int, steps: int, min_seconds: float) -> dict:
    import netspec  # noqa: F401,I001  (first: it sets OpenBLAS's thread timeout before NumPy loads it)
    import numpy as np
    from netspec.core.threads import set_threads

    set_threads(threads)
    _, batch, classes = NETS[name]
    t0 = time.perf_counter()
    net = _netspec_nets(name, batch, mode)
    setup_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    data = net.blobs["data"].data
    data[...] = rng.standard_normal(data.shape, dtype=np.float32)
    if mode == "train":
        from netspec.solvers.rules import Updater

        net.blobs["label"].data[...] = rng.integers(0, classes, net.blobs["label"].data.shape)
        upd = Updater({"type": "SGD", "momentum": MOMENTUM}, net)

        def step():
            net.clear_param_grads()
            net.forward_backward()
            upd.apply(LR, 0)
    else:
        def step():
            net.forward()
    times = _time_steps(step, warmup, steps, min_seconds)
    algos = {lp.name: lp.layer.algo for lp in net.layers if getattr(lp.layer, "algo", None)}
    return {"times": times, "batch": batch, "setup_s": setup_s, "algos": algos}


def _torch_model(name: str):
    import torch.nn as nn

    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Conv2d(20, 50, 5),
                             nn.MaxPool2d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(800, 500),
                             nn.ReLU(inplace=True), nn.Linear(500, 10)), (1, 28, 28)
    if name == "cifar10_quick":
        # Caffe's pooling rounds up: ceil_mode, and AVE divides by the clipped window as
        # count_include_pad does with pad 0
        return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
                             nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
                             nn.AvgPool2d(3, 2, ceil_mode=True),
                             nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
                             nn.AvgPool2d(3, 2, ceil_mode=True),
                             nn.Flatten(), nn.Linear(1024, 64), nn.Linear(64, 10)), (3, 32, 32)
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(inplace=True), nn.Linear(512, 512),
                             nn.ReLU(inplace=True), nn.Linear(512, 10)), (1, 28, 28)
    if name == "vgg_small":
        layers, c = [], 3
        for width in (32, 64, 128):
            for _ in range(2):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 16, 10)), (3, 32, 32)
    raise ValueError(name)


def worker_torch(name: str, mode: str, threads: int, warmup: int, steps: int, min_seconds: float,
                 pool_shapes: list | None = None) -> dict:
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    _, batch, classes = NETS[name]
    torch.manual_seed(0)
    model, sample = _torch_model(name)
    x = torch.randn(batch, *sample)
    if pool_shapes is not None:   # the pooled sizes must be netspec's (Caffe's ceil rounding)
        got = []
        h = x
        with torch.no_grad():
            for layer in model:
                h = layer(h)
                if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                    got.append(list(h.shape))
        if got != pool_shapes:
            raise SystemExit(f"{name}: PyTorch pools to {got}, netspec to {pool_shapes}")
    if mode == "train":
        model.train()
        y = torch.randint(0, classes, (batch,))
        crit = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

        def step():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                torch.softmax(model(x), dim=1)   # the deploy net ends with Softmax too
    times = _time_steps(step, warmup, steps, min_seconds)
    return {"times": times, "batch": batch}


def worker_sgemm() -> dict:
    import numpy as np

    import netspec  # noqa: F401
    from netspec.core.threads import set_threads

    set_threads(1)
    out = {}
    for n in (1024, 1536, 2048):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = a.T.copy()
        c = np.empty_like(a)
        np.dot(a, b, out=c)
        best = min(_time_steps(lambda: np.dot(a, b, out=c), 1, 5, 0.5))
        out[str(n)] = 2 * n ** 3 / best / 1e9
    return {"gflops": out}


def worker_conv_gflops(iterations: int) -> dict:
    import netspec  # noqa: F401
    from netspec import api
    from netspec.core.threads import set_threads

    set_threads(1)
    net = api.load_net(ROOT / NETS["cifar10_quick"][0])
    n = api.build_net(net, "TRAIN", dummy_data=True)
    rows = api.time_net(n, iterations=iterations, warmup=2)
    layers = []
    for r, lp in zip(rows, n.layers):
        if lp.type != "Convolution":
            continue
        fwd = lp.layer.flops(lp.bottom_shapes, lp.top_shapes)
        # backward: the weight gradient always, the input gradient when the bottom needs one
        bwd = fwd * (1 + int(any(lp.bottom_need_backward)))
        layers.append({"layer": lp.name, "algo": r["algo"], "forward_ms": r["forward_ms"],
                       "backward_ms": r["backward_ms"], "gflop": (fwd + bwd) / 1e9,
                       "gflops": (fwd + bwd) / ((r["forward_ms"] + r["backward_ms"]) / 1e3) / 1e9})
    total_flop = sum(l["gflop"] for l in layers)
    total_s = sum(l["forward_ms"] + l["backward_ms"] for l in layers) / 1e3
    return {"layers": layers, "gflops": total_flop / total_s}


def worker(args) -> None:
    spec = json.loads(args.worker)
    kind = spec.pop("kind")
    if kind == "netspec":
        out = worker_netspec(**spec)
    elif kind == "torch":
        out = worker_torch(**spec)
    elif kind == "sgemm":
        out = worker_sgemm()
    elif kind == "conv":
        out = worker_conv_gflops(**spec)
    else:
        raise SystemExit(f"unknown worker {kind}")
    import resource

    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


# ---- the parent: subprocesses, table, JSON ------------------------------------------------------

def run_worker(spec: dict, env: dict | None = None, timeout: float = 900) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {spec} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")


def pool_shapes(name: str, batch: int) -> list:
    """The output shapes of the TRAIN net's pooling layers (netspec check's shapes; no numba)."""
    from netspec import api

    p = api.compile_net(api.load_net(ROOT / NETS[name][0]), "TRAIN")
    return [[batch] + list(lp.top_shapes[0][1:]) for lp in p.layers if lp.type == "Pooling"]


def startup(rounds: int) -> dict:
    """Seconds from starting ``netspec train`` to the end of its first iteration, cold and warm
    numba cache; PyTorch: import + model + first training step, run twice (the second with the
    files in the OS cache)."""
    tmp = Path(tempfile.mkdtemp(prefix="netspec-bench-"))
    solver = tmp / "solver.yaml"
    solver.write_text(f"net: {ROOT / NETS['cifar10_quick'][0]}\nbase_lr: 0.001\nmomentum: 0.9\nlr_policy: fixed\n"
                      "display: 1\nmax_iter: 1\nsnapshot_after_train: false\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba"), NETSPEC_ALGO_CACHE=str(tmp / "algos.json"),
               PYTHONUNBUFFERED="1")
    exe = Path(sys.executable).with_name("netspec")
    cmd = [str(exe) if exe.exists() else "netspec", "train", str(solver), "-q", "--run-dir", str(tmp / "run")]

    def first_iteration() -> float:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp)
        seen = None
        for line in p.stdout:
            # "Iteration 0 ... loss = ..." is logged once the first forward/backward is done;
            # the update follows at once
            if seen is None and re.search(r"Iteration 0\b", line):
                seen = time.perf_counter() - t0
        p.wait()
        if p.returncode != 0 or seen is None:
            raise RuntimeError(f"netspec train failed ({p.returncode})")
        return seen

    cold = first_iteration()
    warm = [first_iteration() for _ in range(max(2, rounds))]
    code = ("import time; t0 = time.perf_counter()\n"
            "import torch, torch.nn as nn\n"
            "torch.set_num_threads(1)\n"
            f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
            "from bench_train import _torch_model\n"
            "m, s = _torch_model('cifar10_quick'); x = torch.randn(100, *s); y = torch.randint(0, 10, (100,))\n"
            "opt = torch.optim.SGD(m.parameters(), lr=0.001, momentum=0.9)\n"
            "opt.zero_grad(); nn.CrossEntropyLoss()(m(x), y).backward(); opt.step()\n"
            "print(time.perf_counter() - t0)\n")
    torch_runs = []
    for _ in range(max(2, rounds)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        torch_runs.append(time.perf_counter() - t0)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {"netspec_cold_s": cold, "netspec_warm_s": min(warm), "torch_first_s": torch_runs[0],
            "torch_warm_s": min(torch_runs[1:])}


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated, from: " + ", ".join(NETS))
    ap.add_argument("--threads", default="1,2", help="thread counts (comma-separated)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating netspec/PyTorch rounds per configuration")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round (at least)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time each round for at least this long")
    ap.add_argument("--no-infer", action="store_true", help="skip inference")
    ap.add_argument("--no-extras", action="store_true", help="skip SGEMM, conv GFLOP/s and start-up")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    modes = ["train"] + ([] if args.no_infer else ["infer"])
    import torch

    results = {"machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__, "load_before": load_average()},
               "runs": []}
    print(f"{results['machine']['cpu']}, {os.cpu_count()} cores, load average {load_average()}", flush=True)
    for name in nets:
        batch = NETS[name][1]
        shapes = pool_shapes(name, batch)
        for t in threads:
            for mode in modes:
                got = {"netspec": [], "torch": []}
                rss = {"netspec": 0.0, "torch": 0.0}
                extra = {}
                for _ in range(args.rounds):
                    for fw in ("netspec", "torch"):
                        spec = {"kind": fw, "name": name, "mode": mode, "threads": t, "warmup": args.warmup,
                                "steps": args.steps, "min_seconds": args.min_seconds}
                        if fw == "torch":
                            spec["pool_shapes"] = shapes
                        r = run_worker(spec)
                        got[fw] += r["times"]
                        rss[fw] = max(rss[fw], r["maxrss_mb"])
                        if fw == "netspec":
                            extra = {"algos": r["algos"], "setup_s": r["setup_s"]}
                ips = {fw: batch / _median(v) for fw, v in got.items()}
                row = {"net": name, "batch": batch, "threads": t, "mode": mode,
                       "netspec_img_s": ips["netspec"], "torch_img_s": ips["torch"],
                       "ratio": ips["netspec"] / ips["torch"], "netspec_rss_mb": rss["netspec"],
                       "torch_rss_mb": rss["torch"], "rss_ratio": rss["netspec"] / rss["torch"],
                       "steps": {fw: len(v) for fw, v in got.items()}, **extra}
                results["runs"].append(row)
                print(f"{name:14s} {mode:5s} {t} thr: netspec {ips['netspec']:9.0f} img/s  torch {ips['torch']:9.0f} "
                      f"img/s  ratio {row['ratio']:5.2f}   RSS {rss['netspec']:6.0f} / {rss['torch']:6.0f} MB",
                      flush=True)
    if not args.no_extras:
        sg = run_worker({"kind": "sgemm"})
        peak = max(sg["gflops"].values())
        conv = run_worker({"kind": "conv", "iterations": 10})
        results["sgemm_1thread_gflops"] = sg["gflops"]
        results["cifar10_quick_conv"] = {**conv, "percent_of_sgemm": 100 * conv["gflops"] / peak}
        print(f"SGEMM 1 thread: " + ", ".join(f"{n}: {g:.1f}" for n, g in sg["gflops"].items()) + " GFLOP/s")
        for l in conv["layers"]:
            print(f"  {l['layer']} ({l['algo']}): {l['gflops']:.1f} GFLOP/s "
                  f"({l['forward_ms']:.2f} + {l['backward_ms']:.2f} ms)")
        print(f"CIFAR-10 quick convolutions: {conv['gflops']:.1f} GFLOP/s = {100 * conv['gflops'] / peak:.0f}% of SGEMM")
        st = startup(args.rounds)
        results["startup"] = st
        print(f"start to first iteration: netspec cold {st['netspec_cold_s']:.2f} s, warm {st['netspec_warm_s']:.2f} s; "
              f"PyTorch import + first step {st['torch_first_s']:.2f} s (again: {st['torch_warm_s']:.2f} s)")
    results["machine"]["load_after"] = load_average()
    print()
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
        print(f"written: {args.out}")
    return 0


def table(results: dict) -> str:
    """The ratios as a Markdown table (netspec / PyTorch; > 1 means netspec is faster)."""
    lines = ["| net | batch | mode | threads | netspec img/s | PyTorch img/s | ratio | RSS netspec / PyTorch MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        lines.append(f"| {r['net']} | {r['batch']} | {r['mode']} | {r['threads']} | {r['netspec_img_s']:,.0f} | "
                     f"{r['torch_img_s']:,.0f} | {r['ratio']:.2f} | {r['netspec_rss_mb']:.0f} / "
                     f"{r['torch_rss_mb']:.0f} |")
    return "\n".join(lines)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
