"""The reassociated row sums (kernels/cpu/reduce.py): accurate, and the same on any thread count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netspec.core.device import kernels
from netspec.kernels.cpu.reduce import row_dot, row_sqdev, row_sum, row_sum_dot
from netspec.kernels.jit import get_num_threads, set_num_threads


def _exact(values) -> float:
    return math.fsum(np.asarray(values, dtype=np.float64).tolist())


@pytest.mark.parametrize("n", [0, 1, 3, 7, 64, 1000, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_reductions_against_exact_sums(n, dtype):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 100 + 3).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    scale = max(1.0, float(np.abs(x64).sum()))
    tol = 1e-13 * scale * max(1, n)
    assert abs(row_sum(x) - _exact(x64)) <= tol
    assert abs(row_dot(x, y) - _exact(x64 * y64)) <= tol * 10
    a, b = row_sum_dot(x, y)
    assert a == row_sum(x) or abs(a - _exact(x64)) <= tol
    assert abs(b - _exact(x64 * y64)) <= tol * 10
    mu = float(x64.mean()) if n else 0.0
    assert abs(row_sqdev(x, mu) - _exact((x64 - mu) ** 2)) <= tol * scale


def test_a_sum_that_float32_accumulation_would_lose():
    # 2^24 + many ones: a float32 running sum stops growing at 2^24; float64 partial sums do not
    x = np.ones(5000, dtype=np.float32)
    x[0] = 2.0 ** 24
    assert row_sum(x) == 2.0 ** 24 + 4999


def test_batchnorm_and_scale_kernels_do_not_depend_on_the_thread_count():
    K = kernels("norm")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6, 300)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma = rng.standard_normal(6).astype(np.float32)
    saved = get_num_threads()
    results = []
    try:
        for t in sorted({1, saved}):
            set_num_threads(t)
            mean, var = np.zeros(6), np.zeros(6)
            K.batchnorm_stats(mean, var, x)
            dx, s = np.empty_like(x), np.empty((2, 6), np.float32)
            K.batchnorm_backward(dx, s[0], s[1], dy, x, gamma, 1.0 / np.sqrt(var + 1e-5), True)
            ds, db, dx2 = np.empty(6, np.float32), np.empty(6, np.float32), np.empty_like(x)
            K.scale_backward(dx2, ds, db, dy, x, gamma, True, True, True)
            results.append((mean, var, dx, ds, db, dx2))
    finally:
        set_num_threads(saved)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)
    # and the sums are the plain ones
    np.testing.assert_allclose(results[0][0], x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][3], (dy.astype(np.float64) * x).sum(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(results[0][4], dy.astype(np.float64).sum(axis=(0, 2)), rtol=1e-5, atol=1e-4)
