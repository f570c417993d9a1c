"""Whole nets on CUDA: a small LeNet-style net trained through the Solver on the CPU and on
the GPU (or the simulator) from one seed gives the same losses and weights, and snapshots are
device-independent (trained on the GPU, resumed on the CPU, and back).

Shapes are tiny so that the simulator runs them in seconds; on a real GPU the same tests run
as they are (``python -m pytest -m cuda``), and ``scripts/gpu_check.sh`` adds the full-size runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netspec.core.device import to_host
from netspec.io import snapshot as snap
from netspec.solvers.config import resolve_training
from netspec.solvers.runlog import RunLog
from netspec.solvers.solver import Solver

pytestmark = pytest.mark.cuda

LAYERS = """\
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[4, 1, 10, 10], [4]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: conv1, type: Convolution, bottom: data, num_output: 3, kernel_size: 3,
     weight_filler: {type: xavier}, bias_filler: {type: constant, value: 0.1},
     param: {weight: {lr_mult: 1}, bias: {lr_mult: 2}}}
  - {name: pool1, type: Pooling, pool: MAX, kernel_size: 2, stride: 2}
  - {name: bn1, type: BatchNorm}
  - {name: scale1, type: Scale, bias_term: true, top: bn1}
  - {name: relu1, type: ReLU, top: bn1}
  - {name: ip1, type: InnerProduct, num_output: 6, weight_filler: {type: xavier}}
  - {name: drop1, type: Dropout, top: ip1, dropout_ratio: 0.25}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""

SOLVER = {"base_lr": 0.05, "lr_policy": "fixed", "momentum": 0.9, "weight_decay": 1e-3, "random_seed": 5, "display": 1,
          "average_loss": 1, "test_iter": 1, "test_interval": 3, "max_iter": 4, "snapshot": 0,
          "snapshot_after_train": False}


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def _solver(folder: Path, device: str, dtype=np.float64, **changes) -> Solver:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "net.yaml"
    f.write_text("name: tiny\nsolver: " + json.dumps({**SOLVER, **changes}) + "\n" + LAYERS)
    rd = folder / "run"
    return Solver(resolve_training(f), rd, RunLog(rd, None), dtype=dtype, device=device)


