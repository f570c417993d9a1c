"""The update rules on CUDA: a net on the GPU and one on the CPU, from the same seed and given
the same gradients, hold the same params and rule state after every step.

Every rule (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, AdamW) with each kind of
conditioning (L2 and L1 weight decay, iter_size, clipping before or after the normalization),
on tests/test_solver_rules.py's net, whose params have their own lr_mult and decay_mult and one
of which is frozen (lr_mult 0).  Run under the simulator (``NUMBA_ENABLE_CUDASIM=1 python -m
pytest -m cuda``) and on a real GPU as they are.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec import api
from netspec.core.device import copy_in, to_host
from netspec.core.net import Net
from netspec.solvers.rules import Updater
from tests.test_solver_rules import NET, RULE_CONFIGS

pytestmark = pytest.mark.cuda

EXTRAS = {
    "plain": {},
    "L2": {"weight_decay": 0.01},
    "L1": {"weight_decay": 0.01, "regularization_type": "L1"},
    "iter_size2": {"iter_size": 2},
    "clip": {"clip_gradients": 1.5, "iter_size": 2},
    "clip_after_normalize": {"clip_gradients": 1.5, "iter_size": 2, "clip_after_normalize": True},
}
RATES = [0.1, 0.05, 0.05, 0.02]      # a repeated rate reuses the local rates computed before


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def make_net(device: str, dtype) -> Net:
    return Net(api.compile_net(api.load_net_text(NET), "TRAIN"), dtype, seed=0, device=device)


def make_pair(c: dict, dtype, seed: int = 0):
    """A CPU and a CUDA net with the same random params, and an Updater for each."""
    rng = np.random.default_rng(seed)
    cpu, gpu = make_net("cpu", dtype), make_net("cuda", dtype)
    w0 = rng.normal(size=cpu.param_data.size).astype(dtype)
    cpu.param_data[...] = w0
    copy_in(gpu.param_data, w0)
    return rng, (cpu, Updater(c, cpu)), (gpu, Updater(c, gpu))


def step_both(rng, pair_cpu, pair_gpu, rate: float, it: int) -> None:
    (cpu, ucpu), (gpu, ugpu) = pair_cpu, pair_gpu
    g = (rng.normal(size=cpu.param_grad.size) * 2.0).astype(cpu.param_grad.dtype)
    cpu.param_grad[...] = g
    copy_in(gpu.param_grad, g)
    ucpu.apply(rate, it)
    ugpu.apply(rate, it)


def assert_same(cpu_arr, gpu_arr, dtype, exact: bool, what: str) -> None:
    got = to_host(gpu_arr)
    assert got.dtype == cpu_arr.dtype, what
    if dtype == np.float64:
        np.testing.assert_allclose(got, cpu_arr, rtol=1e-9, atol=1e-12, err_msg=what)
    elif exact:
        np.testing.assert_array_equal(got, cpu_arr, err_msg=what)
    else:
        np.testing.assert_allclose(got, cpu_arr, rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("extra", list(EXTRAS))
@pytest.mark.parametrize("rule", list(RULE_CONFIGS))
def test_rule_cpu_equals_cuda(rule, extra, dtype):
    c = dict(RULE_CONFIGS[rule], **EXTRAS[extra])
    # The updates are the same correctly rounded operations on both devices (NumPy ufuncs, which
    # CuPy runs one kernel each, and SGD's fused kernel, whose products are kept from fusing into
    # FMAs), so float32 agrees bit for bit, except through the clipping norm: a BLAS dot on the
    # CPU, cuBLAS's on a GPU, which may sum in another order.
    exact = c.get("clip_gradients", -1.0) < 0
    rng, pc, pg = make_pair(c, dtype)
    for it, rate in enumerate(RATES):
        step_both(rng, pc, pg, rate, it)
        (cpu, ucpu), (gpu, ugpu) = pc, pg
        for p, q in zip(cpu.learnable, gpu.learnable):
            assert_same(p.blob.data, q.blob.data, dtype, exact, f"step {it}: {p.key}")
        assert_same(cpu.param_grad, gpu.param_grad, dtype, exact, f"step {it}: conditioned gradient")
        assert set(ugpu.state) == set(ucpu.state)
        for name in ucpu.state:
            assert_same(ucpu.state[name], ugpu.state[name], dtype, exact, f"step {it}: state {name}")
        assert (ugpu.last_clip is None) == (ucpu.last_clip is None)
        if ucpu.last_clip is not None:
            np.testing.assert_allclose(ugpu.last_clip, ucpu.last_clip, rtol=1e-6)


@pytest.mark.parametrize("rule", list(RULE_CONFIGS))
def test_frozen_params_are_untouched_on_cuda(rule):
    _, _, (gpu, upd) = make_pair(dict(RULE_CONFIGS[rule], weight_decay=0.1), np.float32)
    before = {p.key: to_host(p.blob.data).copy() for p in gpu.learnable}
    assert [p.key for p in gpu.learnable if p.lr_mult == 0] == ["b/bias"]
    for it in range(3):
        gpu.param_grad[...] = 1.0
        upd.apply(0.5, it)
    for p in gpu.learnable:
        after = to_host(p.blob.data)
        if p.lr_mult == 0:
            np.testing.assert_array_equal(after, before[p.key], err_msg=p.key)
        else:
            assert not np.array_equal(after, before[p.key]), p.key


@pytest.mark.parametrize("rule", ["SGD", "AdaDelta", "AdamW"])
def test_every_buffer_lives_on_the_nets_device(rule):
    net = make_net("cuda", np.float32)
    upd = Updater(dict(RULE_CONFIGS[rule], weight_decay=0.01), net)
    arrays = {"lr_mult": upd.lr_mult, "decay": upd.decay, "alpha": upd.alpha, "tmp": upd.tmp,
              "rule.tmp": upd.rule.tmp, **{f"state {k}": v for k, v in upd.state.items()}}
    if rule == "AdaDelta":
        arrays["rule.tmp2"] = upd.rule.tmp2
    for name, a in arrays.items():
        assert net.device.owns(a), name
        assert a.dtype == np.float32 and a.size == net.param_data.size, name


def test_sgd_runs_the_nets_device_kernel(monkeypatch):
    # the current device is the CPU here: the Updater takes its kernel from the net's device
    import netspec.kernels.cuda.solver as cuda_solver
    from netspec.core.device import current

    assert not current().is_cuda
    calls = []
    real = cuda_solver.sgd_update

    def counting(*args):
        calls.append(1)
        real(*args)

    monkeypatch.setattr(cuda_solver, "sgd_update", counting)
    net = make_net("cuda", np.float32)
    upd = Updater(RULE_CONFIGS["SGD"], net)
    net.param_grad[...] = 1.0
    upd.apply(0.1, 0)
    assert calls == [1]


@pytest.mark.parametrize("rule", ["SGD", "AdaDelta", "Adam"])
def test_state_moves_between_devices(rule):
    """state_host / load_state: a CPU run's state continued on the GPU (and a GPU run's on the
    CPU) gives what the run would have given without the move."""
    c = dict(RULE_CONFIGS[rule], weight_decay=0.01)
    rng, (cpu, ucpu), (gpu, ugpu) = make_pair(c, np.float32)
    for it, rate in enumerate(RATES[:2]):
        step_both(rng, (cpu, ucpu), (gpu, ugpu), rate, it)
    host = ucpu.state_host()
    assert all(type(a) is np.ndarray for a in host.values())
    # a fresh GPU net takes the CPU's params and state
    gpu2 = make_net("cuda", np.float32)
    copy_in(gpu2.param_data, cpu.param_data)
    ugpu2 = Updater(c, gpu2)
    ugpu2.load_state(host)
    # and a fresh CPU net the GPU's
    cpu2 = make_net("cpu", np.float32)
    copy_in(cpu2.param_data, gpu.param_data)
    ucpu2 = Updater(c, cpu2)
    ucpu2.load_state(ugpu.state_host())
    for it, rate in enumerate(RATES[2:], start=2):
        g = (rng.normal(size=cpu.param_grad.size) * 2.0).astype(np.float32)
        for net, upd in ((cpu, ucpu), (gpu2, ugpu2), (cpu2, ucpu2)):
            copy_in(net.param_grad, g)
            upd.apply(rate, it)
    for net, upd in ((gpu2, ugpu2), (cpu2, ucpu2)):
        np.testing.assert_array_equal(to_host(net.param_data), cpu.param_data)
        for name in ucpu.state:
            np.testing.assert_array_equal(to_host(upd.state[name]), ucpu.state[name], err_msg=name)
