"""Mixed precision on CUDA: the rounding kernels give the CPU's bits; with float16 every layer
runs on half-width (float16) buffers and gives the CPU's rounded float32 results; and a float16
or bfloat16 net trained on the GPU (or the simulator) holds half values in its activations and
follows the CPU run (the two devices sum in different orders, so a value may round the other
way)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from netspec.core import device as D
from netspec.kernels.cpu import precision as cpu_kernels

sys.path.insert(0, str(Path(__file__).parent))
from test_cuda_net import _gpu, _solver, _weights  # noqa: E402,F401  (the fixture skips without a GPU)

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("name", ["round_float16", "round_bfloat16"])
def test_rounding_kernels_give_the_cpus_bits(name):
    from netspec.kernels.cuda import precision as cuda_kernels

    rng = np.random.default_rng(1)
    bits = np.concatenate([rng.integers(0, 2 ** 32, size=4000, dtype=np.uint64).astype(np.uint32),
                           (rng.normal(size=2000) * 1e-6).astype(np.float32).view(np.uint32),
                           np.array([0x80000000, 0x7F800000, 0x7FC00000, 0x477FF000, 0x477FEFFF], np.uint32)])
    want = bits.copy()
    getattr(cpu_kernels, name)(want)
    dev = D.resolve("cuda")
    with D.use(dev):
        got = dev.asarray(bits)
        getattr(cuda_kernels, name)(got)
    np.testing.assert_array_equal(D.to_host(got), want)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_training_on_cuda_follows_the_cpu(tmp_path, precision):
    cpu = _solver(tmp_path / "cpu", "cpu", np.float32, precision=precision)
    gpu = _solver(tmp_path / "gpu", "cuda", np.float32, precision=precision)
    cpu.solve()
    gpu.solve()
    assert gpu.scaler.state() == cpu.scaler.state()
    np.testing.assert_allclose(gpu.losses, cpu.losses, rtol=2e-2, atol=2e-3)
    wc, wg = _weights(cpu), _weights(gpu)
    for k in wc:
        np.testing.assert_allclose(wg[k], wc[k], rtol=2e-2, atol=2e-3, err_msg=k)
    blob = gpu.net.blobs["ip1"]
    if precision == "float16":     # half-width buffers on the GPU, data and gradient
        assert blob.data.dtype == blob.grad.dtype == np.float16
        assert cpu.net.blobs["ip1"].data.dtype == np.float32     # the CPU rounds float32 ones
    else:                          # bfloat16: float32 buffers holding bfloat16 values
        a = D.to_host(blob.data)
        r = a.copy()
        getattr(cpu_kernels, f"round_{precision}")(r.reshape(-1).view(np.uint32))
        np.testing.assert_array_equal(a, r)


def test_float16_activations_take_half_the_memory_on_cuda(tmp_path, monkeypatch):
    f32 = _solver(tmp_path / "f32", "cuda", np.float32)
    f16 = _solver(tmp_path / "f16", "cuda", np.float32, precision="float16")
    t32, h32 = f32.net.activation_bytes()
    t16, h16 = f16.net.activation_bytes()
    assert h32 == 0 and h16 > 0
    assert t16 == t32 - h16                      # each half buffer is half its float32 twin
    # only what is not an activation stays float32: data, labels, the loss and the accuracy
    wide = {name for name, b in f16.net.blobs.items() if b.data.dtype != np.float16}
    assert wide == {"data", "label", "loss"}
    assert {name for name, b in f16.test_nets[0].blobs.items() if b.data.dtype != np.float16} == \
        {"data", "label", "loss", "accuracy", "label_data_1_split_0", "label_data_1_split_1"}  # (its Splits)
    assert any("in float16 buffers" in line for line in f16.describe_parallel())
    # NETSPEC_HALF_STORAGE=0: float32 buffers rounded to float16 values, as on the CPU
    monkeypatch.setenv("NETSPEC_HALF_STORAGE", "0")
    r16 = _solver(tmp_path / "r16", "cuda", np.float32, precision="float16")
    assert r16.net.activation_bytes() == (t32, 0)
    cpu = _solver(tmp_path / "cpu", "cpu", np.float32, precision="float16")
    r16.solve()
    cpu.solve()
    np.testing.assert_allclose(r16.losses, cpu.losses, rtol=2e-2, atol=2e-3)
    a = D.to_host(r16.net.blobs["ip1"].data)
    r = a.copy()
    cpu_kernels.round_float16(r.reshape(-1).view(np.uint32))
    np.testing.assert_array_equal(a, r)


# ---- half-width storage: every layer on float16 buffers ---------------------------------------
def _half(a):
    return np.asarray(a, dtype=np.float64).astype(np.float16).astype(np.float32)


def _half_run(case, device: str, params=None, grad_scale: float = 1.0):
    """One case with float16 activations: on the GPU in half-width buffers (``storage``), on the
    CPU as float32 values rounded to float16 where a half buffer would hold them (the inputs and
    the top gradients before, the tops and bottom gradients after), the CPU's ``precision``.
    ``grad_scale`` multiplies the top gradients, as a loss scale does."""
    from tests.cases import Case  # noqa: F401  (the case's type)

    from netspec.testing import LayerHarness

    gpu = device == "cuda"
    bottoms = [_half(b) for b in case.bottoms(np.random.default_rng(0))]
    h = LayerHarness(case.fields, bottoms, phase=case.phase, dtype=np.float32,
                     params=params if params is not None else case.params, random_params=case.random_params,
                     device=device, storage=np.float16 if gpu else None)
    held = [t.data.dtype == np.float16 for t in h.top] if gpu else None
    tops = h.forward()
    out = {"tops": tops, "params": {k: D.to_host(p.data).copy() for k, p in h.params.items()}, "held": held,
           "bottom_types": [b.data.dtype for b in h.bottom]}
    if case.grad and h.layer.differentiable:
        rng = np.random.default_rng(4)
        grads = [_half(grad_scale * rng.normal(size=t.shape)) for t in tops]
        if case.check_tops is not None:
            grads = [g if j in case.check_tops else np.zeros_like(g) for j, g in enumerate(grads)]
        out["bottom_grads"], out["param_grads"] = h.backward(grads)
    return out


def _close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    # a value the two devices sum in another order may round to the neighbouring float16 (one
    # step of 2**-10 relative), and so may what is computed from it
    # (under a loss scale both may overflow to the same infinities, which assert_allclose matches)
    finite = np.abs(want[np.isfinite(want)])
    scale = max(float(finite.max()) if finite.size else 0.0, 1e-3)
    np.testing.assert_allclose(got, want, rtol=1.5e-3, atol=1e-3 * scale, err_msg=what)


#: top gradients times 2**14, as under a loss scale: a float16 sum of several overflows (65,504),
#: so param-gradient partials, losses and counts must be summed in float32 scratch
@pytest.mark.parametrize("grad_scale", [1.0, 2.0 ** 14], ids=["unscaled", "scaled"])
@pytest.mark.parametrize("case", __import__("tests.cases", fromlist=["all_cases"]).all_cases(),
                         ids=lambda c: c.name)
def test_layer_on_half_width_buffers_follows_the_cpus_rounding(case, grad_scale):
    from netspec.kernels.cpu.precision import round_float16

    cpu = _half_run(case, "cpu", grad_scale=grad_scale)
    gpu = _half_run(case, "cuda", params=cpu["params"] or None, grad_scale=grad_scale)
    assert all(t == np.float16 for t in gpu["bottom_types"])
    for j, (a, b) in enumerate(zip(cpu["tops"], gpu["tops"])):
        if gpu["held"][j]:                 # a half buffer: the CPU's value rounded as it would be
            a = a.astype(np.float32).copy()
            round_float16(a.reshape(-1).view(np.uint32))
            assert b.dtype == np.float16
        _close(b, a, f"top {j}")
    if "bottom_grads" in cpu:
        for j, (a, b) in enumerate(zip(cpu["bottom_grads"], gpu["bottom_grads"])):
            assert b.dtype == np.float16
            _close(b, _half(a), f"bottom {j} gradient")
        for k in cpu["param_grads"]:
            assert gpu["param_grads"][k].dtype == np.float32
            _close(gpu["param_grads"][k], cpu["param_grads"][k], f"param {k} gradient")


def test_netspec_time_runs_float16_buffers_on_cuda(tmp_path):
    from click.testing import CliRunner

    from netspec.cli.main import cli
    from test_cuda_net import LAYERS

    f = tmp_path / "tiny.yaml"
    f.write_text("name: tiny\n" + LAYERS)
    r = CliRunner().invoke(cli, ["time", str(f), "-n", "1", "--precision", "float16", "--device", "cuda"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("float16 activations"))
    took, full = (float(v) for v in re.findall(r"([\d.]+) KiB", line))
    assert "float16 buffers" in line and took < full
    assert "Average Forward-Backward" in r.output


def test_netspec_test_on_float16_buffers_scores_as_the_cpu(tmp_path):
    """`netspec test --precision float16 --device cuda` on trained weights: the GPU's float16
    buffers give the CPU's (rounded float32) loss and accuracy."""
    from click.testing import CliRunner

    from netspec.cli.main import cli
    from netspec.io.weights import save_weights
    from test_cuda_net import LAYERS

    s = _solver(tmp_path / "train", "cpu", np.float32, max_iter=6)
    s.solve()
    save_weights(tmp_path / "w.safetensors", s.net)
    f = tmp_path / "tiny.yaml"
    f.write_text("name: tiny\n" + LAYERS)
    out = {}
    for device in ("cpu", "cuda"):
        r = CliRunner().invoke(cli, ["test", str(f), "--weights", str(tmp_path / "w.safetensors"), "--iterations", "3",
                                     "--precision", "float16", "--device", device, "-q"])
        assert r.exit_code == 0, r.output
        out[device] = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+) = ([-\d.e]+)", r.output, re.M)}
    assert set(out["cuda"]) == {"accuracy", "loss"}
    assert out["cuda"]["accuracy"] == out["cpu"]["accuracy"]
    assert out["cuda"]["loss"] == pytest.approx(out["cpu"]["loss"], rel=5e-3)   # (measured: 1.4e-3)
