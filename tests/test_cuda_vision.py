"""Convolution, Pooling, InnerProduct and Embed on CUDA beyond the per-case contract of
test_cuda_layers: which convolution algorithms a GPU offers, what a CPU-only algorithm named in a
net does there, the algorithm cache kept apart per device, chunked im2col, and located errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from netspec.core import algo
from netspec.core import device as D
from netspec.errors import DataError, ShapeError
from netspec.layers import vision
from netspec.testing import LayerHarness

pytestmark = pytest.mark.cuda

TOL = {"rtol": 1e-9, "atol": 1e-11}


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.errors import DeviceError

    try:
        D.resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def _both(fields, xs, **kw):
    """(CPU harness, CUDA harness) on the same inputs and params; forward and backward run."""
    cpu = LayerHarness(fields, xs, random_params=True, **kw)
    params = {k: D.to_host(p.data) for k, p in cpu.params.items()}
    gpu = LayerHarness(fields, xs, params=params, device="cuda", **kw)
    for h in (cpu, gpu):
        tops = h.forward()
        grads = [np.random.default_rng(3).normal(size=t.shape) for t in tops]
        h.out = tops, h.backward(grads)
    return cpu, gpu


def _assert_same(cpu, gpu):
    (tc, (bc, pc)), (tg, (bg, pg)) = cpu.out, gpu.out
    for a, b in zip(tc + bc, tg + bg):
        np.testing.assert_allclose(b, a, **TOL)
    for k in pc:
        np.testing.assert_allclose(pg[k], pc[k], **TOL)


def test_gpu_offers_only_gpu_algorithms():
    g = vision.ConvShape(2, 8, 6, 1, (9, 9), (9, 9), (3, 3), (1, 1), (1, 1), (1, 1))
    assert vision.conv_algo_names(g, "cpu") == ["winograd", "patch_gemm", "im2col_gemm"]
    assert vision.conv_algo_names(g, "cuda") == ["im2col_gemm"]
    one = vision.ConvShape(2, 8, 6, 1, (12, 12), (12, 12), (1, 1), (0, 0), (1, 1), (1, 1))
    assert vision.choose_conv_algo(one, "cuda") == "gemm_1x1"


@pytest.mark.parametrize("name", ["winograd", "patch_gemm"])
def test_cpu_algorithm_named_in_the_net_runs_the_gpu_choice_with_a_warning(name):
    f = {"type": "Convolution", "num_output": 3, "kernel_size": 3, "pad": 1, "algorithm": name}
    x = [np.random.default_rng(0).normal(size=(2, 4, 6, 6))]
    with pytest.warns(UserWarning, match=f"algorithm {name} runs on the CPU only.*im2col_gemm"):
        cpu, gpu = _both(f, x)
    assert cpu.layer.algo == name and gpu.layer.algo == "im2col_gemm"
    _assert_same(cpu, gpu)


def test_algorithm_that_suits_no_device_is_still_an_error_on_the_gpu():
    f = {"type": "Convolution", "num_output": 4, "kernel_size": 3, "stride": 2, "algorithm": "winograd"}
    with pytest.raises(ShapeError, match="winograd does not suit this layer.*im2col_gemm"):
        LayerHarness(f, [np.zeros((2, 3, 8, 8))], random_params=True, device="cuda")


def test_algorithm_cache_keys_keep_devices_apart():
    cpu_key = json.loads(algo.make_key("Convolution", n=4))
    with D.use("cuda"):
        gpu_key = json.loads(algo.make_key("Convolution", n=4))
    assert "cpu" in cpu_key and "threads" in cpu_key and "device" not in cpu_key
    assert gpu_key["device"] == "cuda" and gpu_key["gpu"] and "cpu" not in gpu_key
    assert {k: v for k, v in cpu_key.items() if k not in ("cpu", "threads")} == \
        {k: v for k, v in gpu_key.items() if k not in ("device", "gpu")}


@pytest.mark.parametrize("ltype", ["Convolution", "Deconvolution"])
def test_im2col_in_several_chunks(ltype, monkeypatch):
    """Chunks of images smaller than the batch (as large layers get on a GPU): the chunk loop,
    the columns kept from forward for the last chunk, and the weight gradient summed over chunks."""
    monkeypatch.setattr(vision, "GPU_COL_CHUNK_BYTES", 1)
    monkeypatch.setattr(vision, "COL_CHUNK_BYTES", 1)
    f = {"type": ltype, "num_output": 3, "kernel_size": 3, "stride": 2, "pad": 1, "top": ["a", "b"],
         "algorithm": "im2col_gemm"}
    rng = np.random.default_rng(1)
    cpu, gpu = _both(f, [rng.normal(size=(3, 2, 5, 5)), rng.normal(size=(3, 2, 5, 5))])
    assert gpu.layer.engine.nb == 1 and len(gpu.layer.engine._chunks()) == 3
    _assert_same(cpu, gpu)


def test_max_pool_ties_and_overlaps_take_the_cpu_elements():
    """Equal maxima (the first wins) in overlapping windows, and the argmax top."""
    x = np.round(np.random.default_rng(2).normal(size=(2, 3, 7, 7)))   # many ties
    f = {"type": "Pooling", "pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1, "top": ["p", "mask"]}
    cpu, gpu = _both(f, [x])
    np.testing.assert_array_equal(gpu.out[0][1], cpu.out[0][1])
    _assert_same(cpu, gpu)


def test_stochastic_pooling_samples_the_cpu_elements():
    x = np.random.default_rng(5).uniform(0.1, 1.0, size=(2, 3, 8, 8))
    f = {"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 3, "stride": 2}
    cpu, gpu = _both(f, [x])
    np.testing.assert_array_equal(D.to_host(gpu.layer.index), D.to_host(cpu.layer.index))
    _assert_same(cpu, gpu)


def test_inner_product_weight_gradient_accumulates():
    f = {"type": "InnerProduct", "num_output": 3}
    x = [np.random.default_rng(6).normal(size=(4, 5))]
    h = LayerHarness(f, x, random_params=True, device="cuda")
    (y,) = h.forward()
    g = [np.ones_like(y)]
    _, once = h.backward(g)
    _, twice = h.backward(g, clear_params=False)
    for k in once:
        np.testing.assert_allclose(twice[k], 2 * once[k], rtol=1e-12)


def test_embed_bad_index_is_a_located_error_on_the_gpu():
    f = {"type": "Embed", "num_output": 2, "input_dim": 3}
    h = LayerHarness(f, [np.array([0.0, 2.0, 1.5, 7.0])], device="cuda")
    with pytest.raises(DataError, match=r"index 1.5 at position 2 of the batch is not an integer in \[0, 3\)"):
        h.forward()
