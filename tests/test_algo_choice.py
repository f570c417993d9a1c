"""The per-layer algorithm choice (netspec.core.algo): measured once per key, kept in memory
and in the cache file, forced by NETSPEC_ALGO or a layer field; and the threading it relies on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from netspec.core import algo
from netspec.errors import ShapeError
from netspec.testing import LayerHarness


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "algos.json"
    monkeypatch.setenv("NETSPEC_ALGO_CACHE", str(path))
    monkeypatch.delenv("NETSPEC_ALGO", raising=False)
    monkeypatch.delenv("NETSPEC_AUTOTUNE", raising=False)
    algo.forget()
    yield path
    algo.forget()


def _trial(calls, seconds):
    """A trial function whose candidate ``name`` takes ``seconds[name]`` per run (simulated)."""
    import time

    def trial(name):
        def run():
            calls.append(name)
            time.sleep(seconds[name])
        return run
    return trial


def test_measures_once_and_keeps_the_fastest(cache):
    calls: list[str] = []
    key = algo.make_key("Test", shape=[1, 2])
    got = algo.choose(key, ["a", "b"], "a", _trial(calls, {"a": 0.004, "b": 0.001}))
    assert got == "b"
    assert set(calls) == {"a", "b"} and len(calls) >= 2 * (1 + algo.MIN_RUNS)
    entry = next(iter(json.loads(cache.read_text())["choices"].values()))
    assert entry["algo"] == "b" and entry["ms"]["a"] > entry["ms"]["b"]
    # again, in this process and in a new one (memory dropped): read back, nothing measured
    calls.clear()
    assert algo.choose(key, ["a", "b"], "a", _trial(calls, {"a": 0.0, "b": 0.0})) == "b"
    algo.forget()
    assert algo.choose(key, ["a", "b"], "a", _trial(calls, {"a": 0.0, "b": 0.0})) == "b"
    assert calls == []


def test_new_candidates_are_measured_again(cache):
    calls: list[str] = []
    key = algo.make_key("Test", shape=[3])
    algo.choose(key, ["a", "b"], "a", _trial(calls, {"a": 0.002, "b": 0.001}))
    calls.clear()
    got = algo.choose(key, ["a", "b", "c"], "a", _trial(calls, {"a": 0.002, "b": 0.001, "c": 0.0}))
    assert got == "c" and "c" in calls


def test_environment_forces_a_suiting_algorithm(cache, monkeypatch):
    calls: list[str] = []
    monkeypatch.setenv("NETSPEC_ALGO", "a")
    assert algo.choose(algo.make_key("Test"), ["a", "b"], "b", _trial(calls, {"a": 1, "b": 1})) == "a"
    monkeypatch.setenv("NETSPEC_ALGO", "zzz")   # suits nothing here: the usual choice
    assert algo.choose(algo.make_key("Test"), ["a", "b"], "b", _trial(calls, {"a": 0.002, "b": 0.0})) == "b"


def test_small_layers_and_disabled_tuning_take_the_default(cache, monkeypatch):
    calls: list[str] = []
    assert algo.choose(algo.make_key("Test", n=1), ["a", "b"], "a", _trial(calls, {"a": 1, "b": 0}),
                       flops=1e3) == "a"
    monkeypatch.setenv("NETSPEC_AUTOTUNE", "0")
    assert algo.choose(algo.make_key("Test", n=2), ["a", "b"], "a", _trial(calls, {"a": 1, "b": 0})) == "a"
    assert calls == []


def test_damaged_cache_file_is_measured_again(cache):
    cache.write_text("{not json")
    calls: list[str] = []
    assert algo.choose(algo.make_key("Test"), ["a", "b"], "a", _trial(calls, {"a": 0.002, "b": 0.0})) == "b"
    assert json.loads(cache.read_text())["choices"]


def test_key_names_threads_and_cpu():
    key = json.loads(algo.make_key("Convolution", n=4))
    assert key["family"] == "Convolution" and key["n"] == 4 and key["threads"] >= 1 and key["cpu"]


def test_convolution_measures_on_its_blobs_and_leaves_gradients_alone(cache, monkeypatch):
    """A measured layer records its choice; the measurement's passes leave no trace in the
    param gradients, and the layer then computes what the reference does."""
    monkeypatch.setattr(algo, "MIN_TUNE_FLOPS", 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 9, 9))
    w, b = rng.normal(size=(6, 8, 3, 3)), rng.normal(size=6)
    h = LayerHarness({"type": "Convolution", "num_output": 6, "kernel_size": 3, "pad": 1}, [x],
                     params={"weight": w, "bias": b})
    assert h.layer.algo in ("winograd", "patch_gemm", "im2col_gemm")
    entry = next(iter(json.loads(cache.read_text())["choices"].values()))
    assert entry["algo"] == h.layer.algo and set(entry["ms"]) == {"winograd", "patch_gemm", "im2col_gemm"}
    assert not h.layer.params["weight"].grad.any() and not h.layer.params["bias"].grad.any()
    (y,) = h.forward()
    ref = LayerHarness({"type": "Convolution", "num_output": 6, "kernel_size": 3, "pad": 1, "algorithm": "im2col_gemm"},
                       [x], params={"weight": w, "bias": b}).forward()[0]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_algorithm_field_that_does_not_suit_is_an_error():
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ShapeError, match="winograd does not suit this layer.*im2col_gemm"):
        LayerHarness({"type": "Convolution", "num_output": 4, "kernel_size": 3, "stride": 2, "algorithm": "winograd"},
                     [x], random_params=True)


def test_kernel_blas_stays_single_threaded():
    """Kernels call BLAS from inside their parallel loops: that library must stay at one
    thread whatever set_threads asks of NumPy's."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from netspec.core.threads import kernel_blas_serial, set_threads
    from netspec.kernels.jit import get_num_threads

    before = get_num_threads()
    try:
        if not kernel_blas_serial():
            pytest.skip("SciPy and NumPy share one BLAS here")
        set_threads(2)
        import scipy

        libs = [i for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas" and i["filepath"].startswith(scipy.__file__.rsplit("/", 2)[0] + "/scipy")]
        assert libs and all(i["num_threads"] == 1 for i in libs)
    finally:
        set_threads(before)
