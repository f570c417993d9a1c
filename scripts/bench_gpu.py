"""GPU training throughput: netspec on CUDA against PyTorch + cuDNN on the same GPU, side by side.

    python scripts/bench_gpu.py                         # every net, table on stdout
    python scripts/bench_gpu.py --out gpu.json          # and the figures as JSON
    NUMBA_ENABLE_CUDASIM=1 python scripts/bench_gpu.py --smoke   # the code paths, on the CPU

Nets (float32, SGD with momentum, one random batch filled once, as scripts/bench_train.py does
on the CPU): LeNet at batch 64 and 512, CIFAR-10 quick at 100, models/vgg_small at 64, and
Caffe's AlexNet (the BVLC reference layout, written below as Caffe prototxt and converted by
netspec's Caffe converter, as ``netspec convert`` does) at batch 128.  For each, netspec's
step is ``clear_param_grads`` + ``forward_backward`` + ``Updater.apply``; PyTorch's is
``zero_grad`` + loss + ``backward`` + ``SGD.step`` with cuDNN's autotuner on
(``cudnn.benchmark``).  Each step ends with a device synchronisation; the figure is the
median step after a warm-up, rounds alternate the frameworks, and the ratio netspec / PyTorch
(throughputs) of one run is what counts.

``--precision float16`` runs netspec with ``precision: float16`` (float16 activation buffers,
float32 weights and sums) against PyTorch's ``autocast`` to float16; each row also gives the
memory both frameworks hold between steps.

The breakdown of netspec's step (so the next optimisation is visible): the sum of per-layer
GPU times (CUDA events around each layer's forward and backward: ``netspec time``), the
update's GPU time, one batch's host-to-device copy, and what is left of the wall-clock step
(Python and launch overhead: the time the GPU waits for the host).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

LR, MOMENTUM = 0.01, 0.9

# name: (net source, batch, classes); a source is a models/ file or "caffe:<prototxt text>"
NETS = {
    "lenet-64": ("models/lenet/train_val.yaml", 64, 10),
    "lenet-512": ("models/lenet/train_val.yaml", 512, 10),
    "cifar10_quick-100": ("models/cifar10_quick/train_val.yaml", 100, 10),
    "vgg_small-64": ("models/vgg_small/train_val.yaml", 64, 10),
    "alexnet-128": ("caffe:alexnet", 128, 1000),
}

ALEXNET = """
name: "AlexNet"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: %(n)d dim: 3 dim: %(s)d dim: %(s)d } shape { dim: %(n)d } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: %(c1)d kernel_size: 11 stride: 4
          weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: %(c2)d pad: 2 kernel_size: 5 group: 2
          weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
        convolution_param { num_output: %(c3)d pad: 1 kernel_size: 3
          weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
        convolution_param { num_output: %(c3)d pad: 1 kernel_size: 3 group: 2
          weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
        convolution_param { num_output: %(c2)d pad: 1 kernel_size: 3 group: 2
          weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6"
        inner_product_param { num_output: %(fc)d weight_filler { type: "gaussian" std: 0.005 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
        inner_product_param { num_output: %(fc)d weight_filler { type: "gaussian" std: 0.005 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
        inner_product_param { num_output: %(k)d weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
"""
FULL = {"s": 227, "c1": 96, "c2": 256, "c3": 384, "fc": 4096}
SMOKE = {"s": 67, "c1": 4, "c2": 8, "c3": 8, "fc": 16}   # the same layers, small enough for the simulator


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- netspec -------------------------------------------------------------------------------

def netspec_net(name: str, batch: int, classes: int, device: str, smoke: bool, precision: str = "float32"):
    from bench_train import train_with_inputs

    from netspec import api
    from netspec.core.net import Net
    from netspec.graph.plan import plan
    from netspec.graph.splits import insert_splits

    src = NETS[name][0]
    if src == "caffe:alexnet":
        from netspec.caffe.convert_net import NetOptions, convert_net_text

        text = ALEXNET % {"n": batch, "k": classes, **(SMOKE if smoke else FULL)}
        net = convert_net_text(text, "alexnet.prototxt", NetOptions(check=False)).net
        spec = api.phase_net(net, "TRAIN")
    else:
        spec = train_with_inputs(api.load_net(ROOT / src), batch)
    return Net(plan(insert_splits(spec)), dtype="float32", seed=1, device=device, precision=precision)


def _batch(name: str, smoke: bool) -> int:
    return 2 if smoke else NETS[name][1]


class NetspecRun:
    def __init__(self, name: str, device: str, smoke: bool, precision: str = "float32"):
        import numpy as np

        from netspec.core.device import copy_in
        from netspec.solvers.rules import Updater

        classes = NETS[name][2]
        batch = _batch(name, smoke)
        self.batch = batch
        self.net = netspec_net(name, batch, classes, device, smoke, precision)
        rng = np.random.default_rng(0)
        data = self.net.blobs["data"]
        self.host = rng.standard_normal(data.shape, dtype=np.float32)
        copy_in(data.data, self.host)
        copy_in(self.net.blobs["label"].data, rng.integers(0, classes, self.net.blobs["label"].shape))
        self.upd = Updater({"type": "SGD", "momentum": MOMENTUM}, self.net)

    def step(self) -> None:
        self.net.clear_param_grads()
        self.net.forward_backward()
        self.upd.apply(LR, 0)
        self.net.device.synchronize()

    def breakdown(self, step_s: float) -> dict:
        from netspec import api
        from netspec.api import _Clock
        from netspec.core.device import copy_in

        rows = api.time_net(self.net, iterations=3)
        layers_s = sum(r["forward_ms"] + (r["backward_ms"] or 0.0) for r in rows) / 1000
        clock = _Clock(self.net.device)
        with clock.span() as update:
            self.upd.apply(LR, 0)
        with clock.span() as copy:
            copy_in(self.net.blobs["data"].data, self.host)
        top = sorted(rows, key=lambda r: -(r["forward_ms"] + (r["backward_ms"] or 0.0)))[:5]
        return {"layers_ms": 1000 * layers_s, "update_ms": 1000 * update(), "h2d_copy_ms": 1000 * copy(),
                "host_overhead_ms": 1000 * max(0.0, step_s - layers_s - update()),
                "slowest_layers": [{k: r[k] for k in ("layer", "type", "algo", "forward_ms", "backward_ms")}
                                   for r in top]}


# ---- PyTorch ---------------------------------------------------------------------------------

def torch_model(name: str, classes: int, smoke: bool):
    import torch.nn as nn

    base = name.split("-")[0]
    if base != "alexnet":
        from bench_train import _torch_model

        return _torch_model(base)
    d = SMOKE if smoke else FULL
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731  (Caffe's LRN)
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    c1, c2, c3, fc, s = d["c1"], d["c2"], d["c3"], d["fc"], d["s"]
    feat = nn.Sequential(nn.Conv2d(3, c1, 11, 4), nn.ReLU(True), lrn(), pool(),
                         nn.Conv2d(c1, c2, 5, padding=2, groups=2), nn.ReLU(True), lrn(), pool(),
                         nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(True),
                         nn.Conv2d(c3, c3, 3, padding=1, groups=2), nn.ReLU(True),
                         nn.Conv2d(c3, c2, 3, padding=1, groups=2), nn.ReLU(True), pool())
    import torch

    with torch.no_grad():
        flat = feat(torch.zeros(1, 3, s, s)).numel()
    head = nn.Sequential(nn.Flatten(), nn.Linear(flat, fc), nn.ReLU(True), nn.Dropout(0.5),
                         nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(fc, classes))
    return nn.Sequential(feat, head), (3, s, s)


class TorchRun:
    def __init__(self, name: str, device: str, smoke: bool, precision: str = "float32"):
        import torch
        import torch.nn as nn

        classes, batch = NETS[name][2], _batch(name, smoke)
        self.batch = batch
        self.torch = torch
        self.dev = torch.device(device)
        torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        model, sample = torch_model(name, classes, smoke)
        self.model = model.to(self.dev).train()
        self.x = torch.randn(batch, *sample, device=self.dev)
        self.y = torch.randint(0, classes, (batch,), device=self.dev)
        self.crit = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        # float16: autocast (float16 activations and GEMMs, float32 weights), PyTorch's mixed precision
        self.half = precision == "float16" and self.dev.type == "cuda"

    def step(self) -> None:
        self.opt.zero_grad()
        if self.half:
            with self.torch.autocast("cuda", dtype=self.torch.float16):
                loss = self.crit(self.model(self.x), self.y)
        else:
            loss = self.crit(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()


# ---- driver ----------------------------------------------------------------------------------

def _memory(ns: NetspecRun, pt: TorchRun) -> dict:
    """Memory held between steps: netspec's blobs (data and gradients), and on a GPU what each
    framework's allocator has in use (netspec: CuPy's pool; PyTorch: its caching allocator)."""
    total, half = ns.net.activation_bytes()
    out = {"netspec_blobs_mb": total / 1e6, "netspec_half_blobs_mb": half / 1e6}
    if pt.dev.type == "cuda":
        import cupy

        out["netspec_gpu_mb"] = cupy.get_default_memory_pool().used_bytes() / 1e6
        out["torch_gpu_mb"] = pt.torch.cuda.memory_allocated(pt.dev) / 1e6
    return out


def _release(pt: TorchRun) -> None:
    import gc

    gc.collect()
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    except ImportError:
        pass
    if pt.dev.type == "cuda":
        pt.torch.cuda.empty_cache()


def time_steps(run, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        run.step()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        run.step()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated, from: " + ", ".join(NETS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--precision", choices=("float32", "float16"), default="float32",
                    help="float16: netspec's precision: float16 (float16 activation buffers) against "
                         "PyTorch's autocast to float16")
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    ap.add_argument("--smoke", action="store_true", help="batch 2, a narrow AlexNet, 1 step each, PyTorch "
                    "on the CPU without a GPU: checks the code paths (under NUMBA_ENABLE_CUDASIM=1 too)")
    args = ap.parse_args(argv)
    import torch

    from netspec.kernels.cuda import runtime

    if args.smoke:
        args.rounds, args.warmup, args.steps = 1, 1, 1
    from netspec.errors import DeviceError

    try:
        rt = runtime(0 if args.device == "cuda" else int(args.device.split(":")[1]))
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    torch_dev = args.device if torch.cuda.is_available() else "cpu"
    results = {"gpu": rt.name(), "torch": torch.__version__, "torch_device": torch_dev,
               "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
               "python": platform.python_version(), "precision": args.precision, "nets": {}}
    for name in args.nets.split(","):
        ns = NetspecRun(name, args.device, args.smoke, args.precision)
        pt = TorchRun(name, torch_dev, args.smoke, args.precision)
        t_ns, t_pt = [], []
        for _ in range(args.rounds):
            t_ns += time_steps(ns, args.warmup, args.steps)
            t_pt += time_steps(pt, args.warmup, args.steps)
        s_ns, s_pt = _median(t_ns), _median(t_pt)
        r = {"batch": ns.batch, "netspec_img_s": ns.batch / s_ns, "torch_img_s": pt.batch / s_pt,
             "ratio": s_pt / s_ns, "netspec_step_ms": 1000 * s_ns, "torch_step_ms": 1000 * s_pt,
             "breakdown": ns.breakdown(s_ns), **_memory(ns, pt)}
        results["nets"][name] = r
        print(f"{name:18s} netspec {r['netspec_img_s']:10.0f} img/s  PyTorch {r['torch_img_s']:10.0f} img/s  "
              f"ratio {r['ratio']:.2f}  (layers {r['breakdown']['layers_ms']:.2f} ms, update "
              f"{r['breakdown']['update_ms']:.2f} ms, host {r['breakdown']['host_overhead_ms']:.2f} ms of "
              f"{r['netspec_step_ms']:.2f} ms)" + (f"; blobs {r['netspec_blobs_mb']:.0f} MB, GPU memory netspec "
              f"{r['netspec_gpu_mb']:.0f} / PyTorch {r['torch_gpu_mb']:.0f} MB" if r.get("netspec_gpu_mb") else ""),
              flush=True)
        del ns
        _release(pt)
        del pt
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