def _weights(s: Solver) -> dict[str, np.ndarray]:
    return {p.key: to_host(p.blob.data).copy() for p in s.net.learnable}


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_training_on_cuda_matches_the_cpu(tmp_path, dtype, tol):
    cpu, gpu = _solver(tmp_path / "cpu", "cpu", dtype), _solver(tmp_path / "gpu", "cuda", dtype)
    assert gpu.device.is_cuda and not cpu.device.is_cuda
    cpu.solve()
    gpu.solve()
    np.testing.assert_allclose(gpu.losses, cpu.losses, rtol=tol, atol=tol)
    wc, wg = _weights(cpu), _weights(gpu)
    for k in wc:
        np.testing.assert_allclose(wg[k], wc[k], rtol=tol, atol=tol, err_msg=k)
    # the update rule's state lives on the device and comes back the same
    tc, _ = cpu.state()
    tg, _ = gpu.state()
    for k in tc:
        assert isinstance(tg[k], np.ndarray) and not hasattr(tg[k], "__netspec_device__")
        np.testing.assert_allclose(tg[k], tc[k], rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("first,second", [("cuda", "cpu"), ("cpu", "cuda"), ("cpu", "cpu")])
def test_snapshots_move_between_devices(tmp_path, first, second):
    straight = _solver(tmp_path / "straight", first, max_iter=4)
    straight.solve()
    a = _solver(tmp_path / "a", first, max_iter=4)
    a.step(2)              # (as Ctrl-C would stop it: solve() ending at 2 would display a forward more)
    path = a.snapshot()
    b = _solver(tmp_path / "a", second, max_iter=4)
    b.restore(path, loaded=snap.read_state(path))
    assert b.iter == 2
    b.solve()
    ws, wb = _weights(straight), _weights(b)
    for k in ws:
        np.testing.assert_allclose(wb[k], ws[k], rtol=1e-10, atol=1e-10, err_msg=k)


def test_batches_are_staged_in_pinned_memory_on_a_gpu(tmp_path):
    from netspec.kernels.cuda import runtime

    s = _solver(tmp_path, "cuda", np.float32)
    s.step(1)
    layer = s.net.layers[0].layer                      # DummyData: batches made on the host
    bufs = list(layer._staging._bufs.values())
    assert bufs and all(type(b) is np.ndarray for b in bufs)
    rt = runtime(0)
    if not rt.sim:                                     # (the simulator has no page-locked memory)
        assert all(isinstance(b.base, rt.xp.cuda.PinnedMemoryPointer) for b in bufs)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_data_layer_on_cuda_reads_the_cpus_stream(prefetch, monkeypatch):
    # made ahead by the thread (in pinned memory on a GPU) or inline, copied in once per batch
    import netspec.layers.data as data_layers
    from netspec.data import register_arrays, unregister_arrays
    from netspec.testing import LayerHarness

    monkeypatch.setattr(data_layers, "TRIAL_BATCHES", 10 ** 6)     # the thread stays
    x = (np.arange(7 * 2 * 4 * 5) % 251).astype(np.uint8).reshape(7, 2, 4, 5)
    register_arrays("cuda_toy", x, np.arange(7) % 3, num_classes=3)
    try:
        fields = {"type": "Data", "top": ["data", "label"], "source": "memory:cuda_toy", "batch_size": 3,
                  "prefetch": prefetch, "shuffle": True, "transform": {"mirror": True, "scale": 0.5}}
        got = {}
        for dev in ("cpu", "cuda"):
            h = LayerHarness(fields, [], phase="TRAIN", seed=4, device=dev)
            got[dev] = []
            for _ in range(5):
                h.layer.forward([], h.top)
                got[dev].append([to_host(t.data).copy() for t in h.top])
            assert (h.layer._pipe is not None) == (prefetch > 0)
            h.layer.close()
        for a, b in zip(got["cpu"], got["cuda"]):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
    finally:
        unregister_arrays("cuda_toy")


@pytest.mark.parametrize("precision,rel,abs_", [("float32", 1e-5, 1e-6), ("float16", 1e-3, 1e-3)])
def test_the_lenet_file_trains_on_cuda_as_on_the_cpu(tmp_path, precision, rel, abs_):
    """models/lenet/train_val.yaml itself (its layers, fillers, lr_mults, real Fashion-MNIST
    batches), at batch 2 so that the simulator runs it in seconds: `netspec train --device cuda`
    gives the CPU's losses, test scores and final weights to float32 rounding; with float16
    activations (half-width buffers on the GPU, rounded float32 ones on the CPU) to a float16
    step or so (a sum the devices order differently may round to the neighbouring value)."""
    import yaml
    from click.testing import CliRunner

    from netspec.cli.main import cli
    from netspec.data.catalog import builtin_files, parse_builtin
    from netspec.errors import DataError
    from netspec.io.weights import load_weights

    try:
        builtin_files(parse_builtin("fashion-mnist:train")[0], "train")
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    root = Path(__file__).resolve().parent.parent
    net = yaml.safe_load((root / "models" / "lenet" / "train_val.yaml").read_text())
    for layer in net["layers"]:
        if layer["type"] == "Data":
            layer["batch_size"] = 2
    net.pop("solver")
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(net, sort_keys=False))
    solver = yaml.safe_load((root / "solvers" / "lenet.yaml").read_text())
    solver.pop("global_batch")
    solver.update(net="net.yaml", test_iter=1, test_interval=2, display=1, max_iter=3, snapshot=0,
                  precision=precision)
    (tmp_path / "solver.yaml").write_text(yaml.safe_dump(solver, sort_keys=False))
    runs = {}
    for device in ("cpu", "cuda"):
        rd = tmp_path / device
        r = CliRunner().invoke(cli, ["train", str(tmp_path / "solver.yaml"), "--device", device, "--run-dir", str(rd),
                                     "-q"])
        assert r.exit_code == 0, r.output
        log = [json.loads(line) for line in (rd / "log.jsonl").read_text().splitlines()]
        runs[device] = (log, load_weights(rd / "LeNet_iter_3.safetensors"))
    (log_c, w_c), (log_g, w_g) = runs["cpu"], runs["cuda"]
    assert [(r["iter"], r["phase"], r["name"]) for r in log_g] == [(r["iter"], r["phase"], r["name"]) for r in log_c]
    assert len([r for r in log_c if r["phase"] == "TEST"]) >= 4     # tested at 0 and 2, loss and accuracy
    for rc, rg in zip(log_c, log_g):
        assert rg["value"] == pytest.approx(rc["value"], rel=rel, abs=abs_), (rc, rg)
        assert rg["lr"] == rc["lr"]
    assert w_g.keys() == w_c.keys() and len(w_c) == 8
    for k in w_c:
        np.testing.assert_allclose(w_g[k], w_c[k], rtol=rel, atol=abs_, err_msg=k)
