"""Mixed precision on CUDA: the rounding kernels give the CPU's bits, and a float16 or bfloat16
net trained on the GPU (or the simulator) holds half values in its activations and follows the
CPU run (the two devices sum in different orders, so a value may round the other way)."""

from __future__ import annotations

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
    a = D.to_host(gpu.net.blobs["ip1"].data)
    r = a.copy()
    getattr(cpu_kernels, f"round_{precision}")(r.reshape(-1).view(np.uint32))
    np.testing.assert_array_equal(a, r)
