"""The utility kernels on CUDA beyond the contract test: Eltwise in place (top 0 is bottom 0,
as ResNets write it), and ArgMax's order among ties and NaNs and Reduction's float64 sums,
which must be the CPU's exactly (both run the same serial loop per output element).

Run under the simulator (``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda``) or on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec.core.device import Device, to_host
from netspec.testing import LayerHarness
from tests.cases import all_cases
from tests.test_cuda_layers import TOL

pytestmark = pytest.mark.cuda

INPLACE = [c for c in all_cases() if c.inplace and c.type == "Eltwise"]


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def _inplace(case, device, dtype):
    bottoms = [np.asarray(b, dtype=np.float64) for b in case.bottoms(np.random.default_rng(0))]
    h = LayerHarness(case.fields, bottoms, phase=case.phase, dtype=dtype, inplace=True, device=device)
    tops = h.forward()
    grads = [np.random.default_rng(4).normal(size=t.shape) for t in tops]
    bgrads, _ = h.backward(grads)
    return tops + bgrads


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", INPLACE, ids=lambda c: c.name)
def test_eltwise_in_place_cpu_equals_cuda(case, dtype):
    for a, b in zip(_inplace(case, "cpu", dtype), _inplace(case, "cuda", dtype)):
        np.testing.assert_allclose(b, a, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_argmax_ties_and_nans_in_the_cpu_order(dtype):
    from netspec.kernels.cpu import utility as cpu
    from netspec.kernels.cuda import utility as gpu

    dev = Device("cuda")
    rng = np.random.default_rng(1)
    for trial in range(6):
        outer, dim, inner = (int(v) for v in rng.integers(1, [4, 7, 4]))
        k = int(rng.integers(1, dim + 1))
        x = rng.integers(0, 3, size=(outer, dim, inner)).astype(dtype)   # many ties
        if trial % 2:
            x[rng.random(x.shape) < 0.2] = np.nan
        ind, val = np.zeros((outer, k, inner), dtype), np.zeros((outer, k, inner), dtype)
        cpu.argmax_forward(ind, val, x, k)
        gi, gv = dev.zeros(ind.shape, dtype), dev.zeros(ind.shape, dtype)
        gpu.argmax_forward(gi, gv, dev.asarray(x), k)
        np.testing.assert_array_equal(to_host(gi), ind)
        np.testing.assert_array_equal(to_host(gv), val)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("op", [0, 1, 2], ids=["SUM", "ASUM", "SUMSQ"])
def test_reduction_is_the_cpu_bit_for_bit(op, dtype):
    from netspec.kernels.cpu import utility as cpu
    from netspec.kernels.cuda import utility as gpu

    dev = Device("cuda")
    rng = np.random.default_rng(2)
    x, dy = rng.normal(size=(5, 13)).astype(dtype), rng.normal(size=5).astype(dtype)
    y, g = np.zeros(5, dtype), dev.zeros(5, dtype)
    cpu.reduction_forward(y, x, op, 0.3)
    gpu.reduction_forward(g, dev.asarray(x), op, 0.3)
    np.testing.assert_array_equal(to_host(g), y)
    dx, gdx = np.zeros_like(x), dev.zeros(x.shape, dtype)
    cpu.reduction_backward(dx, dy, x, op, 0.3)
    gpu.reduction_backward(gdx, dev.asarray(dy), dev.asarray(x), op, 0.3)
    np.testing.assert_array_equal(to_host(gdx), dx)
