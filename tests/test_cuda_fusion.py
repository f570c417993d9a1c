"""BatchNorm + Scale fused by the Net, on CUDA: the GPU net gives the CPU net's numbers.

tests/test_net_fusion.py shows on the CPU that the fused pair gives what the two layers give
apart, and matches finite differences; here the same kind of net runs on both devices (the
simulator under ``NUMBA_ENABLE_CUDASIM=1``, or a real GPU) and every loss, param gradient,
running statistic and blob must agree, fused and apart, in float64 and float32.  The net
uses only layers of this family (a learned Bias in front, one value per element, since
BatchNorm would cancel one per channel, makes BatchNorm's bottom gradient reach a param), so
it runs wherever these kernels do.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec import api
from netspec.core.device import copy_in, to_host
from netspec.core.net import Net
from tests.test_cuda_layers import TOL

pytestmark = pytest.mark.cuda

NET = """
name: bnnet
layers:
  - {name: data, type: Input, top: [data, label], shape: [[4, 3, 3, 3], [4, 3, 3]]}
  - {name: shift, type: Bias, bottom: data, top: shifted, num_axes: -1, filler: {type: gaussian, std: 0.5}{shift_param}}
  - {name: bn1, type: BatchNorm, bottom: shifted, top: {bn_top}, {bn_param}}
  - {name: scale1, type: Scale, bottom: {bn_top}, top: {bn_top}, {scale_param}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [{bn_top}, label]}
"""

SCALE = "bias_term: true, filler: {type: uniform, min: 0.5, max: 1.5}, bias_filler: {type: gaussian, std: 0.1}"


def make(bn_top="shifted", bn_param="eps: 0.001", scale_param=SCALE, shift_param=""):
    return (NET.replace("{bn_top}", bn_top).replace("{bn_param}", bn_param)
            .replace("{scale_param}", scale_param).replace("{shift_param}", shift_param))


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def build(text, monkeypatch, device, fuse=True, phase="TRAIN", dtype=np.float64):
    monkeypatch.setenv("NETSPEC_FUSE", "1" if fuse else "0")
    net = Net(api.compile_net(api.load_net_text(text, file="net.yaml"), phase), dtype, seed=3, device=device)
    rng = np.random.default_rng(0)
    net.set_input("data", rng.normal(size=net.blobs["data"].shape) * 2 + 1)
    net.set_input("label", rng.integers(0, 3, size=net.blobs["label"].shape))
    return net


def run(net, steps=2):
    """Two forward/backward passes (the second on the running statistics the first moved):
    the loss, every param gradient, every param (statistics included), every blob and its
    gradient."""
    out = []
    for _ in range(steps):
        net.clear_param_grads()
        loss = net.forward()
        if net.phase == "TRAIN":
            net.backward()
        out.append((loss, to_host(net.param_grad).copy(), to_host(net.param_data).copy(),
                    {**{k: to_host(b.data).copy() for k, b in net.blobs.items()},
                     **{k + " gradient": to_host(b.grad).copy() for k, b in net.blobs.items()}}))
    return out


def assert_same(a, b, dtype):
    tol = TOL[dtype]
    for (l1, g1, p1, b1), (l2, g2, p2, b2) in zip(a, b):
        assert l1 == pytest.approx(l2, rel=tol["rtol"], abs=tol["atol"])
        np.testing.assert_allclose(g1, g2, **tol, err_msg="param gradients")
        np.testing.assert_allclose(p1, p2, **tol, err_msg="params and running statistics")
        assert b1.keys() == b2.keys()
        for k in b2:
            np.testing.assert_allclose(b1[k], b2[k], **tol, err_msg=k)


VARIANTS = {
    "in place": {},
    "BatchNorm not in place": {"bn_top": "bn1"},
    "Scale without bias": {"scale_param": "filler: {type: uniform, min: 0.5, max: 1.5}"},
    # nothing below BatchNorm learns: the fused backward skips BatchNorm's bottom gradient
    "frozen below": {"shift_param": ", param: {bias: {lr_mult: 0}}"},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fused_pair_cuda_equals_cpu(variant, dtype, monkeypatch):
    text = make(**VARIANTS[variant])
    cpu, gpu = build(text, monkeypatch, "cpu", dtype=dtype), build(text, monkeypatch, "cuda", dtype=dtype)
    assert cpu.fused == gpu.fused == [("bn1", "scale1")]
    assert_same(run(gpu), run(cpu), dtype)
    if variant != "frozen below":
        assert np.abs(to_host(gpu.params["shift/bias"].grad)).sum() > 0   # BatchNorm's bottom got one


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fused_equals_unfused_on_cuda(dtype, monkeypatch):
    text = make()
    fused = build(text, monkeypatch, "cuda", True, dtype=dtype)
    apart = build(text, monkeypatch, "cuda", False, dtype=dtype)
    assert fused.fused == [("bn1", "scale1")] and apart.fused == []
    assert_same(run(fused), run(apart), dtype)


@pytest.mark.parametrize("why, kw, phase", [
    ("TEST uses the running statistics", {}, "TEST"),
    ("global statistics in TRAIN", {"bn_param": "use_global_stats: true"}, "TRAIN"),
    ("a scalar gamma", {"scale_param": "num_axes: 0, bias_term: true"}, "TRAIN"),
])
def test_pairs_that_stay_apart_cuda_equals_cpu(why, kw, phase, monkeypatch):
    text = make(**kw)
    cpu, gpu = build(text, monkeypatch, "cpu", phase=phase), build(text, monkeypatch, "cuda", phase=phase)
    assert gpu.fused == cpu.fused == [], why
    if phase == "TEST" or "use_global_stats" in text:
        # running statistics as a trained net holds them (s != 0), copied to both nets
        for net in (cpu, gpu):
            stats = {"bn1/mean": [0.6, -1.2, 2.4], "bn1/variance": [3.0, 1.5, 6.0], "bn1/scale_factor": [1.5]}
            for key, value in stats.items():
                copy_in(net.params[key].data, np.array(value))
    assert_same(run(gpu), run(cpu), np.float64)
